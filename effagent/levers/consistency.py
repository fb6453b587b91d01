"""Adaptive self-consistency: sample in small batches and stop as soon as the vote is settled.

Two stopping rules, usable together (the first that fires stops sampling):

- **Beta rule** (Adaptive-Consistency, Aggarwal et al. 2023): with ``v1`` votes for the leading answer and
  ``v2`` for the runner-up, and a uniform Beta(1, 1) prior on the leader's share ``p`` of the two,
  ``P(p > 1/2 | v1, v2) = 1 - I_{1/2}(v1 + 1, v2 + 1)``; stop when it reaches ``threshold``. For integer
  counts the regularised incomplete beta has the closed form
  ``1 - I_{1/2}(v1 + 1, v2 + 1) = sum_{j=0}^{v1} C(n, j) / 2^n`` with ``n = v1 + v2 + 1``, computed exactly here.
  ``method="dirichlet"`` instead estimates ``P(leader has the largest share)`` under a Dirichlet(1, ..., 1)
  posterior over all answers seen (plus one "other" bucket) by Monte Carlo with a fixed seed.
- **ESC window** (Early-Stopping Self-Consistency, Li et al. 2024): stop when the last ``window`` samples all
  give the same answer.
- **Decided** (exact, on by default): stop when the samples still allowed (``max_samples`` minus those drawn)
  cannot change the majority: the leader has more votes than the runner-up could reach. On the same samples
  it never changes the answer a fixed ``max_samples`` run gives.

Framework-free: the caller passes ``sample(k, start) -> k samples`` (``start`` is the index of the first
one; pass ``seed + start`` to the server so the adaptive run draws a prefix of what a fixed-N run would).
Every sample's usage is returned so the caller records each one in the ledger (``StepRecord.kind="sample"``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from effagent.ledger.base import Usage
from effagent.levers.answers import Extractor, get_extractor
from effagent.levers.base import TOOL_VOTE, Ask, LeverResult
from effagent.policy import Consistency
from effagent.request import TierRequest

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One sampled completion and what it cost. ``answer`` is filled in by :func:`adaptive_consistency`."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    answer: str | None = None
    payload: object = field(default=None, compare=False, repr=False)  # the caller's own object, e.g. an AIMessage


Sampler = Callable[[int, int], Sequence[Sample]]  # (k, start) -> k samples

StopReason = Literal["beta", "dirichlet", "window", "decided", "max_samples", "exhausted"]


class SCConfig(BaseModel):
    """How adaptive self-consistency samples and when it stops."""

    model_config = ConfigDict(extra="forbid")

    max_samples: Annotated[int, Field(ge=1, le=64)] = 16
    batch: Annotated[int, Field(ge=1, le=64)] = 2
    min_samples: Annotated[int, Field(ge=1)] = 2  # never stop before this many (one sample is no vote)
    threshold: Annotated[float, Field(gt=0.5, lt=1.0)] | None = 0.95  # None: no Beta/Dirichlet rule
    method: Literal["beta", "dirichlet"] = "beta"
    window: Annotated[int, Field(ge=2)] | None = None  # None: no ESC window rule
    decided: bool = True  # stop when the remaining samples cannot change the majority (exact)
    extractor: str = "number"
    mc_draws: Annotated[int, Field(ge=100)] = 4000
    seed: int = 0


@dataclass
class SCResult:
    answer: str | None  # the majority answer (None when no sample had one)
    samples: list[Sample]  # every sample drawn, in order, with ``answer`` set
    stopped: StopReason
    reason: str
    confidence: float | None  # the stopping rule's probability at the end (None when no rule was on)
    counts: dict[str, int]

    @property
    def used(self) -> int:
        return len(self.samples)

    @property
    def chosen(self) -> Sample | None:
        """The first sample that gives the majority answer (what an agent should get back)."""
        return next((s for s in self.samples if s.answer == self.answer), self.samples[0] if self.samples else None)

    @property
    def input_tokens(self) -> int:
        return sum(s.input_tokens for s in self.samples)

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.samples)


# ------------------------------------------------------------------------------------------- the rules


def beta_majority_prob(v1: int, v2: int) -> float:
    """``P(p > 1/2)`` for ``p ~ Beta(v1 + 1, v2 + 1)``: the chance the leader (v1 votes) beats the runner-up (v2).

    Exact: ``sum_{j=0}^{v1} C(n, j) / 2^n`` with ``n = v1 + v2 + 1`` (integer-parameter incomplete beta at 1/2).
    """
    if v1 < 0 or v2 < 0:
        raise ValueError("vote counts must be non-negative")
    n = v1 + v2 + 1
    return math.fsum(math.comb(n, j) for j in range(v1 + 1)) / 2.0 ** n


def dirichlet_majority_prob(counts: Sequence[int], draws: int = 4000, seed: int = 0) -> float:
    """Monte Carlo ``P(share of the leader is the largest)`` under Dirichlet(counts + 1) over the answers
    seen plus one bucket for answers not seen yet (fixed seed: the same counts give the same probability)."""
    if not counts:
        return 0.0
    alpha = np.asarray([*sorted(counts, reverse=True), 0], dtype=float) + 1.0
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(alpha, size=draws)
    return float(np.mean(np.argmax(shares, axis=1) == 0))


def window_agrees(answers: Sequence[str | None], window: int) -> bool:
    """ESC: the last ``window`` answers exist and are all the same."""
    if window < 1 or len(answers) < window:
        return False
    tail = answers[-window:]
    return tail[0] is not None and all(a == tail[0] for a in tail)


def majority(answers: Sequence[str | None]) -> tuple[str | None, Counter[str]]:
    """The most common answer (ties: the one seen first) and the vote counts; None answers do not vote."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, counts
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top), counts


