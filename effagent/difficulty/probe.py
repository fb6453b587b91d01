"""Logprob probe estimator: a short call to the cheapest tier with logprobs; low confidence = hard.

Before the step is routed, the cheap tier answers the step's conversation for a few tokens (thinking off,
temperature 0, ``max_tokens`` small) with the chosen tokens' logprobs. Confidence is a summary of the token
probabilities (``method``: ``mean_prob`` = arithmetic mean of p, the default; ``geo_mean`` = exp(mean
logprob); ``min_prob`` = the least likely token) and the score is ``1 - confidence``.

The probe is a real model call and costs tokens: its usage is in the signals under :data:`SIG_INPUT` /
:data:`SIG_OUTPUT` (``probe.input_tokens`` / ``probe.output_tokens``), and in :attr:`LogprobProbeEstimator.
last_usage`, so the caller can account it in the ledger as ``kind="probe"`` on :attr:`tier_name`.

An endpoint failure never breaks the agent step: the estimate is the neutral 0.5 with ``probe.error = 1``
and a warning is logged.

Cascade signal on a full cheap answer (asked with ``complete(..., logprobs=0)``)::

    [cheap] = complete(policy.tier(policy.cheapest_tier), msgs, settings=s, logprobs=0)
    if should_escalate(answer_confidence(cheap), threshold=0.6):
        ...  # call the next tier

Caveat, measured on the local SmolLM2-135M (see ``tests/integration/test_probe_vllm.py``): a tiny model opens
hard multi-step problems with a fluent, formulaic sentence ("To solve this problem, we need to"), so its
first tokens are *more* confident there than on short chit-chat prompts. The probe's opening-token
confidence is a difficulty signal only for a cheap tier that is itself capable of answering; weight it
accordingly, or use :func:`answer_confidence` on the cheap answer (a cascade) instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from effagent.difficulty.base import Difficulty, Message, Step, clamp01
from effagent.errors import EndpointError
from effagent.policy import Tier
from effagent.request import probe_settings

if TYPE_CHECKING:
    from effagent.llm.client import Completion
    from effagent.policy import Policy

log = logging.getLogger(__name__)

Method = Literal["mean_prob", "geo_mean", "min_prob"]
METHODS: tuple[str, ...] = ("mean_prob", "geo_mean", "min_prob")
NEUTRAL = 0.5

# signal keys (all prefixed so they survive being merged with other estimators' signals)
SIG_CONFIDENCE = "probe.confidence"
SIG_MEAN_LOGPROB = "probe.mean_logprob"
SIG_MIN_LOGPROB = "probe.min_logprob"
SIG_TOKENS = "probe.tokens"
SIG_INPUT = "probe.input_tokens"
SIG_OUTPUT = "probe.output_tokens"
SIG_LATENCY = "probe.latency_s"
SIG_ERROR = "probe.error"
SIG_NO_LOGPROBS = "probe.no_logprobs"
SIG_SKIPPED = "probe.skipped"

CompleteFn = Callable[..., list["Completion"]]


@dataclass(frozen=True)
class ProbeUsage:
    """Tokens one probe call used (the server's usage), to account as ``kind="probe"`` on ``tier``."""

    tier: str | None
    input_tokens: int = 0
    output_tokens: int = 0


# ------------------------------------------------------------------------------------- confidence


def confidence_from_logprobs(logprobs: Sequence[float], method: Method = "mean_prob", k: int | None = None) -> float:
    """Confidence in [0, 1] from per-token logprobs (the first ``k`` when given); NaNs are ignored.

    Raises ValueError on an empty list (nothing to judge) or an unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown confidence method {method!r}; use one of: {', '.join(METHODS)}")
    lps = [min(0.0, float(x)) for x in (logprobs[:k] if k else logprobs) if not math.isnan(float(x))]
    if not lps:
        raise ValueError("no token logprobs to compute a confidence from")
    if method == "mean_prob":
        return clamp01(sum(math.exp(x) for x in lps) / len(lps))
    if method == "geo_mean":
        return clamp01(math.exp(sum(lps) / len(lps)))
    return clamp01(math.exp(min(lps)))


def answer_confidence(completion: Completion, *, method: Method = "mean_prob", last: int | None = None,
                      default: float | None = None) -> float:
    """Confidence in [0, 1] of a full (cheap) answer from its token logprobs: a cascade signal.

    Args:
        completion: a :class:`~effagent.llm.client.Completion` asked with ``logprobs=0`` (or ``k > 0``).
        method: ``mean_prob`` (default), ``geo_mean`` or ``min_prob`` (see :func:`confidence_from_logprobs`).
        last: judge only the last ``last`` tokens (the final answer of a worked solution) when given.
        default: returned when the completion carries no logprobs; without it that is a ValueError.
    """
    lps = list(completion.logprobs or [])
    if last:
        lps = lps[-last:]
    if not lps:
        if default is not None:
            return clamp01(default)
        raise ValueError("the completion has no logprobs: call complete(..., logprobs=0) for the cheap answer")
    return confidence_from_logprobs(lps, method)


def should_escalate(confidence: float, threshold: float) -> bool:
    """True when a cheap answer's confidence is below ``threshold``: ask the next tier."""
    return confidence < threshold


# ----------------------------------------------------------------------------------- the request


def _tool_call_text(m: Message) -> str:
    calls = "; ".join(f"{c.name}({json.dumps(c.args, sort_keys=True, default=str)})" for c in m.tool_calls)
    return f"[called tools: {calls}]"


def to_openai_messages(step: Step, max_chars: int | None = 8000) -> list[dict[str, str]]:
    """The step's conversation as plain OpenAI chat dicts, for a probe (not for the real call).

    Tool calls are written into the assistant's text and tool results become user messages
    (``[tool NAME result]: ...`` / ``[tool NAME error]: ...``): no tool-call ids are needed and any chat
    template renders them. Consecutive messages of the same role are merged. Over ``max_chars`` the system
    messages and the most recent messages are kept (the newest one cut from its start when alone too long).
    """
    out: list[dict[str, str]] = []
    for m in step.messages:
        if m.role == "tool":
            role, text = "user", f"[tool {m.name or 'result'} {'error' if m.is_error else 'result'}]: {m.content}"
        elif m.role == "assistant" and m.tool_calls:
            role, text = "assistant", "\n".join(t for t in (m.content, _tool_call_text(m)) if t)
        else:
            role, text = m.role, m.content
        if not text.strip():
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    if max_chars is None or sum(len(d["content"]) for d in out) <= max_chars:
        return out
    system = [{"role": d["role"], "content": d["content"][: max_chars // 4]} for d in out if d["role"] == "system"]
    budget = max(0, max_chars - sum(len(d["content"]) for d in system))
    kept: list[dict[str, str]] = []
    for d in reversed([d for d in out if d["role"] != "system"]):
        if len(d["content"]) <= budget:
            kept.append(d)
            budget -= len(d["content"])
        else:
            if not kept:
                kept.append({"role": d["role"], "content": d["content"][-max(1, budget):]})
            break
    return system + kept[::-1]


# ----------------------------------------------------------------------------------- the estimator


class LogprobProbeEstimator:
    """Difficulty = 1 - confidence of the cheap tier's first ``max_tokens`` tokens on the step.

    Args:
        tier: the tier to probe (the policy's cheapest, see :meth:`from_policy`).
        max_tokens: tokens the probe generates (and judges).
        complete: the completion function (default :func:`effagent.llm.client.complete`); tests pass a fake.
        method: how token probabilities become a confidence (``mean_prob``, ``geo_mean``, ``min_prob``).
        tier_name: the tier's name in the policy, reported with the usage for accounting.
        timeout_s / retries: override the tier's own for the probe (a probe should fail fast).
        max_chars: conversation characters sent at most (see :func:`to_openai_messages`).
    """

    name = "probe"

    def __init__(self, tier: Tier, *, max_tokens: int = 8, complete: CompleteFn | None = None,
                 method: Method = "mean_prob", tier_name: str | None = None, timeout_s: float | None = None,
                 retries: int | None = None, max_chars: int | None = 8000) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if method not in METHODS:
            raise ValueError(f"unknown confidence method {method!r}; use one of: {', '.join(METHODS)}")
        update: dict[str, Any] = {}
        if timeout_s is not None:
            update["timeout_s"] = float(timeout_s)
        if retries is not None:
            update["retries"] = int(retries)
        self.tier = tier.model_copy(update=update) if update else tier
        self.tier_name = tier_name
        self.max_tokens = int(max_tokens)
        self.method: Method = method
        self.max_chars = max_chars
        if complete is None:
            from effagent.llm.client import complete as default_complete

            complete = default_complete
        self._complete = complete
        self.last_usage: ProbeUsage | None = None  # of the latest probe; concurrent callers read the signals
        self.total_usage = ProbeUsage(tier_name)  # every probe this estimator made (score_prompts included)

    @classmethod
    def from_policy(cls, policy: Policy, options: Mapping[str, Any] | None = None,
                    complete: CompleteFn | None = None) -> LogprobProbeEstimator:
        """Build from a policy and an estimator entry's ``options`` (``tier``: default the cheapest tier;
        ``max_tokens``, ``method``, ``timeout_s``, ``retries``, ``max_chars``)."""
        opts = dict(options or {})
        allowed = {"tier", "max_tokens", "method", "timeout_s", "retries", "max_chars"}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ValueError(f"unknown probe option(s) {', '.join(unknown)}; use: {', '.join(sorted(allowed))}")
        name = opts.pop("tier", None) or policy.cheapest_tier
        return cls(policy.tier(name), tier_name=name, complete=complete, **opts)

    # -- one probe ---------------------------------------------------------------------------------
    def _neutral(self, flag: str, signals: dict[str, float] | None = None) -> Difficulty:
        return Difficulty(score=NEUTRAL, signals={flag: 1.0, **(signals or {})}, estimator=self.name)

    def estimate(self, step: Step) -> Difficulty:
        messages = to_openai_messages(step, self.max_chars)
        self.last_usage = None
        if not messages:
            return self._neutral(SIG_SKIPPED)
        t0 = time.perf_counter()
        try:
            out = self._complete(self.tier, messages, settings=probe_settings(self.tier, self.max_tokens),
                                 logprobs=0)
        except EndpointError as err:
            log.warning("difficulty probe on %s failed; using the neutral score %.1f: %s",
                        self.tier_name or self.tier.model, NEUTRAL, err)
            return self._neutral(SIG_ERROR, {SIG_LATENCY: time.perf_counter() - t0})
        latency = time.perf_counter() - t0
        usage = ProbeUsage(self.tier_name, sum(c.input_tokens for c in out), sum(c.output_tokens for c in out))
        self.last_usage = usage
        self.total_usage = ProbeUsage(self.tier_name, self.total_usage.input_tokens + usage.input_tokens,
                                      self.total_usage.output_tokens + usage.output_tokens)
        signals = {SIG_INPUT: float(usage.input_tokens), SIG_OUTPUT: float(usage.output_tokens),
                   SIG_LATENCY: latency}
        lps = [x for x in ((out[0].logprobs or []) if out else []) if not math.isnan(x)][: self.max_tokens]
        if not lps:
            if out and out[0].logprobs is None:
                log.warning("difficulty probe on %s returned no logprobs; using the neutral score",
                            self.tier_name or self.tier.model)
                return self._neutral(SIG_NO_LOGPROBS, signals)
            return self._neutral(SIG_SKIPPED, {**signals, SIG_TOKENS: 0.0})  # stopped at once: nothing to judge
        conf = confidence_from_logprobs(lps, self.method)
        signals.update({SIG_CONFIDENCE: conf, SIG_MEAN_LOGPROB: sum(lps) / len(lps), SIG_MIN_LOGPROB: min(lps),
                        SIG_TOKENS: float(len(lps))})
        return Difficulty(score=clamp01(1.0 - conf), signals=signals, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        """One probe per prompt, in order (sequential calls)."""
        return [self.estimate(Step.from_prompt(p)).score for p in prompts]
