"""Budget check-ins inside a graph (``budgets.on_exhausted: interrupt``): a spent budget pauses the graph with a
LangGraph ``interrupt()`` until a person answers (the payload and the grant: :mod:`effagent.checkin`), which needs
a checkpointer; planning a step in a graph node on what the checkpointed state says was spent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effagent.errors import EffagentError
from effagent.ledger.base import Usage
from effagent.policy import Policy
from effagent.records import Step
from effagent.step import StepContext, StepProcedure

from .state import run_spent_from_state


def interrupt_for_budget(payload: dict[str, Any]) -> Any:
    """LangGraph's ``interrupt()`` for a spent budget (``on_exhausted: interrupt``): pauses the graph; on resume,
    the value given to ``Command(resume=...)``."""
    from langgraph.types import interrupt

    return interrupt(payload)


def require_checkpointer(policy: Policy, checkpointed: bool) -> None:
    if policy.budgets.on_exhausted == "interrupt" and not checkpointed:
        raise EffagentError("budgets.on_exhausted: interrupt pauses the graph until a person answers, which needs "
                            "a checkpointer: build the agent with checkpointer=... (e.g. InMemorySaver()) and "
                            "invoke it with a thread_id, or set on_exhausted: finalize")


def plan_in_graph(procedure: StepProcedure, step: Step, run_id: str, thread_id: str | None, base: Usage | None,
                  state: Mapping[str, Any], checkpointed: bool) -> StepContext:
    """The step's plan inside a graph node, on what the run and the thread spent (the checkpointed state's totals
    where the graph checkpoints). With ``on_exhausted: interrupt`` a spent budget asks a person (a LangGraph
    interrupt) before anything is spent — also on a worker that resumes a run another worker paused."""
    run_base = run_spent_from_state(state) if checkpointed else None
    if procedure.governor.policy.budgets.on_exhausted != "interrupt":
        return procedure.plan(step, run_id, thread_id, base, run_base=run_base)
    require_checkpointer(procedure.governor.policy, checkpointed)
    return procedure.plan_checked_in(step, run_id, thread_id, base, interrupt_for_budget, run_base=run_base)


async def aplan_in_graph(procedure: StepProcedure, step: Step, run_id: str, thread_id: str | None,
                         base: Usage | None, state: Mapping[str, Any], checkpointed: bool) -> StepContext:
    run_base = run_spent_from_state(state) if checkpointed else None
    if procedure.governor.policy.budgets.on_exhausted != "interrupt":
        return await procedure.aplan(step, run_id, thread_id, base, run_base=run_base)
    require_checkpointer(procedure.governor.policy, checkpointed)
    return await procedure.aplan_checked_in(step, run_id, thread_id, base, interrupt_for_budget, run_base=run_base)
