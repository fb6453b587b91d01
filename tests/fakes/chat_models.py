"""Fake chat models for one tier each (no server: scripted answers, reported usage, recorded calls)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from effagent import EndpointError


def ai(content: str = "", *, tool_calls: list[dict[str, Any]] | None = None, input_tokens: int = 10,
       output_tokens: int = 5, reasoning: int = 0) -> AIMessage:
    """An AIMessage with usage_metadata as a provider integration would fill it."""
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                             "total_tokens": input_tokens + output_tokens}
    if reasoning:
        usage["output_token_details"] = {"reasoning": reasoning}
    return AIMessage(content=content, tool_calls=tool_calls or [], usage_metadata=usage)  # type: ignore[arg-type]


def call(name: str, args: dict[str, Any], call_id: str = "c1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


class FakeTierModel(BaseChatModel):
    """A fake chat model for one tier: answers from a script (cycled), records every call's messages and
    keyword arguments (the settings effagent sent), and can be told to fail like a dead endpoint."""

    tier: str = "fake"
    script: list[AIMessage] = Field(default_factory=list)
    responder: Callable[[list[BaseMessage], dict[str, Any]], AIMessage] | None = None
    fail_with: type[Exception] | None = None
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _cycle: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return f"fake-{self.tier}"

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._calls

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:  # create_agent binds tools per call
        return self.bind(tool_names=[getattr(t, "name", str(t)) for t in tools], **kwargs)

    def _next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if self.responder is not None:
            return self.responder(messages, kwargs)
        if self._cycle is None:
            self._cycle = itertools.cycle(self.script or [ai("ok")])
        return next(self._cycle).model_copy(deep=True)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self._calls.append({"messages": list(messages), "kwargs": dict(kwargs)})
        if self.fail_with is not None:
            raise self.fail_with(f"{self.tier} endpoint is down (fake)")
        msg = self._next(list(messages), kwargs)
        msg.response_metadata = {**msg.response_metadata, "model_name": f"fake-{self.tier}"}
        return ChatResult(generations=[ChatGeneration(message=msg)])


class FakeEndpointDown(EndpointError):
    """What effagent raises when a tier's server is down, for ``FakeTierModel(fail_with=FakeEndpointDown)``."""

    def __init__(self, msg: str) -> None:
        super().__init__([msg])
