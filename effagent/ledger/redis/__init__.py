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

The parts: :mod:`.ledger` (:class:`RedisLedger`), :mod:`.scripts` (the Lua scripts), :mod:`.journal` (records
Redis could not take), :mod:`.holds` (the background thread that renews holds and replays the journal),
:mod:`.common` (limits, defaults and small helpers).
"""

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
    safe_url,
)
from effagent.ledger.redis.journal import default_journal
from effagent.ledger.redis.ledger import RedisLedger

__all__ = ["DAY", "DEFAULT_HOLD_TTL_S", "DEFAULT_RUN_TTL_S", "DEFAULT_THREAD_TTL_S", "DEFAULT_TIMEOUT_S",
           "DEFAULT_TOTALS_TTL_S", "FIELDS", "MAX_COUNT", "MAX_REMEMBERED", "RedisLedger", "default_journal",
           "safe_url"]
