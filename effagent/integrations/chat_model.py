"""A drop-in chat model for graphs you already have: put it where your model was.

```python
from effagent.integrations.chat_model import EfficientChatModel

llm = EfficientChatModel(load_policy("policy.yaml"))      # instead of ChatOpenAI(...) / ChatLiteLLM(...)

def agent(state):                                          # your own node, your own prompt assembly
    return {"messages": [llm.bind_tools(tools).invoke(state["messages"])]}

summary = llm.with_structured_output(Summary).invoke(text)   # structured output, another model call
```

Each ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` call — through ``bind_tools`` and
``with_structured_output`` too — is one model step run by :class:`effagent.step.StepProcedure`, exactly like a
middleware step: the difficulty is estimated, ``decide`` picks the tier, thinking, budget and max_tokens, the
call goes to that tier's chat model (the next tier on endpoint failure), its usage is recorded in the ledger and
it is traced; the answer carries its decision in ``response_metadata["effagent"]``.

Where a step belongs:

- **thread**: inside a LangGraph graph, the graph's ``thread_id`` (its config); otherwise the ``thread_id`` the
  model was built with, or a call's ``config={"configurable": {"thread_id": ...}}``. The thread's budget is the
  ledger's thread total (a Redis ledger keeps it across processes);
- **run**: the ``run_id`` the model was built with, or a call's ``configurable.effagent_run_id``; otherwise a
  run starts at a thread's first call and ends when the model answers without asking for a tool (the end of
  an agent's turn, as with :class:`effagent.integrations.langgraph.EfficiencyNode`). Calls without a thread
  share one open run the same way: give concurrent invocations a thread id or a run id each.

``stream`` yields the governed answer as one chunk (a step may take several calls: samples, a cascade, a
fallback, so nothing is streamed before the step is decided).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, PrivateAttr

from effagent.errors import EffagentError
from effagent.governor import Governor
from effagent.ledger.base import Ledger
from effagent.observe import Observer
from effagent.policy import Policy
from effagent.request import TierRequest
from effagent.step import Outcome, ReasoningCounter, StepContext, StepProcedure

from .endpoint import MessageListCalls
from .messages import MessageCache, to_step
from .tier_models import check_models, default_reasoning_counter

__all__ = ["EfficientChatModel"]

RUN_ARG = "effagent_run_id"  # a call's configurable key naming its run
_CALL_CONFIG: ContextVar[dict[str, Any] | None] = ContextVar("effagent_chat_model_config", default=None)


class _ChatModelCalls(MessageListCalls):
    """The step procedure's :class:`~effagent.step.Endpoint` for one call of the drop-in model: the tier's chat
    model with the caller's tools (none on a finalize step) and the decision's settings."""

    def __init__(self, owner: EfficientChatModel, messages: list[BaseMessage], tools: Sequence[Any],
                 tool_kwargs: dict[str, Any], stop: list[str] | None, finalize: bool,
                 config: RunnableConfig | None) -> None:
        self.owner = owner
        self.messages = messages
        self.tools = list(tools)
        self.tool_kwargs = tool_kwargs
        self.stop = stop
        self.finalize = finalize
        self.config = config
        self.structured = False  # with_structured_output's call: its tool call is the answer

    def _bound(self, req: TierRequest) -> Runnable[Any, Any]:
        model = self.owner.tier_models[req.tier]
        settings = dict(req.settings)
        if self.stop:
            settings["stop"] = list(self.stop)
        if self.tools and not self.finalize:
            return model.bind_tools(self.tools, **self.tool_kwargs).bind(**settings)
        return model.bind(**settings)


class EfficientChatModel(BaseChatModel):
    """A LangChain chat model governed by an effagent policy: every call is one planned, routed, budgeted,
    accounted and traced model step (see the module docstring for runs and threads).

    Args:
        policy: the budget policy.
        models: a chat model per tier (default: ``ChatLiteLLM`` per tier, as the middleware).
        run_id / thread_id: pin every call to this run / thread (outside a graph, or to override it).
        ledger, governor, observer, reasoning_counter: as for the middleware; pass the middleware's governor to
            share its ledger and traces.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Policy
    run_id: str | None = None
    thread_id: str | None = None
    _governor: Governor = PrivateAttr()
    _models: dict[str, BaseChatModel] = PrivateAttr()
    _procedure: StepProcedure = PrivateAttr()
    _cache: MessageCache = PrivateAttr()
    _runs: dict[str, str] = PrivateAttr(default_factory=dict)  # thread -> its open run
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, policy: Policy, *, models: dict[str, BaseChatModel] | None = None,
                 ledger: Ledger | None = None, governor: Governor | None = None, observer: Observer | None = None,
                 reasoning_counter: ReasoningCounter | None = None, **kwargs: Any) -> None:
        gov = governor or Governor(policy, ledger=ledger, observer=observer)
        super().__init__(policy=gov.policy, **kwargs)
        if gov.policy.budgets.on_exhausted == "interrupt":
            raise EffagentError("on_exhausted: interrupt pauses a graph from its own node; a chat model cannot: use "
                                "EfficiencyNode, or on_exhausted: finalize | error with EfficientChatModel")
        self._governor = gov
        self._models = check_models(gov.policy, models)
        self._procedure = StepProcedure(gov, default_reasoning_counter(gov.policy, models, reasoning_counter))
        self._cache = MessageCache()

    # -- what users reach for ---------------------------------------------------------------------------------
    @property
    def governor(self) -> Governor:
        return self._governor

    @property
    def ledger(self) -> Ledger:
        return self._governor.ledger

    @property
    def tier_models(self) -> dict[str, BaseChatModel]:
        return self._models

    @property
    def _llm_type(self) -> str:
        return "effagent"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "tiers": {n: t.model for n, t in self.policy.tiers.items()}}

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | dict[str, Any] | bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` on every call (each tier's own chat model binds them its way); ``tool_choice`` and
        other arguments go to the tier model's ``bind_tools``. ``with_structured_output`` binds its schema here
        (marked by ``ls_structured_output_format``): that call's tool call is its answer, so it ends the run."""
        extra = dict(kwargs)
        if tool_choice is not None:
            extra["tool_choice"] = tool_choice
        structured = extra.get("ls_structured_output_format") is not None
        return self.bind(effagent_tools=list(tools), effagent_tool_kwargs=extra, effagent_structured=structured)

    # -- the caller's config reaches the step (LangChain hands _generate only the messages) ------------------------
    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        token = _CALL_CONFIG.set(dict(ensure_config(config)))
        try:
            return super().invoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_CONFIG.reset(token)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        token = _CALL_CONFIG.set(dict(ensure_config(config)))
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_CONFIG.reset(token)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[BaseMessageChunk]:
        """The governed answer as one chunk (a step is decided, and may take several calls, before it answers)."""
        yield _chunk(self.invoke(input, config, stop=stop, **kwargs))

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[BaseMessageChunk]:
        yield _chunk(await self.ainvoke(input, config, stop=stop, **kwargs))

    # -- one step ------------------------------------------------------------------------------------------------
    def _where(self, config: dict[str, Any]) -> tuple[str, bool, str | None]:
        """(run id, whether this call's answer ends the run, thread id)."""
        conf = config.get("configurable") or {}
        thread_id = self.thread_id or (str(conf["thread_id"]) if conf.get("thread_id") is not None else None)
        pinned = self.run_id or conf.get(RUN_ARG)
        if pinned:
            return str(pinned), False, thread_id
        key = thread_id or ""
        with self._lock:
            run_id = self._runs.get(key)
            if run_id is None:
                run_id = self._runs[key] = self._governor.start_run(thread_id)
        return run_id, True, thread_id

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, config: dict[str, Any],
                 kwargs: dict[str, Any]) -> tuple[StepContext, _ChatModelCalls, bool]:
        tools = list(kwargs.pop("effagent_tools", None) or [])
        tool_kwargs = dict(kwargs.pop("effagent_tool_kwargs", None) or {})
        structured = bool(kwargs.pop("effagent_structured", False))
        run_id, ends, thread_id = self._where(config)
        step = to_step(messages, tools, self._cache, run_id)
        ctx = self._procedure.plan(step, run_id, thread_id, None)
        return ctx, self._calls(ctx, messages, tools, tool_kwargs, stop, structured), ends

    def _calls(self, ctx: StepContext, messages: list[BaseMessage], tools: list[Any], tool_kwargs: dict[str, Any],
               stop: list[str] | None, structured: bool = False) -> _ChatModelCalls:
        msgs = list(messages)
        extra = self._procedure.instruction(ctx)
        if extra:
            msgs.append(HumanMessage(extra))
        calls = _ChatModelCalls(self, msgs, tools, tool_kwargs, stop, ctx.decision.action == "finalize", None)
        calls.structured = structured
        return calls

    def _answered(self, ctx: StepContext, ends: bool, out: Outcome[Any], calls: _ChatModelCalls) -> bool:
        """Whether the step's answer ends its run (no tool asked for; a structured answer, which is a tool call,
        always does), forgetting the thread's open run."""
        if not ends or (getattr(out.result, "tool_calls", None) and not calls.structured):
            return False
        key = ctx.thread_id or ""
        with self._lock:
            if self._runs.get(key) == ctx.run_id:
                del self._runs[key]
        return True

    @staticmethod
    def _result(out: Outcome[Any]) -> ChatResult:
        msg = out.result if isinstance(out.result, BaseMessage) else AIMessage(content=str(out.result))
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        config = _caller_config()
        ctx, calls, ends = self._prepare(messages, stop, config, kwargs)
        out = self._procedure.run(ctx, calls)
        if self._answered(ctx, ends, out, calls):
            self._governor.end_run(ctx.run_id)
        return self._result(out)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        config = _caller_config()
        ctx, calls, ends = self._prepare(messages, stop, config, kwargs)
        out = await self._procedure.arun(ctx, calls)
        if self._answered(ctx, ends, out, calls):
            await self._governor.aend_run(ctx.run_id)
        return self._result(out)


def _chunk(msg: AIMessage) -> AIMessageChunk:
    """The whole answer as one stream chunk (content, reasoning, tool calls, usage and effagent's metadata)."""
    calls = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c.get("id"), "index": i,
              "type": "tool_call_chunk"} for i, c in enumerate(msg.tool_calls)]
    return AIMessageChunk(content=msg.content, additional_kwargs=msg.additional_kwargs,
                          response_metadata=msg.response_metadata, usage_metadata=msg.usage_metadata, id=msg.id,
                          tool_call_chunks=calls)  # type: ignore[arg-type]


def _caller_config() -> dict[str, Any]:
    """The config of the call in progress: the caller's ``config=`` merged over the running graph's (empty
    when there is neither)."""
    return dict(_CALL_CONFIG.get() or ensure_config(None))
