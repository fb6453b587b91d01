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
ledger, and the thread's total is kept in graph state so a checkpointed thread keeps its budget. A tool call
the loop guard stops is answered in the same step: the answer comes with a tool message that says why, so the
agent's tool node never runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse, PrivateStateAttr
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langgraph.types import Command

from effagent.governor import Governor
from effagent.ledger.base import Ledger
from effagent.levers import loopguard
from effagent.observe import Observer
from effagent.policy import Policy
from effagent.records import Step
from effagent.request import TierRequest
from effagent.step import Outcome, ReasoningCounter, Reply, StepContext

from .adapter import GraphAdapter
from .interrupts import aplan_in_graph, plan_in_graph
from .messages import answer_message, reply_of, tag_answer, to_step, tool_calls_of
from .state import RUN_KEY, RUN_SPENT_KEY, THREAD_KEY, thread_usage_for_state


class EfficiencyState(AgentState[Any]):
    effagent_thread_usage: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]
    # the run's id: kept in the checkpoint while the run lasts (a run paused by an interrupt resumes as itself),
    # cleared when the agent ends, so every invocation is a new run
    effagent_run_id: NotRequired[Annotated[str, PrivateStateAttr]]
    # what the run spent and its steps while it lasts: a run resumed on another worker keeps both
    effagent_run_spent: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]


def _first_ai(response: ModelResponse) -> AIMessage | None:
    for m in response.result:
        if isinstance(m, AIMessage):
            return m
    return None


class _MiddlewareCalls:
    """The step procedure's :class:`~effagent.step.Endpoint` inside ``wrap_model_call``: a call is the agent's
    own model call (``handler``) with the tier's model, the request's settings and, when the decision adds
    one, an extra instruction; a finalize step is offered no tools."""

    def __init__(self, request: ModelRequest, handler: Callable[[ModelRequest], Any],
                 models: dict[str, BaseChatModel], instruction: str | None, finalize: bool) -> None:
        self.request = request
        self.handler = handler
        self.models = models
        self.messages = [*request.messages, HumanMessage(instruction)] if instruction else request.messages
        self.finalize = finalize

    def _override(self, req: TierRequest) -> ModelRequest:
        settings = {**self.request.model_settings, **req.settings}
        if self.finalize:
            return self.request.override(model=self.models[req.tier], model_settings=settings,
                                         messages=self.messages, tools=[], tool_choice=None)
        return self.request.override(model=self.models[req.tier], model_settings=settings, messages=self.messages)

    def call(self, req: TierRequest) -> ModelResponse:
        return self.handler(self._override(req))  # type: ignore[no-any-return]

    async def acall(self, req: TierRequest) -> ModelResponse:
        return await self.handler(self._override(req))  # type: ignore[no-any-return]

    def read(self, result: ModelResponse) -> Reply | None:
        return reply_of(_first_ai(result))

    def tag(self, result: ModelResponse, meta: dict[str, Any], final_note: str | None) -> None:
        tag_answer(_first_ai(result), meta, final_note)

    def conversation(self) -> list[dict[str, Any]]:
        system = [self.request.system_message] if self.request.system_message is not None else []
        return convert_to_openai_messages([*system, *self.messages])  # type: ignore[return-value]

    def wrap(self, reply: Reply) -> ModelResponse:
        return ModelResponse(result=[answer_message(reply)])


class EfficiencyMiddleware(GraphAdapter, AgentMiddleware[EfficiencyState, Any, Any]):
    """Applies effagent's per-step decisions inside a ``create_agent`` graph: each model call is one run of
    :class:`effagent.step.StepProcedure` (plan, call the decided tier, fall back, account)."""

    state_schema = EfficiencyState

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None,
                 observer: Observer | None = None, reasoning_counter: ReasoningCounter | None = None) -> None:
        super().__init__()
        self._govern(policy, models, ledger, governor, observer, reasoning_counter, blocks_repeated_calls=True)

    @property
    def default_model(self) -> BaseChatModel:
        """A model for ``create_agent``'s required argument; every call is re-routed by the middleware."""
        return self.models[self.policy.cheapest_tier]

    # -- run boundaries: a run starts with its first model step (its id rides on that step's state update)
    # and ends after the agent ----------------------------------------------------------------------------
    def after_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        run_id = state.get(RUN_KEY)
        if run_id:
            self._end_run(run_id)
            return {RUN_KEY: "", RUN_SPENT_KEY: {}}
        return None

    async def aafter_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        run_id = state.get(RUN_KEY)
        if run_id:
            await self._aend_run(run_id)
            return {RUN_KEY: "", RUN_SPENT_KEY: {}}
        return None

    # -- model steps (where a step belongs: GraphAdapter._where, on the running graph's config) -------------
    def _calls(self, request: ModelRequest, handler: Callable[[ModelRequest], Any],
               ctx: StepContext) -> _MiddlewareCalls:
        return _MiddlewareCalls(request, handler, self.models, self.procedure.instruction(ctx),
                                ctx.decision.action == "finalize")

    def _response(self, out: Outcome[ModelResponse], ctx: StepContext, started: bool,
                  checkpointed: bool) -> ModelResponse | ExtendedModelResponse:
        """The response, with a tool message standing in for each tool call the loop guard stops (see
        :meth:`_stand_ins`), and the state update effagent needs: the run's id on its first step, and the thread's
        and the run's totals when the state is checkpointed."""
        result = out.result
        stand_ins = self._stand_ins(_first_ai(result), ctx.step)
        if stand_ins:
            result = ModelResponse(result=[*result.result, *stand_ins], structured_response=result.structured_response)
        update: dict[str, Any] = {}
        if checkpointed:
            update[THREAD_KEY] = thread_usage_for_state(out.thread_total)
            update[RUN_SPENT_KEY] = out.run_total.model_dump()
        if started:
            update[RUN_KEY] = ctx.run_id
        if not update:
            return result
        return ExtendedModelResponse(model_response=result, command=Command(update=update))

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        run_id, started, thread_id, checkpointed, base = self._where(request.state)
        step = to_step(request.messages, request.tools, self.cache, run_id)
        ctx = plan_in_graph(self.procedure, step, run_id, thread_id, base, request.state, checkpointed)
        out = self.procedure.run(ctx, self._calls(request, handler, ctx))
        return self._response(out, ctx, started, checkpointed)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        run_id, started, thread_id, checkpointed, base = self._where(request.state)
        step = to_step(request.messages, request.tools, self.cache, run_id)
        ctx = await aplan_in_graph(self.procedure, step, run_id, thread_id, base, request.state, checkpointed)
        out = await self.procedure.arun(ctx, self._calls(request, handler, ctx))
        return self._response(out, ctx, started, checkpointed)

    # -- tool calls: an over-limit repeated call is answered, not run ------------------------------------
    def _stand_ins(self, answer: AIMessage | None, step: Step) -> list[ToolMessage]:
        """A tool message (status ``error``, saying why) for each tool call of ``answer`` the loop guard stops
        (:func:`effagent.levers.loopguard.blocked_calls`). It joins the answer in the model step's output, so the
        call is answered and the agent's tool node runs only the others (LangChain goes back to the model when
        no call is left)."""
        if answer is None or not answer.tool_calls:
            return []
        calls = answer.tool_calls
        whys = loopguard.blocked_calls(step, tool_calls_of(answer), self.policy.loop_guard)
        return [ToolMessage(content=why, tool_call_id=c.get("id") or "", name=c["name"], status="error",
                            response_metadata={"effagent": {"blocked": True, "reason": why}})
                for c, why in zip(calls, whys, strict=True) if why is not None]
