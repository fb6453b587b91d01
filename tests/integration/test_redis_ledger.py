"""The Redis ledger against a real redis-server: exact totals under load, reservations that hold a shared
budget, crashes of workers and of the server, fail-open / fail-closed."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")

from effagent.errors import LedgerUnavailable
from effagent.ledger import ledger_from_policy
from effagent.ledger.base import StepRecord, Usage, to_nano
from effagent.ledger.redis import RedisLedger, safe_url
from effagent.policy import Limit, parse_policy
from tests.integration import _ledger_workers as workers
from tests.integration import redis_fixture
from tests.integration.redis_fixture import unique_prefix

redis_url = redis_fixture.redis_url  # fixtures
redis_servers = redis_fixture.redis_servers

ROOT = Path(__file__).resolve().parents[2]
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def rec(run: str, step: int, inp: int = 10, out: int = 5, cost: float = 1e-6, thread: str | None = None,
        kind: str = "model") -> StepRecord:
    return StepRecord(run_id=run, thread_id=thread, step=step, kind=kind, tier="small", model="fake",
                      usage=Usage(input_tokens=inp, output_tokens=out, cost_usd=cost, calls=1))


def _spawn(target, args_list) -> list[dict]:
    """Run ``target(*args, go, results)`` in one spawned process per args; all start together (a barrier
    after each has connected) and each puts one result dict."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Barrier(len(args_list) + 1, timeout=120), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, go, results)) for args in args_list]
    for p in procs:
        p.start()
    try:
        go.wait()
        out: list[dict] = []
        deadline = time.monotonic() + 300
        while len(out) < len(procs):
            try:
                out.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"worker(s) failed: {[(p.pid, p.exitcode) for p in dead]}"
                assert time.monotonic() < deadline, "workers did not finish in 300s"
        for p in procs:
            p.join(30)
            assert p.exitcode == 0, f"worker {p.pid} exited with {p.exitcode}"
        return out
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


# -------------------------------------------------------------------------------------------------------
# Basic semantics against a real server
# -------------------------------------------------------------------------------------------------------
@pytest.mark.redis
def test_record_and_read_back(redis_url):
    led = RedisLedger(redis_url, key_prefix=unique_prefix("rw"), on_unavailable="fail_closed", team="core")
    led.record(rec("r1", 0, thread="t1"))
    led.record(rec("r1", 0, inp=3, out=0, kind="probe", thread="t1"))
    led.record(rec("r1", 1, thread="t1"))
    assert led.run_usage("r1") == Usage(input_tokens=23, output_tokens=10, cost_usd=3e-6, calls=3)
    assert led.thread_usage("t1").total_tokens == 33
    assert led.scope_usage("team", "core").total_tokens == 33
    assert led.steps("r1") == 2  # model steps 0 and 1 (the probe is not a step)
    st = led.state("r1", "t1")
    assert st.steps == 2 and st.run.total_tokens == 33 and st.thread.calls == 3
    assert st == led.state("r1", "t1", None)
    assert led.state("r1", "t1", thread_base=Usage(input_tokens=1)).thread.input_tokens == 1
    assert [r.step for r in led.records("r1")] == [0, 0, 1]
    assert len(led.records()) == 3
    assert led.total().calls == 3
    assert led.run_usage("nope") == Usage()


@pytest.mark.redis
def test_a_grant_lives_as_long_as_the_threads_total(redis_url):
    """A thread in use keeps its grant: each record refreshes the grant keys' TTL with the thread total's, so an
    old grant never expires before the total it raised the limit of (and the limit shrinks under a live run)."""
    led = RedisLedger(redis_url, key_prefix=unique_prefix("grant-ttl"), on_unavailable="fail_closed",
                      thread_ttl_s=100)
    assert led.add_grant("t1", "g1", 500, 0.0) == "added"
    total_key, grant_keys = led._use_key("thread", "t1"), led._grant_keys("t1")
    for key in grant_keys:
        led.client.expire(key, 5)  # as if the grant were made long ago
    led.record(rec("r1", 0, thread="t1"))
    assert [led.client.ttl(k) > 90 for k in (total_key, *grant_keys)] == [True, True, True]
    assert led.granted("t1") == (500, 0.0)
    led.record(rec("r2", 0, thread="t2"))  # another thread's record leaves t1's grant alone
    assert not led.client.exists(*led._grant_keys("t2"))


