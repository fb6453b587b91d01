"""Policy loading: valid files load, every mistake a user makes is reported at its line with a fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effagent import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
tiers:
  small: {model: hosted_vllm/smol, price: {input_per_mtok: 1, output_per_mtok: 2}}
bands:
  - {name: all, min: 0, max: 1, tier: small}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, source="p.yaml", env=env or {})
    return e.value.problems


def test_example_policy_loads():
    p = load_policy(ROOT / "examples" / "policy.yaml", env={})
    assert set(p.tiers) == {"small", "large"}
    assert p.band_for(0.1).tier == "small" and p.band_for(0.95).tier == "large"
    assert p.band_for(1.0).name == "hard"


def test_type_error_reports_line_and_column():
    text = MINIMAL.replace("model: hosted_vllm/smol,", "model: hosted_vllm/smol, max_tokens: lots,")
    (msg,) = problems(text)
    assert msg.startswith("p.yaml:2:")
    assert "tiers.small.max_tokens" in msg and "'lots'" in msg


def test_unknown_key_is_named_at_its_line():
    text = MINIMAL + "budgets:\n  run: {tokens: 10}\n  on_exausted: error\n"
    (msg,) = problems(text)
    assert msg.startswith("p.yaml:7:3:") and "budgets.on_exausted" in msg and "unknown key" in msg


def test_unknown_tier_and_overlapping_bands():
    text = """\
tiers:
  small: {model: a}
bands:
  - {name: easy, min: 0, max: 0.6, tier: small}
  - {name: hard, min: 0.5, max: 1, tier: huge}
"""
    msgs = problems(text)
    assert any(m.startswith("p.yaml:5:") and "unknown tier 'huge'" in m for m in msgs)
    assert any("overlaps" in m and "make min >= 0.6" in m for m in msgs)


def test_gap_and_missing_coverage():
    text = """\
tiers: {small: {model: a}}
bands:
  - {name: a, min: 0.1, max: 0.3, tier: small}
  - {name: b, min: 0.4, max: 0.9, tier: small}
"""
    msgs = "\n".join(problems(text))
    assert "must start at 0" in msgs and "gap between band 'a' and 'b'" in msgs and "must end at 1" in msgs


def test_negative_budget_and_thinking_on_a_tier_that_cannot_think():
    msgs = problems(MINIMAL + "budgets: {run: {usd: -1}}\n")
    assert any("budgets.run.usd" in m and "greater than or equal to 0" in m for m in msgs)
    msgs = problems(MINIMAL.replace("tier: small}", "tier: small, thinking: true}"))
    assert any("cannot think" in m for m in msgs)


def test_env_interpolation_and_secret_not_printed():
    text = MINIMAL.replace(
        "model: hosted_vllm/smol,", 'model: hosted_vllm/smol, api_base: "${URL}", api_key: "${KEY}",'
    )
    p = parse_policy(text, env={"URL": "http://127.0.0.1:9/v1", "KEY": "sk-secret-123"})
    assert p.tiers["small"].api_base == "http://127.0.0.1:9/v1"
    assert p.tiers["small"].api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(p) and "sk-secret-123" not in p.summary()
    assert "sk-secret-123" not in p.model_dump_json()
    (msg,) = problems(text, env={"URL": "x"})
    assert "KEY is not set" in msg and msg.startswith("p.yaml:2:")
    p = parse_policy(text.replace("${KEY}", "${KEY:-none}"), env={"URL": "u"})
    assert p.tiers["small"].api_key.get_secret_value() == "none"


def test_broken_yaml_is_reported_not_raised():
    (msg,) = problems("tiers: [\n")
    assert msg.startswith("p.yaml:") and "not valid YAML" in msg


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "effagent.tools.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_validate_exit_codes(tmp_path):
    ok = _cli("validate", "examples/policy.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "band easy" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("max: 1,", "max: one,"))
    r = _cli("validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:4:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["heuristic", "length", "trained"])
def test_a_removed_estimator_says_what_to_use_instead(name: str, tmp_path: Path) -> None:
    text = MINIMAL + f"difficulty:\n  estimators:\n    - {{name: {name}, weight: 1}}\n"
    (msg,) = problems(text)
    assert msg.startswith("p.yaml:7:14:") and "difficulty.estimators.0.name" in msg
    assert f"'{name}' estimator was removed from policies" in msg and "benchmark baseline" in msg
    assert f"effagent bench replay --estimators rule,{name}" in msg
    assert "{name: rule}" in msg and "effagent difficulty learn" in msg
    path = tmp_path / "old.yaml"
    path.write_text(text)
    r = _cli("validate", str(path))
    assert r.returncode == 2 and f"{path}:7:14:" in r.stderr and "Traceback" not in r.stderr


def test_a_key_with_a_line_break_is_quoted_so_each_problem_stays_on_its_line() -> None:
    msgs = problems('{"\\r": 1}')
    assert "p.yaml:1:2: '\\r': unknown key" in "\n".join(msgs)
    assert all(m.startswith("p.yaml:") and len(m.splitlines()) == 1 for m in msgs)


def test_the_policys_estimator_names_are_what_the_library_builds() -> None:
    from typing import get_args

    from effagent.difficulty.combine import available_estimators
    from effagent.policy import EstimatorName

    assert list(get_args(EstimatorName)) == available_estimators()


def test_cli_schema_is_json():
    import json

    r = _cli("policy", "schema")
    schema = json.loads(r.stdout)
    assert "tiers" in schema["properties"] and "bands" in schema["required"]


def test_a_learned_models_relative_path_is_read_from_the_policys_folder(tmp_path, monkeypatch):
    from effagent.policy import load_policy

    (tmp_path / "policy.yaml").write_text(
        "tiers: {small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 1}}}\n"
        "difficulty: {estimators: [{name: learned, path: model.json}]}\n"
        "bands: [{name: all, min: 0, max: 1, tier: small}]\n")
    monkeypatch.chdir("/")
    assert load_policy(tmp_path / "policy.yaml").difficulty.estimators[0].path == str(tmp_path / "model.json")


# -- what each model accepts as a thinking control (effagent.capabilities) ----------------------------------------
def test_validate_rejects_what_the_model_refuses_at_its_line():
    found = problems("""tiers:
  gem3: {model: gemini/gemini-3-pro-preview, price: {input_per_mtok: 2, output_per_mtok: 12}, thinking: {control: auto}}
  pro: {model: openai/gpt-5.2-pro, thinking: {control: auto}}
  opus: {model: anthropic/claude-opus-4-7, max_tokens: 8192, thinking: {control: auto, manual_budget: true}}
