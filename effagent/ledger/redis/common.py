"""What the Redis ledger's parts share: its limits and defaults, and small helpers (a URL fit for messages,
which Redis errors mean "unavailable", a usage from a totals hash)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from effagent.ledger.base import NANO, Usage

log = logging.getLogger("effagent.ledger")

MAX_COUNT = 2**53  # larger token/nano-dollar counts are refused (Lua numbers are doubles; HINCRBY is int64)
FIELDS = ("in", "out", "rsn", "nusd", "calls", "crd", "cwr")
DAY = 86400
DEFAULT_TIMEOUT_S = 1.5
DEFAULT_HOLD_TTL_S = 30.0
DEFAULT_RUN_TTL_S = 7 * DAY
DEFAULT_THREAD_TTL_S = 30 * DAY
DEFAULT_TOTALS_TTL_S = 400 * DAY
MAX_REMEMBERED = 10_000  # (scope, key) totals a fail-open ledger remembers for its degraded start


def safe_url(url: str) -> str:
    """The URL without its password (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            host = parts.hostname or ""
            user = parts.username or ""
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable url>"
    return url


def unavailable(err: Exception) -> bool:
    """Errors that mean 'the store cannot serve us now' (as opposed to a bug)."""
    if isinstance(err, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                  | redis.exceptions.ReadOnlyError):
        return True
    return isinstance(err, redis.exceptions.ResponseError) and str(err).startswith(("OOM", "LOADING", "MASTERDOWN",
                                                                                    "CLUSTERDOWN", "TRYAGAIN", "BUSY"))


def usage_of(vals: list[Any]) -> Usage:
    i, o, r, nusd, calls, crd, cwr = (int(v) if v is not None else 0 for v in (*vals, None, None)[:7])
    return Usage(input_tokens=max(0, i), output_tokens=max(0, o), reasoning_tokens=max(0, r),
                 cache_read_tokens=max(0, crd), cache_write_tokens=max(0, cwr),
                 cost_usd=max(0, nusd) / NANO, calls=max(0, calls))
