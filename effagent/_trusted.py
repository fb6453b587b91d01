"""Build pydantic records from values effagent has already checked, on the per-step hot path.

``BaseModel.model_construct`` skips validation but still walks every field (aliases, defaults) on each
call, which shows up when a model step builds a dozen records. :func:`trusted` does the same job from a
per-class template: defaults are copied from it, default factories are called, nothing is validated.
Callers pass only field names with values of the declared types (they come from the validated policy,
the ledger or clamped counts); a call that gives every field hands its keyword dict to the instance as is.
Private attributes get their defaults; models with a post-init hook of their own (or private default
factories) go through ``model_construct``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic._internal._model_construction import init_private_attributes

M = TypeVar("M", bound=BaseModel)
_MISSING = object()
# (field defaults, their number, default factories, private attribute defaults)
_Plan = tuple[dict[str, Any], int, tuple[tuple[str, Callable[[], Any]], ...], dict[str, Any] | None]
_plans: dict[type, _Plan | None] = {}
_set = object.__setattr__


def _plan(cls: type[BaseModel]) -> _Plan | None:
    private: dict[str, Any] | None = None
    if cls.__pydantic_post_init__:
        if cls.model_post_init is not init_private_attributes:  # a post-init hook of the model's own
            return None
        private = {}
        for name, attr in cls.__private_attributes__.items():
            if attr.default_factory is not None:
                return None
            private[name] = attr.default
    if cls.__pydantic_root_model__ or cls.model_config.get("extra") == "allow":
        return None
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, field in cls.__pydantic_fields__.items():
        if field.default_factory is not None:
            template[name] = _MISSING
            factories.append((name, field.default_factory))  # type: ignore[arg-type]
        elif field.is_required():
            template[name] = _MISSING
        else:
            template[name] = field.default
    return template, len(template), tuple(factories), private


def trusted(cls: type[M], /, **values: Any) -> M:
    """``cls(**values)`` without validation: ``values`` must hold every required field, correctly typed."""
    try:
        plan = _plans[cls]
    except KeyError:
        plan = _plans[cls] = _plan(cls)
    if plan is None:
        return cls.model_construct(**values)
    template, fields, factories, private = plan
    if len(values) == fields:  # every field given: the call's own kwargs dict becomes the instance's
        data = values
    else:
        data = {**template, **values}
        for name, factory in factories:
            if name not in values:
                data[name] = factory()
    m = cls.__new__(cls)
    _set(m, "__dict__", data)
    _set(m, "__pydantic_fields_set__", set(values))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None if private is None else dict(private))
    return m
