"""A worker process for the Redis fault tests: ``python -m tests.integration._fault_workers hold URL PREFIX TTL ACK``
reserves a team's whole budget, writes ``ACK`` and then waits (its model call never ends) until it is killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from effagent.ledger.redis import RedisLedger
from effagent.policy import Limit


def hold(url: str, prefix: str, ttl_s: str, ack: str) -> None:
    ledger = RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed", hold_ttl_s=float(ttl_s))
    res = ledger.reserve({"run": "dead-worker-run", "team": "t"}, 1000, 0.0, {"team": Limit(tokens=1000)})
    assert res is not None
    Path(ack).write_text(res.id)
    while True:  # the call in flight
        time.sleep(1)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "hold":
        hold(*sys.argv[2:6])
    else:
        sys.exit("usage: python -m tests.integration._fault_workers hold URL PREFIX TTL_S ACK_PATH")
