"""Redis faults against real redis-servers that the tests kill, freeze and restart: no call that was made is lost,
no ledger call waits much longer than the timeout, a dead worker's holds expire, fail_open keeps an exhausted
budget exhausted, every key expires, two apps keep apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")

from effagent.errors import LedgerUnavailable
from effagent.ledger import ledger_from_policy
from effagent.ledger.base import StepRecord, Usage
from effagent.ledger.redis import RedisLedger
from effagent.policy import Limit, parse_policy
from tests.integration import redis_fixture
from tests.integration.redis_fixture import unique_prefix

redis_url = redis_fixture.redis_url  # fixtures
redis_servers = redis_fixture.redis_servers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis


def rec(run: str, step: int, inp: int = 10, out: int = 5, thread: str | None = None) -> StepRecord:
    return StepRecord(run_id=run, thread_id=thread, step=step, tier="small", model="fake",
                      usage=Usage(input_tokens=inp, output_tokens=out, cost_usd=1e-6, calls=1))


class CountingFakeModel:
    """A fake model call: counts the calls made (each one paid for), answers with fixed usage."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Usage:
        time.sleep(0.02)
        with self._lock:
            self.calls += 1
        return Usage(input_tokens=10, output_tokens=5, cost_usd=1e-6, calls=1)


def _steps(ledger: RedisLedger, model: CountingFakeModel, stop: threading.Event, name: str,
           latencies: list[float], refused: list[int]) -> None:
    """An agent's steps: read the state, reserve, call the model, settle; each ledger call is timed."""
    step = 0
    while not stop.is_set():
        run = f"{name}-{step // 5}"
        try:
            t0 = time.monotonic()
            ledger.state(run, "thread-" + name)
            latencies.append(time.monotonic() - t0)
            t0 = time.monotonic()
            hold = ledger.reserve({"run": run, "thread": "thread-" + name, "team": "t"}, 100, 0.0,
                                  {"team": Limit(tokens=10**9)})
            latencies.append(time.monotonic() - t0)
        except LedgerUnavailable:  # fail_closed: no new call on a budget it cannot see
            latencies.append(time.monotonic() - t0)
            refused.append(1)
            time.sleep(0.02)
            continue
        assert hold is not None
        usage = model()
        t0 = time.monotonic()
        ledger.settle(hold, StepRecord(run_id=run, thread_id="thread-" + name, step=step % 5, tier="small",
                                       model="fake", usage=usage))  # never raises: the call was made
        latencies.append(time.monotonic() - t0)
        step += 1


