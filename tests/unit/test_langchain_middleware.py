"""create_agent + EfficiencyMiddleware with fake tier models (no server)."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from effagent import BudgetExceeded, EndpointError, InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from tests.fakes import FakeTierModel, ai, call

POLICY = """\
tiers:
  small:
    model: hosted_vllm/smol
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
    max_tokens: 300
  large:
    model: hosted_vllm/smol-think
    price: {input_per_mtok: 10.0, output_per_mtok: 30.0}
    thinking: {control: chat_template_kwargs, max_budget: 2048}
    max_tokens: 900
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 512}
budgets:
  run: {tokens: RUN_TOKENS}
  thread: {tokens: THREAD_TOKENS}
  finalize: {reserve: RESERVE}
  on_exhausted: ON_EXHAUSTED
fallback: {order: [large, small]}
"""

EASY = "What is the capital of France?"
HARD = ("A tank holds 1200 litres. Pipe A fills it in 6 hours, pipe B in 9 hours and pipe C drains it in 12 hours. "
        "If all three open at 3pm with the tank 1/4 full, derive step by step when it is full, and prove the "
        "formula for the general case; analyze how the answer changes if pipe B fails after 2 hours.")


def policy(run_tokens: int = 100000, thread_tokens: int = 1000000, on_exhausted: str = "finalize",
           reserve: float = 0.5):
    text = (POLICY.replace("RUN_TOKENS", str(run_tokens)).replace("THREAD_TOKENS", str(thread_tokens))
            .replace("ON_EXHAUSTED", on_exhausted).replace("RESERVE", str(reserve)))
    return parse_policy(text, env={})


def tool_then_answer(answer: str, usage=(20, 8, 0)):
    """A fake that calls the calculator once, then answers after the tool result."""
    def respond(messages, kwargs):
        if isinstance(messages[-1], ToolMessage):
            return ai(answer, input_tokens=usage[0], output_tokens=usage[1], reasoning=usage[2])
        return ai("", tool_calls=[call("calculator", {"expression": "6*7"})], input_tokens=usage[0],
                  output_tokens=usage[1], reasoning=usage[2])
    return respond


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return str(eval(expression, {"__builtins__": {}}))


def build(pol, small=None, large=None, ledger=None, checkpointer=None):
    small = small or FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0)))
    large = large or FakeTierModel(tier="large", responder=tool_then_answer("42", (40, 30, 20)))
    mw = EfficiencyMiddleware(pol, models={"small": small, "large": large}, ledger=ledger or InMemoryLedger())
    agent = create_agent(mw.default_model, tools=[calculator], middleware=[mw], checkpointer=checkpointer)
    return agent, mw, small, large


def test_easy_and_hard_steps_go_to_different_tiers_with_policy_settings():
    agent, mw, small, large = build(policy())
    out = agent.invoke({"messages": [HumanMessage(EASY)]})
    assert out["messages"][-1].content == "Paris"
    assert len(small.calls) == 2 and not large.calls
    kw = small.calls[0]["kwargs"]
    assert kw["max_tokens"] == 300 and "extra_body" not in kw  # small tier: no thinking controls at all

    out = agent.invoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "42"
    assert len(large.calls) == 2 and len(small.calls) == 2
    kw = large.calls[0]["kwargs"]
    assert kw["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 512}
    assert kw["max_tokens"] == 900
    meta = out["messages"][-1].response_metadata["effagent"]
    assert meta["tier"] == "large" and meta["decision"]["thinking"] is True


def test_answers_carry_a_summary_of_the_decision_when_the_policy_asks_for_it():
    full_agent, *_ = build(policy())
    text = POLICY.replace("RUN_TOKENS", "100000").replace("THREAD_TOKENS", "1000000").replace("RESERVE", "0.1").replace(
        "ON_EXHAUSTED", "finalize") + "telemetry: {enabled: false, answer_metadata: summary}\n"
    slim_agent, *_ = build(parse_policy(text, env={}), checkpointer=InMemorySaver())
    full = full_agent.invoke({"messages": [HumanMessage(HARD)]})["messages"]
    slim = slim_agent.invoke({"messages": [HumanMessage(HARD)]}, {"configurable": {"thread_id": "t"}})["messages"]
    for a, b in zip(full, slim, strict=True):
        if not isinstance(a, AIMessage):
            continue
        decision, summary = a.response_metadata["effagent"]["decision"], b.response_metadata["effagent"]
        assert "decision" not in summary and summary["tier"] == "large"
        assert summary == {"tier": "large", "run_id": summary["run_id"],
                           **{k: decision[k] for k in ("step", "action", "band", "difficulty", "thinking",
                                                       "max_tokens", "role")}}
    assert slim[-1].content == full[-1].content == "42"


def test_ledger_equals_sum_of_reported_usage():
    ledger = InMemoryLedger()
    agent, mw, small, large = build(policy(), ledger=ledger)
    agent.invoke({"messages": [HumanMessage(EASY)]})
    agent.invoke({"messages": [HumanMessage(HARD)]})
    msgs_usage = [(12, 3, 0)] * 2 + [(40, 30, 20)] * 2
    total = ledger.total()
    assert total.input_tokens == sum(u[0] for u in msgs_usage)
    assert total.output_tokens == sum(u[1] for u in msgs_usage)
    assert total.reasoning_tokens == sum(u[2] for u in msgs_usage)
    assert total.cost_usd == pytest.approx(2 * (12 * 1 + 3 * 2) / 1e6 + 2 * (40 * 10 + 30 * 30) / 1e6)
    assert total.calls == 4


def test_spent_run_budget_finalizes_with_an_answer():
    # the large fake would loop on tool calls forever; the 1,000-token run budget stops it (steps may use 500 of
    # it, the other half is kept for the final answer)
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "1+1"})],
                                                    input_tokens=300, output_tokens=50)])
    final = FakeTierModel(tier="small", script=[ai("Best answer: 2", input_tokens=5, output_tokens=4)])
    agent, mw, small, large = build(policy(run_tokens=1000), small=final, large=looper)
    out = agent.invoke({"messages": [HumanMessage(HARD)]}, {"recursion_limit": 50})
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == "Best answer: 2" and not last.tool_calls
    assert len(looper.calls) == 1  # 350 tokens spent after one step: the next prompt does not fit the 500 left
    fin = final.calls[0]
    assert "budget for this task is spent" in fin["messages"][-1].content
    assert "tool_names" not in fin["kwargs"]  # tools removed for the final call
    records = mw.ledger.records()
    assert [r.kind for r in records] == ["model", "finalize"]
    assert "run budget exhausted" in records[-1].reason


def test_spent_run_budget_raises_typed_error_when_policy_says_error():
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "1+1"})],
                                                    input_tokens=300, output_tokens=50)])
    agent, *_ = build(policy(run_tokens=1000, on_exhausted="error"), large=looper)
    with pytest.raises(BudgetExceeded) as e:
        agent.invoke({"messages": [HumanMessage(HARD)]})
    assert e.value.scope == "run" and "350 tokens" in str(e.value) and "on_exhausted" in str(e.value)


def test_resumed_thread_keeps_its_budget_across_processes():
    saver = InMemorySaver()
    cfg = {"configurable": {"thread_id": "t-1"}}
    pol = policy(thread_tokens=1000)  # steps may use 500 of it
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    agent, mw, *_ = build(pol, small=small, checkpointer=saver)
    agent.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 2 calls x 150 tokens = 300
    assert mw.ledger.thread_usage("t-1").total_tokens == 300
    state = agent.get_state(cfg).values
    assert state["effagent_thread_usage"]["input_tokens"] == 240

    # a new process: fresh middleware and ledger, same checkpointer -> the thread's 300 tokens still count
    small2 = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    agent2, mw2, *_ = build(pol, small=small2, checkpointer=saver)
    agent2.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 300 + 150: one more normal step, then the final one
    agent2.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    kinds = [r.kind for r in mw2.ledger.records()]
    assert "finalize" in kinds
    assert agent2.get_state(cfg).values["effagent_thread_usage"]["calls"] == len(kinds) + 2


def test_without_a_checkpointer_the_ledger_keeps_the_thread_total_and_state_carries_none():
    # no checkpointer: graph state ends with the invocation, so the thread's spending is the ledger's total
    # (the run's later steps included), and no state update is spent on it
    cfg = {"configurable": {"thread_id": "t-2"}}
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    agent, mw, *_ = build(policy(thread_tokens=800), small=small)  # steps may use 400 of it
    out = agent.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 2 calls x 150 tokens = 300
    assert "effagent_thread_usage" not in out
    agent.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 300 + 150: no room for a step after the first
    second = [r.kind for r in mw.ledger.records()][2:]
    assert second == ["model", "finalize"]
    assert mw.ledger.thread_usage("t-2").calls == 4


def test_the_observer_hears_each_run_end_with_the_runs_usage():
    from effagent.observe import NullObserver

    class Listener(NullObserver):
        def __init__(self) -> None:
            self.ended: list[tuple[str, int]] = []

        def on_run_end(self, run_id, usage):
            self.ended.append((run_id, usage.calls))

    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0)))
    listener = Listener()
    mw = EfficiencyMiddleware(policy(), models={"small": small, "large": FakeTierModel(tier="large")},
                              observer=listener)
    assert mw.name == "EfficiencyMiddleware"
    agent = create_agent(small, tools=[calculator], middleware=[mw])
    agent.invoke({"messages": [HumanMessage("What is the capital of France?")]})
    assert len(listener.ended) == 1 and listener.ended[0][1] == 2  # one run, its two model calls

    class MyMiddleware(EfficiencyMiddleware):  # a subclass keeps its own name
        pass

    assert MyMiddleware(policy(), models={"small": small, "large": small}).name == "MyMiddleware"


def test_a_different_thread_has_its_own_budget():
    saver = InMemorySaver()
    pol = policy(thread_tokens=1000)
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    agent, mw, *_ = build(pol, small=small, checkpointer=saver)
    for _ in range(2):
        agent.invoke({"messages": [HumanMessage(EASY)]}, {"configurable": {"thread_id": "a"}})
    agent.invoke({"messages": [HumanMessage(EASY)]}, {"configurable": {"thread_id": "b"}})
    b = [r for r in mw.ledger.records() if r.thread_id == "b"]
    assert [r.kind for r in b] == ["model", "model"]


def test_dead_endpoint_falls_back_to_next_tier_and_records_failure():
    dead = FakeTierModel(tier="large", fail_with=ConnectionError)
    agent, mw, small, large = build(policy(), large=dead)
    out = agent.invoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "Paris"  # answered by the small tier
    failed = [r for r in mw.ledger.records() if not r.ok]
    assert failed and failed[0].tier == "large" and "ConnectionError" in (failed[0].error or "")
    assert failed[0].usage.total_tokens == 0


def test_no_tier_left_raises_endpoint_error():
    dead_l = FakeTierModel(tier="large", fail_with=ConnectionError)
    dead_s = FakeTierModel(tier="small", fail_with=TimeoutError)
    agent, *_ = build(policy(), small=dead_s, large=dead_l)
    with pytest.raises(EndpointError) as e:
        agent.invoke({"messages": [HumanMessage(EASY)]})
    assert "small: TimeoutError" in str(e.value) and "large: ConnectionError" in str(e.value)


def test_repeated_tool_call_beyond_the_limit_is_not_run_and_the_loop_ends_with_a_final_answer():
    runs: list[str] = []

    @tool
    def lookup(q: str) -> str:
        """Look a fact up."""
        runs.append(q)
        return "error: the booking service is unavailable"

    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("lookup", {"q": "booking 42"})])])
    final = FakeTierModel(tier="small", script=[ai("I could not complete the booking.")])
    mw = EfficiencyMiddleware(policy(), models={"small": final, "large": looper})
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage(HARD)]}, {"recursion_limit": 100})
    # limit 2: the tool ran twice; the third identical call was answered, not run, and said why
    assert runs == ["booking 42", "booking 42"]
    blocked = [m for m in out["messages"] if isinstance(m, ToolMessage) and m.content.startswith("Not run")]
    assert blocked and "already called 2 times in this turn" in blocked[0].content and blocked[0].status == "error"
    # the agent asked for the same call once more (also not run), so its next step was the final answer
    assert len(looper.calls) == 4 and len(blocked) == 2
    last = out["messages"][-1]
    assert last.content == "I could not complete the booking."
    assert "repeated 4 times" in mw.ledger.records()[-1].reason
    # the final call was told why it must answer now: the loop, not a budget
    told = final.calls[-1]["messages"][-1].content
    assert "repeating yourself without progress" in told and "budget" not in told


def test_a_changed_argument_retry_is_progress_not_a_repeat():
    runs: list[str] = []

    @tool
    def lookup(q: str) -> str:
        """Look a fact up."""
        runs.append(q)
        return "found" if q == "booking 42 (retry with card)" else "error: payment declined"

    script = [ai("", tool_calls=[call("lookup", {"q": "booking 42"})]),
              ai("", tool_calls=[call("lookup", {"q": "booking 42"})]),
              ai("", tool_calls=[call("lookup", {"q": "booking 42 (retry with card)"})]),
              ai("Booked.")]
    large = FakeTierModel(tier="large", script=script)
    mw = EfficiencyMiddleware(policy(), models={"small": FakeTierModel(tier="small"), "large": large})
    out = create_agent(mw.default_model, tools=[lookup], middleware=[mw]).invoke(
        {"messages": [HumanMessage(HARD)]})
    assert runs == ["booking 42", "booking 42", "booking 42 (retry with card)"]
    assert out["messages"][-1].content == "Booked."
    assert all(r.kind != "finalize" for r in mw.ledger.records())


def test_a_loop_in_one_turn_does_not_hold_back_the_next_turn():
    """With a checkpointer, the thread's history holds the earlier turn's loop; the next user turn is planned
    and its tools run normally (repeats count per turn)."""
    runs: list[str] = []

    @tool
    def lookup(q: str) -> str:
        """Look a fact up."""
        runs.append(q)
        return "error: unavailable" if q == "booking 42" else "ok"

    def respond(messages, kwargs):
        last_user = [m for m in messages if isinstance(m, HumanMessage)][-1].content
        if "update" in last_user and not isinstance(messages[-1], ToolMessage):
            return ai("", tool_calls=[call("lookup", {"q": "booking 42"})])
        if "update" in last_user:
            return ai("Updated.")
        return ai("", tool_calls=[call("lookup", {"q": "booking 42"})])

    large = FakeTierModel(tier="large", responder=respond)
    small = FakeTierModel(tier="small", script=[ai("I could not do it.")])
    mw = EfficiencyMiddleware(policy(), models={"small": small, "large": large})
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t-loop"}, "recursion_limit": 100}
    first = agent.invoke({"messages": [HumanMessage(HARD)]}, cfg)
    assert first["messages"][-1].content == "I could not do it."  # the loop was stopped
    ran_before = len(runs)
    second = agent.invoke({"messages": [HumanMessage(HARD + " Now update the booking, please.")]}, cfg)
    assert second["messages"][-1].content == "Updated."  # planned normally, the same lookup ran again
    assert len(runs) == ran_before + 1


async def test_async_agent_routes_and_accounts():
    agent, mw, small, large = build(policy())
    out = await agent.ainvoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "42"
    assert len(large.calls) == 2
    assert mw.ledger.total().output_tokens == 60


async def test_async_budget_error():
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "1+1"})],
                                                    input_tokens=60, output_tokens=50)])
    agent, *_ = build(policy(run_tokens=100, on_exhausted="error"), large=looper)
    with pytest.raises(BudgetExceeded):
        await agent.ainvoke({"messages": [HumanMessage(HARD)]})


def test_reasoning_that_keeps_reverifying_itself_forces_a_final_answer():
    looping = "Let me think. 6*7=42. Wait, let me double-check. " + "Wait, let me verify that again. " * 12
    think = FakeTierModel(tier="large", script=[
        ai("", tool_calls=[call("calculator", {"expression": "6*7"})], input_tokens=30, output_tokens=40)])
    think.script[0].additional_kwargs["reasoning_content"] = looping
    final = FakeTierModel(tier="small", script=[ai("42")])
    agent, mw, *_ = build(policy(), small=final, large=think)
    out = agent.invoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "42" and len(think.calls) == 1
    last = mw.ledger.records()[-1]
    assert last.kind == "finalize" and "re-verified itself" in last.reason


def test_each_invocation_is_one_run_that_starts_with_its_first_step_and_ends_after_the_agent():
    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        return "Paris"

    pol = policy()
    small = FakeTierModel(tier="small", script=[ai(tool_calls=[call("lookup", {"q": "capital"})]), ai("Paris.")])
    events: list[tuple[str, str]] = []

    class Recorder:
        def __getattr__(self, name):
            def hook(run_id, *a, **k):
                if name in ("on_run_start", "on_run_end"):
                    events.append((name, run_id))
            return hook

    mw = EfficiencyMiddleware(pol, models={"small": small, "large": FakeTierModel(tier="large")}, observer=Recorder())
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    agent.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    agent.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    recs = mw.ledger.records()
    runs = list(dict.fromkeys(r.run_id for r in recs))
    assert len(runs) == 2 and [r.run_id for r in recs] == [runs[0]] * 2 + [runs[1]] * 2
    assert events == [("on_run_start", runs[0]), ("on_run_end", runs[0]),
                      ("on_run_start", runs[1]), ("on_run_end", runs[1])]
    assert mw.ledger.thread_usage("t1").calls == 4


def test_a_blocked_call_is_answered_in_the_model_step_and_the_other_calls_of_the_answer_still_run():
    runs: list[str] = []

    @tool
    def lookup(q: str) -> str:
        """Look a fact up."""
        runs.append(q)
        return "error: the booking service is unavailable"

    looper = FakeTierModel(tier="large", script=[
        ai("", tool_calls=[call("lookup", {"q": "booking 42"}, "c1")]),
        ai("", tool_calls=[call("lookup", {"q": "booking 42"}, "c2")]),
        ai("", tool_calls=[call("lookup", {"q": "booking 42"}, "c3"), call("lookup", {"q": "booking 43"}, "c4")]),
        ai("Booking 43 failed too.")])
    mw = EfficiencyMiddleware(policy(), models={"small": looper, "large": looper})
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage(HARD)]}, {"recursion_limit": 100})
    # the third "booking 42" was answered by effagent in the model step; "booking 43" of the same answer ran
    assert runs == ["booking 42", "booking 42", "booking 43"]
    third = next(i for i, m in enumerate(out["messages"]) if isinstance(m, AIMessage) and len(m.tool_calls) == 2)
    stand_in = out["messages"][third + 1]
    assert isinstance(stand_in, ToolMessage) and stand_in.status == "error"
    assert stand_in.tool_call_id == out["messages"][third].tool_calls[0]["id"]
    assert stand_in.response_metadata["effagent"]["blocked"] is True
    assert out["messages"][-1].content == "Booking 43 failed too."
