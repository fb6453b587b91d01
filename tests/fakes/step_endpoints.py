"""A fake :class:`effagent.step.Endpoint` for tests of the step procedure without a framework."""

from __future__ import annotations

from typing import Any

from effagent.request import TierRequest
from effagent.step import Reply


class FakeStepEndpoint:
    """A fake :class:`effagent.step.Endpoint`: each tier answers from ``answers`` or raises its error."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[TierRequest] = []

    def call(self, request: TierRequest) -> Reply:
        self.calls.append(request)
        got = self.answers[request.tier]
        if isinstance(got, BaseException):
            raise got
        return got

    async def acall(self, request: TierRequest) -> Reply:
        return self.call(request)

    def read(self, result: Reply) -> Reply:
        return result

    def tag(self, result: Reply, meta: dict[str, Any], final_note: str | None) -> None:
        self.meta = meta

    def conversation(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": "q"}]

    def wrap(self, reply: Reply) -> Reply:
        return reply