bands:
  - {name: a, min: 0.0, max: 0.3, tier: pro}
  - {name: b, min: 0.3, max: 0.6, tier: gem3, thinking: true, effort: medium}
  - {name: c, min: 0.6, max: 1.0, tier: opus, thinking: true, thinking_budget: 4096}
""", env={})
    text = "\n".join(found)
    # thinking off on a pro OpenAI model: it has nothing below its default level
    assert "p.yaml:6:" in text and "gpt-5.2-pro cannot switch thinking off" in text
    assert "set thinking: true (effort: medium)" in text
    # medium on Gemini 3 Pro, which takes low and high
    assert "p.yaml:7:" in text and "does not take the level 'medium'" in text and "low/high" in text
    assert "write effort: high" in text
    # a manual budget on Claude Opus 4.7, which thinks adaptively only
    assert "p.yaml:4:" in text and "refuses a manual thinking budget" in text and "drop manual_budget" in text.lower()
    assert len(found) == 3, found


def test_capability_table_takes_litellm_s_flags_and_the_project_rows():
    from effagent.capabilities import capabilities

    opus47, opus46, sonnet5 = (capabilities(f"anthropic/claude-{m}") for m in ("opus-4-7", "opus-4-6", "sonnet-5"))
    assert opus47.adaptive and opus47.budget is None and "xhigh" in opus47.efforts
    assert opus46.adaptive and opus46.budget == (1024, 0)  # 4.6 still takes a manual budget
    assert sonnet5.thinks_by_default and sonnet5.can_off
    assert capabilities("anthropic/claude-sonnet-4-5").budget == (1024, 0)
    assert capabilities("gemini/gemini-3-pro-preview").levels == ("low", "high")
    assert not capabilities("gemini/gemini-3-flash-preview").can_off
    assert capabilities("openai/gpt-5-pro").efforts == ("high",)
    assert "none" not in capabilities("openai/gpt-5.2-pro").efforts
    assert capabilities("openai/gpt-5.1").efforts[0] == "none"
    assert "xhigh" in capabilities("openai/gpt-5.2").efforts
    assert all(c.sources for c in (opus47, sonnet5, capabilities("openai/o3")))


def test_validate_says_when_a_model_cannot_switch_thinking_off():
    policy = parse_policy("""tiers:
  g: {model: gemini/gemini-3-pro-preview, price: {input_per_mtok: 2, output_per_mtok: 12}, thinking: {control: auto}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: g}
""", env={})
    assert "cannot switch thinking off: thinking off sends level low" in policy.summary()
