"""The default ledger: in process memory, guarded by a lock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

from effagent.ledger.base import (
    DEFAULT_RESERVATION_TTL_S,
    STEP_KINDS,
    Denial,
    GrantResult,
    Ledger,
    LedgerState,
    Reservation,
    ScopeLimit,
    StepRecord,
    Usage,
    over_limit,
    to_nano,
)

DEFAULT_MAX_RECORDS = 100_000
DEFAULT_MAX_RUNS = 50_000
_NO_THREAD = Usage()  # the thread total of a step outside any thread (read, never changed)


class InMemoryLedger(Ledger):
    """Totals per run, thread and any other scope (``user``, ``team``...), plus reservations, for one process.

    ``scopes`` are counted by every ``record`` (e.g. ``{"team": "research"}``); ``clock`` (epoch seconds) is
    what reservation expiry is measured with.

    Memory stays bounded in a long-running process: the ledger keeps the last ``max_records`` call records,
    and the totals and records of the ``max_runs`` most recently active runs (threads likewise); the oldest
    are dropped first. A run is active at every step, so only a run idle while ``max_runs`` others ran is
    forgotten. ``total()`` stays exact. None keeps everything. Workers that need every record, or more runs,
    share a :class:`~effagent.ledger.redis.RedisLedger`.
    """

    supports_reservations = True
    blocking_io = False  # in memory: the async methods answer at once

    def __init__(self, *, scopes: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 max_records: int | None = DEFAULT_MAX_RECORDS, max_runs: int | None = DEFAULT_MAX_RUNS) -> None:
        for name, v in (("max_records", max_records), ("max_runs", max_runs)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None (keep everything), got {v!r}")
        self._lock = threading.Lock()
        self._records: deque[StepRecord] = deque(maxlen=max_records)
        self._max_runs = max_runs
        # per run: its records, step numbers and total
        self._by_run: dict[str, list[StepRecord]] = {}
        self._steps: dict[str, set[int]] = {}  # per run: model/finalize step numbers
        # in order of last activity: an OrderedDict moves a key to the end and drops the first one in O(1)
        # (a plain dict re-inserting keys has to scan past the ones it removed to find its first)
        self._runs: OrderedDict[str, Usage] = OrderedDict()
        self._threads: OrderedDict[str, Usage] = OrderedDict()
        self._scopes: dict[tuple[str, str], Usage] = {}
        self._total = [0, 0, 0, 0.0, 0, 0, 0]  # input, output, reasoning, usd, calls, cache read, cache write
        self._static = {k: v for k, v in (scopes or {}).items() if k not in ("run", "thread")}
        self._clock = clock
        self._holds: dict[str, Reservation] = {}
        self._held: dict[tuple[str, str], list[int]] = {}  # (scope, key) -> [tokens, nano] held
        self._grants: dict[str, tuple[int, int, frozenset[str]]] = {}  # thread -> tokens, nano, grant ids

    # -- recording ------------------------------------------------------------------------------------
    def _add(self, rec: StepRecord, extra: Mapping[str, str]) -> None:
        self._records.append(rec)
        run, usage = rec.run_id, rec.usage
        runs = self._runs
        prev = runs.get(run)
        if prev is None:
            runs[run] = usage
            self._by_run[run] = [rec]
            self._steps[run] = {rec.step} if rec.kind in STEP_KINDS else set()
            if self._max_runs is not None and len(runs) > self._max_runs:
                self._forget_oldest_run()
        else:
            runs[run] = prev + usage
            runs.move_to_end(run)  # the most recently active run is last
            self._by_run[run].append(rec)
            if rec.kind in STEP_KINDS:
                self._steps[run].add(rec.step)
        if rec.thread_id is not None:
            threads = self._threads
            prev = threads.get(rec.thread_id)
            if prev is None:
                threads[rec.thread_id] = usage
                if self._max_runs is not None and len(threads) > self._max_runs:
                    threads.popitem(last=False)
            else:
                threads[rec.thread_id] = prev + usage
                threads.move_to_end(rec.thread_id)
        t = self._total
        t[0] += usage.input_tokens
        t[1] += usage.output_tokens
        t[2] += usage.reasoning_tokens
        t[3] += usage.cost_usd
        t[4] += usage.calls
        t[5] += usage.cache_read_tokens
        t[6] += usage.cache_write_tokens
        for scope, key in extra.items():
            if scope in ("run", "thread"):
                continue
            k = (scope, key)
            self._scopes[k] = self._scopes.get(k, Usage()) + usage

    def _forget_oldest_run(self) -> None:  # lock held
        oldest, _ = self._runs.popitem(last=False)
        self._by_run.pop(oldest, None)
        self._steps.pop(oldest, None)

    def record(self, rec: StepRecord) -> None:
        with self._lock:
            self._add(rec, self._static)

    def run_usage(self, run_id: str) -> Usage:
        with self._lock:
            return self._runs.get(run_id) or Usage()

    def thread_usage(self, thread_id: str) -> Usage:
        with self._lock:
            return self._threads.get(thread_id) or Usage()

    def scope_usage(self, scope: str, key: str) -> Usage:
        if scope == "run":
            return self.run_usage(key)
        if scope == "thread":
            return self.thread_usage(key)
        with self._lock:
            return self._scopes.get((scope, key)) or Usage()

    def records(self, run_id: str | None = None) -> list[StepRecord]:
        """The records kept (all of them, oldest first, or one run's)."""
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
            run = self._runs.get(run_id) or Usage()
            steps = self._steps.get(run_id)
            if thread_base is not None:
                thread = thread_base
            elif thread_id is not None:
                thread = self._threads.get(thread_id) or Usage()
            else:
                thread = _NO_THREAD
            return LedgerState(run=run, thread=thread, steps=len(steps) if steps else 0)

    def total(self) -> Usage:
        """Everything recorded since the ledger was made (forgotten runs included)."""
        with self._lock:
            return Usage(input_tokens=self._total[0], output_tokens=self._total[1], reasoning_tokens=self._total[2],
                         cost_usd=self._total[3], calls=self._total[4], cache_read_tokens=self._total[5],
                         cache_write_tokens=self._total[6])

    # -- reservations -------------------------------------------------------------------------------
    def _spent(self, scope: str, key: str) -> Usage:  # lock held
        if scope == "run":
            return self._runs.get(key) or Usage()
        if scope == "thread":
            return self._threads.get(key) or Usage()
        return self._scopes.get((scope, key)) or Usage()

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

    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, ScopeLimit],
                ttl_s: float = DEFAULT_RESERVATION_TTL_S, why: list[Denial] | None = None) -> Reservation | None:
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
                over = over_limit(limit, spent.total_tokens, to_nano(spent.cost_usd), held[0], held[1], tokens, nano)
                if over:
                    if why is not None:
                        why.append(Denial(scope=scope, key=key, detail=over))
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
            self._add(rec, {**self._static, **reservation.scopes})  # _add counts run and thread from the record

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._drop(reservation.id)

    # -- grants ---------------------------------------------------------------------------------------
    def add_grant(self, thread_id: str, grant_id: str, tokens: int, usd: float,
                  cap: tuple[int, float] | None = None) -> GrantResult:
        with self._lock:
            tok, nano, ids = self._grants.get(thread_id, (0, 0, frozenset()))
            if grant_id in ids:
                return "seen"
            if cap is not None and (tok + tokens > cap[0] or nano + to_nano(usd) > to_nano(cap[1])):
                return "over"
            self._grants[thread_id] = (tok + int(tokens), nano + to_nano(usd), ids | {grant_id})
            return "added"

    def granted(self, thread_id: str) -> tuple[int, float]:
        with self._lock:
            tok, nano, _ = self._grants.get(thread_id, (0, 0, frozenset()))
            return tok, nano / 1e9

    # -- seeding ----------------------------------------------------------------------------------------
    def seed(self, scope: str, key: str, usage: Usage, steps: int = 0) -> None:
        """Start a scope's total at ``usage``: what a shared store last said the scope had spent (budget checks
        count it like recorded usage; it is no record and not in ``total()``). ``steps``: a run's step count.
        A degraded :class:`~effagent.ledger.redis.RedisLedger` seeds its local ledger so that a scope exhausted
        in Redis stays exhausted while Redis is unreachable."""
        with self._lock:
            if scope == "run":
                self._runs[key] = usage
                self._by_run.setdefault(key, [])
                self._steps.setdefault(key, set()).update(range(steps))
            elif scope == "thread":
                self._threads[key] = usage
            else:
                self._scopes[(scope, key)] = usage
