"""The in-memory ledger keeps its memory bounded in a long-running process, and its totals exact."""

from __future__ import annotations

import pytest

from effagent.ledger import InMemoryLedger
from effagent.ledger.base import StepRecord, Usage


def rec(run: str, tokens: int = 10, thread: str | None = None, step: int = 0) -> StepRecord:
    return StepRecord(run_id=run, thread_id=thread, step=step, tier="small", model="m",
                      usage=Usage(input_tokens=tokens, calls=1))


def test_keeps_the_last_records_and_an_exact_total():
    led = InMemoryLedger(max_records=3)
    for i in range(10):
        led.record(rec("r", tokens=i + 1, step=i))
    assert [r.usage.input_tokens for r in led.records()] == [8, 9, 10]
    assert led.total().input_tokens == sum(range(1, 11)) and led.total().calls == 10
    assert led.run_usage("r").input_tokens == 55 and led.steps("r") == 10  # the run itself is still active


def test_forgets_the_least_recently_active_runs_and_threads_first():
    led = InMemoryLedger(max_runs=2)
    led.record(rec("a", thread="ta"))
    led.record(rec("b", thread="tb"))
    led.record(rec("a", thread="ta"))  # a is active again: b is now the oldest
    led.record(rec("c", thread="tc"))
    assert led.run_usage("a").input_tokens == 20 and led.run_usage("c").input_tokens == 10
    assert led.run_usage("b") == Usage() and led.records("b") == [] and led.steps("b") == 0
    assert led.thread_usage("tb") == Usage() and led.thread_usage("ta").input_tokens == 20
    assert led.total().input_tokens == 40


def test_many_runs_stay_within_the_bound():
    led = InMemoryLedger(max_runs=100, max_records=500)
    for i in range(5000):
        led.record(rec(f"run-{i}", thread=f"t-{i}"))
    assert len(led.records()) == 500 and led.total().calls == 5000
    assert sum(1 for i in range(5000) if led.run_usage(f"run-{i}").calls) == 100
    assert sum(1 for i in range(5000) if led.thread_usage(f"t-{i}").calls) == 100


def test_none_keeps_everything():
    led = InMemoryLedger(max_runs=None, max_records=None)
    for i in range(300):
        led.record(rec(f"run-{i}"))
    assert len(led.records()) == 300 and all(led.run_usage(f"run-{i}").calls == 1 for i in range(300))


@pytest.mark.parametrize("bad", [{"max_runs": 0}, {"max_records": -1}, {"max_runs": 2.5}])
def test_bad_bounds_are_refused_with_what_to_pass(bad):
    with pytest.raises(ValueError, match="positive integer or None"):
        InMemoryLedger(**bad)


def test_record_ids_never_repeat_across_forked_workers_or_a_seeded_random():
    """A shared ledger counts a record once per id: ids drawn in a forked worker, or after application code seeded
    the random module, must not repeat the parent's."""
    import os
    import random

    from effagent.ledger.base import new_id

    random.seed(0)
    first = new_id()
    random.seed(0)
    assert new_id() != first and len(first) == 32 and int(first, 16) >= 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the ids it draws next, to the parent
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    child_ids = {child[i:i + 32] for i in range(0, len(child), 32)}
    parent_ids = {new_id() for _ in range(50)}
    assert len(child_ids) == 50 and not child_ids & parent_ids