def confidence(counts: Counter[str], cfg: SCConfig) -> float:
    ordered = sorted(counts.values(), reverse=True)
    if not ordered:
        return 0.0
    if cfg.method == "dirichlet":
        return dirichlet_majority_prob(ordered, cfg.mc_draws, cfg.seed)
    return beta_majority_prob(ordered[0], ordered[1] if len(ordered) > 1 else 0)


def should_stop(answers: Sequence[str | None], cfg: SCConfig) -> tuple[StopReason, str, float | None] | None:
    """Whether the votes so far settle the answer: (rule, reason, probability) or None to keep sampling."""
    n = len(answers)
    best, counts = majority(answers)
    prob = confidence(counts, cfg) if cfg.threshold is not None else None
    if n < cfg.min_samples:
        return None
    if cfg.window is not None and window_agrees(answers, cfg.window):
        return "window", f"the last {cfg.window} samples all answered {best!r} (ESC window)", prob
    top = counts[best] if best is not None else 0
    second = sorted(counts.values(), reverse=True)[1] if len(counts) > 1 else 0
    if prob is not None and cfg.threshold is not None and prob >= cfg.threshold:
        return cfg.method, (f"P({best!r} is the majority) = {prob:.3f} >= {cfg.threshold} "
                            f"({top} vs {second} votes, {cfg.method} rule)"), prob
    left = cfg.max_samples - n
    if cfg.decided and best is not None and left > 0 and top > second + left:
        return "decided", (f"{best!r} leads {top} to {second} and only {left} more sample(s) are allowed: the "
                           f"majority cannot change"), prob
    return None


# ----------------------------------------------------------------------------------------------- the run


