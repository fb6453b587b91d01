"""`effagent difficulty learn` / `score --model` and the learned estimator, as a user drives them."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest

from effagent.difficulty import build_estimator
from effagent.difficulty.learned import LabeledPrompt, LearnError, learn, load_model
from effagent.difficulty.rule import RuleEstimator
from effagent.evaluation import apgr
from effagent.records import Step
from effagent.tools import difficulty as commands


def _run(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="effagent")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    rc = args.func(args)
    return rc, out.getvalue(), err.getvalue()


def _workload(n: int, seed: int = 0) -> list[dict[str, object]]:
    """Prompts about 'tax' are hard for the cheap tier (the strong one gets them), the rest are easy for both:
    something the default rule cannot know and a learned model can."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hard = bool(rng.random() < 0.3)
        topic = "tax refund calculation" if hard else "garden watering schedule"
        words = ["please", "help", "with", "my", "question", "about", "the"]
        filler = " ".join(rng.choice(words, int(rng.integers(3, 12))))
        rows.append({"id": i, "prompt": f"{filler} {topic} {i}", "cheap_correct": not hard or bool(rng.random() < 0.2),
                     "strong_correct": True})
    return rows


def _jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_learn_then_score_with_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.json"
    rc, out, err = _run(["difficulty", "learn", "--out", str(model)], _jsonl(_workload(600)), monkeypatch)
    assert rc == 0, err
    assert model.exists() and "wrote" in out
    test = _workload(300, seed=1)
    stdin = "".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in test)
    rc, out, err = _run(["difficulty", "score", "--model", str(model)], stdin, monkeypatch)
    assert rc == 0, err
    scored = [json.loads(line) for line in out.splitlines()]
    assert [s["id"] for s in scored] == [r["id"] for r in test]  # same order, one line each
    cheap = [float(r["cheap_correct"]) for r in test]
    strong = [1.0] * len(test)
    learned = apgr([s["difficulty"] for s in scored], cheap, strong)
    rule = apgr(RuleEstimator().score_prompts([str(r["prompt"]) for r in test]), cheap, strong)
    assert learned > 0.8 and learned > rule + 0.2  # it learned what makes this workload hard


def test_few_rows_stay_close_to_the_default() -> None:
    rows = [LabeledPrompt(prompt=f"question {i}", cheap_correct=bool(i % 2), strong_correct=True) for i in range(12)]
    m = learn(rows)
    assert m.shrink <= 0.2  # 12 rows of noise barely move the default order
    no_contrast = learn([LabeledPrompt(prompt=f"q {i}", cheap_correct=True, strong_correct=True) for i in range(50)])
    assert no_contrast.shrink == 0.0


def test_policy_estimator_reads_the_model(tmp_path: Path) -> None:
    from effagent.policy import EstimatorRef

    path = tmp_path / "m.json"
    from effagent.difficulty.learned import save_model

    save_model(learn([LabeledPrompt(**r) for r in _workload(400)]), path)  # type: ignore[arg-type]
    ref = EstimatorRef(name="learned", path=str(path))
    est = build_estimator(type("Cfg", (), {"estimators": [ref]})())
    hard = est.estimate(Step.from_prompt("please help tax refund calculation 7")).score
    easy = est.estimate(Step.from_prompt("please help garden watering schedule 7")).score
    assert hard > easy
    with pytest.raises(ValueError, match="model file"):
        EstimatorRef(name="learned")
    with pytest.raises(ValueError, match="learned estimator only"):
        EstimatorRef(name="rule", path=str(path))


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"id": 5, "prompt": "x", "cheap_correct": true}', "line 2: missing field(s) strong_correct"),
        ('{"id": 5, "prompt": "x", "cheap_correct": 1, "strong_correct": true}',
         "line 2: cheap_correct must be true or false"),
        ('{"id": 5, "prompt": "x", "cheap_correct": "yes", "strong_correct": true}', "line 2: cheap_correct"),
        ("", "line 2: empty line"),
    ],
)
def test_bad_input_names_the_line_and_writes_no_file(bad: str, needle: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    good = _jsonl(_workload(3))
    lines = good.splitlines()
    stdin = lines[0] + "\n" + bad + "\n" + lines[1] + "\n"
    model = tmp_path / "m.json"
    rc, out, err = _run(["difficulty", "learn", "--out", str(model)], stdin, monkeypatch)
    assert rc == 2 and needle in err
    assert not model.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_an_existing_model_is_kept_when_learning_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.json"
    assert _run(["difficulty", "learn", "--out", str(model)], _jsonl(_workload(50)), monkeypatch)[0] == 0
    before = model.read_bytes()
    rc, _, _ = _run(["difficulty", "learn", "--out", str(model)], "{oops\n", monkeypatch)
    assert rc == 2 and model.read_bytes() == before


def test_model_from_another_version_or_not_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.json"
    assert _run(["difficulty", "learn", "--out", str(model)], _jsonl(_workload(50)), monkeypatch)[0] == 0
    data = json.loads(model.read_text())
    data["version"] = 999
    model.write_text(json.dumps(data))
    rc, out, err = _run(["difficulty", "score", "--model", str(model)], '{"id": 1, "prompt": "x"}\n', monkeypatch)
    assert rc == 2 and out == "" and str(model) in err and "version 999" in err and "learn it again" in err
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(LearnError, match="not a learned difficulty model"):
        load_model(other)
    rc, _, err = _run(["difficulty", "score", "--model", str(tmp_path / "missing.json")], '{"id": 1, "prompt": "x"}\n',
                      monkeypatch)
    assert rc == 2 and "missing.json" in err
