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

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse, PrivateStateAttr
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command

from effagent.decide import Decision
from effagent.errors import EffagentError, EndpointError
from effagent.governor import Governor
from effagent.ledger.base import Ledger, Usage
from effagent.levers.length import prompt_budget_instruction
from effagent.observe import Observer
from effagent.policy import Policy

from ._lc import reasoning_text, thread_id_from_config, thread_usage_from_state, to_step, usage_of

THREAD_KEY = "effagent_thread_usage"
RUN_KEY = "effagent_run_id"

ReasoningCounter = Callable[[str, str], int]  # (tier name, reasoning text) -> tokens


class EfficiencyState(AgentState[Any]):
    effagent_thread_usage: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]
    effagent_run_id: NotRequired[Annotated[str, UntrackedValue, PrivateStateAttr]]


class EfficiencyMiddleware(AgentMiddleware[EfficiencyState, Any, Any]):
    """Applies effagent's per-step decisions inside a ``create_agent`` graph."""

    state_schema = EfficiencyState

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None,
                 observer: Observer | None = None, reasoning_counter: ReasoningCounter | None = None) -> None:
        super().__init__()
        self.governor = governor or Governor(policy, ledger=ledger, observer=observer)
        self.policy = self.governor.policy
        if models is None:
            from .models import tier_models

            models = tier_models(self.policy)
        missing = sorted(set(self.policy.tiers) - set(models))
        if missing:
            raise EffagentError(f"no chat model given for tier(s) {missing}; pass models={{name: model}} for every "
                                f"tier in the policy ({', '.join(self.policy.tiers)})")
        self.models = models
        self.reasoning_counter = reasoning_counter

    @property
    def ledger(self) -> Ledger:
        return self.governor.ledger

    @property
    def default_model(self) -> BaseChatModel:
        """A model for ``create_agent``'s required argument; every call is re-routed by the middleware."""
        return self.models[self.policy.cheapest_tier]

    # -- run boundaries ---------------------------------------------------------------------------
    def before_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        return {RUN_KEY: self.governor.start_run(thread_id_from_config())}

    async def abefore_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)

    def after_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        run_id = state.get(RUN_KEY)
        if run_id:
            self.governor.end_run(run_id)
        return None

    async def aafter_agent(self, state: EfficiencyState, runtime: Any) -> dict[str, Any] | None:
        return self.after_agent(state, runtime)

    # -- model steps --------------------------------------------------------------------------------
    def _plan(self, request: ModelRequest) -> tuple[str, str | None, Usage | None, Decision]:
        state = request.state
        run_id = state.get(RUN_KEY) or self.governor.start_run(thread_id_from_config())
        thread_id = thread_id_from_config()
        base = thread_usage_from_state(state, THREAD_KEY)
        step = to_step(request.messages, request.tools)
        return run_id, thread_id, base, self.governor.plan(step, run_id, thread_id, base)

    def _request_for(self, request: ModelRequest, decision: Decision, tier: str) -> ModelRequest:
        settings = {**request.model_settings, **self.governor.settings(decision, tier)}
        messages = list(request.messages)
        if decision.action == "finalize":
            messages.append(HumanMessage(self.policy.budgets.finalize.instruction))
            return request.override(model=self.models[tier], model_settings=settings, messages=messages,
                                    tools=[], tool_choice=None)
        extra = prompt_budget_instruction(decision.prompt_budget, to_step(messages).prompt, decision.difficulty)
        if extra:
            messages.append(HumanMessage(extra))
        return request.override(model=self.models[tier], model_settings=settings, messages=messages)

    def _settle(self, run_id: str, thread_id: str | None, base: Usage | None, decision: Decision, tier: str,
                response: ModelResponse, started: float) -> ExtendedModelResponse:
        ai = next((m for m in response.result if isinstance(m, AIMessage)), None)
        inp, out, reasoning = usage_of(ai) if ai is not None else (0, 0, 0)
        if ai is not None and not reasoning and self.reasoning_counter is not None:
            text = reasoning_text(ai)
            if text:
                reasoning = self.reasoning_counter(tier, text)
        rec = self.governor.account(run_id, thread_id, decision, tier=tier, input_tokens=inp, output_tokens=out,
                                    reasoning_tokens=reasoning, duration_s=time.perf_counter() - started,
                                    response_model=(ai.response_metadata or {}).get("model_name") if ai else None)
        if ai is not None and decision.action == "finalize" and ai.tool_calls:
            # the final call must end the run: a model that still asks for tools gets its calls dropped
            ai.tool_calls = []
            ai.content = ai.content or "(no final answer: the model asked for a tool after the budget was spent)"
        if ai is not None:
            ai.response_metadata = {**(ai.response_metadata or {}),
                                    "effagent": {"tier": tier, "decision": decision.model_dump(mode="json")}}
        self.governor.end_step(run_id, decision, rec.usage)
        new_thread = (base if base is not None else Usage()) + rec.usage
        return ExtendedModelResponse(model_response=response,
                                     command=Command(update={THREAD_KEY: new_thread.model_dump()}))

    def _failed(self, run_id: str, thread_id: str | None, decision: Decision, tier: str, err: Exception,
                started: float, attempts: list[str]) -> None:
        msg = f"{tier}: {type(err).__name__}: {str(err)[:200]}"
        attempts.append(msg)
        self.governor.account(run_id, thread_id, decision, tier=tier, input_tokens=0, output_tokens=0, ok=False,
                              error=msg, duration_s=time.perf_counter() - started)

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        run_id, thread_id, base, decision = self._plan(request)
        attempts: list[str] = []
        for tier in [decision.tier, *decision.fallback]:
            started = time.perf_counter()
            try:
                response = handler(self._request_for(request, decision, tier))
            except (EffagentError, GraphBubbleUp):
                raise
            except Exception as err:  # endpoint down, timeout, 5xx, malformed body: try the next tier
                self._failed(run_id, thread_id, decision, tier, err, started, attempts)
                continue
            return self._settle(run_id, thread_id, base, decision, tier, response, started)
        raise EndpointError(attempts)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        run_id, thread_id, base, decision = self._plan(request)
        attempts: list[str] = []
        for tier in [decision.tier, *decision.fallback]:
            started = time.perf_counter()
            try:
                response = await handler(self._request_for(request, decision, tier))
            except (EffagentError, GraphBubbleUp):
                raise
            except Exception as err:
                self._failed(run_id, thread_id, decision, tier, err, started, attempts)
                continue
            return self._settle(run_id, thread_id, base, decision, tier, response, started)
        raise EndpointError(attempts)
