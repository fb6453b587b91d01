"""Budgets that warn before they stop (``warn_at``) and that hand control to a person (``on_exhausted:
interrupt``), in both integrations, sync and async, with a checkpointer."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from effagent import EffagentError, InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.langgraph import EfficiencyGraphState, EfficiencyNode
from tests.fakes import FakeTierModel, ai, call
from tests.unit.test_langchain_middleware import calculator

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small}
budgets:
  run: {tokens: 400}
  finalize: {reserve: 0.5}
  on_exhausted: ON_EXHAUSTED
  WARN
"""
QUESTION = "What is 6 * 7? Use the calculator."


def policy(on_exhausted: str = "interrupt", warn: str = ""):
    return parse_policy(POLICY.replace("ON_EXHAUSTED", on_exhausted).replace("WARN", warn), env={})


def respond(messages, kwargs):
    """Calls the calculator (165 tokens), then answers (40 tokens): the second step finds the 200 tokens steps may
    use of the 400-token run budget (half is kept for the final answer) too few for its prompt."""
    if isinstance(messages[-1], ToolMessage):
        return ai("42", input_tokens=30, output_tokens=10)
    if isinstance(messages[-1], HumanMessage) and "budget" in messages[-1].content:
        return ai("42 (final)", input_tokens=30, output_tokens=10)
    return ai("", tool_calls=[call("calculator", {"expression": "6*7"})], input_tokens=150, output_tokens=15)


def agent_graph(pol, model, checkpointer=None):
    mw = EfficiencyMiddleware(pol, models={"small": model})
    return create_agent(mw.default_model, tools=[calculator], middleware=[mw], checkpointer=checkpointer), mw


def node_graph(pol, model, checkpointer=None):
    node = EfficiencyNode(pol, models={"small": model}, tools=[calculator], ledger=InMemoryLedger())
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer), node


BUILDERS = {"create_agent": agent_graph, "StateGraph": node_graph}


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_spent_budget_pauses_and_a_grant_resumes_the_run(kind):
    model = FakeTierModel(tier="small", responder=respond)
    graph, holder = BUILDERS[kind](policy(), model, InMemorySaver())
    cfg = {"configurable": {"thread_id": f"grant-{kind}"}}
    paused = graph.invoke({"messages": [HumanMessage(QUESTION)]}, cfg)
    [pending] = paused["__interrupt__"]
    assert pending.value["effagent"] == "budget_exhausted" and "run budget exhausted" in pending.value["reason"]
    assert pending.value["spent"]["run"]["input_tokens"] == 150 and pending.value["left"]["run_tokens"] == 235
    assert len(model.calls) == 1  # paused before the second model call
    done = graph.invoke(Command(resume={"grant": {"tokens": 500}}), cfg)
    assert done["messages"][-1].content == "42" and "__interrupt__" not in done
    grants = [r for r in holder.ledger.records() if r.kind == "grant"]
    assert len(grants) == 1 and "500 tokens" in grants[0].reason
    assert holder.ledger.granted(f"grant-{kind}") == (500, 0.0)  # the ledger's, not graph state's


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_refusal_ends_the_run_with_a_final_answer_that_says_why(kind):
    model = FakeTierModel(tier="small", responder=respond)
    graph, holder = BUILDERS[kind](policy(), model, InMemorySaver())
    cfg = {"configurable": {"thread_id": f"refuse-{kind}"}}
    graph.invoke({"messages": [HumanMessage(QUESTION)]}, cfg)
    done = graph.invoke(Command(resume={"refuse": True}), cfg)
    last = done["messages"][-1]
    assert last.content == "42 (final)"
    assert last.response_metadata["effagent"]["action"] == "finalize"
    assert "more budget was refused" in last.response_metadata["effagent"]["reason"]
    assert [r.kind for r in holder.ledger.records()] == ["model", "finalize"]


@pytest.mark.parametrize("bad", [{"grant": {"tokens": -5}}, {"grant": {"tokens": "lots"}}, {"more": 1}, "yes",
                                 {"grant": {"tokens": 10, "minutes": 3}}])
