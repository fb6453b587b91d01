"""A ledger shared by many workers: totals, records and reservations in Redis.

Every write is one Lua script, so it is atomic across processes and machines: a record adds its usage to
the run, thread, user and team totals and appends the record in one step (a crash loses nothing that a
``record`` call returned from), and a reservation checks ``spent + reserved + amount <= limit`` for every
scope and holds the amount, all or nothing. Dollars are stored as integer nano-dollars (exact sums).

Keys (all under the hash tag ``{prefix}``, so the scripts also run on a Redis Cluster):

- ``{p}:use:SCOPE:KEY[:YYYYMMDD]``  hash ``in out rsn nusd calls``: what the scope spent (daily window for
  user/team scopes when ``window="daily"``);
- ``{p}:rz:...`` / ``{p}:rh:...``   live reservations of a scope: zset id -> expiry (ms), hash id -> "tok:nusd"
  plus running totals ``=tok`` / ``=nusd`` (a check reads two fields, whatever the number in flight);
- ``{p}:rec:RUN`` list of the run's records (JSON), ``{p}:steps:RUN`` set of its step numbers,
  ``{p}:runs`` set of run ids, ``{p}:seen:ID`` marks a record as written (a retried write is not counted twice).

When Redis cannot be reached the ledger fails closed (:class:`~effagent.errors.LedgerUnavailable`) or fails
open: it warns once, sets ``degraded``, appends an event to ``events`` and keeps accounting in a local
in-memory ledger; every ``retry_s`` it tries Redis again and, once back, writes the local records there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from effagent.errors import LedgerUnavailable
from effagent.ledger.base import (
    DEFAULT_RESERVATION_TTL_S,
    NANO,
    STEP_KINDS,
    Ledger,
    LedgerState,
    Reservation,
    StepRecord,
    Usage,
    record_scopes,
    to_nano,
)
from effagent.ledger.memory import InMemoryLedger

if TYPE_CHECKING:
    from effagent.policy import Limit

log = logging.getLogger("effagent.ledger")
T = TypeVar("T")

MAX_COUNT = 2**53  # larger token/nano-dollar counts are refused (Lua numbers are doubles; HINCRBY is int64)
FIELDS = ("in", "out", "rsn", "nusd", "calls")

_DROP = """
-- free hold ID of a scope: its zset entry, its hash entry and its share of the running totals
local function drop(z, h, id)
  redis.call('ZREM', z, id)
  local v = redis.call('HGET', h, id)
  if v then
    local c = string.find(v, ':', 1, true)
    local tok, usd = string.sub(v, 1, c - 1), string.sub(v, c + 1)  -- decimal strings: exact, no doubles
    if tok ~= '0' then redis.call('HINCRBY', h, '=tok', '-' .. tok) end
    if usd ~= '0' then redis.call('HINCRBY', h, '=nusd', '-' .. usd) end
    redis.call('HDEL', h, id)
  end
end
"""

_RESERVE = _DROP + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, tok, usd, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 3
if n > 0 and redis.call('HEXISTS', KEYS[3], id) == 1 then  -- a retried call: already held
  return {1, tonumber(redis.call('ZSCORE', KEYS[2], id)) or (now + ttl)}
end
for i = 0, n - 1 do
  local u, z, h = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, d in ipairs(dead) do drop(z, h, d) end
  local lt, lu = tonumber(ARGV[5 + 2 * i]), tonumber(ARGV[6 + 2 * i])
  if lt >= 0 or lu >= 0 then
    local s = redis.call('HMGET', u, 'in', 'out', 'nusd')
    local st = (tonumber(s[1]) or 0) + (tonumber(s[2]) or 0)
    local su = tonumber(s[3]) or 0
    local r = redis.call('HMGET', h, '=tok', '=nusd')
    local rt, ru = tonumber(r[1]) or 0, tonumber(r[2]) or 0
    if lt >= 0 and st + rt + tok > lt then return {0, i, 'tokens', st, rt} end
    if lu >= 0 and su + ru + usd > lu then return {0, i, 'usd', su, ru} end
  end
end
local hold = ARGV[2] .. ':' .. ARGV[3]
for i = 0, n - 1 do
  local z, h = KEYS[3 * i + 2], KEYS[3 * i + 3]
  redis.call('ZADD', z, now + ttl, id)
  redis.call('HSET', h, id, hold)
  redis.call('HINCRBY', h, '=tok', ARGV[2])
  redis.call('HINCRBY', h, '=nusd', ARGV[3])
  local keep = ttl + 60000
  if redis.call('PTTL', z) < keep then
    redis.call('PEXPIRE', z, keep)
    redis.call('PEXPIRE', h, keep)
  end
end
return {1, now + ttl}
"""

