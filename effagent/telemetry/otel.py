"""The OpenTelemetry observer: spans and metrics for every run, model step and call the governor reports.

Span tree (names follow the GenAI semantic conventions)::

    <the application's current span, if any>
    └── invoke_agent <agent>          gen_ai.operation.name=invoke_agent, openinference.span.kind=AGENT
        ├── chat <model>              one per model step (effagent.span=step): the decision + the call that
        │   │                         answered (tokens, cost); openinference.span.kind=LLM
        │   ├── chat <model>          a failed attempt on a tier before a fallback (status ERROR)
        │   └── chat <model>          a probe / sample / verify call made for this step (effagent.kind)
        └── chat <model>              ...

Parents are explicit: the run span's parent is the OTel context current when ``on_run_start`` is called
(so it nests under the application's own span), steps and calls are parented on the run / step span
objects kept here, never on a context attached across hooks (LangGraph runs hooks in different nodes,
threads and tasks).

Every hook is thread-safe and never raises into the agent: a failure is logged and the run goes on.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from effagent.redact import Redactor
from effagent.telemetry.metrics import CallMetrics, baseline_tier, savings
from effagent.telemetry.pricing import call_cost

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from effagent.decide import Decision
    from effagent.ledger.base import StepRecord, Usage
    from effagent.policy import Policy

log = logging.getLogger("effagent.telemetry")

try:
    from importlib.metadata import version as _pkg_version

    _VERSION = _pkg_version("effagent")
except Exception:  # pragma: no cover - not installed
    _VERSION = "0"

# litellm provider prefix -> gen_ai.provider.name (semconv well-known values where one exists)
_PROVIDERS = {
    "openai": "openai", "text-completion-openai": "openai", "anthropic": "anthropic", "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock", "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini", "groq": "groq", "mistral": "mistral_ai", "deepseek": "deepseek", "xai": "x_ai",
    "cohere": "cohere", "cohere_chat": "cohere", "perplexity": "perplexity", "watsonx": "ibm.watsonx.ai",
    "hosted_vllm": "vllm", "vllm": "vllm", "ollama": "ollama", "ollama_chat": "ollama", "openrouter": "openrouter",
    "together_ai": "together_ai", "fireworks_ai": "fireworks_ai", "huggingface": "huggingface",
}
# gen_ai.provider.name -> OpenInference llm.provider
_OI_PROVIDERS = {"gcp.vertex_ai": "google", "gcp.gemini": "google", "aws.bedrock": "aws",
                 "azure.ai.openai": "azure", "azure.ai.inference": "azure", "mistral_ai": "mistralai", "x_ai": "xai"}


def split_model(model: str) -> tuple[str, str]:
    """A litellm model string -> (gen_ai.provider.name, model name as the server knows it).

    ``hosted_vllm/Qwen/Qwen3-8B`` -> (``vllm``, ``Qwen/Qwen3-8B``); ``gpt-4o`` -> (``openai``, ``gpt-4o``)."""
    head, sep, rest = model.partition("/")
    if sep and head in _PROVIDERS:
        return _PROVIDERS[head], rest
    return ("openai" if not sep else "unknown"), model


# ---------------------------------------------------------------------------------------------------
# Never leak a secret into an attribute
# ---------------------------------------------------------------------------------------------------
_SECRET_ENV = re.compile(r"(?i)(API_KEY|_TOKEN|_SECRET|PASSWORD)$")
_TOOL_ARGS = re.compile(r"(tool call [^\s(]+)\(.*\)( repeated)", re.S)
_QUOTED = re.compile(r"""(e\.g\. )(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", re.S)


def content_free(reason: str) -> str:
    """A decision or loop reason without the text it quotes (a repeated tool call's arguments, a sentence of
    the model's reasoning): what a trace gets when ``telemetry.record_content`` is false."""
    return _QUOTED.sub(r"\1[content not recorded]", _TOOL_ARGS.sub(r"\1(...)\2", reason))


class _Scrubber:
    """The policy's secrets (:meth:`effagent.policy.Policy.redact`), the values of environment variables
    named like secrets, and every secret shape (:mod:`effagent.redact`)."""

    def __init__(self, policy: Policy | None) -> None:
        env = Redactor(v for k, v in os.environ.items() if _SECRET_ENV.search(k))
        self._redact = policy.redactor | env if policy is not None else env

    @property
    def values(self) -> tuple[str, ...]:
        return self._redact.values

    def __call__(self, text: str) -> str:
        return self._redact(text)


F = TypeVar("F", bound=Callable[..., None])


def _guard(fn: F) -> F:
    """Telemetry must never break the agent: log and carry on."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(self, *args, **kwargs)
        except Exception:
            log.warning("effagent telemetry: %s failed; the run goes on", fn.__name__, exc_info=True)
        return None

    return wrapper  # type: ignore[return-value]


@dataclass
class _Run:
    span: Span
    ctx: Context
    last: float
    steps: int = 0
    calls: int = 0
    failed_calls: int = 0
    loops_capped: int = 0
    finalized: int = 0
    baseline_usd: float = 0.0
    saved_usd: float = 0.0


@dataclass
class _Step:
    span: Span
    ctx: Context
    run_id: str
    tries: int  # tiers the step may try: the decided one and its fallbacks
    primary: bool = False
    failures: int = 0
    samples: int = 0


class OTelObserver:
    """An :class:`effagent.observe.Observer` that emits OpenTelemetry spans and metrics.

    ``policy`` gives tier prices (for ``llm.cost.prompt/completion`` and savings), the baseline tier and
    the API keys to scrub. ``tracer_provider`` / ``meter_provider`` default to the global ones (the
    application's, or no-ops when it has none: use :func:`effagent.telemetry.observer_from_policy` to get
    effagent's own exporters). ``record_content`` defaults to ``policy.telemetry.record_content``.
    """

    def __init__(self, policy: Policy | None = None, *, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: otel_metrics.MeterProvider | None = None, record_content: bool | None = None,
                 agent_name: str | None = None, flush_on_run_end: bool = False,
                 stale_after_s: float = 3600.0) -> None:
        self.policy = policy
        self.tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.meter_provider = meter_provider or otel_metrics.get_meter_provider()
        self._tracer = self.tracer_provider.get_tracer("effagent", _VERSION)
        self._metrics = CallMetrics(self.meter_provider.get_meter("effagent", _VERSION))
        if record_content is None:
            record_content = bool(policy is not None and policy.telemetry.record_content)
        self.record_content = record_content
        self.agent_name = agent_name or (policy.name if policy is not None else "effagent")
        self.baseline = baseline_tier(policy)
        self.flush_on_run_end = flush_on_run_end
        self.stale_after_s = stale_after_s
        self._scrub = _Scrubber(policy)
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._steps: dict[tuple[str, int], _Step] = {}
        ref = weakref.ref(self)
        atexit.register(lambda: (o := ref()) is not None and o.close())

    # -- attributes -----------------------------------------------------------------------------------
    def _reason(self, text: str) -> str:
        return self._scrub(text if self.record_content else content_free(text))

    def _model_attrs(self, model: str) -> dict[str, Any]:
        provider, name = split_model(model)
        return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": name,
                "llm.model_name": name, "llm.provider": _OI_PROVIDERS.get(provider, provider)}

    def _decision_attrs(self, run_id: str, d: Decision) -> dict[str, Any]:
        a: dict[str, Any] = {
            **self._model_attrs(d.model),
            "openinference.span.kind": "LLM",
            "gen_ai.request.max_tokens": d.max_tokens,
            "effagent.span": "step",
            "effagent.run_id": run_id,
            "effagent.step": d.step,
            "effagent.decision.action": d.action,
            "effagent.decision.tier": d.tier,
            "effagent.decision.model": d.model,
            "effagent.decision.reason": self._reason(d.reason),
            "effagent.decision.max_tokens": d.max_tokens,
            "effagent.decision.samples": d.samples,
            "effagent.decision.prompt_budget": d.prompt_budget,
            "effagent.difficulty.score": float(d.difficulty),
            "effagent.thinking.enabled": bool(d.thinking),
            "effagent.loop.capped": d.loop is not None,
        }
        if d.band:
            a["effagent.decision.band"] = d.band
        if d.role:
            a["effagent.step.role"] = d.role
        if d.switch_cost is not None:
            a["effagent.decision.switch_cost"] = float(d.switch_cost)
            a["effagent.decision.switch_saving"] = float(d.switch_saving or 0.0)
            a["effagent.decision.stayed_for_cache"] = bool(d.stayed_for_cache)
        if d.fallback:
            a["effagent.decision.fallback"] = list(d.fallback)
        for k, v in (d.signals or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                a[f"effagent.difficulty.signals.{k}"] = float(v)
        if d.thinking:
            if d.thinking_budget is None:
                a["effagent.thinking.unbounded"] = True
            else:
                a["effagent.thinking.budget"] = int(d.thinking_budget)
        for k, v in d.budget_left.model_dump().items():
            if v is not None:
                a[f"effagent.budget_left.{k}"] = v
        if d.loop is not None:
            a["effagent.loop.reason"] = self._reason(d.loop)
        if d.warning is not None:
            a["effagent.budget.warning"] = d.warning
        return a

    def _call_attrs(self, record: StepRecord, response_model: str | None) -> dict[str, Any]:
        u = record.usage
        a: dict[str, Any] = {
            **self._model_attrs(record.model),
            "effagent.tier": record.tier,
            "effagent.kind": record.kind,
            "effagent.call.ok": record.ok,
        }
        if response_model:
            a["gen_ai.response.model"] = str(response_model)
        if not record.ok:
            return a
        a.update({
            "gen_ai.usage.input_tokens": u.input_tokens,
            "gen_ai.usage.output_tokens": u.output_tokens,
            "gen_ai.usage.reasoning.output_tokens": u.reasoning_tokens,
            "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
            "llm.token_count.prompt": u.input_tokens,
            "llm.token_count.completion": u.output_tokens,
            "llm.token_count.total": u.input_tokens + u.output_tokens,
            "llm.token_count.completion_details.reasoning": u.reasoning_tokens,
            "llm.token_count.prompt_details.cache_read": u.cache_read_tokens,
            "llm.token_count.prompt_details.cache_write": u.cache_write_tokens,
            "llm.cost.total": u.cost_usd,
            "effagent.cost.usd": u.cost_usd,
        })
        tier = self.policy.tiers.get(record.tier) if self.policy is not None else None
        if tier is not None:  # the record's cost, split as it was computed (litellm's calculation or the price)
            split = call_cost(tier, u.input_tokens, u.output_tokens, cache_read_tokens=u.cache_read_tokens,
                              cache_write_tokens=u.cache_write_tokens,
                              reasoning_tokens=0 if record.reasoning_estimated else u.reasoning_tokens)
            a["llm.cost.prompt"] = split.prompt_usd
            a["llm.cost.completion"] = split.completion_usd
        if self.baseline is not None:
            base, saved, tokens = savings(self.policy, record)
            a.update({"effagent.baseline_tier": self.baseline, "effagent.cost.baseline_usd": base,
                      "effagent.cost.saved_usd": saved, "effagent.tokens.saved": tokens})
        return a

    def _content_attrs(self, content: dict[str, str] | None) -> dict[str, Any]:
        if not self.record_content or not content:
            return {}
        a: dict[str, Any] = {}
        prompt, completion = content.get("prompt"), content.get("completion")
        if isinstance(prompt, str):
            p = self._scrub(prompt)
            a.update({"input.value": p, "input.mime_type": "text/plain",
                      "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": p,
                      "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text",
                                                                                       "content": p}]}])})
        if isinstance(completion, str):
            c = self._scrub(completion)
            a.update({"output.value": c, "output.mime_type": "text/plain",
                      "llm.output_messages.0.message.role": "assistant",
                      "llm.output_messages.0.message.content": c,
                      "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                                                                             "content": c}]}])})
        return a

    # -- state ----------------------------------------------------------------------------------------
    def _new_run(self, run_id: str, thread_id: str | None, parent: Context, implicit: bool = False) -> _Run:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.agent_name,
            "openinference.span.kind": "AGENT",
            "effagent.span": "run",
            "effagent.run_id": run_id,
        }
        if self.policy is not None:
            attrs["effagent.policy"] = self.policy.name
        if self.baseline is not None:
            attrs["effagent.baseline_tier"] = self.baseline
        if thread_id is not None:
            attrs.update({"gen_ai.conversation.id": thread_id, "session.id": thread_id,
                          "effagent.thread_id": thread_id})
        if implicit:
            attrs["effagent.run.implicit"] = True
        span = self._tracer.start_span(f"invoke_agent {self.agent_name}", context=parent, kind=SpanKind.INTERNAL,
                                       attributes=attrs)
        return _Run(span=span, ctx=trace.set_span_in_context(span), last=time.monotonic())

    def _run_for(self, run_id: str) -> _Run:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:  # a hook without on_run_start: open the run here, under the current context
                run = self._runs[run_id] = self._new_run(run_id, None, otel_context.get_current(), implicit=True)
            run.last = time.monotonic()
            return run

    def _sweep(self) -> None:
        """End runs nobody ended (an exception or interrupt skipped on_run_end) after ``stale_after_s``."""
        cutoff = time.monotonic() - self.stale_after_s
        with self._lock:
            stale = [rid for rid, r in self._runs.items() if r.last < cutoff]
            runs = [(rid, self._runs.pop(rid)) for rid in stale]
            steps = [self._steps.pop(k) for k in list(self._steps) if k[0] in stale]
        for st in steps:
            st.span.set_attribute("effagent.step.incomplete", True)
            st.span.end()
        for _, r in runs:
            r.span.set_attribute("effagent.run.incomplete", True)
            r.span.end()

    # -- Observer hooks -------------------------------------------------------------------------------
    @_guard
    def on_run_start(self, run_id: str, thread_id: str | None) -> None:
        self._sweep()
        parent = otel_context.get_current()
        with self._lock:
            if run_id not in self._runs:
                self._runs[run_id] = self._new_run(run_id, thread_id, parent)

    @_guard
    def on_step_start(self, run_id: str, decision: Decision) -> None:
        run = self._run_for(run_id)
        span = self._tracer.start_span(f"chat {split_model(decision.model)[1]}", context=run.ctx,
                                       kind=SpanKind.CLIENT, attributes=self._decision_attrs(run_id, decision))
        with self._lock:
            self._steps[(run_id, id(decision))] = _Step(span=span, ctx=trace.set_span_in_context(span),
                                                        run_id=run_id, tries=1 + len(decision.fallback))

    def _find_step(self, run_id: str, decision: Decision) -> _Step | None:
        with self._lock:
            return self._steps.get((run_id, id(decision)))

    @_guard
    def on_call(self, run_id: str, decision: Decision, record: StepRecord, duration_s: float,
                response_model: str | None = None, content: dict[str, str] | None = None) -> None:
        run = self._run_for(run_id)
        step = self._find_step(run_id, decision)
        attrs = {**self._call_attrs(record, response_model), **self._content_attrs(content)}
        error_type = None
        if not record.ok:
            # the step procedure writes "tier: ExceptionType: message"
            parts = (record.error or "").split(": ", 2)
            error_type = parts[1] if len(parts) >= 2 and parts[1].isidentifier() else "error"
            attrs["error.type"] = error_type
        base, saved, _ = savings(self.policy, record) if record.ok else (0.0, 0.0, 0.0)
        ended_step: _Step | None = None
        with self._lock:
            run.calls += 1
            run.failed_calls += 0 if record.ok else 1
            run.baseline_usd += base
            run.saved_usd += saved
            primary = (step is not None and record.ok and record.kind in ("model", "finalize")
                       and not step.primary)
            if step is not None:
                if primary:
                    step.primary = True
                elif record.kind == "sample" and record.ok:
                    step.samples += 1
                elif not record.ok and record.kind in ("model", "finalize"):
                    step.failures += 1
                    if step.failures >= step.tries and not step.primary:  # every tier failed: the step is over
                        ended_step = self._steps.pop((run_id, id(decision)), None)
        if primary and step is not None:
            step.span.set_attributes(attrs)
            step.span.update_name(f"chat {attrs['gen_ai.request.model']}")
            step.span.set_attribute("effagent.call.duration_s", float(duration_s))
        else:
            end = time.time_ns()
            start = end - max(0, int(duration_s * 1e9))
            parent = step.ctx if step is not None else run.ctx
            call_attrs = {"openinference.span.kind": "LLM", "effagent.span": "call", "effagent.run_id": run_id,
                          "effagent.step": decision.step, **attrs}
            span = self._tracer.start_span(f"chat {attrs['gen_ai.request.model']}", context=parent,
                                           kind=SpanKind.CLIENT, attributes=call_attrs, start_time=start)
            if not record.ok:
                why = (self._scrub(record.error or "call failed") if self.record_content else
                       f"{record.tier}: {error_type} (message not recorded: telemetry.record_content is false)")
                span.set_status(Status(StatusCode.ERROR, why[:500]))
            span.end(end_time=end)
        if ended_step is not None:
            ended_step.span.set_status(Status(StatusCode.ERROR, "every tier failed"))
            ended_step.span.set_attribute("effagent.call.ok", False)
            ended_step.span.end()
        common = {k: attrs[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                        "gen_ai.response.model") if k in attrs}
        common["effagent.tier"] = record.tier
        self._metrics.record(common, record, duration_s, self.policy, error_type)

    @_guard
    def on_step_end(self, run_id: str, decision: Decision, usage: Usage) -> None:
        with self._lock:
            step = self._steps.pop((run_id, id(decision)), None)
            run = self._runs.get(run_id)
            if run is not None:
                run.steps += 1
                run.loops_capped += 1 if decision.loop is not None else 0
                run.finalized += 1 if decision.action == "finalize" else 0
                run.last = time.monotonic()
        if step is None:
            return
        if not step.primary:  # no successful call reported for this step: record what the governor says
            u = usage
            step.span.set_attributes({
                "gen_ai.usage.input_tokens": u.input_tokens, "gen_ai.usage.output_tokens": u.output_tokens,
                "gen_ai.usage.reasoning.output_tokens": u.reasoning_tokens,
                "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
                "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
                "llm.token_count.prompt": u.input_tokens, "llm.token_count.completion": u.output_tokens,
                "llm.token_count.total": u.total_tokens, "llm.cost.total": u.cost_usd,
                "effagent.cost.usd": u.cost_usd})
        step.span.set_attribute("effagent.samples.used", (1 if step.primary else 0) + step.samples)
        step.span.end()

    @_guard
    def on_outcome(self, run_id: str, decision: Decision, success: bool, feedback: str | None) -> None:
        """An outcome application code reported for a step (``record_outcome``): a span of its own."""
        attrs: dict[str, Any] = {"effagent.span": "outcome", "effagent.run_id": run_id, "effagent.step": decision.step,
                                 "effagent.decision.tier": decision.tier, "effagent.outcome.success": bool(success)}
        if decision.band:
            attrs["effagent.decision.band"] = decision.band
        if feedback and self.record_content:  # feedback text is content
            attrs["effagent.outcome.feedback"] = self._scrub(feedback)
        self._tracer.start_span("effagent outcome", kind=SpanKind.INTERNAL, attributes=attrs).end()

    @_guard
    def on_run_end(self, run_id: str, usage: Usage) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            steps = [self._steps.pop(k) for k in list(self._steps) if k[0] == run_id]
        for st in steps:  # a step that never ended (should not happen): close it under its run
            st.span.set_attribute("effagent.step.incomplete", True)
            st.span.end()
        if run is None:
            return
        run.span.set_attributes({
            "effagent.run.steps": run.steps,
            "effagent.run.calls": usage.calls,
            "effagent.run.failed_calls": run.failed_calls,
            "effagent.run.input_tokens": usage.input_tokens,
            "effagent.run.output_tokens": usage.output_tokens,
            "effagent.run.reasoning_tokens": usage.reasoning_tokens,
            "effagent.run.cache_read_tokens": usage.cache_read_tokens,
            "effagent.run.cache_write_tokens": usage.cache_write_tokens,
            "effagent.run.total_tokens": usage.total_tokens,
            "effagent.run.cost_usd": usage.cost_usd,
            "effagent.run.baseline_usd": run.baseline_usd,
            "effagent.run.saved_usd": run.saved_usd,
            "effagent.run.loops_capped": run.loops_capped,
            "effagent.run.finalized": run.finalized,
        })
        run.span.end()
        if self.flush_on_run_end:
            self.flush()

    # -- lifecycle ------------------------------------------------------------------------------------
    def flush(self, timeout_millis: int = 5000) -> None:
        """Push finished spans to the exporter now (the file exporter: so ``effagent report`` sees them)."""
        try:
            fn = getattr(self.tracer_provider, "force_flush", None)
            if fn is not None:
                fn(timeout_millis)
        except Exception:
            log.warning("effagent telemetry: flush failed", exc_info=True)

    def close(self) -> None:
        """End every open span (marked incomplete) and flush. Called at interpreter exit too."""
        try:
            with self._lock:
                steps, self._steps = list(self._steps.values()), {}
                runs, self._runs = list(self._runs.values()), {}
            for st in steps:
                st.span.set_attribute("effagent.step.incomplete", True)
                st.span.end()
            for r in runs:
                r.span.set_attribute("effagent.run.incomplete", True)
                r.span.end()
            if steps or runs:
                self.flush()
        except Exception:
            log.warning("effagent telemetry: close failed", exc_info=True)
