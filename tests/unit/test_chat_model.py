"""The drop-in chat model inside a hand-built graph's own node: same decisions, ledger and traces as the node
integration (EfficiencyNode) gives the same graph; tools, structured output, streaming, async, thread budget."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from effagent import InMemoryLedger
from effagent.integrations.chat_model import EfficientChatModel
from tests.fakes import FakeTierModel, ai, call
from tests.unit.test_langchain_middleware import EASY, HARD, calculator, policy, tool_then_answer
from tests.unit.test_langgraph_node import build as build_node


class Verdict(BaseModel):
    answer: str
    confident: bool


def fakes() -> tuple[FakeTierModel, FakeTierModel]:
    return (FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0))),
            FakeTierModel(tier="large", responder=tool_then_answer("42", (40, 30, 20))))


def build(pol: Any, llm: EfficientChatModel | None = None, checkpointer: Any = None) -> tuple[Any, EfficientChatModel]:
    """A hand-built graph whose own node assembles its prompt and calls the chat model (tools bound)."""
    if llm is None:
        small, large = fakes()
        llm = EfficientChatModel(pol, models={"small": small, "large": large}, ledger=InMemoryLedger())
    model = llm.bind_tools([calculator])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    g = StateGraph(MessagesState)
    g.add_node("agent", RunnableLambda(agent, afunc=aagent))
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer), llm


def decisions(messages: list[Any]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if isinstance(m, AIMessage):
            d = dict(m.response_metadata["effagent"]["decision"])
            d.pop("budget_left", None)
            out.append(d)
    return out


def test_same_decisions_and_ledger_as_the_node_integration() -> None:
    pol = policy()
    graph, llm = build(pol)
    node_graph, node, *_ = build_node(pol)
    for prompt, answer in ((EASY, "Paris"), (HARD, "42")):
        mine = graph.invoke({"messages": [HumanMessage(prompt)]})["messages"]
        theirs = node_graph.invoke({"messages": [HumanMessage(prompt)]})["messages"]
        assert mine[-1].content == theirs[-1].content == answer
        assert decisions(mine) == decisions(theirs)
    small, large = llm.tier_models["small"], llm.tier_models["large"]
    assert small.calls[0]["kwargs"]["tool_names"] == ["calculator"]  # type: ignore[attr-defined]
    assert large.calls[0]["kwargs"]["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}  # type: ignore[attr-defined]
    assert large.calls[0]["kwargs"]["extra_body"]["thinking_token_budget"] == 512  # type: ignore[attr-defined]
    total, node_total = llm.ledger.total(), node.ledger.total()
    assert (total.input_tokens, total.output_tokens, total.reasoning_tokens) == (104, 66, 40)
    assert total == node_total
    # one run per invocation, as with the node: the answer without a tool call ends it
    assert len({r.run_id for r in llm.ledger.records()}) == 2
    assert [r.kind for r in llm.ledger.records()] == [r.kind for r in node.ledger.records()]


def test_structured_output_is_a_governed_step() -> None:
    small = FakeTierModel(tier="small", responder=lambda msgs, kw: ai(
        "", tool_calls=[call("Verdict", {"answer": "Paris", "confident": True})], input_tokens=9, output_tokens=4))
    llm = EfficientChatModel(policy(), models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger())
    verdict = llm.with_structured_output(Verdict).invoke(EASY)
    assert verdict == Verdict(answer="Paris", confident=True)
    assert small.calls[0]["kwargs"]["tool_names"] == [str(Verdict)]  # the schema, bound as a tool
    assert small.calls[0]["kwargs"]["tool_choice"] == "any"
    assert small.calls[0]["kwargs"]["max_tokens"] == 300  # the decision's settings reached the tier model
    [rec] = llm.ledger.records()
    assert (rec.tier, rec.usage.input_tokens, rec.usage.output_tokens) == ("small", 9, 4)


def test_a_structured_answer_ends_its_run_so_the_next_call_starts_a_new_one() -> None:
    """A structured answer is a tool call, yet it is the answer: the run ends there. The next, unrelated call
    starts its own run instead of joining a finished one (and being finalized when that one's budget is spent)."""
    small = FakeTierModel(tier="small", responder=lambda msgs, kw: ai(
        "", tool_calls=[call("Verdict", {"answer": "Paris", "confident": True})], input_tokens=60, output_tokens=4)
        if kw.get("tool_choice") == "any" else ai("Paris.", input_tokens=9, output_tokens=2))
    pol = policy(run_tokens=300)  # 150 usable by steps: room for two such calls in one run, not for three
    ended: list[str] = []
    llm = EfficientChatModel(pol, models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger())
    real_end = llm.governor.end_run
    llm.governor.end_run = lambda run_id: (ended.append(run_id), real_end(run_id))[1]  # type: ignore[method-assign]
    for _ in range(3):
        assert llm.with_structured_output(Verdict).invoke(EASY) == Verdict(answer="Paris", confident=True)
    answer = llm.invoke(EASY)
    assert answer.content == "Paris."
    assert answer.response_metadata["effagent"]["action"] == "call"  # not finalized for an earlier run's spending
    runs = list(dict.fromkeys(r.run_id for r in llm.ledger.records()))
    assert len(runs) == 4 and ended == runs


def test_stream_yields_the_governed_answer() -> None:
    small = FakeTierModel(tier="small", script=[ai("Paris", input_tokens=7, output_tokens=2)])
    llm = EfficientChatModel(policy(), models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger())
    chunks = list(llm.stream(EASY))
    assert len(chunks) == 1 and isinstance(chunks[0], AIMessageChunk)
    assert chunks[0].content == "Paris"
    assert chunks[0].response_metadata["effagent"]["tier"] == "small"
    assert llm.ledger.total().calls == 1
    tools = FakeTierModel(tier="small", script=[ai("", tool_calls=[call("calculator", {"expression": "6*7"})])])
    llm = EfficientChatModel(policy(), models={"small": tools, "large": fakes()[1]}, ledger=InMemoryLedger())
    [chunk] = list(llm.bind_tools([calculator]).stream(EASY))
    assert chunk.tool_calls == [call("calculator", {"expression": "6*7"})]  # type: ignore[attr-defined]


async def test_async_graph_and_astream() -> None:
    graph, llm = build(policy())
    out = await graph.ainvoke({"messages": [HumanMessage(HARD)]})
    assert out["messages"][-1].content == "42"
    assert isinstance(out["messages"][-2], ToolMessage)
    assert llm.ledger.total().calls == 2 and {r.tier for r in llm.ledger.records()} == {"large"}
    chunks = [c async for c in llm.astream(EASY)]
    assert chunks[-1].response_metadata["effagent"]["tier"] == "small"


def test_checkpointed_thread_budget_carries_over_invocations() -> None:
    pol = policy(thread_tokens=1000)  # steps may use 500 of it
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (120, 30, 0)))
    llm = EfficientChatModel(pol, models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger())
    graph, llm = build(pol, llm=llm, checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage(EASY)]}, cfg)  # 2 steps x 150 tokens: 300 of the thread's 1,000
    graph.invoke({"messages": [HumanMessage(EASY)]}, cfg)
    recs = llm.ledger.records()
    assert {r.thread_id for r in recs} == {"t"}
    assert [r.kind for r in recs][2:] == ["model", "finalize"]  # the thread's budget ran out in the 2nd turn
    assert len({r.run_id for r in recs}) == 2


