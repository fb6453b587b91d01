"""The agreement cascade (``decision.lever == "agreement"``): several cheap votes — ``samples`` draws on the
band's tier, or one call to it and to each listed tier — and the majority answer stands when enough of them
agree; else the escalated decision (:func:`effagent.decide.escalate_on_disagreement`) answers the step.

Every call goes through the step (``ask``: votes as kind ``sample``; ``ask_up``: the escalated call), so each is
accounted once; the lever only counts the votes and carries out what ``decide`` says about them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from effagent.decide import Decision, escalate_on_disagreement
from effagent.ledger.base import Usage
from effagent.levers.answers import get_extractor
from effagent.levers.base import Ask, Called, LeverResult
from effagent.policy import Policy
from effagent.request import TierRequest, encode

T = TypeVar("T")


@dataclass
class AgreementMeta:
    """What the votes said (the answer's ``agreement`` tag)."""

    votes: list[str | None]
    answer: str | None
    agreed: float
    threshold: float
    escalated: bool = False
    to: str | None = None
    reason: str | None = None
    name: str = "agreement"

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"votes": self.votes, "answer": self.answer, "agreed": self.agreed,
                               "threshold": self.threshold, "escalated": self.escalated}
        if self.escalated:
            out.update(to=self.to, reason=self.reason)
        return out


def run_agreement(policy: Policy, decision: Decision, request: TierRequest, ask: Ask[T],
                  ask_up: Callable[[Decision], Called[T]]) -> LeverResult[T]:
    """Vote, then keep the majority answer or escalate; ``request`` is the step's request on the band's tier."""
    a = decision.agreement
    assert a is not None  # decide sets it with this lever
    if a.tiers:
        requests = [request, *(encode(decision, n, policy.tier(n)) for n in a.tiers)]
    else:
        requests = [request._replace(settings={**request.settings, "temperature": a.temperature,
                                               "seed": a.seed + i}) for i in range(a.samples)]
    extract = get_extractor(a.extractor)
    total = Usage()
    votes: list[tuple[str | None, T]] = []
    for req in requests:
        got = ask(req, "sample")
        total = total + got.usage
        votes.append((got.vote(extract), got.result))
    counts: dict[str, int] = {}
    for v, _ in votes:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    best = max(counts, key=lambda k: counts[k]) if counts else None
    agreed = counts.get(best, 0) / len(votes) if best is not None else 0.0
    meta = AgreementMeta([v for v, _ in votes], best, agreed, a.threshold)
    up = escalate_on_disagreement(policy, decision, agreed)
    if up is None:
        return LeverResult(next(res for v, res in votes if v == best), total, meta)
    got = ask_up(up)
    meta.escalated, meta.to, meta.reason = True, up.tier, up.reason
    return LeverResult(got.result, total + got.usage, meta)
