"""The policies that ship with effagent: the one copy of each, installed with the package.

``balanced`` (the demo's default), ``frugal``, ``quality`` and ``gpu-qwen3`` are YAML files in this folder;
the examples and docs load them from here, so what a ``pip install`` gets is what the repository shows.
Copy one to start your own (``effagent.policies.text("balanced")``), or load it directly::

    from effagent import policies
    policy = policies.load("balanced")
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from effagent.errors import PolicyError
from effagent.policy import Policy, parse_policy

SUFFIX = ".yaml"


def _folder() -> Traversable:
    return resources.files(__name__)


def names() -> list[str]:
    """The shipped policy names, sorted (``balanced``, ``frugal``, ...)."""
    return sorted(p.name.removesuffix(SUFFIX) for p in _folder().iterdir() if p.name.endswith(SUFFIX))


def source(name: str) -> str:
    """Where a shipped policy lives, for messages (``effagent/policies/balanced.yaml``)."""
    return f"effagent/policies/{name}{SUFFIX}"


def text(name: str) -> str:
    """The YAML text of a shipped policy; PolicyError naming the shipped ones for an unknown name."""
    entry = _folder() / f"{name}{SUFFIX}"
    if not entry.is_file():
        raise PolicyError(name, [f"{name}: no shipped policy of that name; shipped: {', '.join(names())} "
                                 "(or pass the path of a policy file)"])
    return entry.read_text(encoding="utf-8")


def load(name: str, env: dict[str, str] | None = None) -> Policy:
    """Validate and return a shipped policy (``${VAR}`` read from ``env``, default the environment)."""
    return parse_policy(text(name), source=source(name), env=env)