def _wait(cond, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, f"{what} within {timeout_s}s"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_kill_9_under_load_then_restart_records_every_call_once(redis_servers, tmp_path):
    server = redis_servers(persist=True)  # AOF, fsync always: what Redis acknowledged survives its crash
    prefix = unique_prefix("kill9")
    led = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_closed", team="t", socket_timeout_s=0.5,
                      hold_ttl_s=2, journal=tmp_path / "journal.jsonl")
    model, stop, latencies, refused = CountingFakeModel(), threading.Event(), [], []
    threads = [threading.Thread(target=_steps, args=(led, model, stop, f"w{i}", latencies, refused))
               for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "could not take a record ... journaled"
        for t in threads:
            t.start()
        time.sleep(0.8)
        server.kill()  # kill -9 with steps in flight
        # their calls were made: each settle gives up after the socket timeout and journals (a loaded machine
        # may take longer than a fixed pause)
        _wait(lambda: led.journaled() > 0, 10, "a step in flight when Redis died is journaled")
        time.sleep(0.5)
        journaled = led.journaled()
        server.start()  # same port, same data directory
        time.sleep(0.8)
        stop.set()
        for t in threads:
            t.join(10)
    replay_s = _wait(lambda: led.journaled() == 0, 10, "the journal is written to Redis")
    check = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_closed", team="t")
    records = check.records()
    print(f"\nKILL -9: {model.calls} calls made, {len(records)} records in Redis, {journaled} journaled while "
          f"it was down (written {replay_s:.2f}s after the last step), {len(refused)} steps refused")
    assert model.calls > 100 and journaled > 0
    assert len(records) == model.calls == check.total().calls == check.scope_usage("team", "t").calls
    assert len({r.id for r in records}) == len(records)  # each call once
    # the holds of the journaled steps were freed on replay; a hold whose reply the crash ate expires
    _wait(lambda: check.reserved("team", "t") == (0, 0.0), 4, "every hold is freed")


def test_sigstop_no_ledger_call_waits_longer_than_the_timeout_plus_a_second(redis_servers, tmp_path):
    server = redis_servers()
    timeout = 1.5  # the policy's default ledger.redis.timeout_s
    led = RedisLedger(server.url, key_prefix=unique_prefix("stop"), on_unavailable="fail_closed", team="t",
                      socket_timeout_s=timeout, journal=tmp_path / "journal.jsonl")
    model, stop, latencies, refused = CountingFakeModel(), threading.Event(), [], []
    threads = [threading.Thread(target=_steps, args=(led, model, stop, f"w{i}", latencies, refused))
               for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for t in threads:
            t.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGSTOP)  # frozen: connections open, no replies
        try:
            time.sleep(5)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(10)
    _wait(lambda: led.journaled() == 0, 10, "the journal is written to Redis")
    print(f"\nSIGSTOP 5s: {len(latencies)} ledger calls, max {max(latencies):.2f}s (timeout {timeout}s), "
          f"{len(refused)} steps refused, {model.calls} calls made, {len(led.records())} recorded")
    assert max(latencies) <= timeout + 1.0
    assert len(led.records()) == model.calls


def test_a_killed_workers_holds_expire_within_the_hold_ttl_and_a_live_ones_do_not(redis_url, tmp_path):
    prefix, ttl = unique_prefix("dead"), 2.0
    led = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    limits = {"team": Limit(tokens=1000)}
    ack = tmp_path / "ack"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration._fault_workers", "hold", redis_url, prefix,
                             str(ttl), str(ack)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait(ack.exists, 30, "the worker reserved")
        time.sleep(ttl * 1.5)  # its call runs longer than the TTL: the live worker keeps renewing its hold
        assert led.reserved("team", "t")[0] == 1000
        assert led.reserve({"team": "t"}, 1, 0.0, limits) is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        _wait(lambda: led.reserve({"team": "t"}, 1000, 0.0, limits) is not None, ttl + 2, "the budget is free")
        freed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"\nDEAD WORKER: hold_ttl_s {ttl}: its hold of 1000 tokens was gone {freed:.2f}s after SIGKILL")
    assert freed <= ttl + 0.5


def test_a_live_hold_survives_a_call_longer_than_the_ttl_and_settles_once(redis_url):
    prefix = unique_prefix("live")
    worker = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed", hold_ttl_s=1.0)
    other = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    limits = {"team": Limit(tokens=1000)}
    hold = worker.reserve({"run": "r", "team": "t"}, 1000, 0.0, limits)
    assert hold is not None
    time.sleep(2.5)  # a long model call
    assert other.reserve({"team": "t"}, 1, 0.0, limits) is None  # still held
    worker.settle(hold, rec("r", 0, inp=300, out=100))
    assert other.reserved("team", "t") == (0, 0.0) and other.scope_usage("team", "t").total_tokens == 400
    assert other.reserve({"team": "t"}, 600, 0.0, limits) is not None
    assert not [e for e in worker.events if e["event"] == "hold_lost"]


def test_fail_open_keeps_a_spent_team_budget_spent_when_redis_goes_down(redis_servers, tmp_path):
    server = redis_servers()
    prefix, limits = unique_prefix("open"), {"team": Limit(tokens=2000)}
    spender = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_closed", team="t")
    for s in range(4):  # another worker spent 1,800 of the team's 2,000 tokens
        spender.record(rec("spender", s, inp=300, out=150))
    worker = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_open", team="t", retry_s=3600,
                         socket_timeout_s=0.5, journal=tmp_path / "j.jsonl")
    assert worker.reserve({"run": "w"}, 500, 0.0, limits) is None  # 1,800 + 500 > 2,000
    server.kill()
    with pytest.warns(RuntimeWarning, match="failing open"):
        refused = worker.reserve({"run": "w"}, 500, 0.0, limits)
    assert worker.degraded and refused is None  # degraded, and still refused: it did not start from zero
    assert worker.scope_usage("team", "t").total_tokens == 1800
    small = worker.reserve({"run": "w"}, 150, 0.0, limits)
    assert small is not None and small.backend == "local"  # what is really left is still usable
    assert worker.reserve({"run": "w"}, 100, 0.0, limits) is None  # 1,800 + 150 held + 100 > 2,000


