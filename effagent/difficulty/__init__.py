"""Difficulty estimation: estimators behind one protocol (see base.py)."""

from effagent.difficulty.base import Difficulty, Estimator, Message, Step, ToolCall

__all__ = ["Difficulty", "Estimator", "Message", "Step", "ToolCall"]


def build_estimator(config: object | None = None, policy: object | None = None) -> Estimator:
    """The estimator a policy's ``difficulty`` section names: one estimator, or the weighted mean of several
    (``policy`` is needed by estimators that call a tier, e.g. ``probe``; ``learned`` reads its ``path``).
    No section: the default estimator (``combine.DEFAULT_ESTIMATOR``)."""
    from effagent.difficulty.combine import DEFAULT_ESTIMATOR, WeightedEstimator, get_estimator

    refs = list(getattr(config, "estimators", None) or [])
    if not refs:
        return get_estimator(DEFAULT_ESTIMATOR)

    def options(ref: object) -> dict[str, object]:
        opts = dict(getattr(ref, "options", None) or {})
        path = getattr(ref, "path", None)
        if path:
            opts["path"] = path
        return opts

    if len(refs) == 1:
        return get_estimator(refs[0].name, policy, options(refs[0]))  # type: ignore[arg-type]
    return WeightedEstimator({r.name: r.weight for r in refs}, policy=policy,  # type: ignore[arg-type]
                             options={r.name: options(r) for r in refs})


__all__ += ["build_estimator"]
