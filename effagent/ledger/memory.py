"""The default ledger: in process memory, guarded by a lock."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from effagent._trusted import trusted
from effagent.ledger.base import (
    DEFAULT_RESERVATION_TTL_S,
    STEP_KINDS,
    Ledger,
    LedgerState,
    Reservation,
    StepRecord,
    Usage,
    over_limit,
    record_scopes,
    to_nano,
    zero_usage,
)

if TYPE_CHECKING:
    from effagent.policy import Limit


class InMemoryLedger(Ledger):
    """Totals per run, thread and any other scope (``user``, ``team``...), plus reservations, for one process.

    ``scopes`` are counted by every ``record`` (e.g. ``{"team": "research"}``); ``clock`` (epoch seconds) is
    what reservation expiry is measured with.
    """

    supports_reservations = True

    def __init__(self, *, scopes: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._records: list[StepRecord] = []
        self._by_run: dict[str, list[StepRecord]] = defaultdict(list)
        self._steps: dict[str, set[int]] = defaultdict(set)  # per run: model/finalize step numbers
        self._runs: dict[str, Usage] = defaultdict(Usage)
        self._threads: dict[str, Usage] = defaultdict(Usage)
        self._scopes: dict[tuple[str, str], Usage] = {}
        self._static = {k: v for k, v in (scopes or {}).items() if k not in ("run", "thread")}
        self._clock = clock
        self._holds: dict[str, Reservation] = {}
        self._held: dict[tuple[str, str], list[int]] = {}  # (scope, key) -> [tokens, nano] held

    # -- recording ------------------------------------------------------------------------------------
    def _add(self, rec: StepRecord, extra: Mapping[str, str]) -> None:
        self._records.append(rec)
        self._by_run[rec.run_id].append(rec)
        if rec.kind in STEP_KINDS:
            self._steps[rec.run_id].add(rec.step)
        self._runs[rec.run_id] = self._runs[rec.run_id] + rec.usage
        if rec.thread_id is not None:
            self._threads[rec.thread_id] = self._threads[rec.thread_id] + rec.usage
        for scope, key in extra.items():
            if scope in ("run", "thread"):
                continue
            k = (scope, key)
            self._scopes[k] = self._scopes.get(k, Usage()) + rec.usage

    def record(self, rec: StepRecord) -> None:
        with self._lock:
            self._add(rec, self._static)

    def run_usage(self, run_id: str) -> Usage:
        with self._lock:
            return self._runs.get(run_id) or zero_usage()

    def thread_usage(self, thread_id: str) -> Usage:
        with self._lock:
            return self._threads.get(thread_id) or zero_usage()

    def scope_usage(self, scope: str, key: str) -> Usage:
        if scope == "run":
            return self.run_usage(key)
        if scope == "thread":
            return self.thread_usage(key)
        with self._lock:
            return self._scopes.get((scope, key), Usage())

    def records(self, run_id: str | None = None) -> list[StepRecord]:
        with self._lock:
            if run_id is None:
                return list(self._records)
            return list(self._by_run.get(run_id, ()))

    def steps(self, run_id: str) -> int:  # O(1): the base class scans the run's records
        with self._lock:
            steps = self._steps.get(run_id)
            return len(steps) if steps else 0

    def state(self, run_id: str, thread_id: str | None = None, thread_base: Usage | None = None) -> LedgerState:
        """One lock round instead of three (this runs before every model step)."""
        with self._lock:
            run = self._runs.get(run_id) or zero_usage()
            steps = self._steps.get(run_id)
            if thread_base is not None:
                thread = thread_base
            elif thread_id is not None:
                thread = self._threads.get(thread_id) or zero_usage()
            else:
                thread = zero_usage()
            return trusted(LedgerState, run=run, thread=thread, steps=len(steps) if steps else 0)

    def total(self) -> Usage:
        with self._lock:
            return sum((u for u in self._runs.values()), Usage())

    # -- reservations -------------------------------------------------------------------------------
    def _spent(self, scope: str, key: str) -> Usage:  # lock held
        if scope == "run":
            return self._runs.get(key, Usage())
        if scope == "thread":
            return self._threads.get(key, Usage())
        return self._scopes.get((scope, key), Usage())

    def _drop(self, res_id: str) -> bool:  # lock held
        res = self._holds.pop(res_id, None)
        if res is None:
            return False
        nano = to_nano(res.usd)
        for k in res.scopes.items():
            held = self._held.get(k)
            if held is not None:
                held[0] -= res.tokens
                held[1] -= nano
                if held[0] <= 0 and held[1] <= 0:
                    del self._held[k]
        return True

    def _expire(self) -> None:  # lock held
        if not self._holds:
            return
        now = self._clock()
        for res_id in [r.id for r in self._holds.values() if r.expires_at <= now]:
            self._drop(res_id)

    def reserved(self, scope: str, key: str) -> tuple[int, float]:
        with self._lock:
            self._expire()
            tokens, nano = self._held.get((scope, key), (0, 0))
            return tokens, nano / 1e9

    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, Limit],
                ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation | None:
        if tokens < 0 or usd < 0:
            raise ValueError(f"a reservation cannot be negative (tokens={tokens}, usd={usd})")
        nano = to_nano(usd)
        scopes = {str(k): str(v) for k, v in scopes.items()}
        with self._lock:
            self._expire()
            for scope, key in scopes.items():
                limit = limits.get(scope)
                if limit is None:
                    continue
                spent = self._spent(scope, key)
                held = self._held.get((scope, key), (0, 0))
                if over_limit(limit, spent.total_tokens, to_nano(spent.cost_usd), held[0], held[1], tokens, nano):
                    return None
            res = Reservation(scopes=scopes, tokens=tokens, usd=usd, expires_at=self._clock() + ttl_s,
                              backend="memory")
            self._holds[res.id] = res
            for k in scopes.items():
                held = self._held.setdefault(k, [0, 0])
                held[0] += tokens
                held[1] += nano
            return res

    def settle(self, reservation: Reservation, rec: StepRecord) -> None:
        with self._lock:
            self._drop(reservation.id)
            self._add(rec, {**self._static, **record_scopes(rec, reservation.scopes)})

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._drop(reservation.id)
