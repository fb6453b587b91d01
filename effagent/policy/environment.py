"""``${VAR}`` / ``${VAR:-default}`` interpolation of a policy's values, and which of the values read are secrets
(masked in everything written out, :mod:`effagent.redact`)."""

from __future__ import annotations

import re
from typing import Any

from effagent.redact import url_secrets

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: fields whose ${VAR} values are not secrets (what to call and which file to write), and plain scalars
_NOT_SECRET_FIELDS = frozenset({"model", "path", "outcomes"})
_PLAIN = re.compile(r"(?i)[-+]?(\d[\d_]*\.?\d*(e[-+]?\d+)?|\.\d+|true|false|yes|no|on|off|null|none|~)?")


def _env_secrets(field: Any, value: str) -> list[str]:
    """The secret parts of a value read from the environment (see :mod:`effagent.redact`)."""
    if "://" in value:
        return url_secrets(value)
    if field in _NOT_SECRET_FIELDS or _PLAIN.fullmatch(value.strip()):
        return []
    return [value]


def _interpolate(value: str, env: dict[str, str], field: Any = None, secrets: set[str] | None = None) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            if secrets is not None:
                secrets.update(_env_secrets(field, env[name]))
            return env[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(sub, value)


def string_secrets(data: Any) -> set[str]:
    """URL userinfo and key-like query parameter values anywhere in ``data``."""
    if isinstance(data, str):
        return set(url_secrets(data)) if "://" in data else set()
    if isinstance(data, dict):
        return set().union(*(string_secrets(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(string_secrets(v) for v in data)) if data else set()
    return set()


def walk_env(data: Any, env: dict[str, str], path: tuple[Any, ...], errs: list[tuple[tuple[Any, ...], str]],
              secrets: set[str] | None = None) -> Any:
    if isinstance(data, dict):
        return {k: walk_env(v, env, path + (k,), errs, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [walk_env(v, env, path + (i,), errs, secrets) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        try:
            return _interpolate(data, env, path[-1] if path else None, secrets)
        except KeyError as e:
            errs.append((path, f"environment variable {e.args[0]} is not set; export it or write "
                               f"${{{e.args[0]}:-default}}"))
    return data

