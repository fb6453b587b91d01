"""Hostile input, property-based: random and mutated policy files, and garbage model outputs driven through
the real middleware. The contract: a clear error (PolicyError / EffagentError) or a safe default, never
another exception, never a ledger that disagrees with what was recorded.

"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from effagent import EffagentError, Governor, PolicyError, Step, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.ledger import InMemoryLedger
from effagent.observe import NullObserver
from tests.fakes import FakeTierModel, call

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
AGENT = settings(max_examples=12, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SEED_POLICIES = [
    (ROOT / "examples" / "policy.yaml").read_text(),
    """\
tiers:
  small: {model: hosted_vllm/smol, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}, max_tokens: 300}
  large:
    model: hosted_vllm/smol-think
    price: {input_per_mtok: 10.0, output_per_mtok: 30.0}
    thinking: {control: chat_template_kwargs, max_budget: 2048}
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 512}
budgets: {run: {tokens: 1000, usd: 0.5}, thread: {tokens: 5000}, on_exhausted: finalize}
fallback: {order: [large, small]}
loop_guard: {max_steps: 6}
ledger: {backend: memory}
telemetry: {enabled: false}
""",
]

HOSTILE_SCALARS = ["-1", "0", "1e400", "-1e400", ".nan", ".inf", "-.inf", "null", "~", "[]", "{}", "''", "yes",
                   "0x10", "0o17", "1_000", "2020-01-01", "'${UNSET_VAR}'", "${UNSET_VAR:-3}", "!!binary aGk=",
                   "*nope", "&a 1", "!!str 5", "!!python/name:os.system", "'" + "x" * 2000 + "'", "\"\\u0000\"",
                   "99999999999999999999999999", "[1, [2, [3]]]", "{a: {b: {c: 1}}}", "true", "'é✓🙂'", "|\n  x"]


def check_policy_text(text: str) -> None:
    """parse_policy must return a Policy or raise PolicyError whose every line says where and what."""
    try:
        policy = parse_policy(text, source="p.yaml", env={"HOME": "/root"})
    except PolicyError as e:
        assert e.problems, "a PolicyError without problems"
        for line in e.problems:
            assert line.startswith("p.yaml:") and len(line) > len("p.yaml:1:1: "), line
        return
    # a valid policy must also plan a step: a Decision or a clear EffagentError, nothing else
    gov = Governor(policy, ledger=InMemoryLedger(), observer=NullObserver())
    try:
        gov.plan(Step.from_prompt("What is 2 + 2?"), "run")
    except EffagentError:
        pass


# -------------------------------------------------------------------------------------------------------
# Policy files
# -------------------------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=400))
@example("")
@example("- a\n- b")
@example("tiers: [")
@example("\x00")
@example("? [a]\n: 1\n")
@example("~: 1\ntiers: {s: {model: x}}\nbands: [{name: a, tier: s}]")
def test_random_text_is_a_policy_or_a_policy_error(text):
    check_policy_text(text)


@st.composite
def mutated_policy(draw) -> str:
    lines = draw(st.sampled_from(SEED_POLICIES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "delete", "dup", "indent", "chars", "key"]))
        line = lines[i]
        if op == "value" and ":" in line:
            key, _, _ = line.partition(":")
            lines[i] = f"{key}: {draw(st.sampled_from(HOSTILE_SCALARS))}"
        elif op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + line.lstrip()
        elif op == "chars":
            pos = draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + draw(st.text(max_size=4)) + line[pos:]
        elif op == "key" and ":" in line:
            _, _, rest = line.partition(":")
            key = draw(st.sampled_from(["tiers", "x", "1", "-"]))
            lines[i] = f"{' ' * (len(line) - len(line.lstrip()))}{key}:{rest}"
        if not lines:
            lines = ["{}"]
    return "\n".join(lines) + "\n"


@FAST
@given(mutated_policy())
def test_mutated_policy_files_are_a_policy_or_a_policy_error(text):
    check_policy_text(text)


FIELDS = ["tiers", "bands", "budgets", "run", "thread", "tokens", "usd", "model", "price", "input_per_mtok", "name",
          "min", "max", "tier", "thinking", "thinking_budget", "samples", "fallback", "order", "ledger", "backend",
          "redis", "url", "window", "loop_guard", "max_steps", "difficulty", "estimators", "weight", "on_exhausted"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["small", "heuristic", "redis", "daily", "finalize"]))
trees = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), kids, max_size=5)),
    max_leaves=25)


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS), trees, max_size=6))
def test_random_structures_are_a_policy_or_a_policy_error(data):
    check_policy_text(yaml.safe_dump(data, allow_unicode=True))


@pytest.mark.parametrize("text", ["tiers: &x {a: *x}\nbands: []\n", "bands: &b [*b]\n",
                                  "tiers: " + "[" * 3000 + "]" * 3000, "a: " + "{b: " * 3000 + "1" + "}" * 3000])
def test_self_referencing_or_deeply_nested_yaml_is_a_policy_error(text):
    with pytest.raises(PolicyError):
        parse_policy(text, env={})


# -------------------------------------------------------------------------------------------------------
# Model outputs through the real middleware
# -------------------------------------------------------------------------------------------------------
POLICY = parse_policy(SEED_POLICIES[1], env={})


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return "42"


class Scripted:
    """A responder whose next answers the test sets: one tool call, then a final answer, each with the
    message mutation under test applied (usage, reasoning, content...)."""

    def __init__(self) -> None:
        self.mutate: Any = lambda m: None

    def __call__(self, messages, kwargs) -> AIMessage:
        if isinstance(messages[-1], ToolMessage) or kwargs.get("tool_names") is None:
            msg = AIMessage(content="final answer")
        else:
            msg = AIMessage(content="", tool_calls=[call("lookup", {"query": "x"}, f"c{len(messages)}")])
        self.mutate(msg)
        return msg


@pytest.fixture(scope="module")
def rig():
    responder = Scripted()
    small = FakeTierModel(tier="small", responder=responder)
    large = FakeTierModel(tier="large", responder=responder)
    return responder, small, large


def run_agent(rig, mutate) -> tuple[EfficiencyMiddleware, dict]:
    responder, small, large = rig
    responder.mutate = mutate
    mw = EfficiencyMiddleware(POLICY, models={"small": small, "large": large}, ledger=InMemoryLedger(),
                              observer=NullObserver())
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage("What is the capital of France?")]}, {"recursion_limit": 40})
    return mw, out


def check_ledger(mw: EfficiencyMiddleware) -> None:
    """Whatever the model said, the ledger is self-consistent and priced at the policy's prices."""
    records = mw.ledger.records()
    assert records
    for r in records:
        u = r.usage
        assert min(u.input_tokens, u.output_tokens, u.reasoning_tokens, u.calls) >= 0
        assert u.reasoning_tokens <= u.output_tokens
        assert math.isfinite(u.cost_usd) and u.cost_usd == pytest.approx(
            POLICY.tiers[r.tier].price.cost(u.input_tokens, u.output_tokens))
    run_ids = {r.run_id for r in records}
    total = sum((mw.ledger.run_usage(x) for x in run_ids), start=records[0].usage.__class__())
    assert total.total_tokens == sum(r.usage.total_tokens for r in records)
    assert total.calls == len(records)