# KEYS: seen, reclist, steps, runs, U1..Un, Z1, H1, ..., Zm, Hm
# ARGV: n, m, res_id, in, out, rsn, nusd, calls, json, step, seen_ttl, run_ttl, run_id, ttl1..ttln
_RECORD = _DROP + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local res = ARGV[3]
for j = 0, m - 1 do drop(KEYS[5 + n + 2 * j], KEYS[6 + n + 2 * j], res) end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[11]) == false then return 0 end
local fields = {'in', 'out', 'rsn', 'nusd', 'calls'}
for i = 1, n do
  local u = KEYS[4 + i]
  for f = 1, 5 do redis.call('HINCRBY', u, fields[f], ARGV[3 + f]) end
  local ttl = tonumber(ARGV[13 + i])
  if ttl > 0 and redis.call('TTL', u) == -1 then redis.call('EXPIRE', u, ttl) end
end
local run_ttl = tonumber(ARGV[12])
redis.call('RPUSH', KEYS[2], ARGV[9])
if ARGV[10] ~= '' then redis.call('SADD', KEYS[3], ARGV[10]) end
redis.call('SADD', KEYS[4], ARGV[13])
if run_ttl > 0 then
  redis.call('EXPIRE', KEYS[2], run_ttl)
  if ARGV[10] ~= '' then redis.call('EXPIRE', KEYS[3], run_ttl) end
end
return 1
"""

_RELEASE = _DROP + """
for j = 0, #KEYS / 2 - 1 do drop(KEYS[2 * j + 1], KEYS[2 * j + 2], ARGV[1]) end
return 1
"""

_HELD = _DROP + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(KEYS[1], KEYS[2], d) end
local r = redis.call('HMGET', KEYS[2], '=tok', '=nusd')
return {tonumber(r[1]) or 0, r[2] or '0'}
"""


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


def _unavailable(err: Exception) -> bool:
    """Errors that mean 'the store cannot serve us now' (as opposed to a bug)."""
    if isinstance(err, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                  | redis.exceptions.ReadOnlyError):
        return True
    return isinstance(err, redis.exceptions.ResponseError) and str(err).startswith(("OOM", "LOADING", "MASTERDOWN",
                                                                                    "CLUSTERDOWN", "TRYAGAIN"))


def _usage(vals: list[Any]) -> Usage:
    i, o, r, nusd, calls = (int(v) if v is not None else 0 for v in vals)
    return Usage(input_tokens=max(0, i), output_tokens=max(0, o), reasoning_tokens=max(0, r),
                 cost_usd=max(0, nusd) / NANO, calls=max(0, calls))


