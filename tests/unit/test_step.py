"""The step procedure (effagent/step.py) on fake endpoints: which errors move a step to the next tier, what
each call costs in the ledger, and that the async driver awaits the ledger instead of blocking on it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import EndpointError, InMemoryLedger, parse_policy
from effagent.governor import Governor
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.observe import NullObserver
from effagent.records import Step
from effagent.step import Reply, StepProcedure
from tests.fakes import FakeTierModel, ai
from tests.fakes.step_endpoints import FakeStepEndpoint

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
  large: {model: openai/large, price: {input_per_mtok: 10, output_per_mtok: 20}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: large}
fallback: {order: [large, small]}
"""


def procedure() -> StepProcedure:
    return StepProcedure(Governor(parse_policy(POLICY, env={}), ledger=InMemoryLedger(), observer=NullObserver()))


def test_an_endpoint_failure_moves_the_step_to_the_next_tier_and_is_recorded():
    proc = procedure()
    ctx = proc.plan(Step.from_prompt("What is 2 + 2?"), "run", None, None)
    answer = Reply(text="4", input_tokens=7, output_tokens=1)
    out = proc.run(ctx, FakeStepEndpoint({"large": ConnectionError("refused"), "small": answer}))
    assert out.result is answer
    recs = proc.governor.ledger.records("run")
    assert [(r.tier, r.ok) for r in recs] == [("large", False), ("small", True)]
    assert "ConnectionError" in (recs[0].error or "")
    assert out.thread_total.input_tokens == 7 and out.thread_total.cost_usd == pytest.approx((7 * 1 + 1 * 2) / 1e6)


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), KeyError("tier"), AttributeError("x")])
def test_a_bug_in_the_model_call_surfaces_as_itself_not_as_a_dead_tier(bug):
    proc = procedure()
    ctx = proc.plan(Step.from_prompt("q"), "run", None, None)
    endpoint = FakeStepEndpoint({"large": bug, "small": Reply(text="fallback")})
    with pytest.raises(type(bug)):
        proc.run(ctx, endpoint)
    assert [r.tier for r in endpoint.calls] == ["large"]  # no fallback was tried
    assert proc.governor.ledger.records("run") == []  # and no failed call was recorded


def test_a_bug_in_effagents_own_step_code_surfaces_as_itself(monkeypatch):
    """Inside a create_agent agent: an error in effagent's accounting is not a failed endpoint."""
    small, large = FakeTierModel(tier="small", script=[ai("4")]), FakeTierModel(tier="large", script=[ai("4")])
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": small, "large": large},
                              observer=NullObserver())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a bug in effagent's accounting")

    monkeypatch.setattr(mw.procedure, "_account", broken)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    with pytest.raises(TypeError, match="a bug in effagent's accounting"):
        agent.invoke({"messages": [HumanMessage("What is 2 + 2?")]})
    assert len(large.calls) == 1 and small.calls == []  # the large tier answered; nothing fell back


def test_every_tier_failing_is_an_endpoint_error_naming_each_attempt():
    proc = procedure()
    ctx = proc.plan(Step.from_prompt("q"), "run", None, None)
    with pytest.raises(EndpointError, match=r"large: ConnectionError.*small: TimeoutError"):
        proc.run(ctx, FakeStepEndpoint({"large": ConnectionError("down"), "small": TimeoutError("slow")}))


def test_a_reasoning_count_the_server_did_not_report_is_marked_estimated():
    counted = StepProcedure(procedure().governor, reasoning_counter=lambda tier, text: len(text.split()))
    ctx = counted.plan(Step.from_prompt("q"), "run", None, None)
    counted.run(ctx, FakeStepEndpoint({"large": Reply(text="4", input_tokens=5, output_tokens=9,
                                                  reasoning="two plus two is four")}))
    [rec] = counted.governor.ledger.records("run")
    assert rec.usage.reasoning_tokens == 5 and rec.reasoning_estimated
    reported = procedure()
    ctx = reported.plan(Step.from_prompt("q"), "run", None, None)
    reported.run(ctx, FakeStepEndpoint({"large": Reply(text="4", input_tokens=5, output_tokens=9, reasoning_tokens=6,
                                                   reasoning="two plus two is four")}))
    [rec] = reported.governor.ledger.records("run")
    assert rec.usage.reasoning_tokens == 6 and not rec.reasoning_estimated


