"""The ``length`` baseline: a longer prompt scores harder (what any router should beat)."""

from __future__ import annotations

import math

from effagent.difficulty.base import Difficulty, Step, clamp01


class LengthEstimator:
    """Score = log(chars) squashed to [0, 1] (saturates at ~20k chars)."""

    name = "length"

    def _score(self, prompt: str) -> float:
        return clamp01(math.log1p(len(prompt)) / math.log1p(20000))

    def estimate(self, step: Step) -> Difficulty:
        p = step.prompt
        return Difficulty(score=self._score(p), signals={"chars": float(len(p))}, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [self._score(p) for p in prompts]