def test_outside_a_graph_run_and_thread_are_explicit() -> None:
    small = FakeTierModel(tier="small", script=[ai("ok", input_tokens=5, output_tokens=1)])
    llm = EfficientChatModel(policy(), models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger(),
                             thread_id="th", run_id="r1")
    llm.invoke(EASY)
    llm.invoke(EASY)
    assert {(r.run_id, r.thread_id) for r in llm.ledger.records()} == {("r1", "th")}
    other = EfficientChatModel(policy(), models={"small": small, "large": fakes()[1]}, ledger=InMemoryLedger())
    other.invoke(EASY, config={"configurable": {"thread_id": "x", "effagent_run_id": "r9"}})
    assert {(r.run_id, r.thread_id) for r in other.ledger.records()} == {("r9", "x")}


def test_interrupt_policies_are_refused_with_what_to_use() -> None:
    with pytest.raises(Exception, match="EfficiencyNode"):
        EfficientChatModel(policy(on_exhausted="interrupt"), models=dict(zip(("small", "large"), fakes(),
                                                                              strict=True)))


class Recorder:
    """An observer that writes down what a tracer would see (the events, in order, with their tier and kind)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_run_start(self, run_id: str, thread_id: str | None) -> None:
        self.events.append(("run_start", str(thread_id)))

    def on_step_start(self, run_id: str, decision: Any) -> None:
        self.events.append(("step_start", decision.tier, str(decision.band)))

    def on_call(self, run_id: str, decision: Any, record: Any, duration_s: float, *args: Any, **kw: Any) -> None:
        self.events.append(("call", record.tier, record.kind, str(record.usage.total_tokens)))

    def on_step_end(self, run_id: str, decision: Any, usage: Any) -> None:
        self.events.append(("step_end", str(usage.total_tokens)))

    def on_run_end(self, run_id: str, usage: Any) -> None:
        self.events.append(("run_end", str(usage.total_tokens)))


def test_same_traces_as_the_node_integration() -> None:
    from effagent.integrations.langgraph import EfficiencyGraphState, EfficiencyNode

    pol = policy()
    mine, theirs = Recorder(), Recorder()
    small, large = fakes()
    graph, _ = build(pol, EfficientChatModel(pol, models={"small": small, "large": large}, observer=mine,
                                             ledger=InMemoryLedger()))
    s2, l2 = fakes()
    node = EfficiencyNode(pol, models={"small": s2, "large": l2}, tools=[calculator], observer=theirs,
                          ledger=InMemoryLedger())
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    node_graph = g.compile()
    for prompt in (EASY, HARD):
        graph.invoke({"messages": [HumanMessage(prompt)]})
        node_graph.invoke({"messages": [HumanMessage(prompt)]})
    assert mine.events == theirs.events
    assert [e[0] for e in mine.events].count("run_end") == 2
