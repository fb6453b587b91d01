"""Secrets never leave the process: one place that masks them in every text effagent writes out.

What counts as a secret:

- by value, the secrets a policy holds (:meth:`effagent.policy.Policy.redact`): every tier's ``api_key``, every
  value read from ``${VAR}`` (except in ``model`` and file ``path`` fields, numbers and booleans; a value that is
  a URL gives only its userinfo and key-like query parameters), and the userinfo and key-like query parameters
  of every URL in the policy; each also in its JSON-escaped and URL-quoted spelling;
- by shape, in any text: URL userinfo (``https://user:pw@host`` -> ``https://[REDACTED]@host``), query
  parameters whose name looks like a key (``?key=``, ``access_token=``, ``sig=``, ...), ``sk-...`` keys,
  ``Bearer ...`` tokens and ``api_key=...`` / ``Authorization: ...`` pairs.

Values shorter than :data:`MIN_SECRET` characters are masked by shape only (replacing every "abc" in a text
would garble it and hides nothing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "[REDACTED]"
MIN_SECRET = 4

_KEYLIKE = r"[^=&#\s\"'<>]*(?:key|token|secret|passw|pwd|sig|auth|credential|session)[^=&#\s\"'<>]*"
_KEYLIKE_NAME = re.compile(rf"(?i){_KEYLIKE}")
_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # scheme://userinfo@ (userinfo cannot hold / ? # @ unescaped)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#\"'<>]+@"), rf"\1{MASK}@"),
    # ?key=... &access_token=... ;sig=...
    (re.compile(rf"(?i)([?&;]{_KEYLIKE}=)[^&#\s\"'<>]+"), rf"\1{MASK}"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), MASK),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-~+/=]{8,}"), rf"\1{MASK}"),
    (re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key|password|secret)[\"']?\s*[:=]\s*[\"']?)"
                r"(?!\[REDACTED\])[^\s\"',}&]+"), rf"\1{MASK}"),
]


def redact_shapes(text: str) -> str:
    """Mask what looks like a secret in ``text`` (URL userinfo, key-like query parameters, keys, tokens)."""
    for pattern, repl in _SHAPES:
        text = pattern.sub(repl, text)
    return text


def url_secrets(value: str) -> list[str]:
    """The secret parts of a URL: its userinfo (user and password) and the values of key-like query
    parameters. ``[]`` for text that is not a URL."""
    out: list[str] = []
    if "://" not in value:
        return out
    try:
        parts = urlsplit(value.strip())
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return out
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        out += [unquote(password), password, unquote(user), user, userinfo]
    out += [v for k, v in query if _KEYLIKE_NAME.fullmatch(k)]
    return [v for v in out if v]


class Redactor:
    """Masks known secret values (and every secret shape) in text and in JSON-like data."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        spellings: set[str] = set()
        for v in values:
            if not isinstance(v, str) or len(v) < MIN_SECRET:
                continue
            spellings.update({v, json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1], quote(v, safe="")})
        self.values: tuple[str, ...] = tuple(sorted((s for s in spellings if len(s) >= MIN_SECRET),
                                                    key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return redact_shapes(text)

    def __or__(self, other: Redactor) -> Redactor:
        r = Redactor()
        r.values = tuple(sorted(set(self.values) | set(other.values), key=len, reverse=True))
        return r

    def data(self, obj: Any) -> Any:
        """``obj`` with every string in it (dict keys and values, list items) masked."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self(k) if isinstance(k, str) else k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj


#: masks secret shapes only (no known values): for text that did not come through a policy
SHAPES = Redactor()
