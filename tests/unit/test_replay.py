"""Replay metrics on tiny synthetic sets, and the command end to end on a small recorded slice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from effagent.tools.bench import replay
from effagent.tools.bench.replay import ReplaySet, accuracy_curve, apgr, run_replay, strong_share_for_quality

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


def test_evaluation_intervals_and_random_reference() -> None:
    from effagent.evaluation import bootstrap_apgr, random_apgr

    rng = np.random.default_rng(1)
    cheap = rng.random(400) < 0.6
    strong = cheap | (rng.random(400) < 0.5)
    good = strong.astype(float) - cheap + 0.3 * rng.random(400)
    lo, hi = bootstrap_apgr(good, cheap, strong, resamples=200)
    assert lo < apgr(good, cheap, strong) < hi and lo > 0.5
    mean, sd = random_apgr(cheap, strong, orders=100)
    assert abs(mean - 0.5) < 2 * sd / np.sqrt(100) + 0.01 and 0 < sd < 0.1


def test_recorded_sets_ship_with_the_package() -> None:
    from effagent.data.recorded import DOMAINS, load_sets

    evals = {s.domain: s for s in load_sets(split="eval")}
    assert set(evals) == set(DOMAINS)
    assert len(evals["gsm8k"].rows) == 1319 and len(evals["arc_challenge"].rows) == 439
    assert len(evals["winogrande"].rows) == 380 and len(evals["mbpp"].rows) == 128
    arc = evals["arc_challenge"]
    assert arc.header.strong_model == "gpt-4-1106-preview" and arc.strong.mean() > arc.cheap.mean()
    assert arc.rows[0].prompt.rstrip().endswith("Answer:")  # the last question block, not the 5-shot prompt
    assert arc.rows[0].answers and arc.cost(arc.header.cheap_model).sum() > 0


def test_default_estimator_is_never_clearly_below_random_on_a_shipped_domain() -> None:
    from effagent.data.recorded import load_sets
    from effagent.difficulty.combine import DEFAULT_ESTIMATOR, get_estimator
    from effagent.evaluation import bootstrap_apgr

    est = get_estimator(DEFAULT_ESTIMATOR)
    for rs in load_sets(split="eval"):
        _, hi = bootstrap_apgr(est.score_prompts(rs.prompts), rs.cheap, rs.strong, resamples=300)
        assert hi > 0.5, rs.domain


def test_replay_on_shipped_sets_prints_cross_domain_lodo_and_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EFFAGENT_DATA_DIR", raising=False)
    parser = argparse.ArgumentParser()
    replay.register(parser.add_subparsers(dest="bench"))
    out = tmp_path / "out"
    args = parser.parse_args(["replay", "--sets", "mbpp,winogrande", "--estimators", "rule,length", "--lodo",
                              "learned", "--resamples", "50", "--random-orders", "20", "--out", str(out),
                              "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "cross-domain APGR" in text and "leave-one-domain-out" in text and "learning curves" in text
    assert "agreement cascade (3 votes)" in text  # from the recorded answers of other cheap models
    res = json.loads((out / "replay.json").read_text())
    assert set(res["leave_one_domain_out"]) == {"mbpp", "winogrande"}
    cell = res["leave_one_domain_out"]["winogrande"]["learned"]
    assert cell["low"] <= cell["apgr"] <= cell["high"]
    wino = {r["name"]: r for r in res["sets"]["winogrande"]["rows"]}
    cascade = wino["agreement cascade (3 votes)"]
    assert cascade["kind"] == "cascade" and cascade["dollars_saved"] is not None
    assert (out / "replay.png").stat().st_size > 0 and "<img" in (out / "replay.html").read_text()


def test_agreement_labels_stand_in_for_correctness_on_choice_sets() -> None:
    from effagent.data.recorded import load_sets

    (arc,) = load_sets(domains=["arc_challenge"], split="eval")
    labels = replay.agreement_labels(arc)
    assert labels is not None and len(labels.rows) == len(arc.rows)
    assert set(np.unique(labels.strong)) == {1.0}  # the strong answer is taken as right
    assert float(np.mean(labels.cheap == arc.cheap)) > 0.85  # agreement mostly matches the graded correctness
    (mbpp,) = load_sets(domains=["mbpp"], split="eval")
    assert replay.agreement_labels(mbpp) is None  # code answers are not extracted: no agreement labels
