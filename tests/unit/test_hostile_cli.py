"""Hostile files for the policy loader and every CLI command that reads one.

The probes of issue #24 (an alias bomb, a 50 MB policy, non-UTF-8 bytes, duplicate keys, non-finite numbers,
binary or wrongly shaped JSON, directories, FIFOs, missing folders, NaN weights) each get one clear line and
exit 2, never a traceback, never a hang, never an output overwritten; then a property-based fuzz test drives
each command with generated garbage (``FUZZ_EXAMPLES`` examples per command, no deadline, no example database:
the same budget in CI as here).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from effagent import PolicyError, parse_policy
from effagent.policy import MAX_POLICY_BYTES, load_policy
from effagent.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
FUZZ_EXAMPLES = 40
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

GOOD = """\
tiers:
  small: {model: hosted_vllm/smol, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
  large: {model: hosted_vllm/large, price: {input_per_mtok: 10.0, output_per_mtok: 30.0}}
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: large}
telemetry: {enabled: false}
"""


def alias_bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for i in range(levels - 1):
        name = f"l{i}"
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


def run(capsys, argv: list[str], stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -------------------------------------------------------------------------------------------------------
# The policy loader
# -------------------------------------------------------------------------------------------------------
def test_alias_bomb_is_refused_fast(tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(PolicyError, match=r"p\.yaml:\d+:\d+: aliases expand the policy"):
        parse_policy(alias_bomb(9), source="p.yaml", env={})
    assert time.perf_counter() - t0 < 1.0
    (tmp_path / "bomb.yaml").write_text(alias_bomb(9))
    t0 = time.perf_counter()
    rc, _, err = run(capsys, ["validate", str(tmp_path / "bomb.yaml")])
    assert rc == 2 and "aliases expand" in one_line(err) and time.perf_counter() - t0 < 1.0


def test_a_50_mb_policy_is_refused_fast(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"k: 1\n" * 10_000_000)  # 50 MB
    t0 = time.perf_counter()
    rc, _, err = run(capsys, ["validate", str(big)])
    took = time.perf_counter() - t0
    assert rc == 2 and f"more than a policy file may have ({MAX_POLICY_BYTES:,})" in one_line(err), err
    assert took < 1.0
    with pytest.raises(PolicyError, match=r":1:1: .*more than a policy may have"):
        parse_policy("k: 1\n" * 100_000, env={})


@pytest.mark.parametrize("text", [
    "k: " + "[" * 10_000,                                        # nesting (PyYAML's scanner is quadratic in it)
    "".join(f"k{i}: {i}\n" for i in range(6000)),                # too many values
    "x: &x [1]\n" + "".join(f"y{i}: *x\n" for i in range(150)),  # too many aliases
])
def test_files_that_would_make_the_loader_work_hard_are_refused_fast(text):
    t0 = time.perf_counter()
    with pytest.raises(PolicyError) as e:
        parse_policy(text, source="p.yaml", env={})
    assert time.perf_counter() - t0 < 1.0 and e.value.problems[0].startswith("p.yaml:")


def test_non_utf8_policy_names_line_and_column(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.encode() + "name: caf\xe9\n".encode("latin-1"))
    for argv in (["validate", str(p)], ["explain", "--policy", str(p), "hi"]):
        rc, _, err = run(capsys, argv)
        assert rc == 2 and one_line(err) == f"{p}:8:10: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_duplicate_keys_and_non_finite_numbers_are_policy_errors():
    with pytest.raises(PolicyError) as e:
        parse_policy(GOOD + "budgets: {run: {tokens: 5}}\nbudgets: {run: {tokens: 9}}\n", source="p.yaml", env={})
    assert e.value.problems == ["p.yaml:9:1: duplicate key 'budgets' (first at line 8, column 1); keep one (YAML "
                                "would silently keep the last)"]
    for value in (".inf", "-.inf", ".nan", ".NaN", "1e400", "'inf'", "'nan'"):
        with pytest.raises(PolicyError, match=r"p\.yaml:8:\d+: .*finite") as e:
            parse_policy(GOOD + f"budgets: {{run: {{usd: {value}}}}}\n", source="p.yaml", env={})
    with pytest.raises(PolicyError, match="finite"):  # a number the schema does not know about
        parse_policy(GOOD.replace("hosted_vllm/smol,", "hosted_vllm/smol, extra_body: {t: .nan},"), env={})


def test_telemetry_and_outcomes_paths_are_checked_at_load(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for extra, where in ((f"telemetry: {{path: {fifo}}}", "telemetry.path"),
                         (f"telemetry: {{path: {tmp_path}}}", "telemetry.path"),
                         (f"telemetry: {{path: {tmp_path / 'file.txt' / 'x.jsonl'}}}", "telemetry.path"),
                         (f"learning: {{outcomes: {fifo}}}\ntelemetry: {{enabled: false}}", "learning.outcomes")):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(PolicyError, match=rf"p\.yaml:\d+:\d+: {where}: .*(FIFO|directory|a regular file)"):
            parse_policy(GOOD.replace("telemetry: {enabled: false}\n", "") + extra + "\n", source="p.yaml", env={})
    ok = GOOD.replace("telemetry: {enabled: false}", f"telemetry: {{path: {tmp_path / 'new' / 'deeper' / 't.jsonl'}}}")
    assert parse_policy(ok, env={}).telemetry.path.endswith("t.jsonl")  # creatable: fine


def test_a_fifo_at_the_trace_path_never_blocks_the_agent(tmp_path, monkeypatch):
    """The path was a regular file when the policy was loaded; a FIFO put there later is refused, not waited on."""
    from langchain.agents import create_agent

    from effagent.integrations.langchain import EfficiencyMiddleware
    from effagent.ledger import InMemoryLedger
    from effagent.telemetry import observer_from_policy
    from tests.fakes import FakeTierModel, ai

    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    traces = tmp_path / "traces.jsonl"
    policy = parse_policy(GOOD.replace("telemetry: {enabled: false}", f"telemetry: {{path: {traces}}}"), env={})
    os.mkfifo(traces)
    models = {t: FakeTierModel(tier=t, script=[ai("fine")]) for t in ("small", "large")}
    mw = EfficiencyMiddleware(policy, models=models, ledger=InMemoryLedger(), observer=observer_from_policy(policy))
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(agent.invoke({"messages": [HumanMessage("hi")]})),
                              daemon=True)
    worker.start()
    worker.join(20)
    assert done, "agent.invoke hung on a FIFO trace path"


# -------------------------------------------------------------------------------------------------------
# CLI commands: one line, exit 2, nothing overwritten
# -------------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    (tmp_path / "policy.yaml").write_text(GOOD)
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "shape.jsonl").write_text('[1, 2]\n{"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}\n')
    (tmp_path / "nan.jsonl").write_text('{"run_id": "r", "usage": {"input_tokens": 1, "output_tokens": 1, '
                                        '"cost_usd": NaN}}\n')
    (tmp_path / "outcomes.jsonl").write_text("".join(
        json.dumps({"id": str(i), "prompt": f"question {i} " * (i % 7 + 1), "cheap_correct": i % 3 != 0,
                    "strong_correct": True}) + "\n" for i in range(60)))
    (tmp_path / "existing.html").write_text("KEEP ME")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_report_refuses_bad_traces_and_keeps_the_old_page(files, capsys):
    page = files / "report.html"
    for name in ("binary.bin", "empty.jsonl", "shape.jsonl", "nan.jsonl", "fifo", "."):
        page.write_text("KEEP ME")
        rc, _, err = run(capsys, ["report", str(files / name), "-o", str(page)])
        assert rc == 2 and one_line(err).startswith("effagent: "), (name, err)
        assert page.read_text() == "KEEP ME"
    good = files / "traces.jsonl"
    good.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "attributes": [
        {"key": "effagent.span", "value": {"stringValue": "run"}},
        {"key": "effagent.run_id", "value": {"stringValue": "r1"}}]}]}]}]}) + "\n")
    for out in (files, files / "missing" / "r.html", files / "fifo"):
        rc, _, err = run(capsys, ["report", str(good), "-o", str(out)])
        assert rc == 2 and one_line(err).startswith("effagent: "), (out, err)


@pytest.mark.parametrize("name", ["binary.bin", "empty.jsonl", "shape.jsonl", "nan.jsonl", "fifo", "."])
def test_budgets_suggest_refuses_bad_input(files, capsys, name):
    rc, out, err = run(capsys, ["budgets", "suggest", str(files / name), "--json", str(files / "existing.html")])
    assert rc == 2 and one_line(err).startswith("effagent: ") and "nan" not in out.lower()
    assert (files / "existing.html").read_text() == "KEEP ME"


def test_calibrate_refuses_bad_outputs_and_inputs(files, capsys):
    base = ["calibrate", "--policy", str(files / "policy.yaml"), "--strong-share", "0.3"]
    for argv in ([*base, "--outcomes", str(files / "outcomes.jsonl"), "--write", str(files)],
                 [*base, "--outcomes", str(files / "outcomes.jsonl"), "--write", str(files / "no" / "p.yaml")],
                 [*base, "--outcomes", str(files / "binary.bin")],
                 [*base, "--outcomes", str(files / "fifo")],
                 [*base, "--outcomes", str(files)],
                 ["calibrate", "--policy", str(files / "fifo"), "--outcomes", str(files / "outcomes.jsonl"),
                  "--strong-share", "0.3"]):
        rc, _, err = run(capsys, argv)
        assert rc == 2 and one_line(err), (argv, err)


def test_difficulty_commands_refuse_bad_input(files, capsys, monkeypatch):
    ok = b'{"id": 1, "prompt": "hi"}\n'
    for argv, stdin in ((["difficulty", "score"], b'{"id": "\\ud800", "prompt": "hi"}\n'),
                        (["difficulty", "score"], b"\xff\xfe\x00binary"),
                        (["difficulty", "score"], b'{"id": NaN, "prompt": "hi"}\n'),
                        (["difficulty", "score", "--estimator", "rule:nan,length:inf"], ok),
                        (["difficulty", "score", "--estimator", "rule:-1,length:1"], ok),
                        (["difficulty", "score", "--estimator", "rule:x"], ok),
                        (["difficulty", "score", "--model", str(files / "fifo")], ok),
                        (["difficulty", "score", "--model", str(files / "binary.bin")], ok),
                        (["difficulty", "learn", "--out", str(files)], ok),
                        (["difficulty", "learn", "--out", str(files / "no" / "m.json")], ok),
                        (["difficulty", "learn", "--input", str(files / "fifo"), "--out", str(files / "m.json")], ok)):
        rc, out, err = run(capsys, argv, stdin, monkeypatch)
        assert rc == 2 and out == "" and one_line(err), (argv, err)


def test_explain_with_a_missing_learned_model_is_one_line(files, capsys):
    p = files / "learned.yaml"
    p.write_text(GOOD + "difficulty: {estimators: [{name: learned, path: nope/model.json}]}\n")
    rc, _, err = run(capsys, ["explain", "--policy", str(p), "hi"])
    assert rc == 2 and "no such model file" in one_line(err)


def test_validate_and_explain_refuse_special_files(files, capsys):
    for target in ("fifo", ".", "binary.bin", "missing.yaml"):
        for argv in (["validate", str(files / target)], ["explain", "--policy", str(files / target), "hi"]):
            t0 = time.perf_counter()
            rc, _, err = run(capsys, argv)
            assert rc == 2 and one_line(err).startswith(str(files / target)) and time.perf_counter() - t0 < 5


# -------------------------------------------------------------------------------------------------------
# Fuzz: generated garbage into the loader and every command that reads a file
# -------------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)
SPAN_KEYS = ["effagent.span", "effagent.run_id", "effagent.thread_id", "effagent.run.total_tokens",
             "effagent.run.cost_usd", "gen_ai.usage.output_tokens", "gen_ai.operation.name", "effagent.step"]
attr_values = st.one_of(st.builds(lambda v: {"stringValue": v}, st.sampled_from(["run", "step", "call", "chat", "x"])),
                        st.builds(lambda v: {"intValue": v}, st.integers(-5, 10**20) | st.text(max_size=4)),
                        st.builds(lambda v: {"doubleValue": v}, st.floats(allow_nan=True) | st.text(max_size=4)),
                        json_values)
otlp_lines = st.lists(st.fixed_dictionaries({"key": st.sampled_from(SPAN_KEYS), "value": attr_values}), max_size=6).map(
    lambda attrs: json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "s", "attributes": attrs}]}]}]}))
ledger_lines = st.fixed_dictionaries({"run_id": json_values, "usage": json_values | st.fixed_dictionaries(
    {"input_tokens": json_values, "output_tokens": json_values, "cost_usd": json_values})}).map(json.dumps)
outcome_lines = st.fixed_dictionaries({"id": json_values, "prompt": json_values, "cheap_correct": json_values,
                                       "strong_correct": json_values}).map(json.dumps)
garbage = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(json_values.map(lambda v: json.dumps(v)), max_size=5).map(lambda ls: "\n".join(ls).encode()),
    st.lists(otlp_lines | ledger_lines | outcome_lines, min_size=1, max_size=5).map(lambda ls: "\n".join(ls).encode()),
)
COMMANDS = {
    "validate": lambda d: ["validate", str(d / "input")],
    "explain": lambda d: ["explain", "--policy", str(d / "input"), "hi"],
    "report": lambda d: ["report", str(d / "input"), "-o", str(d / "out.html")],
    "budgets suggest": lambda d: ["budgets", "suggest", str(d / "input"), "--json", str(d / "out.html")],
    "calibrate": lambda d: ["calibrate", "--policy", str(d / "policy.yaml"), "--outcomes", str(d / "input"),
                            "--strong-share", "0.3", "--write", str(d / "out.html")],
    "difficulty learn": lambda d: ["difficulty", "learn", "--input", str(d / "input"), "--out", str(d / "out.html")],
    "difficulty score": lambda d: ["difficulty", "score"],
}
POLICY_READERS = {"validate", "explain"}


@pytest.mark.parametrize("command", list(COMMANDS))
@FUZZ
@given(data=garbage)
def test_fuzz_every_command_gives_a_result_or_one_clear_line(command, data, tmp_path_factory, capsys, monkeypatch):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "input").write_bytes(data)
    (d / "policy.yaml").write_text(GOOD)
    (d / "out.html").write_text("KEEP ME")
    rc, out, err = run(capsys, COMMANDS[command](d), data if command == "difficulty score" else None, monkeypatch)
    assert "Traceback" not in err
    if rc == 0:
        return
    assert rc in (1, 2), (rc, err)
    lines = err.strip().splitlines()
    assert lines, "a failure without a word"
    if command in POLICY_READERS and lines[0].startswith(str(d / "input") + ":"):
        assert all(line.startswith(str(d / "input") + ":") for line in lines), err  # PATH:LINE:COL problems
    elif rc == 2:
        assert len(lines) == 1, err
    assert (d / "out.html").read_text() == "KEEP ME"  # never overwritten when the input was not right


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_policy_bytes_are_a_policy_or_a_located_policy_error(data):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "p.yaml"
        p.write_bytes(data)
        try:
            load_policy(p, env={})
        except PolicyError as e:
            assert e.problems and all(line.startswith(f"{p}:") and line[len(str(p)) + 1].isdigit()
                                      for line in e.problems), e.problems
