"""Reservations on the in-memory ledger: all-or-nothing holds, settle/release, expiry, and threads that
cannot overspend a shared budget."""

from __future__ import annotations

import random
import threading
import time

import pytest

from effagent import parse_policy
from effagent.ledger import InMemoryLedger, Reservation, ledger_from_policy
from effagent.ledger.base import Ledger, StepRecord, Usage, to_nano
from effagent.policy import Limit


def rec(run: str, step: int = 0, inp: int = 10, out: int = 5, cost: float = 0.0, thread: str | None = None,
        ) -> StepRecord:
    return StepRecord(run_id=run, thread_id=thread, step=step, tier="small", model="fake",
                      usage=Usage(input_tokens=inp, output_tokens=out, cost_usd=cost, calls=1))


def test_reserve_checks_spent_plus_reserved_plus_amount_per_scope():
    led = InMemoryLedger()
    limits = {"run": Limit(tokens=100), "team": Limit(tokens=150)}
    a = led.reserve({"run": "r1", "team": "t"}, 60, 0.0, limits)
    assert isinstance(a, Reservation) and a.backend == "memory"
    assert led.reserved("run", "r1") == (60, 0.0) and led.reserved("team", "t") == (60, 0.0)
    assert led.reserve({"run": "r1", "team": "t"}, 41, 0.0, limits) is None  # run: 60 + 41 > 100
    b = led.reserve({"run": "r2", "team": "t"}, 90, 0.0, limits)  # team: 60 + 90 = 150
    assert b is not None
    # all or nothing: the run has room, the team has none -> nothing is held anywhere
    assert led.reserve({"run": "r3", "team": "t"}, 1, 0.0, limits) is None
    assert led.reserved("run", "r3") == (0, 0.0)
    # scopes without a limit are held but never refuse
    assert led.reserve({"user": "u"}, 10**9, 0.0, limits) is not None


def test_settle_records_real_usage_and_frees_the_hold():
    led = InMemoryLedger()
    limits = {"team": Limit(tokens=100)}
    res = led.reserve({"run": "r", "thread": "th", "user": "u", "team": "t"}, 80, 0.0, limits)
    led.settle(res, rec("r", thread="th", inp=20, out=10, cost=0.25))
    assert led.reserved("team", "t") == (0, 0.0)
    for scope, key in (("run", "r"), ("thread", "th"), ("user", "u"), ("team", "t")):
        assert led.scope_usage(scope, key).total_tokens == 30, scope
    assert led.run_usage("r").cost_usd == 0.25 and led.records("r")[0].usage.input_tokens == 20
    assert led.reserve({"team": "t"}, 71, 0.0, limits) is None and led.reserve({"team": "t"}, 70, 0.0, limits)


def test_release_frees_without_recording_and_is_idempotent():
    led = InMemoryLedger()
    res = led.reserve({"run": "r"}, 50, 0.5, {"run": Limit(tokens=50, usd=0.5)})
    led.release(res)
    led.release(res)
    assert led.reserved("run", "r") == (0, 0.0) and led.run_usage("r") == Usage() and not led.records()
    assert led.reserve({"run": "r"}, 50, 0.5, {"run": Limit(tokens=50, usd=0.5)}) is not None


def test_dollar_limits_are_exact_in_nano_dollars():
    led = InMemoryLedger()
    limits = {"run": Limit(usd=0.3)}
    for _ in range(3):  # 0.1 + 0.1 + 0.1 > 0.3 in floats; not in nano-dollars
        res = led.reserve({"run": "r"}, 0, 0.1, limits)
        assert res is not None
        led.settle(res, rec("r", cost=0.1))
    assert to_nano(led.run_usage("r").cost_usd) == to_nano(0.3)
    assert led.reserve({"run": "r"}, 0, 1e-9, limits) is None
    assert led.reserve({"run": "r"}, 0, 0.0, limits) is not None


def test_reservations_expire_so_a_crashed_worker_does_not_hold_budget():
    now = [1000.0]
    led = InMemoryLedger(clock=lambda: now[0])
    limits = {"team": Limit(tokens=100)}
    res = led.reserve({"team": "t"}, 100, 0.0, limits, ttl_s=30)
    assert res.expires_at == 1030.0
    assert led.reserve({"team": "t"}, 1, 0.0, limits) is None
    now[0] += 30
    assert led.reserved("team", "t") == (0, 0.0)
    assert led.reserve({"team": "t"}, 100, 0.0, limits) is not None
    led.settle(res, rec("late"))  # a late settle of an expired hold still records what was used
    assert led.run_usage("late").total_tokens == 15


def test_negative_amounts_are_refused():
    with pytest.raises(ValueError, match="negative"):
        InMemoryLedger().reserve({"run": "r"}, -1, 0.0, {})


def test_static_scopes_count_every_record():
    led = InMemoryLedger(scopes={"team": "core"})
    led.record(rec("r1", thread="t"))
    led.record(rec("r2"))
    assert led.scope_usage("team", "core").calls == 2 and led.scope_usage("thread", "t").calls == 1


def test_existing_api_is_unchanged():
    led = InMemoryLedger()
    led.record(rec("r", 0, thread="t"))
    led.record(rec("r", 1, thread="t"))
    st = led.state("r", "t")
    assert st.steps == 2 and st.run.total_tokens == 30 and st.thread.total_tokens == 30
    assert led.total().calls == 2 and InMemoryLedger.supports_reservations and not led.degraded


def test_a_ledger_without_reservations_says_so():
    class Minimal(Ledger):
        def record(self, rec): ...
        def run_usage(self, run_id): return Usage()
        def thread_usage(self, thread_id): return Usage()
        def records(self, run_id=None): return []

    m = Minimal()
    assert not m.supports_reservations and m.reserved("run", "r") == (0, 0.0)
    with pytest.raises(NotImplementedError, match="does not support reservations"):
        m.reserve({"run": "r"}, 1, 0.0, {})
    assert m.scope_usage("run", "r") == Usage()


def test_threads_sharing_a_budget_never_overspend_with_reservations():
    led = InMemoryLedger()
    limit, step_max = 20_000, 300
    limits = {"team": Limit(tokens=limit)}

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        misses = 0
        while misses < 50:
            res = led.reserve({"run": f"r{seed}", "team": "t"}, step_max, 0.0, limits)
            if res is None:
                misses += 1
                time.sleep(0.0005)
                continue
            time.sleep(rng.uniform(0, 0.0005))
            used = rng.randint(1, step_max)
            led.settle(res, rec(f"r{seed}", inp=used // 2, out=used - used // 2))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = led.scope_usage("team", "t").total_tokens
    assert limit - step_max < spent <= limit  # used up, never over
    assert led.reserved("team", "t") == (0, 0.0)
    assert sum(r.usage.total_tokens for r in led.records()) == spent


def test_ledger_from_policy_memory_is_the_default():
    pol = parse_policy("tiers: {small: {model: hosted_vllm/x}}\nbands: [{name: all, tier: small}]\n", env={})
    assert isinstance(ledger_from_policy(pol), InMemoryLedger)
