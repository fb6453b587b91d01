"""A recorded multi-turn customer-service conversation replayed through ``create_agent`` with a checkpointer:
a long system prompt re-sent at every step, several user turns, one genuine loop (the same failing booking
update, again and again) and, on later turns, a legitimate retry of that update and a repeated lookup.

The replayed model answers from the recording and reports usage the way a server does (its prompt's and its
output's size), so the ledger sees what a real long conversation costs."""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from effagent import parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from tests.fakes import FakeTierModel, call

SYSTEM = ("You are the booking assistant of an airline. " + " ".join(
    f"Rule {i}: follow the fare conditions, confirm every change with the customer, never reveal payment details, "
    f"and use the tools for every booking lookup or change." for i in range(40)))

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 0.1, output_per_mtok: 0.4}}
  large: {model: openai/large, price: {input_per_mtok: 1.0, output_per_mtok: 4.0}}
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: small}
budgets:
  run: {tokens: 60000}
  thread: {tokens: 400000}
loop_guard: {max_repeated_tool_calls: 2}
"""

card_updated = {"value": False}


@tool
def get_booking(code: str) -> str:
    """Look a booking up by its code."""
    return json.dumps({"code": code, "date": "Wednesday", "seat": "14C"})


@tool
def update_booking(code: str, date: str) -> str:
    """Move a booking to another date."""
    if not card_updated["value"]:
        return "error: payment declined for the change fee"
    return json.dumps({"code": code, "date": date, "status": "changed"})


# what the recorded model did in each user turn, in order: tool calls, then its answer
RECORDING: dict[str, list[Any]] = {
    "change": [call("get_booking", {"code": "ABC123"}, "c1"),
               *[call("update_booking", {"code": "ABC123", "date": "Friday"}, f"u{i}") for i in range(6)]],
    "try again": [call("update_booking", {"code": "ABC123", "date": "Friday"}, "u9"),
                  "Done: booking ABC123 now flies on Friday."],
    "seat": [call("get_booking", {"code": "ABC123"}, "c2"), "Your seat on ABC123 is 14C."],
}


def tokens(messages: list[BaseMessage]) -> int:
    return sum(len(str(m.content)) + len(json.dumps(getattr(m, "tool_calls", []) or [])) for m in messages) // 4


def replay(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """The recorded model: the next action of this user turn after what has happened in it so far."""
    turn_start = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and i > 0
                     and not m.content.startswith(("You are repeating", "The budget")))
    user = messages[turn_start].content
    script = next(v for k, v in RECORDING.items() if k in user.lower())
    if isinstance(messages[-1], HumanMessage) and messages[-1].content.startswith("You are repeating"):
        step = "I could not change the booking: the change fee payment keeps being declined."
    else:
        done = sum(1 for m in messages[turn_start:] if isinstance(m, AIMessage))
        step = script[min(done, len(script) - 1)]
    msg = AIMessage(content=step) if isinstance(step, str) else AIMessage(content="", tool_calls=[step])
    out = max(8, tokens([msg]))
    msg.usage_metadata = {"input_tokens": tokens(messages), "output_tokens": out, "total_tokens": 0}
    return msg


def test_the_loop_is_stopped_and_the_later_turns_run():
    card_updated["value"] = False
    model = FakeTierModel(tier="small", responder=replay)
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": model, "large": model})
    agent = create_agent(mw.default_model, tools=[get_booking, update_booking], middleware=[mw],
                         system_prompt=SYSTEM, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "customer-7"}, "recursion_limit": 60}

    first = agent.invoke({"messages": [HumanMessage("Hi, please change my booking ABC123 to Friday.")]}, cfg)
    tools_run = [m for m in first["messages"] if isinstance(m, ToolMessage)]
    updates = [m for m in tools_run if m.name == "update_booking"]
    assert [m.content.startswith("error") for m in updates[:2]] == [True, True]  # it ran twice and failed
    assert all(m.content.startswith("Not run") for m in updates[2:]) and len(updates) == 4  # then was stopped
    last = first["messages"][-1]
    assert last.content.startswith("I could not change the booking")
    assert last.response_metadata["effagent"]["action"] == "finalize"
    assert "loop capped" in last.response_metadata["effagent"]["reason"]

    card_updated["value"] = True  # the customer fixed the card: the same update is legitimate now
    second = agent.invoke({"messages": [HumanMessage("I updated my card, please try again.")]}, cfg)
    assert second["messages"][-1].content == "Done: booking ABC123 now flies on Friday."
    changed = [m for m in second["messages"] if isinstance(m, ToolMessage) and '"changed"' in m.content]
    assert len(changed) == 1

    third = agent.invoke({"messages": [HumanMessage("Which seat do I have?")]}, cfg)
    assert third["messages"][-1].content == "Your seat on ABC123 is 14C."
    lookups = [m for m in third["messages"] if isinstance(m, ToolMessage) and m.name == "get_booking"]
    assert len(lookups) == 2 and not any(m.content.startswith("Not run") for m in lookups)

    # every step of every turn is in the ledger; no turn ran out of its (production-sized) budget
    recs = mw.ledger.records()
    assert len({r.run_id for r in recs}) == 3
    assert sum(1 for r in recs if r.kind == "finalize") == 1
    assert all(isinstance(m, SystemMessage) for m in model.calls[0]["messages"][:1])  # the prompt is re-sent
