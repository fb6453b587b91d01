"""The ``heuristic`` baseline (the policies' default before ``rule``): prompt words, numbers, operators and task
words plus the agent's own history. No model, microseconds per step."""

from __future__ import annotations

import math
import re
from functools import lru_cache

from effagent.difficulty.base import Difficulty, Step, clamp01
from effagent.difficulty.rule import run_signals

_HARD_WORDS = re.compile(
    r"\b(prove|proof|derive|optimi[sz]e|algorithm|complexity|step[- ]by[- ]step|explain why|compare|"
    r"trade-?offs?|design|analy[sz]e|multi-?step|integral|probability|theorem|debug|refactor|plan)\b",
    re.I,
)
_EASY_WORDS = re.compile(r"\b(what is|who is|capital of|define|translate|spell|list|name|hello|thanks?)\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MATH = re.compile(r"[=+\-*/^%]|\b(sum|product|percent|ratio|average|total|how many|how much)\b", re.I)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class HeuristicEstimator:
    """Scores from prompt length, numbers, operators, task words, and from the run so far:
    tool errors, repeated tool calls and how deep into the run the step is."""

    name = "heuristic"

    def estimate(self, step: Step) -> Difficulty:
        st = step.stats()
        signals, prompt_logit = _prompt_features(st.prompt)
        s = dict(signals)
        errors, repeats, depth = run_signals(step, st)
        s.update(tool_errors=errors, repeats=repeats, depth=depth)
        logit = prompt_logit + 1.2 * errors + 0.8 * repeats + 0.4 * depth
        return Difficulty(score=clamp01(_sigmoid(logit)), signals=s, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [clamp01(_sigmoid(_prompt_logit(_prompt_signals(p)))) for p in prompts]


@lru_cache(maxsize=1024)  # an agent re-reads the same task every step; the features are a pure function of it
def _prompt_features(prompt: str) -> tuple[dict[str, float], float]:
    """The prompt's signals (shared: copy before changing) and their logit."""
    s = _prompt_signals(prompt)
    return s, _prompt_logit(s)


def _prompt_signals(prompt: str) -> dict[str, float]:
    words = len(prompt.split())
    return {
        "length": min(1.0, math.log1p(words) / math.log1p(400)),
        "numbers": min(1.0, len(_NUMBER.findall(prompt)) / 8),
        "math": min(1.0, len(_MATH.findall(prompt)) / 6),
        "hard_words": min(1.0, len(_HARD_WORDS.findall(prompt)) / 2),
        "easy_words": min(1.0, len(_EASY_WORDS.findall(prompt)) / 1),
        "questions": min(1.0, max(0, prompt.count("?") - 1) / 3),
    }


def _prompt_logit(s: dict[str, float]) -> float:
    return (-2.0 + 2.2 * s["length"] + 1.2 * s["numbers"] + 1.0 * s["math"] + 1.6 * s["hard_words"]
            - 1.4 * s["easy_words"] + 0.8 * s["questions"])
