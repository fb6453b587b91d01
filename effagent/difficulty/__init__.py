"""Difficulty estimation: estimators behind one protocol (see base.py)."""

from effagent.difficulty.base import Difficulty, Estimator, Message, Step, ToolCall

__all__ = ["Difficulty", "Estimator", "Message", "Step", "ToolCall"]


def build_estimator(config: object | None = None) -> Estimator:
    """The estimator a policy's ``difficulty`` section names: one estimator, or the weighted mean of several."""
    from effagent.difficulty.combine import WeightedEstimator, get_estimator

    refs = list(getattr(config, "estimators", None) or [])
    if not refs:
        return get_estimator("heuristic")
    if len(refs) == 1:
        return get_estimator(refs[0].name)
    return WeightedEstimator({r.name: r.weight for r in refs})


__all__ += ["build_estimator"]
