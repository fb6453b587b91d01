"""The estimator protocol: what a step looks like to an estimator, and what it answers.

Framework-free: integrations turn their own message objects into :class:`Step` records.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """One tool call an assistant message asked for."""

    model_config = ConfigDict(frozen=True)

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    _key: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the cached key is not part of a call's identity
        if not isinstance(other, ToolCall):
            return NotImplemented
        return self.name == other.name and self.args == other.args

    __hash__ = None  # type: ignore[assignment]  # args is a dict

    @property
    def key(self) -> str:
        """Name and canonical JSON arguments: equal keys = the same call. Computed once per call object (an
        agent's history is re-read every step; integrations convert each message once)."""
        private = self.__pydantic_private__  # a slot: much faster than pydantic's private-attribute lookup
        key = private.get("_key") if private is not None else None
        if key is None:
            key = self.name + json.dumps(self.args, sort_keys=True, default=str)
            if private is not None:
                private["_key"] = key
        return key


class Message(BaseModel):
    """A chat message reduced to what estimators and levers need."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    name: str | None = None
    is_error: bool = False  # a tool message that reported a failure
    reasoning: str = ""  # an assistant message's thinking text, when the server returned it


class Step(BaseModel):
    """One model step of an agent run, as seen right before the model is called."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    index: int = 0  # 0-based position of this model call in the run

    @classmethod
    def from_prompt(cls, prompt: str) -> Step:
        return cls(messages=[Message(role="user", content=prompt)])

    @property
    def prompt(self) -> str:
        """The task: the first user message (the last one when several are present)."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""

    @property
    def tool_errors(self) -> int:
        return sum(1 for m in self.messages if m.role == "tool" and m.is_error)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [c for m in self.messages if m.role == "assistant" for c in m.tool_calls]


class Difficulty(BaseModel):
    """An estimate: score in [0, 1], higher means more reason to spend on the step."""

    score: float = Field(ge=0.0, le=1.0)
    signals: dict[str, float] = Field(default_factory=dict)
    estimator: str = ""


@runtime_checkable
class Estimator(Protocol):
    """Anything that scores steps. ``score_prompts`` is the fast batch path for bare questions."""

    name: str

    def estimate(self, step: Step) -> Difficulty: ...

    def score_prompts(self, prompts: list[str]) -> list[float]: ...


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else float(x)