@pytest.mark.redis
def test_reservations_all_or_nothing_and_settle(redis_url):
    led = RedisLedger(redis_url, key_prefix=unique_prefix("res"), on_unavailable="fail_closed")
    scopes = {"run": "r", "team": "a"}
    limits = {"team": Limit(tokens=100, usd=0.001)}
    a = led.reserve(scopes, 60, 0.0002, limits)
    assert a is not None and a.backend == "redis" and a.expires_at > time.time()
    assert led.reserved("team", "a") == (60, pytest.approx(0.0002))
    assert led.reserve(scopes, 41, 0.0, limits) is None  # 60 held + 41 > 100
    assert led.reserve({"run": "other", "team": "b"}, 41, 0.0, limits) is not None  # another team
    b = led.reserve(scopes, 40, 0.0, limits)
    assert b is not None
    led.settle(a, rec("r", 0, inp=20, out=10, cost=0.0001))  # spent 30, held 40
    assert led.reserved("team", "a")[0] == 40
    assert led.scope_usage("team", "a").total_tokens == 30
    assert led.reserve(scopes, 31, 0.0, limits) is None and led.reserve(scopes, 30, 0.0, limits) is not None
    led.release(b)
    led.release(b)  # idempotent
    assert led.reserved("team", "a")[0] == 30
    # dollars: exact nano-dollar arithmetic
    assert led.reserve(scopes, 0, 0.0009 + 1e-9, limits) is None  # $0.0001 spent + $0.0009 + 1n$ > $0.001


@pytest.mark.redis
def test_reservations_expire(redis_url):
    prefix = unique_prefix("ttl")
    gone = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    led = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    limits = {"team": Limit(tokens=100)}
    assert gone.reserve({"team": "x"}, 100, 0, limits, ttl_s=0.2) is not None
    gone.close()  # a worker that stops holding it (no more renewals), like one that crashed
    assert led.reserve({"team": "x"}, 1, 0, limits) is None
    time.sleep(0.3)
    assert led.reserved("team", "x") == (0, 0.0)
    assert led.reserve({"team": "x"}, 100, 0, limits) is not None


@pytest.mark.redis
def test_daily_window_keys_user_and_team_per_day(redis_url):
    now = [1_700_000_000.0]
    led = RedisLedger(redis_url, key_prefix=unique_prefix("win"), on_unavailable="fail_closed", team="t",
                      window="daily", clock=lambda: now[0])
    led.record(rec("r1", 0))
    assert led.scope_usage("team", "t").total_tokens == 15
    now[0] += 86400
    assert led.scope_usage("team", "t").total_tokens == 0  # a new day, a new team budget
    assert led.run_usage("r1").total_tokens == 15  # runs are not windowed
    key = led._use_key("team", "t", now[0] - 86400)
    assert key.endswith(":20231114") and 0 < led.client.ttl(key) <= 3 * 86400


@pytest.mark.redis
def test_ledger_from_policy_builds_the_redis_ledger(redis_url):
    prefix = unique_prefix("pol")
    pol = parse_policy(f"""
tiers: {{small: {{model: hosted_vllm/x}}}}
bands: [{{name: all, tier: small}}]
ledger:
  backend: redis
  redis: {{url: "{redis_url}", key_prefix: {prefix}, team: research, on_unavailable: fail_closed}}
""", env={})
    led = ledger_from_policy(pol)
    assert isinstance(led, RedisLedger) and led.team == "research" and led.key_prefix == prefix
    led.record(rec("r", 0))
    assert led.scope_usage("team", "research").calls == 1


# -------------------------------------------------------------------------------------------------------
# Load: many processes, one ledger, exact totals
# -------------------------------------------------------------------------------------------------------
@pytest.mark.redis
@pytest.mark.slow
def test_1000_concurrent_runs_across_processes_give_exact_totals(redis_url):
    prefix, team = unique_prefix("load"), "load-team"
    n_runs, n_procs, steps, threads = 1000, 8, 5, 125  # every run in flight at once
    chunks = [list(range(i, n_runs, n_procs)) for i in range(n_procs)]
    t0 = time.perf_counter()
    out = _spawn(workers.load_worker, [(redis_url, prefix, team, c, steps, threads) for c in chunks])
    wall = time.perf_counter() - t0
    assert sum(o["denied"] for o in out) == 0 and not any(o["degraded"] for o in out)

    led = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    want = workers.expected(range(n_runs), steps, team)
    pipe = led.client.pipeline(transaction=False)
    for scope, key in want:
        pipe.hmget(led._use_key(scope, key), "in", "out", "rsn", "nusd", "calls")
    got = {k: tuple(int(x or 0) for x in v) for k, v in zip(want, pipe.execute(), strict=True)}
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} scope totals differ, e.g. {next(iter(wrong.items()))}"
    team_total = got[("team", team)]
    assert team_total[4] == n_runs * steps
    assert led.reserved("team", team) == (0, 0.0)  # every hold settled or released
    assert led.total().calls == n_runs * steps
    assert len(led.records()) == n_runs * steps
    print(f"\nLOAD: {n_runs} runs x {steps} steps in {n_procs} processes x {threads} threads: {wall:.2f}s wall "
          f"({n_runs * steps / wall:.0f} steps/s, each reserve+settle); team total {team_total[0]} in + "
          f"{team_total[1]} out tokens, {team_total[2]} reasoning, ${team_total[3] / 1e9:.9f} "
          f"({team_total[3]} n$), {team_total[4]} calls: exact over {len(want)} scopes")