counts = st.integers(0, 10**7)
usage_dicts = st.fixed_dictionaries({"input_tokens": counts, "output_tokens": counts},
                                    optional={"output_token_details": st.fixed_dictionaries({"reasoning": counts})})


@AGENT
@given(usage=usage_dicts)
def test_reported_usage_is_recorded_exactly(rig, usage):
    def mutate(m: AIMessage) -> None:
        m.usage_metadata = {**usage, "total_tokens": usage["input_tokens"] + usage["output_tokens"]}

    mw, _ = run_agent(rig, mutate)
    check_ledger(mw)
    first = mw.ledger.records()[0]
    assert first.usage.input_tokens == usage["input_tokens"] and first.usage.output_tokens == usage["output_tokens"]
    want_rsn = min(usage.get("output_token_details", {}).get("reasoning", 0), usage["output_tokens"])
    assert first.usage.reasoning_tokens == want_rsn


# values a sloppy provider integration may put in usage_metadata (set after construction: no validation)
junk = st.one_of(st.none(), st.booleans(), st.integers(-10**6, -1), st.floats(allow_nan=True, allow_infinity=False),
                 st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                          st.integers(), max_size=2))
junk_usage = st.one_of(  # a mapping or None (other types and infinities: see the test below)
    st.none(),
    st.dictionaries(st.sampled_from(["input_tokens", "output_tokens", "total_tokens", "output_token_details"]),
                    junk | counts, max_size=4),
)
junk_kwargs = st.dictionaries(st.sampled_from(["reasoning_content", "reasoning", "x"]),
                              st.one_of(junk, st.text(max_size=2000)), max_size=3)
