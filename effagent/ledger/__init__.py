"""Token and dollar accounting."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from effagent.ledger.base import Ledger, LedgerState, Reservation, StepRecord, Usage
from effagent.ledger.memory import InMemoryLedger

if TYPE_CHECKING:
    from effagent.policy import Policy

__all__ = ["InMemoryLedger", "Ledger", "LedgerState", "Reservation", "StepRecord", "Usage", "ledger_from_policy"]


def ledger_from_policy(policy: Policy, **options: Any) -> Ledger:
    """The ledger the policy's ``ledger:`` section asks for.

    ``backend: memory`` (the default) -> :class:`InMemoryLedger`; ``backend: redis`` -> a
    :class:`~effagent.ledger.redis.RedisLedger` on ``ledger.redis.url`` (needs ``pip install 'effagent[redis]'``).
    ``options`` go to the RedisLedger constructor (e.g. ``retry_s``, ``on_event``, ``client``) and win over the
    policy's settings. Without ``ledger.redis.key_prefix`` the prefix is :func:`key_prefix_for` the policy's
    ``name``. With ``on_unavailable: fail_closed`` an unreachable Redis raises
    :class:`~effagent.errors.LedgerUnavailable` here; with ``fail_open`` the ledger starts degraded (warned once,
    ``ledger.degraded`` is True).
    """
    cfg = policy.ledger
    if cfg.backend == "memory":  # a team named in the policy is counted (and capped) within this process
        return InMemoryLedger(scopes={"team": cfg.redis.team} if cfg.redis.team else None)
    try:
        from effagent.ledger.redis import RedisLedger
    except ImportError as err:
        from effagent.errors import LedgerUnavailable

        raise LedgerUnavailable(
            f"the policy asks for ledger.backend: redis but the redis client is not installed ({err}); "
            "install it with: pip install 'effagent[redis]', or set ledger.backend: memory") from err
    r = cfg.redis
    settings: dict[str, Any] = {
        "key_prefix": r.key_prefix or key_prefix_for(policy.name), "on_unavailable": r.on_unavailable,
        "team": r.team, "window": r.window, "socket_timeout_s": r.timeout_s, "hold_ttl_s": r.hold_ttl_s,
        "journal": r.journal, "run_ttl_s": r.run_ttl_s, "thread_ttl_s": r.thread_ttl_s,
        "totals_ttl_s": r.totals_ttl_s}
    return RedisLedger(r.url, **{**settings, **options})


def key_prefix_for(policy_name: str) -> str:
    """The Redis key prefix of a policy that sets no ``ledger.redis.key_prefix``: ``effagent:NAME`` (braces,
    which would break the Redis Cluster hash tag, and blanks become ``-``)."""
    return "effagent:" + (re.sub(r"[{}\s]+", "-", policy_name).strip("-") or "policy")