@pytest.mark.redis
@pytest.mark.slow
def test_team_budget_is_not_overspent_beyond_in_flight_reservations(redis_url):
    step_max, limit, n_procs, threads = 400, 60_000, 6, 16
    report = {}
    for mode in ("reserve", "check"):
        prefix, team = unique_prefix(f"over-{mode}"), f"team-{mode}"
        out = _spawn(workers.overspend_worker,
                     [(redis_url, prefix, team, limit, step_max, mode, threads, i) for i in range(n_procs)])
        led = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
        spent = led.scope_usage("team", team).total_tokens
        inflight_max = int(led.client.get(f"{prefix}-inflight-max") or 0)
        bound = inflight_max * step_max  # the reserved maximum of the steps in flight together
        overspend = spent - limit
        report[mode] = (spent, overspend, inflight_max, bound, sum(o["steps"] for o in out))
        assert overspend <= bound, f"{mode}: overspent {overspend} tokens > bound {bound}"
        assert led.reserved("team", team)[0] == 0
    print(f"\nOVERSPEND (team limit {limit} tokens, step max {step_max}, {n_procs} processes x {threads} threads):")
    for mode, (spent, over, infl, bound, steps) in report.items():
        print(f"  {mode:8s}: {steps} steps, spent {spent}, overspend {max(0, over)} tokens "
              f"(max {infl} steps in flight -> bound {bound})")
    assert report["reserve"][1] <= 0  # with reservations (real usage <= the reserved maximum): never over


# -------------------------------------------------------------------------------------------------------
# Faults
# -------------------------------------------------------------------------------------------------------
@pytest.mark.redis
def test_a_killed_worker_loses_no_recorded_usage(redis_url, tmp_path):
    prefix, run = unique_prefix("kill"), "crash-run"
    ack = tmp_path / "ack"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration._ledger_workers", "record-loop", redis_url,
                             prefix, run, str(ack)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not ack.exists() or ack.read_text().count("\n") < 200:
            assert proc.poll() is None, "the worker died on its own"
            assert time.monotonic() < deadline, "the worker recorded too little"
            time.sleep(0.01)
        proc.kill()  # SIGKILL mid-run, most likely in the middle of a record call
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    acked = [int(x) for x in ack.read_text().split()]
    led = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed")
    records = led.records(run)
    steps = [r.step for r in records]
    # every acknowledged record is there, in order; at most the one in flight got in without its ack
    assert steps[:len(acked)] == acked and len(steps) - len(acked) in (0, 1)
    total = led.run_usage(run)
    want = [workers.step_usage(7, s) for s in steps]
    assert total.input_tokens == sum(u.input_tokens for u in want) == sum(r.usage.input_tokens for r in records)
    assert total.output_tokens == sum(u.output_tokens for u in want)
    assert round(total.cost_usd * 1e9) == sum(to_nano(u.cost_usd) for u in want)
    assert total.calls == len(steps) == led.thread_usage("t-crash").calls


@pytest.mark.redis
def test_fail_closed_when_the_server_dies(redis_servers, tmp_path):
    server = redis_servers(persist=True)
    led = RedisLedger(server.url, key_prefix=unique_prefix("fc"), on_unavailable="fail_closed", socket_timeout_s=0.5,
                      journal=tmp_path / "journal.jsonl")
    led.record(rec("r", 0))
    server.kill()
    with pytest.raises(LedgerUnavailable) as e:  # no new call is started on an unknown budget
        led.reserve({"run": "r"}, 10, 0, {})
    msg = str(e.value)
    assert server.url in msg and "redis-server is running" in msg and "fail_open" in msg
    # a call that was made is paid for: its record does not raise, it is journaled (and said so)
    with pytest.warns(RuntimeWarning, match="journal"):
        led.record(rec("r", 1))
    assert led.journaled() == 1 and [e["event"] for e in led.events] == ["journaled"]
    server.start()
    led.replay_journal()
    assert led.journaled() == 0 and led.run_usage("r").calls == 2
    assert [r.step for r in led.records("r")] == [0, 1]


