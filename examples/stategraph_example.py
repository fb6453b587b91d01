"""A hand-built LangGraph StateGraph whose model node is governed by effagent, with a checkpointer so a
thread keeps its budget across invocations.

    EFFAGENT_VLLM_URL=http://127.0.0.1:8000/v1 python examples/stategraph_example.py
"""

from __future__ import annotations

from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from effagent import policies
from effagent.integrations.langgraph import EfficiencyGraphState, EfficiencyNode


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def main() -> None:
    policy = policies.load("frugal")  # effagent/policies/frugal.yaml; load_policy(PATH) for your own
    node = EfficiencyNode(policy, tools=[add], system_prompt="Answer briefly.")
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([add]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    graph = g.compile(checkpointer=InMemorySaver())

    cfg = {"configurable": {"thread_id": "example-thread"}}
    for question in ("Hi! Who are you?", "What is 2 + 40?"):
        out = graph.invoke({"messages": [{"role": "user", "content": question}]}, cfg)
        print(f"Q: {question}\nA: {str(out['messages'][-1].content)[:100]!r}")
    usage = graph.get_state(cfg).values["effagent_thread_usage"]
    print(f"thread usage (checkpointed): {usage['input_tokens']} in, {usage['output_tokens']} out, "
          f"{usage['calls']} calls, ${usage['cost_usd']:.6f}")


if __name__ == "__main__":
    main()
