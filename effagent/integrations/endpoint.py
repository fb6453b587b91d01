"""The step procedure's :class:`~effagent.step.Endpoint` for adapters that call a tier's chat model on a message
list (the LangGraph node and the drop-in chat model)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages

from effagent.request import TierRequest
from effagent.step import Reply

from .messages import answer_message, reply_of, tag_answer


class MessageListCalls:
    """The step procedure's :class:`~effagent.step.Endpoint` for adapters that call a tier's chat model on a
    message list: a subclass says how the tier's model is bound for a request (``_bound``); the call, reading and
    tagging the answer (an ``AIMessage``) are the same for all of them."""

    messages: list[BaseMessage]
    config: Any = None

    def _bound(self, req: TierRequest) -> Any:
        raise NotImplementedError

    def call(self, req: TierRequest) -> Any:
        return self._bound(req).invoke(self.messages, self.config)

    async def acall(self, req: TierRequest) -> Any:
        return await self._bound(req).ainvoke(self.messages, self.config)

    def read(self, result: Any) -> Reply | None:
        return reply_of(result if isinstance(result, AIMessage) else None)

    def tag(self, result: Any, meta: dict[str, Any], final_note: str | None) -> None:
        tag_answer(result if isinstance(result, AIMessage) else None, meta, final_note)

    def conversation(self) -> list[dict[str, Any]]:
        return convert_to_openai_messages(self.messages)  # type: ignore[return-value]

    def wrap(self, reply: Reply) -> AIMessage:
        return answer_message(reply)
