"""The estimator protocol: an estimator reads a :class:`~effagent.records.Step` and answers a
:class:`~effagent.records.Difficulty` (the records live in :mod:`effagent.records`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from effagent.records import Difficulty, Message, Step, StepStats, ToolCall, clamp01

__all__ = ["Difficulty", "Estimator", "Message", "Step", "StepStats", "ToolCall", "clamp01"]


@runtime_checkable
class Estimator(Protocol):
    """Anything that scores steps. ``score_prompts`` is the fast batch path for bare questions."""

    name: str

    def estimate(self, step: Step) -> Difficulty: ...

    def score_prompts(self, prompts: list[str]) -> list[float]: ...