def adaptive_consistency(sample: Sampler, cfg: SCConfig | None = None,
                         extractor: str | Extractor | None = None) -> SCResult:
    """Draw batches from ``sample`` until a stopping rule fires or ``max_samples`` are drawn; majority vote."""
    cfg = cfg or SCConfig()
    extract = get_extractor(extractor if extractor is not None else cfg.extractor)
    drawn: list[Sample] = []
    answers: list[str | None] = []
    while len(drawn) < cfg.max_samples:
        k = min(cfg.batch, cfg.max_samples - len(drawn))
        got = list(sample(k, len(drawn)))[:k]
        if not got:
            best, counts = majority(answers)
            return SCResult(best, drawn, "exhausted", f"the sampler returned nothing after {len(drawn)} samples",
                            confidence(counts, cfg) if cfg.threshold is not None else None, dict(counts))
        for s in got:  # a whole batch is paid for, so every sample in it votes
            ans = extract(s.text)
            drawn.append(replace(s, answer=ans))
            answers.append(ans)
        verdict = should_stop(answers, cfg)
        if verdict is not None:
            best, counts = majority(answers)
            rule, why, prob = verdict
            return SCResult(best, drawn, rule, f"stopped after {len(drawn)} of {cfg.max_samples} samples: {why}",
                            prob, dict(counts))
    best, counts = majority(answers)
    prob = confidence(counts, cfg) if cfg.threshold is not None else None
    return SCResult(best, drawn, "max_samples",
                    f"drew all {cfg.max_samples} samples; majority {best!r} with {counts.get(best, 0) if best else 0} "
                    f"votes", prob, dict(counts))


def fixed_consistency(samples: Sequence[Sample], extractor: str | Extractor = "number") -> SCResult:
    """Plain self-consistency over samples already drawn (the fixed-N baseline)."""
    extract = get_extractor(extractor)
    drawn = [replace(s, answer=extract(s.text)) for s in samples]
    best, counts = majority([s.answer for s in drawn])
    return SCResult(best, drawn, "max_samples", f"fixed N={len(drawn)}", None, dict(counts))


# -- the lever in an agent step -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsistencyMeta:
    """What self-consistency did on a step (the answer's ``consistency`` tag)."""

    answer: str | None
    used: int
    max: int
    stopped: StopReason
    reason: str
    counts: dict[str, int]
    name: str = "consistency"

    def dump(self) -> dict[str, Any]:
        return {"answer": self.answer, "used": self.used, "max": self.max, "stopped": self.stopped,
                "reason": self.reason, "counts": self.counts}


def run_samples(request: TierRequest, settings: Consistency, max_samples: int, ask: Ask[T]) -> LeverResult[T]:
    """A step's samples (``decision.lever == "samples"``): drawn in batches through ``ask`` (each one accounted,
    kind ``sample``) until the vote is settled; the first sample with the majority answer is the step's answer.
    Tool-call steps vote on the exact call."""
    c = settings
    cfg = SCConfig(max_samples=max_samples, batch=c.batch, threshold=c.threshold, window=c.window,
                   decided=c.decided, extractor=c.extractor, seed=c.seed)
    base = get_extractor(cfg.extractor)
    total = Usage()

    def extract(text: str) -> str | None:
        return text if text.startswith(TOOL_VOTE) else base(text)

    def draw(k: int, start: int) -> list[Sample]:
        nonlocal total
        out = []
        for i in range(k):
            got = ask(request._replace(settings={**request.settings, "temperature": c.temperature,
                                                 "seed": cfg.seed + start + i}))
            total = total + got.usage
            text = got.vote(lambda t: t) or ""  # exact calls, or the text to extract from
            out.append(Sample(text, got.usage.input_tokens, got.usage.output_tokens, got.usage.reasoning_tokens,
                              payload=got.result))
        return out

    sc = adaptive_consistency(draw, cfg, extractor=extract)
    chosen = sc.chosen.payload if sc.chosen is not None else sc.samples[0].payload
    meta = ConsistencyMeta(sc.answer, len(sc.samples), cfg.max_samples, sc.stopped, sc.reason, sc.counts)
    return LeverResult(chosen, total, meta)  # type: ignore[arg-type]
