"""`effagent bench overhead` runs end to end on a tiny setting (timings are measured, not asserted)."""

from __future__ import annotations

import json

from effagent.bench import overhead


def test_overhead_bench_measures_both_variants_and_writes_json(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    assert overhead.main(["--steps", "3", "--runs", "4", "--warmup", "1", "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    ps = result["per_step"]
    assert ps["added"]["n"] == 4 and ps["baseline_abs"]["n"] == 4 and ps["effagent_abs"]["n"] == 4
    assert ps["in_step"]["n"] == 4 * 3  # one sample per model step of the instrumented copy
    assert ps["in_step"]["p50_ms"] > 0 and ps["effagent_abs"]["p50_ms"] > 0
    assert result["meets_target"] == (ps["added"]["p50_ms"] <= overhead.TARGET_P50_MS)
    printed = capsys.readouterr().out
    assert "added per step (end to end)" in printed and f"wrote {out}" in printed


def test_overhead_bench_with_checkpointed_graphs(tmp_path, capsys):
    # each run on a thread of its own: a shared thread would carry the earlier runs' messages into the next
    out = tmp_path / "overhead.json"
    args = ["--steps", "3", "--runs", "3", "--warmup", "1", "--no-progress", "--checkpointer", "--out", str(out)]
    assert overhead.main(args) == 0
    result = json.loads(out.read_text())
    assert result["checkpointer"] is True and result["per_step"]["added"]["n"] == 3
    assert result["answer_metadata"] == "decision"
    assert "checkpointed graphs" in capsys.readouterr().out
    assert overhead.main([*args, "--answer-metadata", "summary"]) == 0
    assert json.loads(out.read_text())["answer_metadata"] == "summary"
    assert "answer metadata: summary" in capsys.readouterr().out
