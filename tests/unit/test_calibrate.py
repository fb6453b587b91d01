"""`effagent calibrate`: the cheap/strong boundary for a target on recorded outcomes, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from effagent.data.recorded import load_sets
from effagent.difficulty import build_estimator
from effagent.difficulty.learned import LabeledPrompt, merge_labels, parse_outcomes
from effagent.policy import load_policy, parse_policy
from effagent.tools.calibrate import calibrate, new_boundaries, outcomes_needed, wilson, with_boundaries
from effagent.tools.cli import main

POLICY = """\
# two tiers; the boundary below is what calibrate moves
version: 1
name: two-tier
tiers:
  small: {model: hosted_vllm/small, api_base: "http://127.0.0.1:9/v1",
          price: {input_per_mtok: 0.10, output_per_mtok: 0.20}}
  large: {model: hosted_vllm/large, api_base: "http://127.0.0.1:9/v1",
          price: {input_per_mtok: 1.00, output_per_mtok: 3.00}}
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}   # cheap
  - {name: hard, min: 0.5, max: 1.0, tier: large}   # strong
"""

FOUR_BANDS = """\
version: 1
tiers:
  small: {model: hosted_vllm/small, api_base: "http://127.0.0.1:9/v1", price: {input_per_mtok: 0.1}}
  large: {model: hosted_vllm/large, api_base: "http://127.0.0.1:9/v1", price: {input_per_mtok: 1.0}}
bands:
  - name: easy
    min: 0.0
    max: 0.3   # keep me
    tier: small
  - {name: medium, min: 0.3, max: 0.6, tier: small}
  - {name: hard, min: 0.6, max: 0.85, tier: large}
  - {name: hardest, min: 0.85, max: 1.0, tier: large}
