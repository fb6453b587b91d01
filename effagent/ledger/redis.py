"""A ledger shared by many workers: totals, records and reservations in Redis.

Every write is one Lua script, so it is atomic across processes and machines: a record adds its usage to
the run, thread, user and team totals and appends the record in one step (a crash loses nothing that a
``record`` call returned from), and a reservation checks ``spent + reserved + amount <= limit`` for every
scope and holds the amount, all or nothing. Dollars are stored as integer nano-dollars (exact sums).

Keys (all under the hash tag ``{prefix}``, so the scripts also run on a Redis Cluster), each with a TTL:

- ``{p}:use:SCOPE:KEY[:YYYYMMDD]``  hash ``in out rsn nusd calls crd cwr``: what the scope spent (daily window
  for user/team scopes when ``window="daily"``); the TTL is refreshed on every write (run: ``run_ttl_s``,
  thread: ``thread_ttl_s``, user/team: ``totals_ttl_s``, a daily window: 3 days);
- ``{p}:rz:...`` / ``{p}:rh:...``   live reservations of a scope: zset id -> expiry (ms), hash id -> "tok:nusd"
  plus running totals ``=tok`` / ``=nusd`` (a check reads two fields, whatever the number in flight); a hold
  lives ``hold_ttl_s`` unless the worker that holds it renews it (a background thread, every third of it);
- ``{p}:rec:RUN`` list of the run's records (JSON), ``{p}:steps:RUN`` set of its step numbers,
  ``{p}:runs:z`` zset run id -> last write (s), trimmed to ``run_ttl_s``; ``{p}:seen:ID`` marks record ID as
  written (a retried or replayed write is not counted twice).

Faults. Every Redis call is bounded (``socket_timeout_s``; pool wait and connect below a second; one retry on
a dropped connection, none on a timeout), so no call waits much longer than the timeout when Redis is frozen.
A record or settle whose write fails is never lost and never raises to the agent (the call was made): it is
appended to a local journal (JSON lines, fsync'd) and replayed by record id once Redis answers again (or when
a worker starts). Otherwise, when Redis cannot be reached the ledger fails closed
(:class:`~effagent.errors.LedgerUnavailable` from reads and reservations) or fails open: it warns once, sets
``degraded``, appends an event to ``events`` and keeps accounting in a local in-memory ledger, which starts
from the last totals this worker saw in Redis (an exhausted scope stays exhausted); every ``retry_s`` it tries
Redis again and, once back, writes the records kept meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

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
    StepRecord,
    Usage,
    over_limit,
    record_scopes,
    to_nano,
)
from effagent.ledger.memory import InMemoryLedger

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from effagent.policy import Limit

log = logging.getLogger("effagent.ledger")
T = TypeVar("T")

MAX_COUNT = 2**53  # larger token/nano-dollar counts are refused (Lua numbers are doubles; HINCRBY is int64)
FIELDS = ("in", "out", "rsn", "nusd", "calls", "crd", "cwr")
DAY = 86400
DEFAULT_TIMEOUT_S = 1.5
DEFAULT_HOLD_TTL_S = 30.0
DEFAULT_RUN_TTL_S = 7 * DAY
DEFAULT_THREAD_TTL_S = 30 * DAY
DEFAULT_TOTALS_TTL_S = 400 * DAY
MAX_REMEMBERED = 10_000  # (scope, key) totals a fail-open ledger remembers for its degraded start

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
  return {1, tonumber(redis.call('ZSCORE', KEYS[2], id)) or (now + ttl), ''}
end
local seen = {}  -- scope index, tokens and nano-usd spent, tokens and nano-usd held, of every scope read
local function reply(a, b, c)
  local r = {a, b, c}
  for _, v in ipairs(seen) do r[#r + 1] = v end
  return r
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
    seen[#seen + 1] = i
    seen[#seen + 1] = st
    seen[#seen + 1] = su
    seen[#seen + 1] = rt
    seen[#seen + 1] = ru
    if lt >= 0 and st + rt + tok > lt then return reply(0, i, 'tokens') end
    if lu >= 0 and su + ru + usd > lu then return reply(0, i, 'usd') end
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
return reply(1, now + ttl, '')
"""