junk_content = st.one_of(st.text(max_size=3000), st.just("é" * 20_000),
                         st.lists(st.one_of(st.text(max_size=5), st.fixed_dictionaries({"type": st.just("text"),
                                                                                        "text": st.text(max_size=5)})),
                                  max_size=3))


@AGENT
@given(usage=junk_usage, kwargs=junk_kwargs, content=junk_content)
@example(usage={"input_tokens": -5, "output_tokens": -1}, kwargs={}, content="x")
@example(usage={"input_tokens": "12", "output_tokens": 3.5}, kwargs={"reasoning_content": {"a": 1}}, content="")
@example(usage={"input_tokens": 10**30, "output_tokens": 1}, kwargs={}, content="x")
def test_garbage_model_output_is_a_safe_default(rig, usage, kwargs, content):
    def mutate(m: AIMessage) -> None:
        m.usage_metadata = usage
        m.additional_kwargs = kwargs
        if not m.tool_calls:
            m.content = content

    try:
        mw, out = run_agent(rig, mutate)
    except EffagentError:
        return
    check_ledger(mw)
    assert isinstance(out["messages"][-1], AIMessage)


@pytest.mark.parametrize("usage", ["garbage", [1, 2], 7, {"input_tokens": float("inf"), "output_tokens": 1}])
def test_non_mapping_or_infinite_usage_does_not_crash(rig, usage):
    def mutate(m: AIMessage) -> None:
        m.usage_metadata = usage

    mw, _ = run_agent(rig, mutate)
    check_ledger(mw)


@pytest.mark.parametrize("usage", [None, {"input_tokens": -5, "output_tokens": -1}, {"input_tokens": "12"}])
def test_missing_usage_is_estimated_not_recorded_as_zero(rig, usage):
    def mutate(m: AIMessage) -> None:
        m.usage_metadata = usage
        m.content = m.content or ("word " * 50 if not m.tool_calls else "")

    mw, _ = run_agent(rig, mutate)
    assert all(r.usage.input_tokens > 0 for r in mw.ledger.records())


def test_huge_reported_usage_spends_the_budget_and_finalizes(rig):
    n = {"i": 0}

    def mutate(m: AIMessage) -> None:
        n["i"] += 1
        m.usage_metadata = {"input_tokens": 10**9 if n["i"] == 1 else 5, "output_tokens": 1, "total_tokens": 0}

    mw, out = run_agent(rig, mutate)
    kinds = [r.kind for r in mw.ledger.records()]
    # a billion tokens reported: the budget is gone, reserve included, so the run ends without another call
    assert kinds == ["model"] and not out["messages"][-1].tool_calls
    assert out["messages"][-1].response_metadata["effagent"]["action"] == "halt"
    check_ledger(mw)


def test_many_random_seeds_of_tool_loops_keep_the_ledger_consistent(rig):
    rng = random.Random(7)
    for _ in range(5):
        sizes = [rng.randint(0, 500) for _ in range(3)]

        def mutate(m: AIMessage, sizes=sizes) -> None:
            m.usage_metadata = {"input_tokens": sizes[0], "output_tokens": sizes[1], "total_tokens": 0,
                                "output_token_details": {"reasoning": sizes[2]}}

        mw, _ = run_agent(rig, mutate)
        check_ledger(mw)
