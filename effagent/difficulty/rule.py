"""The default estimator: a small rule over prompt features that transfer across workloads.

Four cues, each saturating in [0, 1], added with fixed weights (length counts double) and squashed:

- **length**: how much there is to read and work through (log words, saturates at ~400 words);
- **specialised vocabulary**: the share of long words (8+ letters; saturates at 30 %) — knowledge-heavy
  questions use rarer terms;
- **quantities**: numbers in the prompt (saturates at 8) — more to compute, more steps to get wrong;
- **clauses**: commas and sentence ends (saturates at 10) — conditions and steps to keep track of.

In an agent the step's **role** (:data:`effagent.records.StepRole`) moves the score too (:data:`ROLE_SHIFT`): a
step that restates a short tool result scores easy, one that reads tool results a little easier than the
request itself, one that recovers from a tool error or retries harder. The first step of a turn (and every
single-turn prompt) is not moved.

No weights were fitted: the cue set was chosen on the train splits of the recorded sets and checked on their
evaluation splits and leave-one-domain-out (``effagent bench replay``; numbers in docs/estimators.md). In an
agent the run's own signals are added, as in the ``heuristic`` baseline: tool errors, repeated tool calls and
depth. The ``learned`` estimator and the ``trained`` baseline route better inside the workload they were fitted
on; this rule is the one that did not fall below a random order on any recorded domain.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from effagent.difficulty.base import Difficulty, Step, StepStats, clamp01

_WORD = re.compile(r"[A-Za-z]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CLAUSE_END = re.compile(r"[.!?;](?:\s|$)")

WEIGHTS = {"length": 1.0, "vocabulary": 0.5, "quantities": 0.5, "clauses": 0.5}
ROLE_SHIFT = {"first": 0.0, "after_tool": -0.3, "restate": -0.6, "tool_error": 0.4, "retry": 0.3, "final": -0.3}
"""Added to the raw sum by the step's role (the first step of a turn: unchanged)."""
_CENTER, _SLOPE = 0.8, 2.5  # logistic squash: a raw sum of 0.8 scores 0.5


def prompt_cues(prompt: str) -> dict[str, float]:
    """The four cues of a prompt, each in [0, 1]."""
    words = _WORD.findall(prompt)
    n = max(1, len(words))
    return {
        "length": min(1.0, math.log1p(len(prompt.split())) / math.log1p(400)),
        "vocabulary": min(1.0, sum(len(w) >= 8 for w in words) / n / 0.3),
        "quantities": min(1.0, len(_NUMBER.findall(prompt)) / 8),
        "clauses": min(1.0, (prompt.count(",") + len(_CLAUSE_END.findall(prompt))) / 10),
    }


def squash(raw: float) -> float:
    """The rule's raw sum -> a score in [0, 1]."""
    return clamp01(1.0 / (1.0 + math.exp(-_SLOPE * (raw - _CENTER))))


@lru_cache(maxsize=2048)  # an agent re-reads the same task every step
def prompt_raw(prompt: str) -> tuple[float, tuple[tuple[str, float], ...]]:
    cues = prompt_cues(prompt)
    return sum(WEIGHTS[k] * v for k, v in cues.items()), tuple(cues.items())


def score_prompt(prompt: str) -> float:
    return squash(prompt_raw(prompt)[0])


def run_signals(step: Step, st: StepStats) -> tuple[float, float, float]:
    """The run's own signals of a step, each in [0, 1]: tool errors (saturate at 3), repeated tool calls (at 2
    repeats) and depth (at step 10). ``st``: ``step.stats()``."""
    return min(1.0, st.tool_errors / 3), min(1.0, (st.calls - st.distinct_calls) / 2), min(1.0, step.index / 10)


def step_raw(step: Step) -> tuple[float, dict[str, float]]:
    """The raw sum for an agent step (the prompt's cues plus the run's own signals), and the signals."""
    st = step.stats()
    raw, cues = prompt_raw(st.prompt)
    signals = dict(cues)
    errors, repeats, depth = run_signals(step, st)
    signals.update(tool_errors=errors, repeats=repeats, depth=depth)
    role = signals["role_shift"] = ROLE_SHIFT[step.role]
    return raw + 0.5 * errors + 0.3 * repeats + 0.15 * depth + role, signals


class RuleEstimator:
    """Length, specialised vocabulary, quantities and clauses of the prompt, plus the run so far."""

    name = "rule"

    def estimate(self, step: Step) -> Difficulty:
        raw, signals = step_raw(step)
        return Difficulty(score=squash(raw), signals=signals, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [score_prompt(p) for p in prompts]