# KEYS: Z1, H1, ..., Zm, Hm of one hold; ARGV: id, ttl (ms). Pushes a live hold's expiry to now + ttl.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local alive = 0
for j = 0, #KEYS / 2 - 1 do
  local z, h = KEYS[2 * j + 1], KEYS[2 * j + 2]
  if redis.call('ZSCORE', z, ARGV[1]) then  -- still counted (not dropped): keep it counted
    redis.call('ZADD', z, 'XX', now + ttl, ARGV[1])
    alive = 1
    local keep = ttl + 60000
    if redis.call('PTTL', z) < keep then
      redis.call('PEXPIRE', z, keep)
      redis.call('PEXPIRE', h, keep)
    end
  end
end
return alive
"""

# KEYS: seen, reclist, steps, runs, U1..Un, Z1, H1, ..., Zm, Hm
# ARGV: n, m, res_id, in, out, rsn, nusd, calls, crd, cwr, json, step, seen_ttl, run_ttl, run_id, ttl1..ttln
# Returns {0} for a record already written, else {1, then per scope its new in, out, rsn, nusd, calls, crd, cwr}.
_RECORD = _DROP + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local res = ARGV[3]
for j = 0, m - 1 do drop(KEYS[5 + n + 2 * j], KEYS[6 + n + 2 * j], res) end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[13]) == false then return {0} end
local fields = {'in', 'out', 'rsn', 'nusd', 'calls', 'crd', 'cwr'}
local out = {1}
for i = 1, n do
  local u = KEYS[4 + i]
  for f = 1, 7 do out[#out + 1] = redis.call('HINCRBY', u, fields[f], ARGV[3 + f]) end
  local ttl = tonumber(ARGV[15 + i])
  if ttl > 0 then redis.call('EXPIRE', u, ttl) end  -- refreshed: a scope in use keeps its total
end
local run_ttl = tonumber(ARGV[14])
redis.call('RPUSH', KEYS[2], ARGV[11])
if ARGV[12] ~= '' then redis.call('SADD', KEYS[3], ARGV[12]) end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[4], now, ARGV[15])
if run_ttl > 0 then
  redis.call('EXPIRE', KEYS[2], run_ttl)
  if ARGV[12] ~= '' then redis.call('EXPIRE', KEYS[3], run_ttl) end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - run_ttl)  -- runs whose records have expired
  redis.call('EXPIRE', KEYS[4], run_ttl)
end
return out
"""

# KEYS: grant hash, grant ids set; ARGV: id, tokens, nano-usd, ttl (s, 0 = none), cap tokens, cap nano (-1 = none)
_GRANT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'seen' end
local tok, usd = tonumber(ARGV[2]), tonumber(ARGV[3])
local g = redis.call('HMGET', KEYS[1], 'tok', 'nusd')
local ct, cu = tonumber(ARGV[5]), tonumber(ARGV[6])
if (ct >= 0 and (tonumber(g[1]) or 0) + tok > ct) or (cu >= 0 and (tonumber(g[2]) or 0) + usd > cu) then
  return 'over'
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'tok', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'nusd', ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return 'added'
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
                                                                                    "CLUSTERDOWN", "TRYAGAIN", "BUSY"))


def _usage(vals: list[Any]) -> Usage:
    i, o, r, nusd, calls, crd, cwr = (int(v) if v is not None else 0 for v in (*vals, None, None)[:7])
    return Usage(input_tokens=max(0, i), output_tokens=max(0, o), reasoning_tokens=max(0, r),
                 cache_read_tokens=max(0, crd), cache_write_tokens=max(0, cwr),
                 cost_usd=max(0, nusd) / NANO, calls=max(0, calls))


def default_journal(key_prefix: str) -> Path:
    """Where a ledger with ``key_prefix`` journals the records Redis could not take, when the policy names no
    file: ``effagent-out/ledger-journal-PREFIX.jsonl`` under the working directory (beside the traces)."""
    return Path("effagent-out", f"ledger-journal-{re.sub(r'[^A-Za-z0-9._-]+', '-', key_prefix)}.jsonl").absolute()


