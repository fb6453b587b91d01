"""`effagent bench overhead` runs end to end on a tiny setting (timings are measured, not asserted)."""

from __future__ import annotations

import json

from effagent.tools.bench import overhead

ROW_LABELS = [label for label, _ in overhead.ROWS]


def test_overhead_bench_measures_three_variants_side_by_side_and_writes_json(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    assert overhead.main(["--steps", "3", "--runs", "4", "--warmup", "1", "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    ps = result["per_step"]
    # plain graph, +ModelCallLimitMiddleware, +effagent: every run of each variant measured, paired per run
    for key in ("baseline_abs", "call_limit_abs", "effagent_abs", "call_limit_added", "added"):
        assert ps[key]["n"] == 4, key
        assert set(ps[key]) == {"p50_ms", "p99_ms", "mean_ms", "n"}
    assert ps["in_step"]["n"] == 4 * 3  # one sample per model step of the instrumented copy
    assert ps["baseline_abs"]["p50_ms"] > 0 and ps["call_limit_abs"]["p50_ms"] > 0 and ps["effagent_abs"]["p50_ms"] > 0
    assert result["call_limit_middleware"]["class"] == "langchain.agents.middleware.ModelCallLimitMiddleware"
    assert result["call_limit_middleware"]["run_limit"] > 3  # never trips: every run took all its steps
    ratio = result["effagent_vs_call_limit"]
    for q, key in (("p50", "p50_ms"), ("mean", "mean_ms")):
        den = ps["call_limit_added"][key]
        assert ratio[q] == (ps["added"][key] / den if den > 0 else None)
    assert result["meets_target"] == (ratio["p50"] is not None and ratio["p50"] <= overhead.TARGET_RATIO)

    printed = capsys.readouterr().out
    for label in ROW_LABELS:
        assert label in printed, label
    assert "effagent added / ModelCallLimitMiddleware added:" in printed and f"wrote {out}" in printed
    effagent_row = next(line for line in printed.splitlines() if line.startswith("added by effagent"))
    assert f"{ps['added']['p50_ms']:.3f}" in effagent_row  # the table prints what the JSON holds


def test_overhead_ratio_is_not_given_when_the_yardstick_added_nothing():
    assert overhead._ratio(0.2, 0.4) == 0.5
    assert overhead._ratio(0.2, 0.0) is None and overhead._ratio(0.2, -0.1) is None
    result = {"runs": 1, "steps_per_run": 1, "ledger": "memory", "target_ratio": 1.25, "meets_target": True,
              "per_step": {key: {"p50_ms": 0.1, "p99_ms": 0.2, "mean_ms": 0.1, "n": 1} for _, key in overhead.ROWS},
              "effagent_vs_call_limit": {"p50": None, "mean": 0.5}}
    assert "ModelCallLimitMiddleware added: n/a (p50), 0.50 (mean)" in overhead.render(result)


def test_overhead_bench_with_checkpointed_graphs(tmp_path, capsys):
    # each run on a thread of its own: a shared thread would carry the earlier runs' messages into the next
    out = tmp_path / "overhead.json"
    args = ["--steps", "3", "--runs", "3", "--warmup", "1", "--no-progress", "--checkpointer", "--out", str(out)]
    assert overhead.main(args) == 0
    result = json.loads(out.read_text())
    assert result["checkpointer"] is True and result["per_step"]["added"]["n"] == 3
    assert result["per_step"]["call_limit_added"]["n"] == 3
    assert result["answer_metadata"] == "decision"
    assert "checkpointed graphs" in capsys.readouterr().out
    assert overhead.main([*args, "--answer-metadata", "summary"]) == 0
    assert json.loads(out.read_text())["answer_metadata"] == "summary"
    assert "answer metadata: summary" in capsys.readouterr().out
