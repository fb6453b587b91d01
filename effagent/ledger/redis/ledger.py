"""The Redis ledger itself: keys, what this worker saw, faults (fail open or closed), the journal route,
writing, reading, reservations and grants (see :mod:`effagent.ledger.redis`)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from effagent.errors import LedgerUnavailable
from effagent.ledger.base import (
    NANO,
    STEP_KINDS,
    Denial,
    GrantResult,
    Ledger,
    LedgerState,
    Reservation,
    ScopeLimit,
    StepRecord,
    Usage,
    new_id,
    over_limit,
    record_scopes,
    to_nano,
)
from effagent.ledger.memory import InMemoryLedger
from effagent.ledger.redis.common import (
    DAY,
    DEFAULT_HOLD_TTL_S,
    DEFAULT_RUN_TTL_S,
    DEFAULT_THREAD_TTL_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOTALS_TTL_S,
    FIELDS,
    MAX_COUNT,
    MAX_REMEMBERED,
    log,
    safe_url,
    unavailable,
    usage_of,
)
from effagent.ledger.redis.holds import HoldRenewer
from effagent.ledger.redis.journal import Journal, default_journal
from effagent.ledger.redis.scripts import GRANT, HELD, RECORD, RELEASE, RENEW, RESERVE

T = TypeVar("T")


class RedisLedger(HoldRenewer, Ledger):
    """A ledger in Redis, shared by every worker that uses the same ``url`` and ``key_prefix``.

    ``team``: every record also counts against the ``team`` scope (``{"team": team}``);
    ``window``: ``"daily"`` keeps user/team totals per UTC day; ``run_ttl_s`` / ``thread_ttl_s`` /
    ``totals_ttl_s``: how long a run's totals and records / a thread's total / a user or team total (no window)
    are kept after their last write (0 = forever); ``hold_ttl_s``: a reservation expires this long after its
    worker last renewed it (a live worker renews its holds every third of it, so only a dead worker's holds
    expire); ``socket_timeout_s``: the most one Redis call waits (with the pool wait and connect, a frozen Redis
    holds a call at most about a second longer); ``journal``: the file records that Redis could not take are
    kept in until they are written (default :func:`default_journal`); ``retry_s``: how often a degraded
    (fail-open) ledger tries Redis again; ``max_connections``: the connections this process's threads share,
    opened as needed (a call waits at most a second for one when all are busy, then counts as unavailable).
    """

    supports_reservations = True
    windowed_scopes: tuple[str, ...] = ("user", "team")

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "effagent",
                 on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open", team: str | None = None,
                 window: Literal["none", "daily"] = "none", run_ttl_s: int = DEFAULT_RUN_TTL_S,
                 thread_ttl_s: int = DEFAULT_THREAD_TTL_S, totals_ttl_s: int = DEFAULT_TOTALS_TTL_S,
                 hold_ttl_s: float = DEFAULT_HOLD_TTL_S, journal: str | os.PathLike[str] | None = None,
                 retry_s: float = 30.0, socket_timeout_s: float = DEFAULT_TIMEOUT_S, max_connections: int = 256,
                 client: redis.Redis | None = None, on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if "{" in key_prefix or "}" in key_prefix or not key_prefix:
            raise ValueError(f"key_prefix {key_prefix!r}: give a non-empty prefix without braces (it is put "
                             "inside a Redis Cluster hash tag {...})")
        if not hold_ttl_s > 0 or not socket_timeout_s > 0:
            raise ValueError(f"hold_ttl_s ({hold_ttl_s}) and socket_timeout_s ({socket_timeout_s}) must be > 0")
        self.url = url
        self.key_prefix = key_prefix
        self.on_unavailable = on_unavailable
        self.team = team
        self.window = window
        self.run_ttl_s = int(run_ttl_s)
        self.thread_ttl_s = int(thread_ttl_s)
        self.totals_ttl_s = int(totals_ttl_s)
        self.window_ttl_s = 3 * DAY
        self.hold_ttl_s = float(hold_ttl_s)
        self.socket_timeout_s = float(socket_timeout_s)
        self.retry_s = retry_s
        self.events: list[dict[str, Any]] = []
        self.degraded = False
        self._on_event = on_event
        self._clock = clock
        self._p = "{" + key_prefix + "}"
        self._lock = threading.RLock()
        self._static = {"team": team} if team else {}
        self._local = InMemoryLedger(scopes=self._static)
        self._warned = False
        self._last_probe = 0.0
        # what this worker last saw in Redis, per (scope, key): a fail-open ledger starts its local one from it
        self._seen: OrderedDict[tuple[str, str], Usage] = OrderedDict()
        self._seen_steps: OrderedDict[str, int] = OrderedDict()
        self._seen_lock = threading.Lock()
        # the journal of records Redis could not take
        self._journal = Journal(Path(journal).absolute() if journal else default_journal(key_prefix), key_prefix)
        self._journal_dirty = False
        self._journal_gen = 0
        self._journal_warned = False
        self._replaying = threading.Lock()
        # holds this worker renews while their calls run: reservation id -> (hold keys, ttl ms)
        self._live: dict[str, tuple[list[str], int]] = {}
        self._live_lock = threading.Lock()
        self._next_renew = 0.0
        self._next_scan = 0.0
        self._bg: threading.Thread | None = None
        self._bg_pid = 0
        self._bg_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        if client is None:
            # every wait is bounded: the pool wait (all connections busy), the connect, the reply; one retry on a
            # dropped connection (a restarted server), none on a timeout (a frozen one: waiting again helps no one)
            t = self.socket_timeout_s
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=min(1.0, t), socket_timeout=t,
                socket_connect_timeout=min(0.5, t),
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
                retry_on_error=[redis.exceptions.ConnectionError], health_check_interval=30)
            client = redis.Redis(connection_pool=pool)
        self.client = client
        self._reserve = client.register_script(RESERVE)
        self._record = client.register_script(RECORD)
        self._release = client.register_script(RELEASE)
        self._held = client.register_script(HELD)
        self._renew = client.register_script(RENEW)
        self._grant = client.register_script(GRANT)
        self._run(lambda: self.client.ping(), lambda: True)  # fail closed now, or start degraded
        if not self.degraded:
            self._expire_legacy_keys()
        if self._journal.pending():  # a worker restarted after a crash: write what it journaled
            self._journal_dirty = True
            if not self.degraded:
                self._replay()
            if self._journal_dirty:
                self._ensure_background()

    def _expire_legacy_keys(self) -> None:
        """Earlier versions kept ``{p}:runs`` (a set) forever; give it the run TTL (it is no longer written)."""
        old = f"{self._p}:runs"
        with contextlib.suppress(redis.exceptions.RedisError):
            if self.run_ttl_s > 0 and self.client.ttl(old) == -1:
                self.client.expire(old, self.run_ttl_s)

    # -- keys -----------------------------------------------------------------------------------------
    def _suffix(self, scope: str, now: float | None = None) -> str:
        if self.window == "daily" and scope in self.windowed_scopes:
            return ":" + time.strftime("%Y%m%d", time.gmtime(self._clock() if now is None else now))
        return ""

    def _use_key(self, scope: str, key: str, now: float | None = None) -> str:
        return f"{self._p}:use:{scope}:{key}{self._suffix(scope, now)}"

    def _hold_keys(self, use_key: str) -> list[str]:
        base = use_key[len(self._p) + len(":use:"):]
        return [f"{self._p}:rz:{base}", f"{self._p}:rh:{base}"]

    def _ttl(self, scope: str) -> int:
        if scope == "run":
            return self.run_ttl_s
        if scope == "thread":
            return self.thread_ttl_s
        return self.window_ttl_s if self._suffix(scope) else self.totals_ttl_s

    @property
    def journal(self) -> Path:
        """The file records that Redis could not take are kept in until they are written."""
        return self._journal.path

    def journaled(self) -> int:
        """How many of this ledger's records wait in the journal (any worker's on this machine)."""
        return len(self._journal.entries())

    # -- what this worker saw -------------------------------------------------------------------------
    def _remember(self, scope: str, key: str, usage: Usage) -> None:
        with self._seen_lock:
            self._seen[(scope, key)] = usage
            self._seen.move_to_end((scope, key))
            if len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)

    def _remember_spent(self, scope: str, key: str, tokens: int, nusd: int) -> None:
        with self._seen_lock:
            prev = self._seen.get((scope, key))
        if prev is not None and prev.total_tokens == tokens and to_nano(prev.cost_usd) == nusd:
            return
        self._remember(scope, key, Usage(input_tokens=max(0, tokens), cost_usd=max(0, nusd) / NANO,
                                         calls=prev.calls if prev is not None else 0))

    def _remember_steps(self, run_id: str, steps: int) -> None:
        with self._seen_lock:
            self._seen_steps[run_id] = steps
            self._seen_steps.move_to_end(run_id)
            if len(self._seen_steps) > MAX_REMEMBERED:
                self._seen_steps.popitem(last=False)

    def _seeded_local(self) -> InMemoryLedger:
        """A local ledger that starts from the totals this worker last saw in Redis."""
        local = InMemoryLedger(scopes=self._static)
        with self._seen_lock:
            seen, steps = list(self._seen.items()), dict(self._seen_steps)
        for (scope, key), usage in seen:
            local.seed(scope, key, usage, steps=steps.get(key, 0) if scope == "run" else 0)
        return local

    # -- faults ---------------------------------------------------------------------------------------
    def _event(self, kind: str, **info: Any) -> None:
        ev = {"ts": time.time(), "event": kind, **info}
        self.events.append(ev)
        if len(self.events) > 2000:  # a long outage journals many records: keep the latest
            del self.events[:1000]
        if self._on_event is not None:
            try:
                self._on_event(kind, ev)
            except Exception:  # a telemetry hook must not break accounting
                log.exception("effagent ledger on_event hook failed")

    def _fail(self, err: Exception) -> None:
        if self.on_unavailable == "fail_closed":
            raise LedgerUnavailable(
                f"the Redis ledger at {safe_url(self.url)} is unavailable ({type(err).__name__}: {err}). "
                "Check that redis-server is running and reachable from this machine at ledger.redis.url "
                "(host, port, password, TLS, firewall), or set ledger.redis.on_unavailable: fail_open to go on "
                "with a per-process ledger while it is down.") from err
        with self._lock:
            if self.degraded:
                return
            self._local = self._seeded_local()
            self.degraded = True
            self._last_probe = time.monotonic()
            self._event("degraded", error=f"{type(err).__name__}: {err}", url=safe_url(self.url))
            msg = (f"effagent: the Redis ledger at {safe_url(self.url)} is unavailable ({type(err).__name__}: {err}); "
                   f"failing open: budgets are now counted per process, from the last totals this worker saw, "
                   f"until it is back (retry every {self.retry_s:g}s). Check redis-server, or set "
                   "ledger.redis.on_unavailable: fail_closed.")
            log.warning(msg)
            if not self._warned:
                self._warned = True
                warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _recover(self) -> bool:
        """With the lock held: try Redis again (at most every ``retry_s``); on success write the records kept
        meanwhile and leave degraded mode."""
        now = time.monotonic()
        if now - self._last_probe < self.retry_s:
            return False
        self._last_probe = now
        try:
            self.client.ping()
        except redis.exceptions.RedisError as err:
            if not unavailable(err):
                raise
            return False
        if self._journal_dirty and not self._replay(announce=False)[1]:
            return False
        self.degraded = False
        self._local = InMemoryLedger(scopes=self._static)
        self._event("recovered", url=safe_url(self.url))
        log.warning("effagent: the Redis ledger at %s is back; the records kept locally were written to it",
                    safe_url(self.url))
        return True

    def _run(self, remote: Callable[[], T], local: Callable[[], T]) -> T:
        for _ in range(2):
            if not self.degraded:
                try:
                    out = remote()
                except redis.exceptions.RedisError as err:
                    if not unavailable(err):
                        raise
                    self._fail(err)
                else:
                    if self._journal_dirty:  # Redis answers again: the background thread writes the journal
                        self._kick()
                    return out
            with self._lock:
                if self.degraded and not self._recover():
                    return local()
        with self._lock:
            return local()

    def reconnect(self) -> bool:
        """Try Redis now (a degraded ledger otherwise retries every ``retry_s``). True when connected."""
        with self._lock:
            if not self.degraded:
                return True
            self._last_probe = 0.0
            return self._recover()

    # -- the journal ----------------------------------------------------------------------------------
    def _keep(self, rec: StepRecord, scopes: Mapping[str, str], res: Reservation | None,
              err: BaseException | None) -> None:
        """Journal a record Redis could not take (fail_closed, or a degraded fail_open ledger)."""
        entry = {"v": 1, "id": rec.id, "prefix": self.key_prefix, "scopes": dict(scopes),
                 "record": rec.model_dump(mode="json"),
                 "reservation": res.model_dump(mode="json") if res is not None and res.backend == "redis" else None,
                 "ts": time.time()}
        self._journal_gen += 1
        on_disk = self._journal.append(entry)
        self._journal_dirty = True
        self._ensure_background()
        if self.degraded:  # fail_open: the 'degraded' warning and event said it already
            return
        where = str(self._journal.path) if on_disk else f"memory ({self._journal.unwritable})"
        self._event("journaled", record=rec.id, run=rec.run_id, step=rec.step, call=rec.kind, journal=where,
                    error=f"{type(err).__name__}: {err}" if err is not None else None)
        if not self._journal_warned:
            self._journal_warned = True
            msg = (f"effagent: the Redis ledger at {safe_url(self.url)} could not take a record "
                   f"({type(err).__name__}: {err}); the call was made, so its record is kept in {where} and "
                   "written to Redis once it answers again (each record once, by its id).")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _replay(self, *, block: bool = True, announce: bool = True) -> tuple[int, bool]:
        """Write the journaled records to Redis, oldest first, each once (by id), freeing their holds.
        Returns (records written, whether none is left)."""
        got = self._replaying.acquire(timeout=30) if block else self._replaying.acquire(blocking=False)
        if not got:
            return 0, False
        try:
            gen = self._journal_gen
            entries = self._journal.entries()
            done: set[str] = set()
            complete = True
            for e in entries:
                try:
                    rec = StepRecord.model_validate(e["record"])
                    res = Reservation.model_validate(e["reservation"]) if e.get("reservation") else None
                    scopes = {str(k): str(v) for k, v in dict(e["scopes"]).items()}
                except (KeyError, TypeError, ValueError) as err:
                    log.error("effagent: journal entry %s is not a record (%s); dropped", e.get("id"), err)
                    done.add(str(e.get("id")))
                    continue
                try:
                    self._write(rec, scopes, res)
                except redis.exceptions.RedisError as err:
                    if not unavailable(err):
                        log.error("effagent: journaled record %s could not be written (%s: %s); it stays in %s",
                                  rec.id, type(err).__name__, err, self._journal.path)
                    complete = False
                    break
                done.add(rec.id)
            if done:
                self._journal.remove(done)
            if complete and gen == self._journal_gen:
                self._journal_dirty = False
                self._journal_warned = False  # the next outage warns again
            if announce and done:
                self._event("replayed", records=len(done), journal=str(self._journal.path))
                log.warning("effagent: %d journaled ledger record(s) written to Redis from %s", len(done),
                            self._journal.path)
            return len(done), complete
        finally:
            self._replaying.release()

    def replay_journal(self) -> int:
        """Write the journaled records to Redis now (also done by itself once Redis answers). Returns how
        many were written."""
        return self._replay()[0]

    def _write(self, rec: StepRecord, scopes: Mapping[str, str], res: Reservation | None) -> None:
        u = rec.usage
        counts = [u.input_tokens, u.output_tokens, u.reasoning_tokens, to_nano(u.cost_usd), u.calls,
                  getattr(u, "cache_read_tokens", 0), getattr(u, "cache_write_tokens", 0)]
        if any(c > MAX_COUNT for c in counts):
            raise ValueError(f"usage out of range for the shared ledger (run {rec.run_id}, step {rec.step}): "
                             f"{u.model_dump()}; counts above 2**53 are refused")
        scope_items = list(scopes.items())
        if res is not None and res.keys:
            use_keys = [res.keys.get(s) or self._use_key(s, k) for s, k in scope_items]
        else:
            use_keys = [self._use_key(s, k) for s, k in scope_items]
        hold_keys: list[str] = []
        if res is not None:
            for s, k in res.scopes.items():
                hold_keys += self._hold_keys(res.keys.get(s) or self._use_key(s, k))
        p = self._p
        keys = [f"{p}:seen:{rec.id}", f"{p}:rec:{rec.run_id}", f"{p}:steps:{rec.run_id}", f"{p}:runs:z",
                *use_keys, *hold_keys]
        step = str(rec.step) if rec.kind in STEP_KINDS else ""
        args = [len(use_keys), len(hold_keys) // 2, res.id if res is not None else "", *map(str, counts),
                rec.model_dump_json(), step, max(DAY, self.run_ttl_s), self.run_ttl_s, rec.run_id,
                *(self._ttl(s) for s, _ in scope_items)]
        if "thread" in scopes:  # a grant lives as long as the thread's total it raises the limit of
            keys += self._grant_keys(scopes["thread"])
            args.append(self._ttl("thread"))
        out = self._record(keys=keys, args=args)
        if out and int(out[0]) == 1:
            vals = out[1:]
            for j, (s, k) in enumerate(scope_items):
                self._remember(s, k, usage_of(vals[7 * j:7 * j + 7]))

    def _put(self, rec: StepRecord, scopes: Mapping[str, str], remote: Callable[[], None],
             local: Callable[[], None], res: Reservation | None) -> None:
        """Write a record that was paid for: to Redis, else (fail_open) locally and to the journal, else
        (fail_closed) to the journal. Never raises for an unavailable Redis."""
        try:
            self._run(remote, local)
        except LedgerUnavailable as err:
            self._keep(rec, scopes, res, err.__cause__ or err)

    def record(self, rec: StepRecord) -> None:
        scopes = record_scopes(rec, self._static)
        self._put(rec, scopes, lambda: self._write(rec, scopes, None),
                  lambda: self._record_local(rec, scopes, None), None)

    def _record_local(self, rec: StepRecord, scopes: dict[str, str], res: Reservation | None) -> None:
        if res is not None and res.backend == "local":
            self._local.settle(res, rec)
        else:
            self._local._lock.acquire()
            try:
                self._local._add(rec, scopes)
            finally:
                self._local._lock.release()
        self._keep(rec, scopes, res, None)

    # -- reading --------------------------------------------------------------------------------------
    def scope_usage(self, scope: str, key: str) -> Usage:
        def remote() -> Usage:
            usage = usage_of(self.client.hmget(self._use_key(scope, key), *FIELDS))
            self._remember(scope, key, usage)
            return usage

        return self._run(remote, lambda: self._local.scope_usage(scope, key))

    def run_usage(self, run_id: str) -> Usage:
        return self.scope_usage("run", run_id)

    def thread_usage(self, thread_id: str) -> Usage:
        return self.scope_usage("thread", thread_id)

    def steps(self, run_id: str) -> int:
        return self._run(lambda: int(self.client.scard(f"{self._p}:steps:{run_id}")),
                         lambda: self._local.steps(run_id))

    def state(self, run_id: str, thread_id: str | None = None, thread_base: Usage | None = None) -> LedgerState:
        def remote() -> LedgerState:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self._use_key("run", run_id), *FIELDS)
            pipe.scard(f"{self._p}:steps:{run_id}")
            if thread_base is None and thread_id is not None:
                pipe.hmget(self._use_key("thread", thread_id), *FIELDS)
            out = pipe.execute()
            run = usage_of(out[0])
            self._remember("run", run_id, run)
            self._remember_steps(run_id, int(out[1]))
            if len(out) > 2 and thread_id is not None:
                self._remember("thread", thread_id, usage_of(out[2]))
            thread = thread_base if thread_base is not None else (usage_of(out[2]) if len(out) > 2 else Usage())
            return LedgerState(run=run, thread=thread, steps=int(out[1]))

        return self._run(remote, lambda: self._local.state(run_id, thread_id, thread_base))

    def _run_ids(self) -> list[str]:
        return sorted(m.decode() for m in self.client.zrange(f"{self._p}:runs:z", 0, -1))

    def records(self, run_id: str | None = None) -> list[StepRecord]:
        def remote() -> list[StepRecord]:
            runs = [run_id] if run_id is not None else self._run_ids()
            out: list[StepRecord] = []
            for r in runs:
                out += [StepRecord.model_validate_json(raw) for raw in self.client.lrange(f"{self._p}:rec:{r}", 0, -1)]
            return out if run_id is not None else sorted(out, key=lambda x: x.ts)

        return self._run(remote, lambda: self._local.records(run_id))

    def total(self) -> Usage:
        """Sum over every run this prefix holds (scans the runs; for reports and tests)."""
        def remote() -> Usage:
            runs = self._run_ids()
            pipe = self.client.pipeline(transaction=False)
            for r in runs:
                pipe.hmget(self._use_key("run", r), *FIELDS)
            return sum((usage_of(v) for v in pipe.execute()), Usage())

        return self._run(remote, lambda: self._local.total())

    def reserved(self, scope: str, key: str) -> tuple[int, float]:
        def remote() -> tuple[int, float]:
            tok, nusd = self._held(keys=self._hold_keys(self._use_key(scope, key)), args=[])
            return int(tok), int(float(nusd)) / NANO

        return self._run(remote, lambda: self._local.reserved(scope, key))

    # -- reservations -------------------------------------------------------------------------------
    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, ScopeLimit],
                ttl_s: float | None = None, why: list[Denial] | None = None) -> Reservation | None:
        """Hold ``tokens``/``usd`` against every scope (see :meth:`Ledger.reserve`; a refusal appends its
        :class:`Denial` to ``why``). The hold lives ``min(ttl_s, hold_ttl_s)`` (``hold_ttl_s`` when None) past
        its last renewal: this worker renews it until it is settled or released, so only a dead worker's hold
        expires."""
        if tokens < 0 or usd < 0:
            raise ValueError(f"a reservation cannot be negative (tokens={tokens}, usd={usd})")
        nano = to_nano(usd)
        if tokens > MAX_COUNT or nano > MAX_COUNT:
            raise ValueError(f"reservation out of range: tokens={tokens}, usd={usd}")
        ttl = self.hold_ttl_s if ttl_s is None else min(float(ttl_s), self.hold_ttl_s)
        ttl_ms = max(1, int(ttl * 1000))
        scopes = {str(k): str(v) for k, v in scopes.items()}
        if self._static:
            scopes = {**self._static, **scopes}
        res_id = new_id()
        now = self._clock()
        ukeys = {s: self._use_key(s, k, now) for s, k in scopes.items()}
        names = list(scopes)

        def remote() -> Reservation | None:
            keys: list[str] = []
            args: list[Any] = [res_id, tokens, nano, ttl_ms]
            for s in names:
                keys += [ukeys[s], *self._hold_keys(ukeys[s])]
                lim = limits.get(s)
                args += [-1 if lim is None or lim.tokens is None else lim.tokens,
                         -1 if lim is None or lim.usd is None else to_nano(lim.usd)]
            out = self._reserve(keys=keys, args=args)
            seen = [int(v) for v in out[3:]]
            for j in range(0, len(seen) - 4, 5):
                s = names[seen[j]]
                self._remember_spent(s, scopes[s], seen[j + 1], seen[j + 2])
            if int(out[0]) != 1:
                s = names[int(out[1])]
                st, su, rt, ru = seen[-4:]
                detail = over_limit(limits[s], st, su, rt, ru, tokens, nano) or str(out[2])
                log.debug("reservation denied: scope %s %s: %s", s, scopes[s], detail)
                if why is not None:
                    why.append(Denial(scope=s, key=scopes[s], detail=detail))
                return None
            hold_keys = [k for s in names for k in self._hold_keys(ukeys[s])]
            with self._live_lock:
                self._live[res_id] = (hold_keys, ttl_ms)
            self._ensure_background()
            if ttl_ms < 3000:  # renewed sooner than the background thread's usual tick: wake it to re-plan
                self._next_renew = min(self._next_renew, time.monotonic() + ttl_ms / 3000)
                self._wake.set()
            return Reservation(id=res_id, scopes=scopes, tokens=tokens, usd=usd, expires_at=int(out[1]) / 1000,
                               backend="redis", keys=ukeys)

        def local() -> Reservation | None:
            res = self._local.reserve(scopes, tokens, usd, limits, ttl, why)
            return None if res is None else res.model_copy(update={"backend": "local"})

        return self._run(remote, local)

    def _forget_hold(self, reservation: Reservation) -> None:
        with self._live_lock:
            self._live.pop(reservation.id, None)

    def settle(self, reservation: Reservation, rec: StepRecord) -> None:
        """Record the call and free its hold. Never raises for an unavailable Redis (the call was made): the
        record is journaled and written once Redis is back, and the hold freed then (or expired before)."""
        self._forget_hold(reservation)
        scopes = record_scopes(rec, {**self._static, **reservation.scopes})
        if reservation.backend == "local":  # held locally while degraded: nothing to free in Redis
            def remote() -> None:
                self._local.release(reservation)
                self._write(rec, scopes, None)

            self._put(rec, scopes, remote, lambda: self._record_local(rec, scopes, reservation), None)
            return
        self._put(rec, scopes, lambda: self._write(rec, scopes, reservation),
                  lambda: self._record_local(rec, scopes, reservation), reservation)

    def release(self, reservation: Reservation) -> None:
        """Free a hold (no call was made). Idempotent; when Redis is unavailable the hold expires by itself
        within ``hold_ttl_s``, so this never raises for that."""
        self._forget_hold(reservation)
        if reservation.backend == "local":
            self._local.release(reservation)
            return

        def remote() -> None:
            keys: list[str] = []
            for s, k in reservation.scopes.items():
                keys += self._hold_keys(reservation.keys.get(s) or self._use_key(s, k))
            self._release(keys=keys, args=[reservation.id])

        try:
            self._run(remote, lambda: None)  # unreachable: the hold expires by itself
        except LedgerUnavailable as err:
            log.warning("effagent: could not free a hold in Redis (%s); it expires within %gs", err.__cause__,
                        self.hold_ttl_s)

    # -- grants -------------------------------------------------------------------------------------------
    def _grant_keys(self, thread_id: str) -> list[str]:
        return [f"{self._p}:grant:thread:{thread_id}", f"{self._p}:grantids:thread:{thread_id}"]

    def add_grant(self, thread_id: str, grant_id: str, tokens: int, usd: float,
                  cap: tuple[int, float] | None = None) -> GrantResult:
        nano = to_nano(usd)
        if tokens > MAX_COUNT or nano > MAX_COUNT:
            return "over"

        def remote() -> GrantResult:
            ttl = self._ttl("thread")
            limits = [-1, -1] if cap is None else [int(cap[0]), to_nano(cap[1])]
            out = self._grant(keys=self._grant_keys(thread_id), args=[grant_id, int(tokens), nano, ttl, *limits])
            return (out.decode() if isinstance(out, bytes) else str(out))  # type: ignore[return-value]

        return self._run(remote, lambda: self._local.add_grant(thread_id, grant_id, tokens, usd, cap))

    def granted(self, thread_id: str) -> tuple[int, float]:
        def remote() -> tuple[int, float]:
            tok, nusd = self.client.hmget(self._grant_keys(thread_id)[0], "tok", "nusd")
            return int(tok or 0), int(nusd or 0) / NANO

        return self._run(remote, lambda: self._local.granted(thread_id))

    def close(self) -> None:
        """Stop renewing holds (those not settled expire within ``hold_ttl_s``), write what the journal holds
        if Redis answers, and close the connections."""
        self._stop.set()
        self._wake.set()
        if self._journal_dirty and not self.degraded:
            with contextlib.suppress(redis.exceptions.RedisError):
                self._replay(block=False)
        self.client.close()