def test_a_malformed_answer_keeps_the_run_paused_with_the_error_and_spends_nothing(bad):
    model = FakeTierModel(tier="small", responder=respond)
    graph, mw = agent_graph(policy(), model, InMemorySaver())
    cfg = {"configurable": {"thread_id": "bad"}}
    graph.invoke({"messages": [HumanMessage(QUESTION)]}, cfg)
    spent = mw.ledger.total()
    again = graph.invoke(Command(resume=bad), cfg)
    [pending] = again["__interrupt__"]
    assert pending.value["error"] and "resume" in pending.value
    assert mw.ledger.total() == spent and len(model.calls) == 1
    done = graph.invoke(Command(resume={"grant": {"usd": 1.0, "tokens": 100}}), cfg)  # a good answer still works
    assert done["messages"][-1].content == "42"


@pytest.mark.parametrize("kind", BUILDERS)
async def test_async_agents_pause_and_resume_too(kind):
    model = FakeTierModel(tier="small", responder=respond)
    graph, holder = BUILDERS[kind](policy(), model, InMemorySaver())
    cfg = {"configurable": {"thread_id": f"async-{kind}"}}
    paused = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, cfg)
    assert paused["__interrupt__"]
    done = await graph.ainvoke(Command(resume={"grant": {"tokens": 500}}), cfg)
    assert done["messages"][-1].content == "42"
    assert [r.kind for r in holder.ledger.records()].count("grant") == 1


def test_interrupt_without_a_checkpointer_is_a_clear_error():
    graph, _ = agent_graph(policy(), FakeTierModel(tier="small", responder=respond))
    with pytest.raises(EffagentError, match="needs a checkpointer"):
        graph.invoke({"messages": [HumanMessage(QUESTION)]})


@pytest.mark.parametrize("kind", BUILDERS)
def test_warn_at_adds_a_visible_note_once_that_share_is_spent(kind):
    model = FakeTierModel(tier="small", responder=respond)
    text = POLICY.replace("run: {tokens: 400}", "run: {tokens: 550}").replace("0.5}", "0.1}")
    pol = parse_policy(text.replace("ON_EXHAUSTED", "finalize")
                       .replace("WARN", "warn_at: 0.25"), env={})
    graph, holder = BUILDERS[kind](pol, model, InMemorySaver())
    out = graph.invoke({"messages": [HumanMessage(QUESTION)]}, {"configurable": {"thread_id": f"warn-{kind}"}})
    first, second = model.calls[0]["messages"], model.calls[1]["messages"]
    assert not any("budget nearly spent" in str(m.content) for m in first)
    note = second[-1].content  # 165 of 550 tokens spent: the second request carries the note
    assert "budget nearly spent: 30% of the run's token budget is used" in note
    assert out["messages"][-1].response_metadata["effagent"]["warning"].startswith("budget nearly spent")


# -- a pause outlives its worker: another middleware / node (same checkpointer) resumes it --------------------------
def other_worker(kind: str, saver: InMemorySaver, ledger=None):
    """A second worker: a new middleware or node, a new model, its own ledger (or the shared one given)."""
    model = FakeTierModel(tier="small", responder=respond)
    pol = policy()
    if kind == "create_agent":
        mw = EfficiencyMiddleware(pol, models={"small": model}, ledger=ledger or InMemoryLedger())
        graph = create_agent(mw.default_model, tools=[calculator], middleware=[mw], checkpointer=saver)
        return graph, mw, model
    node = EfficiencyNode(pol, models={"small": model}, tools=[calculator], ledger=ledger or InMemoryLedger())
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=saver), node, model


def paused_elsewhere(kind: str, thread: str, make_ledger=None):
    """A run paused on worker 1, and worker 2 (same checkpointer) ready to resume it."""
    saver = InMemorySaver()
    graph1, _, model1 = other_worker(kind, saver, make_ledger() if make_ledger else None)
    cfg = {"configurable": {"thread_id": thread}}
    assert graph1.invoke({"messages": [HumanMessage(QUESTION)]}, cfg)["__interrupt__"]
    assert len(model1.calls) == 1
    graph2, holder2, model2 = other_worker(kind, saver, make_ledger() if make_ledger else None)
    return graph2, holder2, model2, cfg