class _Journal:
    """Records Redis could not take, one JSON object a line, for the ledger with ``prefix``.

    An append is one ``write`` of the whole line, fsync'd, under an exclusive lock on the journal's folder
    (the workers of one machine may share the file; a POSIX ``flock``). A line is removed only after its
    record was written to Redis, by rewriting the file atomically (temporary file, fsync, rename): a crash
    at any point leaves every unwritten record in the file, and a record written twice is counted once (by
    its id). Lines another prefix wrote stay; unreadable lines (a crash mid-append) go to ``PATH.rejected``.
    When the file cannot be written (read-only, disk full) the record is kept in memory, and logged."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self._lock = threading.Lock()
        self._memory: list[dict[str, Any]] = []
        self.unwritable: str | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:  # not POSIX: one process per journal file
                yield
                return
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def append(self, entry: dict[str, Any]) -> bool:
        """Append ``entry``; True when it is on disk (else kept in memory)."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a crash mid-append left half a line
                    os.write(fd, (b"\n" if torn else b"") + line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if size == 0:
                    _fsync_dir(self.path.parent)
            return True
        except OSError as err:
            with self._lock:
                self._memory.append(entry)
            if self.unwritable is None:
                log.error("effagent: cannot write the ledger journal %s (%s); records Redis could not take are "
                          "kept in this process's memory until it is back", self.path, err)
            self.unwritable = f"{type(err).__name__}: {err}"
            return False

    def pending(self) -> bool:
        if self._memory:
            return True
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def entries(self) -> list[dict[str, Any]]:
        """This prefix's records, oldest first (the file's, then those kept in memory)."""
        out: list[dict[str, Any]] = []
        if self.path.exists():
            with self._locked():
                raw = self._read()
            for line in raw.splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # set aside by the next remove()
                if isinstance(obj, dict) and obj.get("prefix") == self.prefix and obj.get("id"):
                    out.append(obj)
        with self._lock:
            out += self._memory
        return out

    def remove(self, ids: set[str]) -> None:
        """Drop the records ``ids`` (written to Redis): rewrite the file atomically without them."""
        with self._lock:
            self._memory = [e for e in self._memory if e.get("id") not in ids]
        if not self.path.exists():
            return
        with self._locked():
            keep: list[bytes] = []
            bad: list[bytes] = []
            for line in self._read().splitlines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad.append(line)
                    continue
                if isinstance(obj, dict) and obj.get("prefix") == self.prefix and obj.get("id") in ids:
                    continue
                keep.append(line)
            if bad:
                rejected = self.path.with_name(self.path.name + ".rejected")
                with open(rejected, "ab") as f:
                    f.write(b"".join(b + b"\n" for b in bad))
                    f.flush()
                    os.fsync(f.fileno())
                log.error("effagent: %d unreadable line(s) of the ledger journal %s moved to %s", len(bad),
                          self.path, rejected)
            if keep:
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    f.write(b"".join(b + b"\n" for b in keep))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            else:
                self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _maintain(ref: weakref.ref[RedisLedger], stop: threading.Event, wake: threading.Event) -> None:
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


class RedisLedger(Ledger):
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
        self._journal = _Journal(Path(journal).absolute() if journal else default_journal(key_prefix), key_prefix)
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
        self._reserve = client.register_script(_RESERVE)
        self._record = client.register_script(_RECORD)
        self._release = client.register_script(_RELEASE)
        self._held = client.register_script(_HELD)
        self._renew = client.register_script(_RENEW)
        self._grant = client.register_script(_GRANT)
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
            if not _unavailable(err):
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
                    if not _unavailable(err):
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
                    if not _unavailable(err):
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

    # -- the background thread: renew holds, replay the journal ---------------------------------------
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
            if not _unavailable(err):
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

    # -- writing --------------------------------------------------------------------------------------
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
        out = self._record(keys=keys, args=args)
        if out and int(out[0]) == 1:
            vals = out[1:]
            for j, (s, k) in enumerate(scope_items):
                self._remember(s, k, _usage(vals[7 * j:7 * j + 7]))

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
            usage = _usage(self.client.hmget(self._use_key(scope, key), *FIELDS))
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
            run = _usage(out[0])
            self._remember("run", run_id, run)
            self._remember_steps(run_id, int(out[1]))
            if len(out) > 2 and thread_id is not None:
                self._remember("thread", thread_id, _usage(out[2]))
            thread = thread_base if thread_base is not None else (_usage(out[2]) if len(out) > 2 else Usage())
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
            return sum((_usage(v) for v in pipe.execute()), Usage())

        return self._run(remote, lambda: self._local.total())

    def reserved(self, scope: str, key: str) -> tuple[int, float]:
        def remote() -> tuple[int, float]:
            tok, nusd = self._held(keys=self._hold_keys(self._use_key(scope, key)), args=[])
            return int(tok), int(float(nusd)) / NANO

        return self._run(remote, lambda: self._local.reserved(scope, key))

    # -- reservations -------------------------------------------------------------------------------
    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, Limit],
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
        res_id = uuid.uuid4().hex
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
