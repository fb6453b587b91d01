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
