"""Hand-built StateGraph with EfficiencyNode and fake tier models (no server)."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from effagent import BudgetExceeded, InMemoryLedger
from effagent.integrations.langgraph import EfficiencyGraphState, EfficiencyNode
from tests.fakes import FakeTierModel, ai, call
from tests.unit.test_langchain_middleware import EASY, HARD, calculator, policy, tool_then_answer


def build(pol, small=None, large=None, checkpointer=None, ledger=None):
    small = small or FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0)))
    large = large or FakeTierModel(tier="large", responder=tool_then_answer("42", (40, 30, 20)))
    node = EfficiencyNode(pol, models={"small": small, "large": large}, tools=[calculator],
                          ledger=ledger or InMemoryLedger())
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer), node, small, large


def test_graph_routes_easy_and_hard_with_policy_settings():
    graph, node, small, large = build(policy())
    assert graph.invoke({"messages": [HumanMessage(EASY)]})["messages"][-1].content == "Paris"
    assert graph.invoke({"messages": [HumanMessage(HARD)]})["messages"][-1].content == "42"
    assert len(small.calls) == 2 and len(large.calls) == 2
    assert small.calls[0]["kwargs"]["tool_names"] == ["calculator"]
    assert "extra_body" not in small.calls[0]["kwargs"]
    assert large.calls[0]["kwargs"]["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}
    assert large.calls[0]["kwargs"]["extra_body"]["thinking_token_budget"] == 512
    total = node.ledger.total()
    assert (total.input_tokens, total.output_tokens, total.reasoning_tokens) == (104, 66, 40)


def test_each_invocation_is_a_new_run_and_the_thread_budget_survives_a_restart():
    saver = InMemorySaver()
    cfg = {"configurable": {"thread_id": "t"}}
    pol = policy(thread_tokens=1000)  # steps may use 500 of it, the rest is kept for final answers

    def small() -> FakeTierModel:
        return FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))

    graph, node, *_ = build(pol, small=small(), checkpointer=saver)
    graph.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 2 steps x 150 tokens: 300 of the thread's budget
    runs = {r.run_id for r in node.ledger.records()}
    graph2, node2, *_ = build(pol, small=small(), checkpointer=saver)  # "new process": empty ledger, same state
    graph2.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    recs = node2.ledger.records()
    assert {r.run_id for r in recs}.isdisjoint(runs)  # a new run id ...
    assert [r.kind for r in recs] == ["model", "finalize"]  # ... but the thread's 300 tokens still count
    assert graph2.get_state(cfg).values["effagent_thread_usage"]["calls"] == 4


def test_without_a_checkpointer_the_thread_total_is_the_ledgers():
    cfg = {"configurable": {"thread_id": "t"}}
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    graph, node, *_ = build(policy(thread_tokens=800), small=small)  # steps may use 400 of it
    out = graph.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 300 of the thread's budget
    assert "effagent_thread_usage" not in out  # state ends with the invocation: nothing to carry
    graph.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    assert [r.kind for r in node.ledger.records()][2:] == ["model", "finalize"]


def test_budget_error_and_finalize():
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "1+1"})],
                                                    input_tokens=300, output_tokens=50)])
    graph, *_ = build(policy(run_tokens=1000, on_exhausted="error"), large=looper)
    with pytest.raises(BudgetExceeded):
        graph.invoke({"messages": [HumanMessage(HARD)]})
    final = FakeTierModel(tier="small", script=[ai("done")])
    graph, node, *_ = build(policy(run_tokens=1000), small=final, large=looper)
    assert graph.invoke({"messages": [HumanMessage(HARD)]})["messages"][-1].content == "done"
    assert "tool_names" not in final.calls[0]["kwargs"]


async def test_async_graph():
    graph, node, small, large = build(policy())
    out = await graph.ainvoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "42" and len(large.calls) == 2
    assert node.ledger.total().calls == 2


def test_answers_carry_the_decision_or_its_summary():
    from effagent import parse_policy
    from tests.unit.test_langchain_middleware import POLICY

    text = POLICY.replace("RUN_TOKENS", "100000").replace("THREAD_TOKENS", "1000000").replace("RESERVE", "0.1").replace(
        "ON_EXHAUSTED", "finalize")
    full, *_ = build(parse_policy(text, env={}))
    slim, *_ = build(parse_policy(text + "telemetry: {enabled: false, answer_metadata: summary}\n", env={}))
    a = full.invoke({"messages": [HumanMessage(HARD)]})["messages"][-1].response_metadata["effagent"]
    b = slim.invoke({"messages": [HumanMessage(HARD)]})["messages"][-1].response_metadata["effagent"]
    assert a["decision"]["band"] == b["band"] == "hard" and "decision" not in b
    assert b["thinking"] is True and b["max_tokens"] == a["decision"]["max_tokens"]
