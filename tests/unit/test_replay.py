"""Replay metrics on tiny synthetic sets, and the command end to end on a small recorded slice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from effagent.bench import replay
from effagent.bench.replay import ReplaySet, accuracy_curve, apgr, run_replay, strong_share_for_quality

CHEAP = [1, 0, 0, 1, 0, 1, 0, 0, 1, 1]
STRONG = [1, 1, 1, 1, 0, 1, 1, 0, 1, 1]  # strong is never worse: oracle APGR is exactly 1 at the limit


def test_oracle_apgr_close_to_one_and_constant_is_half() -> None:
    rng = np.random.default_rng(0)
    cheap = (rng.random(1000) < 0.7).astype(float)
    strong = np.maximum(cheap, (rng.random(1000) < 0.05).astype(float))  # strong never worse, few gainers
    oracle = strong - cheap
    assert apgr(oracle, cheap, strong) == pytest.approx(1.0, abs=0.05)
    assert apgr(rng.random(1000), cheap, strong) == pytest.approx(0.5, abs=0.15)
    # small sets: the oracle is still the best order
    small = np.subtract(STRONG, CHEAP)
    assert apgr(small, CHEAP, STRONG) > apgr(np.random.default_rng(0).random(10), CHEAP, STRONG)
    assert apgr([0.3] * 10, CHEAP, STRONG) == pytest.approx(0.5)  # ties resolved by expectation


def test_curve_endpoints_and_worst_order() -> None:
    s = np.subtract(STRONG, CHEAP)
    acc = accuracy_curve(s, CHEAP, STRONG)
    assert acc[0] == pytest.approx(np.mean(CHEAP)) and acc[-1] == pytest.approx(np.mean(STRONG))
    assert apgr(-s, CHEAP, STRONG) < 0.5 < apgr(s, CHEAP, STRONG)


def test_hand_computed_apgr() -> None:
    # 2 items; only item 0 gains. score puts item 1 first: acc(f) = 0.5 until f>0.5, then linear to 1.
    cheap, strong = [0, 1], [1, 1]
    grid = np.linspace(0, 1, 101)
    expected = np.mean(np.clip(2 * grid - 1, 0, 1))
    assert apgr([0.0, 1.0], cheap, strong) == pytest.approx(expected)
    assert strong_share_for_quality([1.0, 0.0], cheap, strong) == pytest.approx(0.45)  # 0.5 + 0.45 = 0.95
    assert strong_share_for_quality([0.0, 1.0], cheap, strong) == pytest.approx(0.95)


def _tiny_set() -> ReplaySet:
    prompts = [f"question {i} " + "word " * i for i in range(10)]
    return ReplaySet(
        name="tiny",
        cheap_model="c",
        strong_model="s",
        prompts=prompts,
        cheap_correct=[float(x) for x in CHEAP],
        strong_correct=[float(x) for x in STRONG],
        cheap_responses=["#### 1"] * 10,
        strong_responses=["the answer is 1 " * 5] * 10,
        prices={"c": (0.5, 0.5), "s": (10.0, 30.0)},
    )


def test_run_replay_rows_and_costs() -> None:
    rs = _tiny_set()
    rows = run_replay(
        rs,
        {"length": lambda ps: [len(p) for p in ps]},
        verifier=lambda ps, ans: [0.5] * len(ps),
        progress=False,
    )
    names = [r.name for r in rows]
    assert names[1] == "oracle" and "length" in names and "verifier (cascade)" in names
    oracle = rows[1]
    assert oracle.dollars_saved is not None and oracle.dollars_saved > 0
    cascade = rows[-1]
    # the cascade pays every cheap call: it saves less than a router escalating the same share
    assert cascade.total_tokens_saved is not None and oracle.total_tokens_saved is not None
    assert len(rows[0].curve) == 101


def test_replay_command_writes_json_and_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data" / "routing"
    data.mkdir(parents=True)
    rows = [{"question": f"q{i} " + "x " * i, "scores": {"a": float(i % 2), "b": float(i % 3 != 0)}} for i in range(12)]
    (data / "llmrouter_test.json").write_text(json.dumps(rows))
    parser = argparse.ArgumentParser()
    replay.register(parser.add_subparsers(dest="bench"))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "replay",
            "--sets",
            "llmrouter",
            "--estimators",
            "length",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    res = json.loads((out / "replay.json").read_text())
    set_ = res["sets"]["llmrouter"]
    assert set_["cheap_model"] == "a" and set_["strong_model"] == "b"
    assert {r["name"] for r in set_["rows"]} >= {"oracle", "length"}
    assert (out / "replay.png").stat().st_size > 0
