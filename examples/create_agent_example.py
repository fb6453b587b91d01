"""Wrap a LangChain `create_agent` agent with effagent.

Run against the local CPU vLLM server (`effagent local-vllm serve` prints its URL) or any vLLM server:
    EFFAGENT_VLLM_URL=http://127.0.0.1:8000/v1 python examples/create_agent_example.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tools import tool

from effagent import policies
from effagent.integrations.langchain import EfficiencyMiddleware


@tool
def word_count(text: str) -> str:
    """Count the words in a text."""
    return str(len(text.split()))


def main() -> None:
    policy = policies.load("balanced")  # effagent/policies/balanced.yaml; load_policy(PATH) for your own
    mw = EfficiencyMiddleware(policy)  # one ChatLiteLLM per tier of the policy
    agent = create_agent(mw.default_model, tools=[word_count], middleware=[mw])
    for question in ("What is the capital of France?",
                     "A farmer has 17 sheep and buys 3 times as many goats as sheep, then sells 12 goats. "
                     "How many animals does the farmer have now? Explain step by step."):
        result = agent.invoke({"messages": [{"role": "user", "content": question}]})
        decision = result["messages"][-1].response_metadata["effagent"]["decision"]
        print(f"Q: {question[:60]}\n   -> tier {decision['tier']}, thinking {decision['thinking']} "
              f"(budget {decision['thinking_budget']}), difficulty {decision['difficulty']:.2f}")
        print(f"   A: {str(result['messages'][-1].content)[:100]!r}")
    total = mw.ledger.total()
    print(f"ledger: {total.input_tokens} in, {total.output_tokens} out, {total.reasoning_tokens} reasoning, "
          f"${total.cost_usd:.6f}, {total.calls} calls")


if __name__ == "__main__":
    main()
