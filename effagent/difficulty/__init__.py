"""Difficulty estimation: estimators behind one protocol (see base.py)."""

from effagent.difficulty.base import Difficulty, Estimator, Message, Step, ToolCall

__all__ = ["Difficulty", "Estimator", "Message", "Step", "ToolCall"]


def build_estimator(config: object | None = None) -> Estimator:
    """The estimator a policy's ``difficulty`` section names (weighted mean of the listed estimators)."""
    from effagent.difficulty.heuristic import HeuristicEstimator

    refs = getattr(config, "estimators", None) or []
    names = {r.name for r in refs} or {"heuristic"}
    if names != {"heuristic"}:  # pragma: no cover - replaced when the trained estimators land
        raise ValueError(f"unknown estimator(s) {sorted(names - {'heuristic'})}; available: heuristic")
    return HeuristicEstimator()


__all__ += ["build_estimator"]