class SlowLedger(InMemoryLedger):
    """A fake ledger that takes ``delay`` seconds a call, like a store across a network."""

    blocking_io = True  # its calls wait, so the async face runs them off the event loop

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def state(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return super().state(*args, **kwargs)

    def record(self, rec: Any) -> None:
        time.sleep(self.delay)
        super().record(rec)


async def ticker(gaps: list[float]) -> None:
    """Ticks every 10 ms on the event loop and records each gap: a blocked loop shows as a long gap."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def test_the_async_driver_keeps_the_event_loop_free_while_the_ledger_waits():
    gov = Governor(parse_policy(POLICY, env={}), ledger=SlowLedger(0.2), observer=NullObserver())
    proc = StepProcedure(gov)
    gaps: list[float] = []
    tick = asyncio.create_task(ticker(gaps))
    ctx = await proc.aplan(Step.from_prompt("q"), "run", None, None)
    out = await proc.arun(ctx, FakeStepEndpoint({"large": Reply(text="a", input_tokens=3, output_tokens=1)}))
    tick.cancel()
    assert out.thread_total.calls == 1
    assert len(gaps) >= 20 and max(gaps) < 0.15, f"the loop stalled for {max(gaps):.3f}s"


LEVERS = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
  think: {model: hosted_vllm/t, api_base: "http://127.0.0.1:9/v1", price: {input_per_mtok: 1, output_per_mtok: 2},
          thinking: {control: chat_template_kwargs}}
bands:
  - {name: b, min: 0.0, max: 1.0, tier: TIER, SETTINGS}
"""


@pytest.mark.parametrize(("tier", "settings", "tools", "lever"), [
    ("small", "samples: 1", False, "plain"),
    ("small", "samples: 3", False, "samples"),
    ("small", "agreement: {to: think, samples: 3}", False, "agreement"),
    ("small", "cascade: {to: think, thinking: false}", False, "cascade"),
    ("think", "thinking: true, early_exit: {chunk: 8}", False, "early_exit"),
    ("think", "thinking: true, early_exit: {chunk: 8}", True, "plain"),  # early exit answers, it calls no tools
])
def test_decide_names_the_lever_once_and_the_step_runs_that_one(tier, settings, tools, lever):
    """The lever is on the Decision (decide's choice); the step procedure dispatches on it and on nothing else."""
    policy = parse_policy(LEVERS.replace("TIER", tier).replace("SETTINGS", settings), env={})
    gov = Governor(policy, ledger=InMemoryLedger(), observer=NullObserver())
    step = Step.from_prompt("What is 6 * 7?")
    if tools:
        step = Step(messages=step.messages, tools=["lookup"])
    d = gov.plan(step, "run")
    assert d.lever == lever
    assert (d.early_exit is not None) == (lever == "early_exit") and d.verify == (lever == "cascade")
    # the step's reserved maximum counts the lever's calls: more than one call exactly for the multi-call levers
    assert (gov.step_maximum(d, 5)[2] > 1) == (lever != "plain")


def test_an_escalated_decision_is_a_plain_call():
    from effagent.decide import escalate, escalate_on_disagreement

    policy = parse_policy(LEVERS.replace("TIER", "small").replace("SETTINGS", "cascade: {to: think, thinking: false}"),
                          env={})
    d = Governor(policy, ledger=InMemoryLedger(), observer=NullObserver()).plan(Step.from_prompt("q"), "run")
    up = escalate(policy, d, 1.0)
    assert d.lever == "cascade" and up is not None and up.lever == "plain"
    policy = parse_policy(LEVERS.replace("TIER", "small").replace("SETTINGS", "agreement: {to: think, samples: 3}"),
                          env={})
    d = Governor(policy, ledger=InMemoryLedger(), observer=NullObserver()).plan(Step.from_prompt("q"), "run")
    up = escalate_on_disagreement(policy, d, 0.0)
    assert d.lever == "agreement" and up is not None and up.lever == "plain"