def check_grant_on_another_worker(kind: str, thread: str, make_ledger=None) -> None:
    graph, holder, model, cfg = paused_elsewhere(kind, thread, make_ledger)
    done = graph.invoke(Command(resume={"grant": {"tokens": 500}}), cfg)
    last = done["messages"][-1]
    assert last.content == "42" and len(model.calls) == 1  # the pause was honoured: one call, after the grant
    assert holder.ledger.granted(thread) == (500, 0.0)
    # exactly the grant more: steps may use half of 400 + 500, less the 165 the first worker's call spent
    assert last.response_metadata["effagent"]["decision"]["budget_left"]["run_tokens"] == 450 - 165


def check_refusal_on_another_worker(kind: str, thread: str, make_ledger=None) -> None:
    graph, holder, model, cfg = paused_elsewhere(kind, thread, make_ledger)
    # a state update cannot grant: the refusal stands
    done = graph.invoke(Command(resume={"refuse": True}, update={"effagent_grant": {"tokens": 10**6}}), cfg)
    last = done["messages"][-1]
    assert last.content == "42 (final)" and len(model.calls) == 1
    assert last.response_metadata["effagent"]["action"] == "finalize"
    assert "more budget was refused" in last.response_metadata["effagent"]["reason"]
    assert holder.ledger.granted(thread) == (0, 0.0)


HOSTILE = [{"grant": {"tokens": 10**18}}, {"grant": {"tokens": 2**64}}, {"grant": {"usd": float("nan")}},
           {"grant": {"usd": float("inf")}}, {"grant": {"tokens": "5000"}}, {"grant": {"tokens": 2.5}},
           {"grant": {"usd": 10**9}}, {"grant": {"tokens": True}}, "grant", {"refuse": "yes"}]


def check_hostile_resumes_spend_nothing(kind: str, thread: str, make_ledger=None) -> None:
    graph, holder, model, cfg = paused_elsewhere(kind, thread, make_ledger)
    books = (holder.ledger.thread_usage(thread), len(holder.ledger.records()))
    for bad in HOSTILE:
        try:
            again = graph.invoke(Command(resume=bad), cfg)
        except TypeError as err:  # LangGraph's checkpointer cannot store an integer past 64 bits it was sent
            assert "64-bit" in str(err) and bad == {"grant": {"tokens": 2**64}}
        else:
            [pending] = again["__interrupt__"]
            assert pending.value["error"], bad
        assert len(model.calls) == 0 and holder.ledger.granted(thread) == (0, 0.0), bad
    assert (holder.ledger.thread_usage(thread), len(holder.ledger.records())) == books  # the books did not move
    done = graph.invoke(Command(resume={"grant": {"tokens": 100, "usd": 0.5}}), cfg)  # a good answer still works
    assert done["messages"][-1].content == "42" and holder.ledger.granted(thread) == (100, 0.5)


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_grant_given_to_another_worker_is_honoured_once(kind):
    check_grant_on_another_worker(kind, f"moved-grant-{kind}")


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_refusal_given_to_another_worker_stays_a_refusal(kind):
    check_refusal_on_another_worker(kind, f"moved-refuse-{kind}")


@pytest.mark.parametrize("kind", BUILDERS)
def test_hostile_resumes_on_another_worker_spend_nothing(kind):
    check_hostile_resumes_spend_nothing(kind, f"moved-hostile-{kind}")


def test_grants_are_bounded_per_answer_and_per_thread():
    from effagent.checkin import CheckinError, Grant, read_resume

    bounds = policy().budgets.grants
    assert read_resume({"grant": {"tokens": bounds.per_grant.tokens}}, bounds) == Grant(bounds.per_grant.tokens)
    with pytest.raises(CheckinError, match="per_grant"):
        read_resume({"grant": {"tokens": bounds.per_grant.tokens + 1}}, bounds)
    with pytest.raises(CheckinError, match="per_thread"):
        read_resume({"grant": {"tokens": 10}}, bounds, Grant(bounds.per_thread.tokens - 5))
