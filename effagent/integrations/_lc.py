"""LangChain message <-> effagent records, shared by the LangChain and LangGraph integrations."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.config import get_config
from langgraph.errors import GraphBubbleUp

from effagent._trusted import trusted
from effagent.decide import Decision, escalate
from effagent.difficulty.base import History, Message, Step, StepStats, ToolCall
from effagent.errors import EffagentError, EndpointError
from effagent.governor import Governor, approx_tokens
from effagent.ledger.base import CallKind, StepRecord, Usage
from effagent.levers.answers import get_extractor
from effagent.levers.consistency import Sample, SCConfig, adaptive_consistency
from effagent.levers.length import prompt_budget_instruction
from effagent.policy import Policy

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",  # message type -> role
          "HumanMessageChunk": "user", "AIMessageChunk": "assistant", "SystemMessageChunk": "system",
          "ToolMessageChunk": "tool"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        parts = []
        for b in content:
            if isinstance(b, str):
                parts.append(b)
            elif isinstance(b, Mapping) and isinstance(b.get("text"), str):
                parts.append(b["text"])
        return "\n".join(parts)
    return "" if content is None else str(content)


def to_message(m: BaseMessage) -> Message:
    role = _ROLES.get(m.type, "user")
    content = m.content if type(m.content) is str else _text(m.content)
    calls: list[ToolCall] = []
    reasoning = ""
    is_error = False
    if role == "assistant":
        if isinstance(m, AIMessage):
            for c in m.tool_calls or ():
                args = c.get("args")
                calls.append(trusted(ToolCall, name=str(c.get("name") or ""),
                                     args=dict(args) if isinstance(args, dict) else {}))
            reasoning = reasoning_text(m)
    elif role == "tool":
        is_error = isinstance(m, ToolMessage) and (getattr(m, "status", "success") == "error"
                                                    or content[:5].lower() == "error")
    name = m.name
    # every field is already a str/bool/list of the right type here: build without re-validation
    return trusted(Message, role=role, content=content, tool_calls=calls,
                   name=name if isinstance(name, str) else None, is_error=is_error, reasoning=reasoning)


class MessageCache:
    """Converted messages by LangChain message id: an agent's history is re-read every step, but each message
    is converted once. Bounded; messages without an id are converted every time.

    ``history`` converts a run's whole conversation: a run's history only grows between its steps, so when
    the message the run's previous step ended with is still at the same place, the converted prefix is
    reused and only the new messages are looked at, both to convert them and to add them to the run's
    :class:`History` (the statistics estimators and the loop guard read)."""

    def __init__(self, size: int = 4096, runs: int = 256) -> None:
        self.size = size
        self._by_id: dict[str, Message] = {}
        self.runs = runs
        # run -> (length, first id, last id, converted, statistics, steps seen)
        self._history: dict[str, tuple[int, str, str, list[Message], History, int]] = {}
        self._tools: tuple[tuple[Any, ...], list[str]] | None = None

    def history(self, run_id: str, messages: Sequence[BaseMessage]) -> tuple[list[Message], StepStats | None, int]:
        """The run's messages converted, their statistics (None when they cannot be kept: no ids), and how many
        steps of the run came before this one (as far as this cache has seen the run)."""
        n = len(messages)
        prev = self._history.get(run_id)
        convert = self.convert
        if prev is None:
            index = 0
            out = new = [convert(m) for m in messages]
            hist = History()
        else:
            index = prev[5]
            if 0 < prev[0] <= n and messages[prev[0] - 1].id == prev[2] and messages[0].id == prev[1]:
                new = [convert(m) for m in messages[prev[0]:]]
                out, hist = prev[3] + new, prev[4]
            else:  # the history was rewritten (summarised, trimmed): start over
                out = new = [convert(m) for m in messages]
                hist = History()
        if prev is None and len(self._history) >= self.runs:
            self._history.pop(next(iter(self._history)))
        first, last = (messages[0].id, messages[-1].id) if n else (None, None)
        if not (first and last):
            self._history[run_id] = (0, "", "", [], History(), index + 1)  # only the step count is kept
            return out, None, index
        for m in new:
            hist.add(m)
        self._history[run_id] = (n, first, last, out, hist, index + 1)
        return out, hist.stats(), index

    def tool_names(self, tools: Sequence[Any]) -> list[str]:
        """The tools' names; an agent offers the same tools at every step, so they are read once."""
        key = tuple(tools)  # compared by identity first: the same tool objects match at once
        last = self._tools
        if last is not None and last[0] == key:
            return last[1]
        names = tool_names(tools)
        self._tools = (key, names)
        return names

    def convert(self, m: BaseMessage) -> Message:
        mid = m.id
        if not mid:
            return to_message(m)
        by_id = self._by_id
        got = by_id.get(mid)
        if got is None:
            if len(by_id) >= self.size:
                # drop the older half at once: dropping the oldest entry on every insert would make each
                # drop scan past the ones removed before it
                for old in list(itertools.islice(by_id, max(1, len(by_id) // 2))):
                    del by_id[old]
            got = by_id[mid] = to_message(m)
        return got


def tool_names(tools: Sequence[Any]) -> list[str]:
    names = []
    for t in tools:
        name = getattr(t, "name", None) or (t.get("name") if isinstance(t, Mapping) else None)
        if name:
            names.append(str(name))
    return names


def to_step(messages: Sequence[BaseMessage], tools: Sequence[Any] = (), cache: MessageCache | None = None,
            run_id: str | None = None) -> Step:
    names = tool_names(tools) if cache is None else cache.tool_names(tools)
    stats = None
    index = 0
    if cache is None:
        converted = [to_message(m) for m in messages]
    elif run_id is not None:  # the run's position comes with its history (the governor checks it)
        converted, stats, index = cache.history(run_id, messages)
    else:
        converted = [cache.convert(m) for m in messages]
    step = trusted(Step, messages=converted, tools=names, index=index)
    return step if stats is None else step.with_stats(stats)


def reasoning_text(msg: AIMessage) -> str:
    kw = msg.additional_kwargs or {}
    for key in ("reasoning_content", "reasoning"):
        val = kw.get(key)
        if isinstance(val, str) and val:
            return val
    return ""


MAX_TOKENS_PER_CALL = 2**31  # a reported count above this is not believable


def usage_of(msg: AIMessage) -> tuple[int | None, int | None, int]:
    """(input, output, reasoning) tokens from ``usage_metadata``; an input/output count that is missing,
    negative, non-finite or not a number is None (the caller estimates it), a bad reasoning count is 0."""
    um = msg.usage_metadata
    if not isinstance(um, dict):  # a TypedDict is a dict; anything else is read as a mapping or ignored
        um = dict(um) if isinstance(um, Mapping) else {}
    details = um.get("output_token_details") or {}
    reasoning = (_count(details.get("reasoning")) or 0) if isinstance(details, Mapping) else 0
    return _count(um.get("input_tokens")), _count(um.get("output_tokens")), reasoning


def _count(v: Any) -> int | None:
    """A token count as reported, or None when it is not a believable one."""
    if type(v) is int:  # the common case
        return v if 0 <= v < MAX_TOKENS_PER_CALL else None
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return int(v) if ok and 0 <= v < MAX_TOKENS_PER_CALL else None


_last_thread_usage: tuple[Any, Usage] = (None, Usage())


def thread_usage_for_state(total: Usage) -> dict[str, Any]:
    """The thread total as the plain dict kept in graph state (checkpointers serialise plain values)."""
    global _last_thread_usage
    raw = total.model_dump()
    _last_thread_usage = (raw, total)  # the next step reads this very dict back: no need to validate it
    return raw


def thread_usage_from_state(state: Mapping[str, Any], key: str) -> Usage | None:
    """The thread total the previous step wrote into graph state (validated: it may come from a checkpoint).
    The state hands back the very dict the last step wrote, so the last one validated is remembered."""
    global _last_thread_usage
    raw = state.get(key)
    if isinstance(raw, Usage):
        return raw
    if isinstance(raw, Mapping):
        seen, usage = _last_thread_usage
        if seen is raw:
            return usage
        usage = Usage.model_validate(dict(raw))
        _last_thread_usage = (raw, usage)
        return usage
    return None


_CHECKPOINTER_KEY = "__pregel_checkpointer"  # langgraph's config key for the graph's checkpointer (or None)


def graph_context(config: Mapping[str, Any] | None = None) -> tuple[str | None, bool]:
    """The thread id of the running graph (from ``config``, or the current graph run's), and whether the graph
    checkpoints its state. Only a checkpointed state outlives one invocation, so only then is the thread's
    total kept in graph state; otherwise the ledger's own thread totals are the thread's spending."""
    if config is None:
        try:
            config = get_config()
        except Exception:  # outside a graph run
            return None, False
    conf = config.get("configurable") or {}
    tid = conf.get("thread_id")
    return (None if tid is None else str(tid)), bool(conf.get(_CHECKPOINTER_KEY))


# ---------------------------------------------------------------------------------------------------
# The per-step procedure both integrations share: plan, try tiers in order, settle usage.
# ---------------------------------------------------------------------------------------------------
ReasoningCounter = Callable[[str, str], int]  # (tier name, reasoning text) -> tokens
_TOOL_VOTE = "\x00tool-calls:"  # marks a sample that voted with tool calls (compared exactly)
T = TypeVar("T")
Calls = Generator[tuple[str, dict[str, Any]], T, tuple[T, Usage]]  # yields (tier, extra), is sent results


@dataclass(frozen=True)
class Direct(Generic[T]):
    """What a step needs to call its tier's endpoint directly (early exit continues a partial turn, which a
    chat model object cannot): the conversation as the model would see it, and how an answer becomes the
    integration's result."""

    messages: Sequence[BaseMessage]
    make: Callable[[AIMessage], T]


class StepRunner:
    """Runs one model step for an integration: the governor plans, ``attempt(tier)`` calls the model
    (the integration's way), failures fall through to the next tier, usage is accounted once."""

    def __init__(self, governor: Governor, reasoning_counter: ReasoningCounter | None = None) -> None:
        self.governor = governor
        self.reasoning_counter = reasoning_counter
        self._record_content = governor.policy.telemetry.record_content
        self._full_metadata = governor.policy.telemetry.answer_metadata == "decision"
        self.cache = MessageCache()
        self.verifier: Any = None  # the cascade verifier, loaded on first use
        self.complete_fn: Any = None  # early exit's endpoint call (default effagent.llm.client.complete)

    def messages_for(self, decision: Decision, messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
        """The conversation the chosen tier sees: a finalize instruction or a prompt-level budget appended
        (a new list), or ``messages`` itself when nothing is added."""
        if decision.action == "finalize":
            return [*messages, HumanMessage(self.governor.policy.budgets.finalize.instruction)]
        if decision.prompt_budget == "none":
            return messages
        extra = prompt_budget_instruction(decision.prompt_budget, to_step(messages).prompt, decision.difficulty)
        return [*messages, HumanMessage(extra)] if extra else messages

    def _record(self, ctx: StepContext, tier: str, ai: AIMessage | None, started: float,
                kind: CallKind = "model") -> StepRecord:
        """Account one call's usage (estimated when the server reported none)."""
        inp, out, reasoning = usage_of(ai) if ai is not None else (0, 0, 0)
        note = None
        if ai is not None and (inp is None or out is None):
            # the server reported no usable usage: estimate rather than record a free call
            note = "usage not reported; estimated"
            inp = approx_tokens(ctx.text) if inp is None else inp
            out = approx_tokens(_text(ai.content) + reasoning_text(ai)) if out is None else out
        inp, out = inp or 0, out or 0
        if ai is not None and not reasoning and self.reasoning_counter is not None:
            text = reasoning_text(ai)
            if text:
                reasoning = self.reasoning_counter(tier, text)
        content = None
        if ai is not None and self._record_content:
            content = {"prompt": ctx.prompt, "completion": _text(ai.content)}
        return self.governor.account(ctx.run_id, ctx.thread_id, ctx.decision, tier=tier, input_tokens=inp,
                                     output_tokens=out, reasoning_tokens=reasoning, kind=kind,
                                     duration_s=time.perf_counter() - started,
                                     response_model=(ai.response_metadata or {}).get("model_name") if ai else None,
                                     content=content, error=note)

    def _finish(self, ctx: StepContext, tier: str, ai: AIMessage | None, usage: Usage,
                extra_meta: dict[str, Any] | None = None) -> Usage:
        """Tag the answer with the decision, close the step, and return the thread's new total."""
        decision = ctx.decision
        if ai is not None:
            if decision.action == "finalize" and ai.tool_calls:
                # the final call must end the run: a model that still asks for tools gets its calls dropped
                ai.tool_calls = []
                ai.content = ai.content or "(no final answer: the model asked for a tool after the budget was spent)"
            # JSON types only
            if self._full_metadata:
                meta = {"tier": tier, "decision": decision.as_dict(), **(extra_meta or {})}
            else:
                meta = {"tier": tier, **decision.summary(), **(extra_meta or {})}
            if isinstance(ai.response_metadata, dict):  # each message has its own dict: no re-assignment needed
                ai.response_metadata["effagent"] = meta
            else:
                ai.response_metadata = {**(ai.response_metadata or {}), "effagent": meta}
        self.governor.end_step(ctx.run_id, decision, usage)
        return usage if ctx.thread_base is None else ctx.thread_base + usage

    # -- cascade: verify the cheap answer, escalate when it looks wrong -------------------------------------
    def _escalation(self, ctx: StepContext, ai: AIMessage | None) -> StepContext | None:
        """The escalated step's context when the decision asks for verification and the answer looks wrong.
        Only answers are verified: a step that calls tools goes on as the agent asked."""
        if not ctx.decision.verify or ai is None or ai.tool_calls:
            return None
        if self.verifier is None:
            from effagent.difficulty.verifier import CascadeVerifier

            self.verifier = CascadeVerifier()
        p_wrong = self.verifier.verify(ctx.prompt, _text(ai.content)).score
        up = escalate(self.governor.policy, ctx.decision, p_wrong)
        return None if up is None else replace(ctx, decision=up)

    def _escalated(self, up: StepContext, cheap: StepRecord, ai: AIMessage | None, started: float) -> Usage:
        rec = self._record(up, up.decision.tier, ai, started)
        return self._finish(up, up.decision.tier, ai, cheap.usage + rec.usage)

    # -- adaptive self-consistency (decision.samples > 1) ------------------------------------------------
    def _sc_config(self, ctx: StepContext) -> tuple[SCConfig, float]:
        c = dict(ctx.decision.consistency or {})
        temperature = float(c.pop("temperature", 0.7))
        return SCConfig(max_samples=ctx.decision.samples, **c), temperature

    def _sampled(self, ctx: StepContext, tier: str, call_one: Callable[[dict[str, Any]], T],
                 ai_of: Callable[[T], AIMessage | None]) -> tuple[T, Usage]:
        """Draw samples in batches until the vote is settled; every sample is accounted (kind ``sample``);
        the first sample with the majority answer is returned. Tool-call steps vote on the exact call."""
        cfg, temperature = self._sc_config(ctx)
        base = get_extractor(cfg.extractor)

        def extract(text: str) -> str | None:
            return text if text.startswith(_TOOL_VOTE) else base(text)

        records: list[StepRecord] = []

        def draw(k: int, start: int) -> list[Sample]:
            out = []
            for i in range(k):
                started = time.perf_counter()
                res = call_one({"temperature": temperature, "seed": cfg.seed + start + i})
                ai = ai_of(res)
                rec = self._record(ctx, tier, ai, started, kind="sample")
                records.append(rec)
                text = ""
                if ai is not None:
                    text = (_TOOL_VOTE + json.dumps([[c["name"], c["args"]] for c in ai.tool_calls], sort_keys=True,
                                                    default=str)) if ai.tool_calls else _text(ai.content)
                out.append(Sample(text, rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.reasoning_tokens,
                                  payload=res))
            return out

        sc = adaptive_consistency(draw, cfg, extractor=extract)
        chosen = sc.chosen.payload if sc.chosen is not None else sc.samples[0].payload
        total = sum((r.usage for r in records), Usage())
        meta = {"consistency": {"answer": sc.answer, "used": len(sc.samples), "max": cfg.max_samples,
                                "stopped": sc.stopped, "reason": sc.reason, "counts": sc.counts}}
        return chosen, self._finish(ctx, tier, ai_of(chosen), total, meta)  # type: ignore[arg-type]

    # -- early exit of thinking (decision.early_exit) -------------------------------------------------------
    def exits_early(self, ctx: StepContext, tier: str) -> bool:
        """Early exit applies to answer steps (no tools offered) that think, on a tier that can think."""
        d = ctx.decision
        return (d.early_exit is not None and d.thinking and d.action == "call" and not ctx.step.tools
                and self.governor.policy.tier(tier).thinking.supported)

    def _early_exit(self, ctx: StepContext, tier: str,
                    messages: Sequence[BaseMessage]) -> tuple[AIMessage, Usage, dict[str, Any]]:
        """Chunked thinking with answer probes on ``tier``'s endpoint; every call is accounted as it returns."""
        from langchain_core.messages import convert_to_openai_messages

        from effagent.levers.early_exit import EarlyExitConfig
        from effagent.levers.loopguard import check_reasoning
        from effagent.llm.early_exit import run_on_tier

        d = ctx.decision
        opts = dict(d.early_exit or {})
        answer = opts.pop("answer", "write")
        t = self.governor.policy.tier(tier)
        cap = min(d.max_tokens, t.max_tokens)
        max_thinking = max(1, min(d.thinking_budget or cap, cap))
        cfg = EarlyExitConfig(max_thinking=max_thinking, **opts)
        guard = self.governor.policy.loop_guard
        stop_check = ((lambda r: check_reasoning(r, guard.max_reasoning_verifications)) if guard.enabled else None)
        total = Usage()
        thinking_tokens = 0
        last = [time.perf_counter()]

        def on_call(role: str, c: Any) -> None:
            nonlocal total, thinking_tokens
            reasoning = 0
            if role == "think":
                reasoning = c.reasoning_tokens if c.reasoning_tokens is not None else c.output_tokens
                if c.content and c.reasoning and c.reasoning_tokens is None and self.reasoning_counter is not None:
                    reasoning = self.reasoning_counter(tier, c.reasoning)  # the chunk also holds the answer
                thinking_tokens += reasoning
            now = time.perf_counter()
            rec = self.governor.account(ctx.run_id, ctx.thread_id, d, tier=tier, input_tokens=c.input_tokens,
                                        output_tokens=c.output_tokens, reasoning_tokens=reasoning,
                                        kind="probe" if role == "probe" else "model", duration_s=now - last[0],
                                        response_model=c.model)
            last[0] = now
            total = total + rec.usage

        more = {"complete_fn": self.complete_fn} if self.complete_fn is not None else {}
        result = run_on_tier(t, convert_to_openai_messages(list(messages)), cfg, max_tokens=cap, answer=answer,
                             stop_check=stop_check, on_call=on_call, **more)
        ai = AIMessage(content=result.answer, additional_kwargs={"reasoning_content": result.reasoning},
                       usage_metadata={"input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
                                       "total_tokens": total.total_tokens,
                                       "output_token_details": {"reasoning": thinking_tokens}},
                       response_metadata={"model_name": t.model, "finish_reason": "stop"})
        meta = {"early_exit": {"exited": result.exited, "reason": result.reason,
                               "thinking_tokens": result.thinking_tokens, "probes": len(result.probes),
                               "answer": result.extracted, "calls": len(result.calls)}}
        return ai, total, meta

    def _fail(self, ctx: StepContext, tier: str, err: Exception, started: float, attempts: list[str]) -> None:
        msg = f"{tier}: {type(err).__name__}: {str(err)[:200]}"
        attempts.append(msg)
        self.governor.account(ctx.run_id, ctx.thread_id, ctx.decision, tier=tier, input_tokens=0, output_tokens=0,
                              ok=False, error=msg, duration_s=time.perf_counter() - started)

    def plan(self, messages: Sequence[BaseMessage], tools: Sequence[Any], run_id: str, thread_id: str | None,
             thread_base: Usage | None) -> StepContext:
        step = to_step(messages, tools, self.cache, run_id)
        decision = self.governor.plan(step, run_id, thread_id, thread_base)
        return StepContext(run_id=run_id, thread_id=thread_id, thread_base=thread_base, decision=decision,
                           step=step)

    def _tiers(self, ctx: StepContext, ai_of: Callable[[T], AIMessage | None],
               whole_step: Callable[[str], tuple[T, Usage] | None] | None = None) -> Calls[T]:
        """The per-step procedure ``run`` and ``arun`` share: it yields each model call it wants as
        ``(tier, extra_settings)`` and is sent the result, or thrown the call's error. Tiers are tried in the
        decision's order; ``whole_step(tier)`` may run the whole step on a tier itself (sampling, early exit)
        or return None to leave it to the plain call."""
        attempts: list[str] = []
        for tier in [ctx.decision.tier, *ctx.decision.fallback]:
            started = time.perf_counter()
            try:
                done = whole_step(tier) if whole_step is not None else None
                if done is not None:
                    return done
                result = yield tier, {}
            except Exception as err:
                if not tier_failed(err):
                    raise
                self._fail(ctx, tier, err, started, attempts)
                continue
            ai = ai_of(result)
            rec = self._record(ctx, tier, ai, started)
            up = self._escalation(ctx, ai)
            if up is not None:
                started = time.perf_counter()
                try:
                    better = yield up.decision.tier, self.governor.settings(up.decision, up.decision.tier)
                except Exception as err:
                    if not tier_failed(err):
                        raise
                    self._fail(up, up.decision.tier, err, started, attempts)  # the cheap answer stands
                else:
                    return better, self._escalated(up, rec, ai_of(better), started)
            return result, self._finish(ctx, tier, ai, rec.usage)
        self.governor.release(ctx.run_id, ctx.decision)
        raise EndpointError(attempts)

    def run(self, ctx: StepContext, attempt: Callable[[str, dict[str, Any]], T],
            ai_of: Callable[[T], AIMessage | None], direct: Direct[T] | None = None) -> tuple[T, Usage]:
        """``attempt(tier, extra_settings)`` makes one call on ``tier``; tiers are tried in the decision's order.
        ``direct`` lets a step with early exit call the tier's endpoint itself."""
        sampled = ctx.decision.samples > 1 and ctx.decision.action == "call"

        def whole_step(tier: str) -> tuple[T, Usage] | None:
            if sampled:
                return self._sampled(ctx, tier, lambda extra: attempt(tier, extra), ai_of)
            if direct is not None and self.exits_early(ctx, tier):
                ai, usage, meta = self._early_exit(ctx, tier, direct.messages)
                return direct.make(ai), self._finish(ctx, tier, ai, usage, meta)
            return None

        calls = self._tiers(ctx, ai_of, whole_step if sampled or direct is not None else None)
        try:
            call = next(calls)
            while True:
                try:
                    result = attempt(*call)
                except Exception as err:
                    call = calls.throw(err)
                else:
                    call = calls.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def arun(self, ctx: StepContext, attempt: Callable[[str, dict[str, Any]], Awaitable[T]],
                   ai_of: Callable[[T], AIMessage | None], direct: Direct[T] | None = None) -> tuple[T, Usage]:
        if (ctx.decision.samples > 1 and ctx.decision.action == "call") or (
                direct is not None and self.exits_early(ctx, ctx.decision.tier)):
            # sequential levers (the stopping rule, chunked thinking): run them in a worker thread that awaits
            # each model call on this loop
            loop = asyncio.get_running_loop()

            def attempt_sync(tier: str, extra: dict[str, Any]) -> T:
                return asyncio.run_coroutine_threadsafe(attempt(tier, extra), loop).result()  # type: ignore[arg-type]

            return await asyncio.to_thread(self.run, ctx, attempt_sync, ai_of, direct)
        calls = self._tiers(ctx, ai_of)
        try:
            call = next(calls)
            while True:
                try:
                    result = await attempt(*call)
                except Exception as err:
                    call = calls.throw(err)
                else:
                    call = calls.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def tier_failed(err: BaseException) -> bool:
    """True when ``err`` means the tier's endpoint failed (unreachable, timeout, 5xx, malformed body, or an
    EndpointError from effagent.llm) and the next tier should be tried; budget errors, other effagent errors
    and LangGraph control flow propagate."""
    return isinstance(err, EndpointError) or not isinstance(err, EffagentError | GraphBubbleUp)


@dataclass(slots=True)
class StepContext:
    run_id: str
    thread_id: str | None
    thread_base: Usage | None
    decision: Decision
    step: Step

    @property
    def prompt(self) -> str:
        return self.step.prompt

    @property
    def text(self) -> str:
        """The conversation's text, for estimating usage a server did not report."""
        return " ".join(m.content for m in self.step.messages)


def default_reasoning_counter(policy: Policy, models: Mapping[str, BaseChatModel] | None,
                              counter: ReasoningCounter | None) -> ReasoningCounter | None:
    """With the default (litellm) models, reasoning is counted with each tier's server tokenizer when the
    server reports no reasoning tokens; user-supplied models keep the counter they were given."""
    if counter is None and models is None:
        from effagent.llm.tokens import reasoning_counter_for

        return reasoning_counter_for(policy)
    return counter


def check_models(policy: Policy, models: Mapping[str, BaseChatModel] | None) -> dict[str, BaseChatModel]:
    if models is None:
        from .chat_models import models_for as tier_models

        return tier_models(policy)
    missing = sorted(set(policy.tiers) - set(models))
    if missing:
        raise EffagentError(f"no chat model given for tier(s) {missing}; pass models={{name: model}} for every "
                            f"tier in the policy ({', '.join(policy.tiers)})")
    return dict(models)
