"""The Redis ledger's background thread: renews the holds of calls in flight (every third of their TTL) and
replays the journal once Redis answers; it ends with its ledger."""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import redis

from effagent.ledger.redis.common import log, unavailable

if TYPE_CHECKING:
    from effagent.ledger.redis.journal import Journal


def _maintain(ref: weakref.ref[HoldRenewer], stop: threading.Event, wake: threading.Event) -> None:
    """The background thread of a ledger: renews its holds, replays its journal; ends with the ledger."""
    while not stop.is_set():
        led = ref()
        if led is None:
            return
        tick = led._tick_s()
        del led
        wake.wait(tick)
        wake.clear()
        led = ref()
        if led is None or stop.is_set():
            return
        try:
            led._maintain()
        except Exception:  # keep renewing; a bug here must not end the thread silently
            log.exception("effagent ledger maintenance failed")
        del led


class HoldRenewer:
    """The background part of :class:`~effagent.ledger.redis.RedisLedger` (a mixin): holds to renew, the journal
    to replay, and the thread that does both. The ledger provides the attributes below, ``_event`` and
    ``_replay``."""

    client: redis.Redis
    key_prefix: str
    degraded: bool
    _renew: Any
    _journal: Journal
    _journal_dirty: bool
    _live: dict[str, tuple[list[str], int]]
    _live_lock: threading.Lock
    _next_renew: float
    _next_scan: float
    _bg: threading.Thread | None
    _bg_pid: int
    _bg_lock: threading.Lock
    _stop: threading.Event
    _wake: threading.Event

    def _ensure_background(self) -> None:
        pid = os.getpid()
        if self._bg is not None and self._bg_pid == pid and self._bg.is_alive():
            return
        with self._bg_lock:
            if self._stop.is_set() or (self._bg is not None and self._bg_pid == pid and self._bg.is_alive()):
                return
            self._bg_pid = pid
            self._bg = threading.Thread(target=_maintain, args=(weakref.ref(self), self._stop, self._wake),
                                        name=f"effagent-ledger-{self.key_prefix}", daemon=True)
            self._bg.start()

    def _kick(self) -> None:
        self._ensure_background()
        self._wake.set()

    def _renew_every_s(self) -> float:
        with self._live_lock:
            shortest = min((ttl for _, ttl in self._live.values()), default=None)
        return 1.0 if shortest is None else max(0.01, shortest / 3000)

    def _tick_s(self) -> float:
        return min(1.0, self._renew_every_s())

    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_renew and not self.degraded:
            self._next_renew = now + self._renew_every_s()
            self._renew_holds()
        if not self.degraded and (self._journal_dirty or now >= self._next_scan):
            self._next_scan = now + 5.0  # another worker on this machine may have journaled
            if self._journal_dirty or self._journal.pending():
                self._replay(block=False)

    def _renew_holds(self) -> None:
        with self._live_lock:
            items = list(self._live.items())
        if not items:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for rid, (keys, ttl_ms) in items:
                self._renew(keys=keys, args=[rid, ttl_ms], client=pipe)
            alive = pipe.execute()
        except redis.exceptions.RedisError as err:
            if not unavailable(err):
                raise
            log.debug("effagent: could not renew holds (%s); retrying", err)
            return
        for (rid, _), ok in zip(items, alive, strict=True):
            if int(ok) == 0:
                with self._live_lock:
                    lost = self._live.pop(rid, None)
                if lost is not None:  # not settled meanwhile: it expired before it was renewed
                    self._event("hold_lost", reservation=rid)
                    log.warning("effagent: a reservation (%s) expired while its call was in flight (this worker "
                                "did not renew it within ledger.redis.hold_ttl_s); its budget was not held", rid)

