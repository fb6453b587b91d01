"""Worker processes for the shared-ledger tests (run in separate processes: spawned or ``python -m``)."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from effagent.ledger.base import StepRecord, Usage, to_nano
from effagent.ledger.redis import RedisLedger
from effagent.policy import Limit

PRICE_IN, PRICE_OUT = 0.15, 0.60  # $/Mtok
MAX_OUT = 256


def step_usage(run: int, step: int) -> Usage:
    """The usage simulated run ``run`` reports at ``step`` (deterministic, so the parent knows the totals)."""
    inp = 50 + (run * 7 + step * 13) % 400
    out = 10 + (run * 11 + step * 5) % 200
    cost = (inp * PRICE_IN + out * PRICE_OUT) / 1e6
    return Usage(input_tokens=inp, output_tokens=out, reasoning_tokens=out // 3, cost_usd=cost, calls=1)


def scopes_of(run: int, team: str) -> dict[str, str]:
    return {"run": f"run-{run}", "thread": f"thread-{run % 50}", "user": f"user-{run % 10}", "team": team}


def expected(runs: range, steps: int, team: str) -> dict[tuple[str, str], tuple[int, int, int, int, int]]:
    """(scope, key) -> (input, output, reasoning, nano-usd, calls) that the load test must find."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in runs:
        for s in range(steps):
            u = step_usage(r, s)
            for k in scopes_of(r, team).items():
                t = out.setdefault(k, [0, 0, 0, 0, 0])
                t[0] += u.input_tokens
                t[1] += u.output_tokens
                t[2] += u.reasoning_tokens
                t[3] += to_nano(u.cost_usd)
                t[4] += u.calls
    return {k: (v[0], v[1], v[2], v[3], v[4]) for k, v in out.items()}


def load_worker(url: str, prefix: str, team: str, runs: list[int], steps: int, threads: int,
                go: Any, results: Any) -> None:
    """Run ``runs`` concurrently (``threads`` at a time): each step reserves its maximum against run, thread,
    user and team, then settles its real usage; every 7th step first releases a hold (a failed call)."""
    # exactness under load, not latency: a loaded CI machine may take longer than the 1.5 s default per call
    ledger = RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed", socket_timeout_s=10.0)
    limits = {"team": Limit(tokens=10**12, usd=10**6)}
    denied = 0

    def one_run(r: int) -> None:
        nonlocal denied
        scopes = scopes_of(r, team)
        for s in range(steps):
            u = step_usage(r, s)
            max_usd = (u.input_tokens * PRICE_IN + MAX_OUT * PRICE_OUT) / 1e6
            if s % 7 == 3:
                res = ledger.reserve(scopes, u.input_tokens + MAX_OUT, max_usd, limits)
                if res is None:
                    denied += 1
                else:
                    ledger.release(res)
            res = ledger.reserve(scopes, u.input_tokens + MAX_OUT, max_usd, limits)
            if res is None:
                denied += 1
                continue
            rec = StepRecord(run_id=scopes["run"], thread_id=scopes["thread"], step=s, tier="small",
                             model="fake", usage=u)
            ledger.settle(res, rec)

    go.wait()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one_run, runs))
    results.put({"pid": os.getpid(), "runs": len(runs), "wall_s": time.perf_counter() - t0, "denied": denied,
                 "degraded": ledger.degraded})
    ledger.close()


def overspend_worker(url: str, prefix: str, team: str, limit_tokens: int, step_max: int, mode: str, threads: int,
                     seed: int, go: Any, results: Any) -> None:
    """Spend a shared team budget as fast as possible with ``threads`` concurrent steps.

    ``mode="reserve"``: reserve the step's maximum, call, settle (what effagent does with a shared ledger);
    ``mode="check"``: check spent < limit, call, record (a ledger without reservations).
    The global number of steps in flight is tracked in Redis (``inflight`` / ``inflight_max``)."""
    ledger = RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed", team=team,
                         socket_timeout_s=10.0)  # records count for it; exactness, not latency
    client = ledger.client
    inflight_key = f"{prefix}-inflight"
    limits = {"team": Limit(tokens=limit_tokens)}
    counts = {"steps": 0, "denied": 0}
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(seed * 1000 + t)
        run = f"{os.getpid()}-{t}"
        scopes = {"run": run, "team": team}
        misses = 0
        step = 0
        while True:
            if mode == "reserve":
                res = ledger.reserve(scopes, step_max, 0.0, limits)
                if res is None:
                    with lock:
                        counts["denied"] += 1
                    misses += 1
                    if misses > 20:  # others hold the rest; after a while it is spent
                        return
                    time.sleep(0.001)
                    continue
                misses = 0
            else:
                res = None
                if ledger.scope_usage("team", team).total_tokens >= limit_tokens:
                    return
            n = client.incr(inflight_key)
            client.eval("local m = tonumber(redis.call('GET', KEYS[1]) or 0) "
                        "if tonumber(ARGV[1]) > m then redis.call('SET', KEYS[1], ARGV[1]) end", 1,
                        inflight_key + "-max", n)
            time.sleep(rng.uniform(0, 0.002))  # the model call
            out = rng.randint(step_max // 4, step_max // 2)
            inp = step_max - MAX_OUT if step_max > MAX_OUT else step_max // 2
            inp = rng.randint(inp // 2, inp)
            rec = StepRecord(run_id=run, step=step, tier="small", model="fake",
                             usage=Usage(input_tokens=inp, output_tokens=min(out, step_max - inp), calls=1))
            if res is not None:
                ledger.settle(res, rec)
            else:
                ledger.record(rec)
            client.decr(inflight_key)
            step += 1
            with lock:
                counts["steps"] += 1

    go.wait()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    results.put({"pid": os.getpid(), **counts})
    ledger.close()


def record_loop(url: str, prefix: str, run_id: str, ack_path: str) -> None:
    """Record steps forever; after each ``record`` returns, append its step number to ``ack_path``."""
    ledger = RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed", socket_timeout_s=10.0)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    step = 0
    while True:
        ledger.record(StepRecord(run_id=run_id, thread_id="t-crash", step=step, tier="small", model="fake",
                                 usage=step_usage(7, step)))
        os.write(fd, f"{step}\n".encode())
        step += 1


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "record-loop":
        record_loop(*sys.argv[2:6])
    else:
        sys.exit("usage: python -m tests.integration._ledger_workers record-loop URL PREFIX RUN_ID ACK_PATH")
