"""`effagent bench ledger --quick` against a real redis-server: in every row (team budget shared by concurrent
runs, one thread's budget shared by concurrent runs; each on_exhausted mode) the total recorded in Redis stays
within the limit and every model call made is recorded."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")

from effagent.tools.bench import ledger as bench
from tests.integration import redis_fixture

redis_url = redis_fixture.redis_url  # fixture


@pytest.mark.redis
@pytest.mark.slow
def test_quick_ledger_bench_holds_every_cap(redis_url, tmp_path, capsys):
    out = tmp_path / "bench-ledger.json"
    rc = bench.main(["--quick", "--redis-url", redis_url, "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {(r["scenario"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(s, m) for s in bench.SCENARIOS for m in bench.MODES}
    for (scenario, mode), r in rows.items():
        where = f"{scenario}/{mode}: {json.dumps({k: v for k, v in r.items() if k != 'per_process'})}"
        assert r["runs"] == (40 if scenario == "team" else 20), where
        assert r["failed"] == 0, where
        assert r["recorded_tokens"] <= r["limit"] == 15_000, where
        assert r["calls_made"] == r["calls_recorded"] > 0, where
        assert r["tokens_made"] == r["recorded_tokens"], where  # the ledger holds what the model reported
        assert r["held_after"][0] == 0, where  # no reservation outlives its step
        capped = r["finalize_calls"] + r["halted"] + r["errors"] + r["paused"]
        assert capped > 0, where  # the budget did stop runs
        assert r["completed"] + r["finalized"] + r["halted"] + r["errors"] + r["paused"] == r["runs"], where
        if mode == "error":
            assert r["errors"] > 0 and r["finalize_calls"] == 0, where
        if mode == "interrupt" and scenario == "thread":  # a thread budget pauses for a person
            assert r["paused"] > 0, where
    assert result["holds"] and rc == 0
    assert "every row holds: yes" in printed
