"""The docs' policy reference is generated from the schema; a stale copy fails the build."""

from pathlib import Path

from effagent.tools.policy_docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_policy_reference_is_current():
    current = (ROOT / "docs" / "policy-reference.md").read_text()
    fix = "run `effagent policy docs > docs/policy-reference.md`"
    assert current == render(), f"docs/policy-reference.md is stale: {fix}"


def test_every_policy_key_is_documented():
    text = render()
    for key in ("tiers", "bands", "budgets", "on_exhausted", "thinking_budget", "max_repeated_tool_calls",
                "record_content", "budget_param"):
        assert f"`{key}`" in text