def test_a_restarted_worker_writes_its_journal_and_a_replay_counts_once(redis_servers, tmp_path):
    server = redis_servers(persist=True)
    prefix, journal = unique_prefix("replay"), tmp_path / "journal.jsonl"
    led = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_closed", socket_timeout_s=0.5,
                      journal=journal)
    led.record(rec("r", 0))
    server.kill()
    with pytest.warns(RuntimeWarning, match="journal"):
        for s in (1, 2):
            led.record(rec("r", s))
    led.close()  # the worker goes away with two records journaled
    lines = journal.read_text().splitlines()
    assert len(lines) == 2
    journal.write_text("\n".join([*lines, lines[0]]) + "\n")  # a crash between writing and removing a line
    server.start()
    restarted = RedisLedger(server.url, key_prefix=prefix, on_unavailable="fail_closed", journal=journal)
    assert not journal.exists()  # written on start, then removed
    assert [r.step for r in restarted.records("r")] == [0, 1, 2] and restarted.run_usage("r").calls == 3


def test_every_key_has_a_ttl_after_a_realistic_run(redis_url, tmp_path):
    prefix = unique_prefix("ttl")
    for window in ("none", "daily"):
        led = RedisLedger(redis_url, key_prefix=f"{prefix}-{window}", on_unavailable="fail_closed", team="t",
                          window=window, journal=tmp_path / f"{window}.jsonl")
        limits = {"run": Limit(tokens=10_000), "thread": Limit(tokens=10_000), "team": Limit(tokens=10**6),
                  "user": Limit(tokens=10**6)}
        for run in ("a", "b"):
            for step in range(3):
                scopes = {"run": run, "thread": "th", "user": "u1"}
                hold = led.reserve(scopes, 200, 0.001, limits)
                assert hold is not None
                if step == 1:
                    led.release(hold)  # the call failed
                    continue
                led.settle(hold, rec(run, step, thread="th"))
            led.record(StepRecord(run_id=run, thread_id="th", step=2, kind="probe", tier="small", model="fake",
                                  usage=Usage(input_tokens=3, calls=1)))
        led.add_grant("th", "grant-1", 100, 0.0)
        led.state("a", "th")
        led.reserve({"run": "c", "team": "t"}, 10, 0.0, limits)  # in flight at the end of the run
        keys = {k.decode(): led.client.ttl(k) for k in led.client.scan_iter(match=f"{{{led.key_prefix}}}*")}
        assert len(keys) > 10
        no_ttl = {k: ttl for k, ttl in keys.items() if ttl <= 0}
        assert not no_ttl, f"keys without a TTL ({window}): {no_ttl}"
        ttl = {k.split(":", 2)[1] + ":" + k.split(":")[2]: t for k, t in keys.items()}
        assert 0 < ttl["use:thread"] <= 30 * 86400 and 0 < ttl["use:run"] <= 7 * 86400
        assert 0 < keys[f"{{{led.key_prefix}}}:runs:z"] <= 7 * 86400
        print(f"\nKEY TTLS ({window}): {len(keys)} keys, all with a TTL; e.g. "
              + ", ".join(f"{k.split('}:', 1)[1]}={t}s" for k, t in sorted(keys.items())[:6]))


def test_two_apps_on_one_redis_keep_apart_by_policy_name(redis_url):
    def policy(name: str, extra: str = ""):
        return parse_policy(f"""
name: {name}
tiers: {{small: {{model: hosted_vllm/x}}}}
bands: [{{name: all, tier: small}}]
ledger:
  backend: redis
  redis: {{url: "{redis_url}", team: research, on_unavailable: fail_closed, timeout_s: 0.8, hold_ttl_s: 20{extra}}}
""", env={})

    app = unique_prefix("app")
    one, two = ledger_from_policy(policy(f"{app}-one")), ledger_from_policy(policy(f"{app}-two"))
    assert one.key_prefix == f"effagent:{app}-one" and one.socket_timeout_s == 0.8 and one.hold_ttl_s == 20
    one.record(rec("r", 0))
    assert one.scope_usage("team", "research").calls == 1
    assert two.scope_usage("team", "research").calls == 0  # another app's team of the same name
    shared = ledger_from_policy(policy(f"{app}-three", extra=f", key_prefix: 'effagent:{app}-one'"))
    assert shared.scope_usage("team", "research").calls == 1  # a pinned prefix shares it
