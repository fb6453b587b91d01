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
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.graph import MessagesState

from effagent.governor import Governor
from effagent.ledger.base import Ledger
from effagent.observe import Observer
from effagent.policy import Policy

from ._lc import (
    Direct,
    ReasoningCounter,
    StepContext,
    StepRunner,
    check_models,
    default_reasoning_counter,
    graph_context,
    thread_usage_for_state,
    thread_usage_from_state,
)

THREAD_KEY = "effagent_thread_usage"
RUN_KEY = "effagent_run_id"


class EfficiencyGraphState(MessagesState, total=False):
    """``MessagesState`` plus effagent's keys: the thread's usage (checkpointed) and this run's id
    (not checkpointed, so every invocation is a new run)."""

    effagent_thread_usage: dict[str, Any]
    effagent_run_id: Annotated[str, UntrackedValue]


class EfficiencyNode(RunnableLambda):  # type: ignore[type-arg]
    """A model-calling graph node governed by an effagent policy (sync and async)."""

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 tools: Sequence[Any] = (), system_prompt: str | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None, observer: Observer | None = None,
                 reasoning_counter: ReasoningCounter | None = None, messages_key: str = "messages") -> None:
        self.governor = governor or Governor(policy, ledger=ledger, observer=observer)
        self.policy = self.governor.policy
        self.models = check_models(self.policy, models)
        self.tools = list(tools)
        self.system_prompt = system_prompt
        self.messages_key = messages_key
        self.runner = StepRunner(self.governor, default_reasoning_counter(self.policy, models, reasoning_counter))
        super().__init__(self._call, afunc=self._acall, name="effagent_model")

    @property
    def ledger(self) -> Ledger:
        return self.governor.ledger

    # -- one step ---------------------------------------------------------------------------------------
    def _plan(self, state: dict[str, Any], config: RunnableConfig | None) -> tuple[StepContext, bool, bool]:
        """The step's context, whether this step started the run, and whether the graph checkpoints (only then
        is the thread's total kept in graph state)."""
        thread_id, checkpointed = graph_context(config or {})
        run_id = state.get(RUN_KEY)
        new_run = not run_id
        if new_run:
            run_id = self.governor.start_run(thread_id)
        base = thread_usage_from_state(state, THREAD_KEY) if checkpointed else None
        ctx = self.runner.plan(list(state.get(self.messages_key) or []), self.tools, str(run_id), thread_id, base)
        return ctx, new_run, checkpointed

    def _bound(self, ctx: StepContext, tier: str, extra: dict[str, Any]) -> Any:
        settings = {**self.governor.settings(ctx.decision, tier), **extra}
        model = self.models[tier]
        if self.tools and ctx.decision.action != "finalize":
            return model.bind_tools(self.tools, **settings)
        return model.bind(**settings)

    def _messages(self, ctx: StepContext, state: dict[str, Any]) -> list[BaseMessage]:
        msgs = self.runner.messages_for(ctx.decision, list(state.get(self.messages_key) or []))
        return [SystemMessage(self.system_prompt), *msgs] if self.system_prompt else list(msgs)

    def _update(self, ctx: StepContext, new_run: bool, checkpointed: bool, ai: AIMessage, total: Any) -> dict[str, Any]:
        update: dict[str, Any] = {self.messages_key: [ai]}
        if checkpointed:
            update[THREAD_KEY] = thread_usage_for_state(total)
        if new_run:
            update[RUN_KEY] = ctx.run_id
        if not ai.tool_calls:  # the agent answers: this run is over
            self.governor.end_run(ctx.run_id)
        return update

    def _call(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx, new_run, checkpointed = self._plan(state, config)
        msgs = self._messages(ctx, state)
        ai, total = self.runner.run(ctx, lambda tier, extra: self._bound(ctx, tier, extra).invoke(msgs, config), _as_ai,
                                    Direct(msgs, _identity))
        return self._update(ctx, new_run, checkpointed, ai, total)

    async def _acall(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx, new_run, checkpointed = self._plan(state, config)
        msgs = self._messages(ctx, state)
        ai, total = await self.runner.arun(
            ctx, lambda tier, extra: self._bound(ctx, tier, extra).ainvoke(msgs, config), _as_ai,
            Direct(msgs, _identity))
        return self._update(ctx, new_run, checkpointed, ai, total)


def _identity(ai: AIMessage) -> AIMessage:
    return ai


def _as_ai(msg: Any) -> AIMessage | None:
    return msg if isinstance(msg, AIMessage) else None