class RedisLedger(Ledger):
    """A ledger in Redis, shared by every worker that uses the same ``url`` and ``key_prefix``.

    ``team``: every record also counts against the ``team`` scope (``{"team": team}``);
    ``window``: ``"daily"`` keeps user/team totals per UTC day; ``run_ttl_s``: how long a run's totals and
    records are kept; ``retry_s``: how often a degraded (fail-open) ledger tries Redis again;
    ``max_connections``: the connections this process's threads share (they wait for one when all are busy).
    """

    supports_reservations = True
    windowed_scopes: tuple[str, ...] = ("user", "team")

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "effagent",
                 on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open", team: str | None = None,
                 window: Literal["none", "daily"] = "none", run_ttl_s: int = 7 * 86400,
                 thread_ttl_s: int = 0, retry_s: float = 30.0, socket_timeout_s: float = 2.0, max_connections: int = 64,
                 client: redis.Redis | None = None, on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.on_unavailable = on_unavailable
        self.team = team
        self.window = window
        self.run_ttl_s = int(run_ttl_s)
        self.thread_ttl_s = int(thread_ttl_s)
        self.window_ttl_s = 3 * 86400
        self.retry_s = retry_s
        self.events: list[dict[str, Any]] = []
        self.degraded = False
        self._on_event = on_event
        self._clock = clock
        self._p = "{" + key_prefix + "}"
        self._lock = threading.RLock()
        self._static = {"team": team} if team else {}
        self._local = InMemoryLedger(scopes=self._static)
        self._pending: list[tuple[str, StepRecord, dict[str, str], str | None]] = []
        self._warned = False
        self._last_probe = 0.0
        if client is None:
            # a blocking pool: many threads share ``max_connections`` connections and wait for a free one
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=10, socket_timeout=socket_timeout_s,
                socket_connect_timeout=min(1.0, socket_timeout_s),
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2),
                retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
                health_check_interval=30)
            client = redis.Redis(connection_pool=pool)
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._record = client.register_script(_RECORD)
        self._release = client.register_script(_RELEASE)
        self._held = client.register_script(_HELD)
        self._run(lambda: self.client.ping(), lambda: True)  # fail closed now, or start degraded

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
        return self.window_ttl_s if self._suffix(scope) else 0

    # -- faults ---------------------------------------------------------------------------------------
    def _event(self, kind: str, **info: Any) -> None:
        ev = {"ts": time.time(), "event": kind, **info}
        self.events.append(ev)
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
            self.degraded = True
            self._last_probe = time.monotonic()
            self._event("degraded", error=f"{type(err).__name__}: {err}", url=safe_url(self.url))
            msg = (f"effagent: the Redis ledger at {safe_url(self.url)} is unavailable ({type(err).__name__}: {err}); "
                   f"failing open: budgets are now counted per process until it is back (retry every "
                   f"{self.retry_s:g}s). Check redis-server, or set ledger.redis.on_unavailable: fail_closed.")
            log.warning(msg)
            if not self._warned:
                self._warned = True
                warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _recover(self) -> bool:
        """With the lock held: try Redis again (at most every ``retry_s``); on success write the records kept
        locally meanwhile and leave degraded mode."""
        now = time.monotonic()
        if now - self._last_probe < self.retry_s:
            return False
        self._last_probe = now
        try:
            self.client.ping()
            while self._pending:
                rec_id, rec, scopes, _ = self._pending[0]
                self._write(rec_id, rec, scopes, None)
                self._pending.pop(0)
        except redis.exceptions.RedisError as err:
            if not _unavailable(err):
                raise
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
                    return remote()
                except redis.exceptions.RedisError as err:
                    if not _unavailable(err):
                        raise
                    self._fail(err)
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

    # -- writing --------------------------------------------------------------------------------------
    def _write(self, rec_id: str, rec: StepRecord, scopes: Mapping[str, str], res: Reservation | None) -> None:
        u = rec.usage
        counts = [u.input_tokens, u.output_tokens, u.reasoning_tokens, to_nano(u.cost_usd), u.calls]
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
        keys = [f"{p}:seen:{rec_id}", f"{p}:rec:{rec.run_id}", f"{p}:steps:{rec.run_id}", f"{p}:runs",
                *use_keys, *hold_keys]
        step = str(rec.step) if rec.kind in STEP_KINDS else ""
        args = [len(use_keys), len(hold_keys) // 2, res.id if res is not None else "", *map(str, counts),
                rec.model_dump_json(), step, max(86400, self.run_ttl_s), self.run_ttl_s, rec.run_id,
                *(self._ttl(s) for s, _ in scope_items)]
        self._record(keys=keys, args=args)

    def record(self, rec: StepRecord) -> None:
        scopes = record_scopes(rec, self._static)
        rec_id = uuid.uuid4().hex
        self._run(lambda: self._write(rec_id, rec, scopes, None), lambda: self._record_local(rec_id, rec, scopes, None))

    def _record_local(self, rec_id: str, rec: StepRecord, scopes: dict[str, str], res: Reservation | None) -> None:
        if res is not None and res.backend == "local":
            self._local.settle(res, rec)
        else:
            self._local._lock.acquire()
            try:
                self._local._add(rec, scopes)
            finally:
                self._local._lock.release()
        self._pending.append((rec_id, rec, scopes, None))

    # -- reading --------------------------------------------------------------------------------------
    def scope_usage(self, scope: str, key: str) -> Usage:
        return self._run(lambda: _usage(self.client.hmget(self._use_key(scope, key), *FIELDS)),
                         lambda: self._local.scope_usage(scope, key))

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
            thread = thread_base if thread_base is not None else (_usage(out[2]) if len(out) > 2 else Usage())
            return LedgerState(run=_usage(out[0]), thread=thread, steps=int(out[1]))

        return self._run(remote, lambda: self._local.state(run_id, thread_id, thread_base))

    def records(self, run_id: str | None = None) -> list[StepRecord]:
        def remote() -> list[StepRecord]:
            if run_id is not None:
                runs = [run_id]
            else:
                runs = sorted(m.decode() for m in self.client.smembers(f"{self._p}:runs"))
            out: list[StepRecord] = []
            for r in runs:
                out += [StepRecord.model_validate_json(raw) for raw in self.client.lrange(f"{self._p}:rec:{r}", 0, -1)]
            return out if run_id is not None else sorted(out, key=lambda x: x.ts)

        return self._run(remote, lambda: self._local.records(run_id))

    def total(self) -> Usage:
        """Sum over every run this prefix holds (scans the runs; for reports and tests)."""
        def remote() -> Usage:
            runs = [m.decode() for m in self.client.smembers(f"{self._p}:runs")]
            pipe = self.client.pipeline(transaction=False)
            for r in runs:
                pipe.hmget(self._use_key("run", r), *FIELDS)
            return sum((_usage(v) for v in pipe.execute()), Usage())

        return self._run(remote, lambda: self._local.total())

    def reserved(self, scope: str, key: str) -> tuple[int, float]:
        def remote() -> tuple[int, float]:
            tok, nusd = self._held(keys=self._hold_keys(self._use_key(scope, key)), args=[])
            return int(tok), int(float(nusd)) / NANO

        return self._run(remote, lambda: self._local.reserved(scope, key))

    # -- reservations -------------------------------------------------------------------------------
    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, Limit],
                ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation | None:
        if tokens < 0 or usd < 0:
            raise ValueError(f"a reservation cannot be negative (tokens={tokens}, usd={usd})")
        nano = to_nano(usd)
        if tokens > MAX_COUNT or nano > MAX_COUNT:
            raise ValueError(f"reservation out of range: tokens={tokens}, usd={usd}")
        scopes = {str(k): str(v) for k, v in scopes.items()}
        if self._static:
            scopes = {**self._static, **scopes}
        res_id = uuid.uuid4().hex
        now = self._clock()
        ukeys = {s: self._use_key(s, k, now) for s, k in scopes.items()}

        def remote() -> Reservation | None:
            keys: list[str] = []
            args: list[Any] = [res_id, tokens, nano, max(1, int(ttl_s * 1000))]
            for s in scopes:
                keys += [ukeys[s], *self._hold_keys(ukeys[s])]
                lim = limits.get(s)
                args += [-1 if lim is None or lim.tokens is None else lim.tokens,
                         -1 if lim is None or lim.usd is None else to_nano(lim.usd)]
            out = self._reserve(keys=keys, args=args)
            if int(out[0]) != 1:
                log.debug("reservation denied: scope %s %s", list(scopes)[int(out[1])], out[2])
                return None
            return Reservation(id=res_id, scopes=scopes, tokens=tokens, usd=usd, expires_at=int(out[1]) / 1000,
                               backend="redis", keys=ukeys)

        def local() -> Reservation | None:
            res = self._local.reserve(scopes, tokens, usd, limits, ttl_s)
            return None if res is None else res.model_copy(update={"backend": "local"})

        return self._run(remote, local)

    def settle(self, reservation: Reservation, rec: StepRecord) -> None:
        scopes = record_scopes(rec, {**self._static, **reservation.scopes})
        rec_id = uuid.uuid4().hex
        if reservation.backend == "local":  # held locally while degraded: nothing to free in Redis
            self._run(lambda: (self._local.release(reservation), self._write(rec_id, rec, scopes, None))[1],
                      lambda: self._record_local(rec_id, rec, scopes, reservation))
            return
        self._run(lambda: self._write(rec_id, rec, scopes, reservation),
                  lambda: self._record_local(rec_id, rec, scopes, None))

    def release(self, reservation: Reservation) -> None:
        if reservation.backend == "local":
            self._local.release(reservation)
            return

        def remote() -> None:
            keys: list[str] = []
            for s, k in reservation.scopes.items():
                keys += self._hold_keys(reservation.keys.get(s) or self._use_key(s, k))
            self._release(keys=keys, args=[reservation.id])

        self._run(remote, lambda: None)  # unreachable: the hold expires by itself

    def close(self) -> None:
        self.client.close()
