"""Fake difficulty estimators (the ``Estimator`` protocol, no model)."""

from __future__ import annotations

from typing import Any

from effagent import Difficulty


class FakeEstimator:
    """A fake difficulty estimator: every step gets ``score`` (or the score ``scores`` gives its prompt), and
    the steps it was asked about are kept in ``seen``."""

    name = "fake"

    def __init__(self, score: float = 0.0, scores: dict[str, float] | None = None) -> None:
        self.score = score
        self.scores = scores or {}
        self.seen: list[Any] = []

    def estimate(self, step: Any) -> Any:
        self.seen.append(step)
        s = self.scores.get(step.prompt, self.score)
        return Difficulty(score=s, signals={"fake.score": s})

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [self.scores.get(p, self.score) for p in prompts]