"""


@pytest.fixture(scope="module")
def arc_rows() -> list[dict[str, object]]:
    """The recorded ARC-challenge test outcomes that ship with effagent (Mixtral-8x7B -> GPT-4-1106)."""
    (rs,) = load_sets(domains=["arc_challenge"], split="eval")
    return [{"id": i, "prompt": r.prompt, "cheap_correct": bool(c >= 0.5), "strong_correct": bool(g >= 0.5),
             "source": "routerbench"} for i, (r, c, g) in enumerate(zip(rs.rows, rs.cheap, rs.strong, strict=True))]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _policy(tmp_path: Path, text: str = POLICY) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_recorded_outcomes_calibrate_and_the_written_policy_routes(
        tmp_path: Path, arc_rows: list[dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    pol, out = _policy(tmp_path), tmp_path / "calibrated.yaml"
    outcomes = _write(tmp_path / "arc.jsonl", arc_rows)
    rc = main(["calibrate", "--policy", str(pol), "--outcomes", str(outcomes), "--target-quality", "0.95",
               "--write", str(out), "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out)
    assert res["supported"] and res["outcomes"] == len(arc_rows)
    ch = res["choice"]
    assert ch["quality_interval"][0] >= 0.95 * res["strong_quality"] - 1e-9
    assert f"wrote {out}" in cap.err
    assert pol.read_text() == POLICY  # the input is untouched
    text = out.read_text()
    assert "# two tiers; the boundary below is what calibrate moves" in text
    assert "# cheap" in text and "# strong" in text
    new = load_policy(out)
    t = ch["threshold"]
    assert sorted((b.min, b.max) for b in new.bands) == [(0.0, t), (t, 1.0)]
    # the written policy routes the outcomes as the printed numbers say
    scores = build_estimator(new.difficulty, new).score_prompts([str(r["prompt"]) for r in arc_rows])
    tiers = [new.band_for(s).tier for s in scores]
    correct = [r["strong_correct"] if tier == "large" else r["cheap_correct"] for r, tier in zip(arc_rows, tiers,
                                                                                                   strict=True)]
    assert tiers.count("large") == ch["strong_steps"]
    assert np.isclose(np.mean(correct), ch["quality"])
    # the least cost: one boundary higher (the lowest-scored strong steps to the cheap tier) is not supported
    edge = min(s for s in scores if s >= t)
    higher = [r["cheap_correct"] if s <= edge else r["strong_correct"] for r, s in zip(arc_rows, scores, strict=True)]
    assert wilson(sum(higher), len(higher))[0] < 0.95 * res["strong_quality"]


def test_the_text_report(tmp_path: Path, arc_rows: list[dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["calibrate", "--policy", str(_policy(tmp_path)), "--outcomes", str(_write(tmp_path / "o.jsonl",
               arc_rows)), "--strong-share", "0.3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "strong share" in out and "$ per 1,000 steps" in out and "boundary small -> large: 0.5 ->" in out
    assert "bands:" in out and "easy" in out


def test_strong_share_holds_at_the_upper_bound(arc_rows: list[dict[str, object]]) -> None:
    pol = parse_policy(POLICY)
    prompts = [str(r["prompt"]) for r in arc_rows]
    scores = build_estimator(pol.difficulty, pol).score_prompts(prompts)
    res = calibrate(pol, prompts, [bool(r["cheap_correct"]) for r in arc_rows],
                    [bool(r["strong_correct"]) for r in arc_rows], scores=scores, strong_share=0.3)
    assert res.choice is not None
    assert res.choice.share_interval[1] <= 0.3
    assert res.choice.strong_steps == sum(s >= res.choice.threshold for s in scores)


def test_too_few_outcomes_says_how_many_more(tmp_path: Path, arc_rows: list[dict[str, object]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new.yaml"
    rc = main(["calibrate", "--policy", str(_policy(tmp_path)), "--outcomes",
               str(_write(tmp_path / "few.jsonl", arc_rows[:20])), "--target-quality", "0.95", "--write", str(out)])
    cap = capsys.readouterr()
    assert rc == 1
    assert "too few outcomes to support the target" in cap.out
    assert "more outcomes" in cap.out
    assert "boundary small -> large" not in cap.out  # no fitted guess printed as a result
    assert not out.exists() and "not written" in cap.err


def test_needed_count_is_the_least_that_holds() -> None:
    n = outcomes_needed(0.95, 0.9, lower=True)
    assert n is not None
    assert wilson(0.95 * n, n)[0] >= 0.9 > wilson(0.95 * (n - 1), n - 1)[0]
    assert outcomes_needed(0.9, 0.9, lower=True) is None  # only just at the target: never supported
    m = outcomes_needed(0.2, 0.3, lower=False)
    assert m is not None and wilson(0.2 * m, m)[1] <= 0.3 < wilson(0.2 * (m - 1), m - 1)[1]


@pytest.mark.parametrize(("line", "why"), [
    ("not json", "not valid JSON"),
    ('{"id": 2, "prompt": "b", "cheap_correct": "yes", "strong_correct": true}', "cheap_correct must be true or false"),
    ('{"id": 2, "cheap_correct": true, "strong_correct": true}', "missing field(s) prompt"),
])
def test_bad_outcome_lines_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, why: str) -> None:
    good = '{"id": 1, "prompt": "a", "cheap_correct": true, "strong_correct": true}'
    f = tmp_path / "bad.jsonl"
    f.write_text(good + "\n" + line + "\n", encoding="utf-8")
    out = tmp_path / "new.yaml"
    rc = main(["calibrate", "--policy", str(_policy(tmp_path)), "--outcomes", str(f), "--target-quality", "0.9",
               "--write", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{f} line 2" in err and why in err
    assert not out.exists()


def test_a_bad_policy_is_named_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = _policy(tmp_path, POLICY.replace("max: 0.5, tier: small", "max: 0.5, tier: smal"))
    rc = main(["calibrate", "--policy", str(pol), "--outcomes", str(tmp_path / "none.jsonl"), "--strong-share", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{pol}:10:" in err and "unknown tier 'smal'" in err


def test_writing_over_the_input_keeps_a_backup(tmp_path: Path, arc_rows: list[dict[str, object]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pol = _policy(tmp_path)
    outcomes = str(_write(tmp_path / "o.jsonl", arc_rows))
    rc = main(["calibrate", "--policy", str(pol), "--outcomes", outcomes, "--strong-share", "0.3", "--write", str(pol)])
    assert rc == 0, capsys.readouterr().err
    backup = tmp_path / "policy.yaml.bak"
    assert backup.read_text() == POLICY
    calibrated = pol.read_text()
    assert calibrated != POLICY
    load_policy(pol)
    # a second run to other boundaries would overwrite the backup: refused, nothing written
    rc = main(["calibrate", "--policy", str(pol), "--outcomes", outcomes, "--strong-share", "0.5", "--write", str(pol)])
    assert rc == 2 and "exists" in capsys.readouterr().err
    assert pol.read_text() == calibrated and backup.read_text() == POLICY


def test_multi_band_policies_keep_order_tiers_and_comments() -> None:
    pol = parse_policy(FOUR_BANDS)
    # t inside the cheap bands' range: boundaries that stay below t keep their values...
    assert new_boundaries(pol, 0.5) == [(0, 0.0, 0.3), (1, 0.3, 0.5), (2, 0.5, 0.85), (3, 0.85, 1.0)]
    # ...and a side where one would cross t is rescaled so every band keeps a share
    low = new_boundaries(pol, 0.2)
    assert low == [(0, 0.0, 0.1), (1, 0.1, 0.2), (2, 0.2, 0.85), (3, 0.85, 1.0)]
    high = new_boundaries(pol, 0.9)
    assert [(lo, hi) for _, lo, hi in high] == [(0.0, 0.3), (0.3, 0.9), (0.9, 0.9625), (0.9625, 1.0)]
    text = with_boundaries(FOUR_BANDS, pol, 0.2)
    assert "max: 0.1   # keep me" in text
    new = parse_policy(text)
    assert [(b.name, b.tier, b.min, b.max) for b in new.bands] == [
        ("easy", "small", 0.0, 0.1), ("medium", "small", 0.1, 0.2), ("hard", "large", 0.2, 0.85),
        ("hardest", "large", 0.85, 1.0)]


def test_a_one_tier_policy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = _policy(tmp_path, POLICY.replace("tier: large}", "tier: small}"))
    f = _write(tmp_path / "o.jsonl", [{"id": 1, "prompt": "a", "cheap_correct": True, "strong_correct": True}])
    rc = main(["calibrate", "--policy", str(pol), "--outcomes", str(f), "--strong-share", "0.3"])
    assert rc == 2 and "both go to tier 'small'" in capsys.readouterr().err


def test_production_outcome_lines_are_read_as_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lines a policy's learning.outcomes file holds: extra keys allowed; a step's recorded outcome replaces
    its agreement label."""
    shadow = {"id": "r1:0", "prompt": "What is 2+2?", "cheap_correct": True, "strong_correct": True,
              "label": "agreement", "cheap_tier": "small", "strong_tier": "large", "run_id": "r1", "step": 0,
              "tier": "small", "band": "easy", "difficulty": 0.3, "ts": 1764540000.0}
    told = {**shadow, "cheap_correct": False, "label": "outcome"}
    other = {**shadow, "id": "r1:1", "step": 1}
    rows = parse_outcomes([json.dumps(r) for r in (shadow, other, told)], source="outcomes.jsonl")
    merged = merge_labels(rows)
    assert [(o.id, o.cheap_correct, getattr(o, "label", None)) for o in merged] == [
        ("r1:1", True, "agreement"), ("r1:0", False, "outcome")]
    assert all(isinstance(o, LabeledPrompt) for o in merged)
    f = _write(tmp_path / "prod.jsonl", [shadow, other, told] * 40)
    model = tmp_path / "m.json"
    assert main(["difficulty", "learn", "--input", str(f), "--out", str(model)]) == 0
    assert "wrote" in capsys.readouterr().out and model.exists()


