"""Estimator registry and weighted combination.

``get_estimator(name)`` knows the three estimators a policy can name: "rule" (the default: prompt cues that
transfer across workloads, see ``effagent.difficulty.rule``), "learned" (a model file from ``effagent difficulty
learn``; option ``path``) and "probe" (a short logprob call to a tier of the policy); modules are imported lazily.
The estimators it replaced (``length``, ``heuristic``, ``trained``) are benchmark baselines now
(``effagent.tools.bench.baselines``). The cascade verifier needs the cheap answer, so it is not an estimator: it
is a lever (``effagent.levers.cascade``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from effagent.difficulty.base import Difficulty, Estimator, Step, clamp01

DEFAULT_ESTIMATOR = "rule"
#: the estimators :func:`get_estimator` builds (``effagent.policy.EstimatorName`` lists the same names)
ESTIMATORS = ("rule", "learned", "probe")

if TYPE_CHECKING:
    from effagent.policy import Policy

    #: builds a member of a :class:`WeightedEstimator` by name (default: :func:`get_estimator`)
    Builder = Callable[[str, Policy | None, Mapping[str, Any] | None], Estimator]


def parse_weights(spec: str) -> dict[str, float]:
    """``"a:0.7,b:0.3"`` -> ``{"a": 0.7, "b": 0.3}`` (a name without a weight weighs 1)."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        key, _, w = part.partition(":")
        try:
            weights[key.strip()] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"weight {w!r} of {key.strip()!r} is not a number; write NAME:WEIGHT, e.g. "
                             "rule:0.7,learned:0.3") from None
    return weights


class WeightedEstimator:
    """Weighted mean of estimators' scores (weights normalised to sum 1; non-positive weights dropped).
    Members' own signals pass through under ``<member>.<signal>`` (``probe.*`` usage included)."""

    def __init__(self, weights: Mapping[str, float], name: str | None = None, policy: Policy | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None, build: Builder | None = None) -> None:
        bad = {k: v for k, v in weights.items() if not (math.isfinite(float(v)) and float(v) >= 0)}
        if bad:
            got = ", ".join(f"{k}: {v}" for k, v in bad.items())
            raise ValueError(f"estimator weights must be finite numbers >= 0; got {got}")
        kept = {k: float(v) for k, v in weights.items() if v > 0}
        if not kept:
            raise ValueError("weights must name at least one estimator with a positive weight")
        total = sum(kept.values())
        self.weights = {k: v / total for k, v in kept.items()}
        opts = options or {}
        make = build or get_estimator
        self.members: dict[str, Estimator] = {k: make(k, policy, opts.get(k)) for k in self.weights}
        self.name = name or "+".join(f"{k}:{v:.2g}" for k, v in self.weights.items())

    def estimate(self, step: Step) -> Difficulty:
        parts = {k: e.estimate(step) for k, e in self.members.items()}
        score = sum(self.weights[k] * d.score for k, d in parts.items())
        signals = {f"{k}.score": d.score for k, d in parts.items()}
        for k, d in parts.items():
            for key, v in d.signals.items():
                signals[key if key.startswith(f"{k}.") else f"{k}.{key}"] = v
        return Difficulty(score=clamp01(score), signals=signals, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        total = [0.0] * len(prompts)
        for k, e in self.members.items():
            for i, s in enumerate(e.score_prompts(prompts)):
                total[i] += self.weights[k] * s
        return [clamp01(t) for t in total]


def available_estimators() -> list[str]:
    """Registry names an estimator can be built from."""
    return list(ESTIMATORS)


def get_estimator(name: str, policy: Policy | None = None, options: Mapping[str, Any] | None = None) -> Estimator:
    """An estimator by registry name; ``"a:0.7,b:0.3"`` builds a WeightedEstimator. ``probe`` calls a tier of
    ``policy`` (``options``: tier, max_tokens, method, timeout_s, retries); ``learned`` reads the model file
    ``options["path"]`` (a ValueError names the file when it cannot be used)."""
    if ":" in name or "," in name:
        return WeightedEstimator(parse_weights(name), policy=policy)
    if name == "rule":
        from effagent.difficulty.rule import RuleEstimator

        return RuleEstimator()
    if name == "probe":
        if policy is None:
            raise ValueError("the probe estimator calls a tier: build it with get_estimator('probe', policy=...)")
        from effagent.difficulty.probe import LogprobProbeEstimator

        return LogprobProbeEstimator.from_policy(policy, options)
    if name == "learned":
        path = (options or {}).get("path")
        if not path:
            raise ValueError("the learned estimator needs a model file: {name: learned, path: MODEL} "
                             "(write one with `effagent difficulty learn --out MODEL`)")
        from effagent.difficulty.learned import LearnedEstimator

        return LearnedEstimator(path)
    from effagent.policy.schema import REMOVED_ESTIMATORS, removed_estimator

    if name in REMOVED_ESTIMATORS:
        raise KeyError(removed_estimator(name))
    raise KeyError(f"unknown estimator {name!r}; known: {', '.join(available_estimators())}")