@pytest.mark.redis
def test_fail_open_degrades_then_recovers_and_loses_nothing(redis_servers, tmp_path):
    server = redis_servers(persist=True)
    events = []
    led = RedisLedger(server.url, key_prefix=unique_prefix("fo"), on_unavailable="fail_open", socket_timeout_s=0.5,
                      retry_s=0.2, on_event=lambda kind, ev: events.append(kind), journal=tmp_path / "j.jsonl")
    for s in range(3):
        led.record(rec("r", s, thread="t"))
    res = led.reserve({"run": "r", "team": "x"}, 100, 0, {"team": Limit(tokens=1000)})
    server.kill()  # the server crashes with a step in flight
    with pytest.warns(RuntimeWarning, match="failing open") as warned:
        led.settle(res, rec("r", 3, thread="t"))
        for s in range(4, 6):
            led.record(rec("r", s, thread="t"))
    assert len(warned) == 1 and led.degraded and events == ["degraded"]
    # the local view while degraded: the last total seen in Redis (3 calls) and what this process recorded since
    assert led.run_usage("r").calls == 6
    local = led.reserve({"run": "r", "team": "x"}, 10, 0, {"team": Limit(tokens=1000)})
    assert local is not None and local.backend == "local"

    server.start()  # same port; AOF: it comes back with everything it had acknowledged
    time.sleep(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        led.settle(local, rec("r", 6, thread="t"))
    assert not led.degraded and events == ["degraded", "recovered"]
    assert led.run_usage("r").calls == 7 and led.steps("r") == 7
    assert led.scope_usage("team", "x").calls == 2  # the two settled reservations
    assert led.thread_usage("t").total_tokens == 7 * 15
    assert [r.step for r in led.records("r")] == [0, 1, 2, 3, 4, 5, 6]


def test_fail_closed_when_unreachable_from_the_start():
    with pytest.raises(LedgerUnavailable) as e:
        RedisLedger(DEAD_URL, on_unavailable="fail_closed", socket_timeout_s=0.2)
    assert "127.0.0.1:1" in str(e.value) and "ledger.redis.url" in str(e.value)


def test_fail_open_when_unreachable_from_the_start_warns_once_and_counts_locally():
    with pytest.warns(RuntimeWarning, match="failing open") as warned:
        led = RedisLedger(DEAD_URL, on_unavailable="fail_open", socket_timeout_s=0.2, retry_s=3600)
        for s in range(3):
            led.record(rec("r", s))
    assert len(warned) == 1 and led.degraded and led.events[0]["event"] == "degraded"
    assert led.run_usage("r").calls == 3 and led.steps("r") == 3
    assert led.reserve({"run": "r"}, 50, 0, {"run": Limit(tokens=100)}) is not None  # 45 spent + 50 <= 100
    assert led.reserve({"run": "r"}, 6, 0, {"run": Limit(tokens=100)}) is None  # 45 spent + 50 held + 6 > 100


def test_ledger_from_policy_fail_closed_and_memory_default():
    from effagent.ledger import InMemoryLedger

    base = "tiers: {small: {model: hosted_vllm/x}}\nbands: [{name: all, tier: small}]\n"
    assert isinstance(ledger_from_policy(parse_policy(base, env={})), InMemoryLedger)
    pol = parse_policy(base + f"ledger: {{backend: redis, redis: {{url: '{DEAD_URL}', on_unavailable: fail_closed}}}}",
                       env={})
    with pytest.raises(LedgerUnavailable):
        ledger_from_policy(pol, socket_timeout_s=0.2)


def test_password_is_not_printed():
    assert safe_url("redis://user:hunter2@host:6380/0") == "redis://user:***@host:6380/0"
    assert safe_url("redis://host:6380/0") == "redis://host:6380/0"


class SlowRedisLedger(RedisLedger):
    """The real Redis ledger with 0.2 s more per read and write, like a store across a slow network."""

    def state(self, *args, **kwargs):
        time.sleep(0.2)
        return super().state(*args, **kwargs)

    def record(self, rec):
        time.sleep(0.2)
        super().record(rec)


@pytest.mark.redis
async def test_an_async_agent_awaits_the_redis_ledger_without_blocking_its_event_loop(redis_url):
    import asyncio

    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage

    from effagent.integrations.langchain import EfficiencyMiddleware
    from effagent.observe import NullObserver
    from tests.fakes import FakeTierModel, ai
    from tests.unit.test_step import ticker

    policy = parse_policy("""
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small}
""", env={})
    ledger = SlowRedisLedger(redis_url, key_prefix=unique_prefix("async"))
    small = FakeTierModel(tier="small", script=[ai("4", input_tokens=12, output_tokens=3)])
    mw = EfficiencyMiddleware(policy, models={"small": small}, ledger=ledger, observer=NullObserver())
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    gaps: list[float] = []
    tick = asyncio.create_task(ticker(gaps))
    try:
        result = await agent.ainvoke({"messages": [HumanMessage("What is 2 + 2?")]})
    finally:
        tick.cancel()
    assert result["messages"][-1].content == "4"
    total = ledger.total()  # read back from Redis
    assert (total.input_tokens, total.output_tokens, total.calls) == (12, 3, 1)
    assert len(gaps) >= 20 and max(gaps) < 0.15, f"the event loop stalled for {max(gaps):.3f}s on the ledger"