def test_estimator_model_goes_into_the_written_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        hard = bool(rng.random() < 0.3)
        rows.append({"id": i, "prompt": f"{'tax refund calculation' if hard else 'garden watering'} question {i}",
                     "cheap_correct": not hard, "strong_correct": True})
    outcomes, model, out = _write(tmp_path / "o.jsonl", rows), tmp_path / "m.json", tmp_path / "learned.yaml"
    assert main(["difficulty", "learn", "--input", str(outcomes), "--out", str(model)]) == 0
    capsys.readouterr()
    rc = main(["calibrate", "--policy", str(_policy(tmp_path)), "--outcomes", str(outcomes), "--target-quality",
               "0.9", "--estimator-model", str(model), "--write", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert f"learned ({model})" in cap.out
    new = load_policy(out)
    assert [(e.name, e.path) for e in new.difficulty.estimators] == [("learned", str(model))]
    est = build_estimator(new.difficulty, new)
    assert est.name == "learned"
    hard = est.score_prompts(["tax refund calculation question 9999"])[0]
    easy = est.score_prompts(["garden watering question 9999"])[0]
    assert new.band_for(hard).tier == "large" and new.band_for(easy).tier == "small"


def test_a_relative_estimator_model_is_written_as_the_policy_file_will_read_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--estimator-model`` is a path from the working directory; the written policy names it from its own folder,
    which is where ``load_policy`` (validate, explain, the integrations) reads a relative model path from."""
    rows = [{"id": i, "prompt": f"{'tax refund calculation' if i % 3 == 0 else 'garden watering'} question {i}",
             "cheap_correct": i % 3 != 0, "strong_correct": True} for i in range(300)]
    (tmp_path / "models").mkdir()
    (tmp_path / "out").mkdir()
    outcomes = _write(tmp_path / "o.jsonl", rows)
    policy = _policy(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["difficulty", "learn", "--input", str(outcomes), "--out", "models/m.json"]) == 0
    capsys.readouterr()
    rc = main(["calibrate", "--policy", str(policy), "--outcomes", str(outcomes), "--target-quality", "0.9",
               "--estimator-model", "models/m.json", "--write", "out/learned.yaml"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert "learned (models/m.json)" in cap.out  # scored with the model the user named
    written = tmp_path / "out" / "learned.yaml"
    assert 'path: "../models/m.json"' in written.read_text()
    monkeypatch.chdir(tmp_path / "models")  # from anywhere: the path is the policy file's
    new = load_policy(written)
    assert [Path(e.path).resolve() for e in new.difficulty.estimators] == [(tmp_path / "models" / "m.json").resolve()]
    assert build_estimator(new.difficulty, new).name == "learned"
    # the written policy calibrates again from its own folder: its model is found the same way
    assert main(["calibrate", "--policy", str(written), "--outcomes", str(outcomes), "--target-quality", "0.9"]) == 0


def test_labels_from_another_strong_tier_are_pointed_out(tmp_path: Path, arc_rows: list[dict[str, object]],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{**r, "label": "agreement", "strong_tier": "xl"} for r in arc_rows]
    rc = main(["calibrate", "--policy", str(_policy(tmp_path)), "--outcomes", str(_write(tmp_path / "o.jsonl", rows)),
               "--strong-share", "0.3"])
    assert rc == 0
    assert "labelled against tier(s) xl; the policy's top band goes to large" in capsys.readouterr().err
