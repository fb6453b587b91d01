"""The `difficulty score` contract, driven through argparse with the module's own register()."""

from __future__ import annotations

import argparse
import io
import json

import pytest

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


PROMPTS = [
    {"id": 1, "prompt": "What is 2 + 2?"},
    {"id": "b", "prompt": "Prove that there are infinitely many primes p with p = 4k + 3."},
    {"id": 3, "prompt": "Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest at $2. How much?"},
    {"id": None, "prompt": ""},
]


@pytest.mark.parametrize("estimator", ["rule", "trained", "length", "trained:0.5,length:0.5"])
def test_score_one_line_per_input_in_order(estimator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = "".join(json.dumps(p) + "\n" for p in PROMPTS)
    rc, out, err = _run(["difficulty", "score", "--estimator", estimator], stdin, monkeypatch)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in PROMPTS]
    assert all(set(r) == {"id", "difficulty"} for r in rows)
    assert all(0.0 <= r["difficulty"] <= 1.0 for r in rows)


def test_default_estimator_is_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = json.dumps(PROMPTS[2]) + "\n"
    _, out_default, _ = _run(["difficulty", "score"], stdin, monkeypatch)
    _, out_rule, _ = _run(["difficulty", "score", "--estimator", "rule"], stdin, monkeypatch)
    _, out_trained, _ = _run(["difficulty", "score", "--estimator", "trained"], stdin, monkeypatch)
    assert out_default == out_rule != out_trained


def test_no_trailing_newline_and_empty_input(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out, _ = _run(["difficulty", "score"], json.dumps(PROMPTS[0]), monkeypatch)
    assert rc == 0 and len(out.splitlines()) == 1
    rc, out, _ = _run(["difficulty", "score"], "", monkeypatch)
    assert rc == 0 and out == ""


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("{not json", "line 2"),
        ('{"id": 5}', "line 2"),
        ('{"id": 5, "prompt": 7}', "line 2"),
        ("[1, 2]", "line 2"),
        ("", "line 2"),
    ],
)
def test_bad_line_exit_2_names_line_and_writes_nothing(bad: str, needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = json.dumps(PROMPTS[0]) + "\n" + bad + "\n" + json.dumps(PROMPTS[1]) + "\n"
    rc, out, err = _run(["difficulty", "score"], stdin, monkeypatch)
    assert rc == 2
    assert out == ""
    assert needle in err


def test_unknown_estimator_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out, err = _run(["difficulty", "score", "--estimator", "nope"], json.dumps(PROMPTS[0]), monkeypatch)
    assert rc == 2 and out == "" and "nope" in err
