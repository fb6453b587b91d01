"""LangGraph ``StateGraph`` integration for hand-built graphs.

```python
from langgraph.graph import StateGraph, START, END
from langgraph.prebuilt import ToolNode, tools_condition
from effagent.integrations.langgraph import EfficiencyNode, EfficiencyGraphState

node = EfficiencyNode(load_policy("policy.yaml"), tools=[calculator])
g = StateGraph(EfficiencyGraphState)
g.add_node("agent", node)                 # replaces your model-calling node
g.add_node("tools", ToolNode([calculator]))
g.add_edge(START, "agent")
g.add_conditional_edges("agent", tools_condition)
g.add_edge("tools", "agent")
```
The node plans a Decision for each call, calls that tier's model (tools bound, decision settings
applied, next tier on endpoint failure), records usage in the ledger and, when the graph has a checkpointer, adds it to
``effagent_thread_usage`` in graph state, so a thread resumed from a checkpointer keeps its budget (without
one, the ledger's own thread totals count).
Your own state class works too if it has the two keys of :class:`EfficiencyGraphState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import MessagesState

from effagent.governor import Governor
from effagent.ledger.base import Ledger
from effagent.observe import Observer
from effagent.policy import Policy
from effagent.request import TierRequest
from effagent.step import Outcome, ReasoningCounter, StepContext

from .adapter import GraphAdapter
from .endpoint import MessageListCalls
from .interrupts import aplan_in_graph, plan_in_graph
from .messages import to_step
from .state import RUN_KEY, RUN_SPENT_KEY, THREAD_KEY, thread_usage_for_state


class EfficiencyGraphState(MessagesState, total=False):
    """``MessagesState`` plus effagent's keys: the thread's usage, this run's id (cleared when the agent answers,
    so every invocation is a new run; a run paused by an interrupt resumes as itself) and the budget a person
    spent so far."""

    effagent_thread_usage: dict[str, Any]
    effagent_run_id: str
    effagent_run_spent: dict[str, Any]  # what the run spent and its steps (a resumed run keeps both)


class _NodeCalls(MessageListCalls):
    """The step procedure's :class:`~effagent.step.Endpoint` inside the node: the tier's chat model, tools bound
    (none on a finalize step), the decision's settings, the node's config."""

    def __init__(self, node: EfficiencyNode, messages: list[BaseMessage], config: RunnableConfig | None,
                 finalize: bool) -> None:
        self.node = node
        self.messages = messages
        self.config = config
        self.finalize = finalize

    def _bound(self, req: TierRequest) -> Any:
        model = self.node.models[req.tier]
        if self.node.tools and not self.finalize:
            return model.bind_tools(self.node.tools, **req.settings)
        return model.bind(**req.settings)


class EfficiencyNode(GraphAdapter, RunnableLambda):  # type: ignore[type-arg]
    """A model-calling graph node governed by an effagent policy (sync and async): each call is one run of
    :class:`effagent.step.StepProcedure`."""

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 tools: Sequence[Any] = (), system_prompt: str | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None, observer: Observer | None = None,
                 reasoning_counter: ReasoningCounter | None = None, messages_key: str = "messages") -> None:
        self._govern(policy, models, ledger, governor, observer, reasoning_counter)
        self.tools = list(tools)
        self.system_prompt = system_prompt
        self.messages_key = messages_key
        super().__init__(self._call, afunc=self._acall, name="effagent_model")

    # -- one step (where it belongs: GraphAdapter._where, on the node's config) ---------------------------
    def _calls(self, ctx: StepContext, state: dict[str, Any], config: RunnableConfig | None) -> _NodeCalls:
        msgs = list(state.get(self.messages_key) or [])
        extra = self.procedure.instruction(ctx)
        if extra:
            msgs.append(HumanMessage(extra))
        if self.system_prompt:
            msgs.insert(0, SystemMessage(self.system_prompt))
        return _NodeCalls(self, msgs, config, ctx.decision.action == "finalize")

    def _update(self, ctx: StepContext, new_run: bool, checkpointed: bool, out: Outcome[Any]) -> dict[str, Any]:
        update: dict[str, Any] = {self.messages_key: [out.result]}
        ended = not getattr(out.result, "tool_calls", None)  # the agent answers: this run is over
        if checkpointed:
            update[THREAD_KEY] = thread_usage_for_state(out.thread_total)
            update[RUN_SPENT_KEY] = {} if ended else out.run_total.model_dump()
        if ended:
            update[RUN_KEY] = ""
        elif new_run:
            update[RUN_KEY] = ctx.run_id
        return update

    def _call(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        run_id, new_run, thread_id, checkpointed, base = self._where(state, config or {})
        step = to_step(list(state.get(self.messages_key) or []), self.tools, self.cache, run_id)
        ctx = plan_in_graph(self.procedure, step, run_id, thread_id, base, state, checkpointed)
        out = self.procedure.run(ctx, self._calls(ctx, state, config))
        if not getattr(out.result, "tool_calls", None):  # the agent answers: this run is over
            self._end_run(ctx.run_id)
        return self._update(ctx, new_run, checkpointed, out)

    async def _acall(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        run_id, new_run, thread_id, checkpointed, base = self._where(state, config or {})
        step = to_step(list(state.get(self.messages_key) or []), self.tools, self.cache, run_id)
        ctx = await aplan_in_graph(self.procedure, step, run_id, thread_id, base, state, checkpointed)
        out = await self.procedure.arun(ctx, self._calls(ctx, state, config))
        if not getattr(out.result, "tool_calls", None):
            await self._aend_run(ctx.run_id)
        return self._update(ctx, new_run, checkpointed, out)
