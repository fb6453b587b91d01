"""LangChain v1 ``create_agent`` middleware.

```python
from langchain.agents import create_agent
from effagent import load_policy
from effagent.integrations.langchain import EfficiencyMiddleware

mw = EfficiencyMiddleware(load_policy("policy.yaml"))
agent = create_agent(mw.default_model, tools=[...], middleware=[mw])
```
Every model step: the governor plans a Decision, the request goes to that tier's model with the
decision's settings (falling back to the next tier when the endpoint fails), usage is recorded in the
ledger, and the thread's total is kept in graph state so a checkpointed thread keeps its budget.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse, PrivateStateAttr
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.types import Command

from effagent.governor import Governor
from effagent.ledger.base import Ledger, Usage
from effagent.observe import NullObserver, Observer
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


class EfficiencyState(AgentState[Any]):
    effagent_thread_usage: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]
    effagent_run_id: NotRequired[Annotated[str, UntrackedValue, PrivateStateAttr]]


def _first_ai(response: ModelResponse) -> AIMessage | None:
    for m in response.result:
        if isinstance(m, AIMessage):
            return m
    return None


class EfficiencyMiddleware(AgentMiddleware[EfficiencyState, Any, Any]):
    """Applies effagent's per-step decisions inside a ``create_agent`` graph.

    The run's end is reported to the observer (telemetry) by an ``after_agent`` hook, a graph node of its own;
    with no observer (telemetry off) nothing listens for it, so the middleware has no such hook and the graph
    no such node (the instance is then of :class:`_SilentRunEnd`'s kind, still an ``EfficiencyMiddleware``)."""

    state_schema = EfficiencyState

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None,
                 observer: Observer | None = None, reasoning_counter: ReasoningCounter | None = None) -> None:
        super().__init__()
        self.governor = governor or Governor(policy, ledger=ledger, observer=observer)
        self.policy = self.governor.policy
        self.models = check_models(self.policy, models)
        self.runner = StepRunner(self.governor, default_reasoning_counter(self.policy, models, reasoning_counter))
        if type(self) is EfficiencyMiddleware and type(self.governor.observer) is NullObserver:
            self.__class__ = _SilentRunEnd  # create_agent adds a node for every hook a middleware class defines

    @property
    def name(self) -> str:
        """The class's name (graph nodes and traces are named after it); the hookless kind keeps its parent's."""
        cls = type(self)
        return EfficiencyMiddleware.__name__ if cls is _SilentRunEnd else cls.__name__

    @property
    def ledger(self) -> Ledger:
        return self.governor.ledger

    @property
    def default_model(self) -> BaseChatModel:
        """A model for ``create_agent``'s required argument; every call is re-routed by the middleware."""
        return self.models[self.policy.cheapest_tier]

    # -- run boundaries: a run starts with its first model step (its id rides on that step's state update;
    # no node of its own, which would cost a graph step per run) and ends after the agent ----------------
    def after_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        run_id = state.get(RUN_KEY)
        if run_id:
            self.governor.end_run(run_id)
        return None

    async def aafter_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        return self.after_agent(state, runtime)

    # -- model steps --------------------------------------------------------------------------------
    def _plan(self, request: ModelRequest) -> tuple[StepContext, bool, bool]:
        """The step's context, whether this step started the run, and whether the graph checkpoints."""
        thread_id, checkpointed = graph_context()
        run_id = request.state.get(RUN_KEY)
        started = not run_id
        if started:
            run_id = self.governor.start_run(thread_id)
        base = thread_usage_from_state(request.state, THREAD_KEY) if checkpointed else None
        return self.runner.plan(request.messages, request.tools, run_id, thread_id, base), started, checkpointed

    def _request_for(self, request: ModelRequest, ctx: StepContext, tier: str,
                     extra: dict[str, Any]) -> ModelRequest:
        settings = self.governor.settings(ctx.decision, tier)  # a copy of its own
        if request.model_settings or extra:
            settings = {**request.model_settings, **settings, **extra}
        messages = self.runner.messages_for(ctx.decision, request.messages)
        if ctx.decision.action == "finalize":
            return request.override(model=self.models[tier], model_settings=settings, messages=list(messages),
                                    tools=[], tool_choice=None)
        if messages is request.messages:
            return request.override(model=self.models[tier], model_settings=settings)
        return request.override(model=self.models[tier], model_settings=settings, messages=list(messages))

    @staticmethod
    def _extended(response: ModelResponse, thread_total: Usage, ctx: StepContext, started: bool,
                  checkpointed: bool) -> ModelResponse | ExtendedModelResponse:
        """The response, with the state update effagent needs: the run's id on its first step, and the thread's
        total when the state is checkpointed (a state update costs the graph a command of its own)."""
        update: dict[str, Any] = {}
        if checkpointed:
            update[THREAD_KEY] = thread_usage_for_state(thread_total)
        if started:
            update[RUN_KEY] = ctx.run_id
        if not update:
            return response
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def _direct(self, request: ModelRequest, ctx: StepContext) -> Direct[ModelResponse] | None:
        """For early exit: the conversation the tier sees (system message first) and the response wrapper."""
        if not self.runner.exits_early(ctx, ctx.decision.tier):
            return None
        msgs = self.runner.messages_for(ctx.decision, request.messages)
        if request.system_message is not None:
            msgs = [request.system_message, *msgs]
        return Direct(msgs, lambda ai: ModelResponse(result=[ai]))

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        ctx, started, checkpointed = self._plan(request)
        response, total = self.runner.run(
            ctx, lambda tier, extra: handler(self._request_for(request, ctx, tier, extra)), _first_ai,
            None if ctx.decision.early_exit is None else self._direct(request, ctx))
        return self._extended(response, total, ctx, started, checkpointed)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        ctx, started, checkpointed = self._plan(request)
        response, total = await self.runner.arun(
            ctx, lambda tier, extra: handler(self._request_for(request, ctx, tier, extra)), _first_ai,
            None if ctx.decision.early_exit is None else self._direct(request, ctx))
        return self._extended(response, total, ctx, started, checkpointed)


# ``create_agent`` runs each ``wrap_*`` hook through a LangSmith ``traceable`` wrapper that asks for the hook's
# signature on every call, traced or not (``inspect.signature`` of a bound method: about 10 us a model step).
# A signature stored on the function is read back instead of being worked out again; it is the same signature.
for _hook in (EfficiencyMiddleware.wrap_model_call, EfficiencyMiddleware.awrap_model_call):
    _hook.__signature__ = inspect.signature(_hook)  # type: ignore[attr-defined]


class _SilentRunEnd(EfficiencyMiddleware):
    """An :class:`EfficiencyMiddleware` whose runs have no observer: no ``after_agent`` hook (no graph node)."""

    after_agent = AgentMiddleware.after_agent  # type: ignore[assignment]
    aafter_agent = AgentMiddleware.aafter_agent  # type: ignore[assignment]
