"""The demo's inputs ship with the package (no repository checkout needed) and the shipped policies are the
only copies: the examples and docs load them from ``effagent/policies``; the demo's optional replay table never
ends the demo."""

from __future__ import annotations

import argparse
import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from effagent import policies
from effagent.errors import PolicyError
from effagent.tools import demo

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "effagent"


def test_every_shipped_policy_validates_and_the_demo_default_is_shipped():
    assert {"balanced", "frugal", "quality", "gpu-qwen3"} <= set(policies.names())
    for name in policies.names():
        pol = policies.load(name, env={})
        assert pol.tiers and pol.bands, name
    assert demo.DEFAULT_POLICY in policies.names()
    with pytest.raises(PolicyError, match="shipped: balanced"):
        policies.text("no-such-policy")


def test_demo_inputs_are_package_data():
    tasks = demo.load_tasks()
    corpus = demo.load_corpus()
    assert len(tasks) >= 4 and all(t.question and t.answer for t in tasks)
    assert corpus and all(isinstance(v, str) for v in corpus.values())
    assert len(demo.load_tasks(limit=2)) == 2


def test_every_data_file_of_the_package_is_declared_package_data():
    """A file under effagent/ that no package-data pattern matches is left out of a wheel: the demo, the
    shipped policies or the estimator would then work from a checkout and fail after `pip install`."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["effagent"]
    files = [p.relative_to(PKG).as_posix() for p in PKG.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert any(f.startswith("policies/") for f in files) and any(f.startswith("demo_data/") for f in files)
    undeclared = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not undeclared, f"add these to [tool.setuptools.package-data] in pyproject.toml: {undeclared}"


def test_demo_policy_option_takes_a_shipped_name_or_a_file(tmp_path):
    env = {"EFFAGENT_VLLM_URL": "http://127.0.0.1:9/v1"}
    assert demo.load_demo_policy("frugal", env).name == "frugal"
    copy = tmp_path / "mine.yaml"
    copy.write_text(policies.text("balanced").replace("name: balanced", "name: mine"))
    assert demo.load_demo_policy(str(copy), env).name == "mine"
    with pytest.raises(PolicyError, match="neither a policy file nor a shipped policy"):
        demo.load_demo_policy("balancd", env)
    with pytest.raises(PolicyError, match="cannot read"):
        demo.load_demo_policy(str(tmp_path / "missing.yaml"), env)


def test_no_second_copy_of_a_shipped_policy_and_no_dangling_reference():
    """examples/ and the docs point at effagent/policies; a copy elsewhere would drift from it."""
    shipped = {p.read_text() for p in (PKG / "policies").glob("*.yaml")}
    skip = {"build", "dist", "effagent-out", "node_modules"}  # build outputs hold copies of the package
    for path in ROOT.glob("**/*.yaml"):
        parts = path.relative_to(ROOT).parts
        if path.parent == PKG / "policies" or skip & set(parts) or any(p.startswith(".") for p in parts):
            continue
        assert path.read_text() not in shipped, f"{path} duplicates a shipped policy; point at effagent/policies"
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*"),
             *(ROOT / "integrations").glob("*.md")]
    for path in texts:
        for ref in re.findall(r"(?:examples|effagent)/policies/[\w.-]+\.yaml", path.read_text()):
            assert (ROOT / ref).is_file(), f"{path.name} refers to {ref}, which does not exist"


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(skip_replay=False, out=str(tmp_path), no_progress=True)


@pytest.mark.parametrize("failure", ["not found", "raises", "missing extra"])
def test_replay_that_cannot_run_is_one_line_and_the_demo_goes_on(tmp_path, monkeypatch, capsys, failure):
    from effagent.tools.bench import replay

    def fake_cmd(_args: argparse.Namespace) -> int:
        if failure == "not found":
            print("error: /somewhere/routing/llmrouter_test.json not found (set EFFAGENT_DATA_DIR)",
                  file=__import__("sys").stderr)
            return 2
        if failure == "raises":
            raise FileNotFoundError("recorded outcomes not found")
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    def fake_register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        p = sub.add_parser("replay")
        p.add_argument("--out")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(func=fake_cmd)

    monkeypatch.setattr(replay, "register", fake_register)
    result: dict = {}
    demo._replay_table(_args(tmp_path), result)  # must not raise
    out = capsys.readouterr()
    skipped = [ln for ln in out.out.splitlines() if ln.startswith("routing-quality table skipped")]
    assert len(skipped) == 1, out.out
    assert {"not found": "llmrouter_test.json not found", "raises": "FileNotFoundError",
            "missing extra": "effagent[bench]"}[failure] in skipped[0]
    assert "replay" not in result and out.err == ""


def test_demo_runs_the_quick_replay_when_offered(tmp_path, monkeypatch, capsys):
    from effagent.tools.bench import replay

    seen: list[argparse.Namespace] = []

    def fake_cmd(args: argparse.Namespace) -> int:
        seen.append(args)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "replay.json").write_text('{"sets": {"gsm8k": {}}}')
        return 0

    def fake_register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        p = sub.add_parser("replay")
        p.add_argument("--out")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--quick", action="store_true")
        p.set_defaults(func=fake_cmd)

    monkeypatch.setattr(replay, "register", fake_register)
    result: dict = {}
    demo._replay_table(_args(tmp_path), result)
    assert seen and seen[0].quick and seen[0].no_progress
    assert result["replay"] == {"sets": {"gsm8k": {}}} and "skipped" not in capsys.readouterr().out
