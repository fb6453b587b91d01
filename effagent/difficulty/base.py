"""The estimator protocol: what a step looks like to an estimator, and what it answers.

Framework-free: integrations turn their own message objects into :class:`Step` records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from effagent._trusted import trusted

Role = Literal["system", "user", "assistant", "tool"]
# json.dumps(args, sort_keys=True, default=str), without building an encoder for every call
_KEY_JSON = json.JSONEncoder(sort_keys=True, default=str)
_JSON_STR = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _args_json(args: dict[str, Any]) -> str:
    """``_KEY_JSON.encode(args)``; arguments of plain strings, integers, booleans and nulls (most tool calls)
    are written directly, which is several times faster than the encoder."""
    parts = []
    for k in sorted(args) if all(type(k) is str for k in args) else ():
        v = args[k]
        t = type(v)
        if t is str:
            parts.append(f"{_JSON_STR(k)}: {_JSON_STR(v)}")
        elif t is int:
            parts.append(f"{_JSON_STR(k)}: {int.__repr__(v)}")
        elif v is None or t is bool:
            parts.append(f"{_JSON_STR(k)}: {'null' if v is None else 'true' if v else 'false'}")
        else:
            return _KEY_JSON.encode(args)
    if len(parts) != len(args):
        return _KEY_JSON.encode(args)
    return "{" + ", ".join(parts) + "}"


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
            key = self.name + _args_json(self.args)
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


class StepStats(NamedTuple):
    """What estimators and the loop guard read off a step's messages, worked out in one pass (immutable, and
    a tuple: built once per model step, so it is cheap to build)."""

    count: int = 0  # messages
    chars: int = 0  # characters of their contents
    prompt: str = ""  # the last user message
    calls: int = 0  # tool calls the assistant asked for
    distinct_calls: int = 0  # ... of which different (name + arguments)
    max_call_repeats: int = 0  # the most times one call was asked for
    tool_errors: int = 0  # tool messages that reported a failure
    drafts: tuple[str, ...] = ()  # assistant answers (no tool calls), in order
    last_reasoning: str = ""  # the last assistant message's reasoning


@dataclass(slots=True)
class History:
    """:class:`StepStats` grown one message at a time: an agent's history only grows between its steps, so an
    integration keeps one per run and adds each new message once instead of re-reading the whole history."""

    count: int = 0
    chars: int = 0
    prompt: str = ""
    calls: int = 0
    keys: dict[str, int] = field(default_factory=dict)  # call key -> times asked
    max_call_repeats: int = 0
    tool_errors: int = 0
    drafts: list[str] = field(default_factory=list)
    last_reasoning: str = ""
    _stats: StepStats | None = None  # the snapshot of the counts as they are

    def add(self, m: Message) -> None:
        self._stats = None
        self.count += 1
        self.chars += len(m.content)
        role = m.role
        if role == "user":
            self.prompt = m.content
        elif role == "assistant":
            self.last_reasoning = m.reasoning
            if m.tool_calls:
                keys = self.keys
                for c in m.tool_calls:
                    k = c.key
                    n = keys[k] = keys.get(k, 0) + 1
                    self.calls += 1
                    if n > self.max_call_repeats:
                        self.max_call_repeats = n
            elif m.content:
                self.drafts.append(m.content)
        elif role == "tool" and m.is_error:
            self.tool_errors += 1

    def stats(self) -> StepStats:
        if self._stats is None:
            self._stats = StepStats(self.count, self.chars, self.prompt, self.calls, len(self.keys),
                                    self.max_call_repeats, self.tool_errors, tuple(self.drafts), self.last_reasoning)
        return self._stats


def summarize(messages: list[Message]) -> StepStats:
    h = History()
    for m in messages:
        h.add(m)
    return h.stats()


class Step(BaseModel):
    """One model step of an agent run, as seen right before the model is called.

    Read-only once built: its message statistics (:meth:`stats`) are worked out once, or handed in by an
    integration that keeps them per run (:meth:`with_stats`)."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    index: int = 0  # 0-based position of this model call in the run
    _stats: StepStats | None = PrivateAttr(default=None)

    @classmethod
    def from_prompt(cls, prompt: str) -> Step:
        return cls(messages=[Message(role="user", content=prompt)])

    def stats(self) -> StepStats:
        private = self.__pydantic_private__  # a plain dict: much faster than pydantic's private-attribute lookup
        st = private.get("_stats") if private is not None else None
        if st is None or st.count != len(self.messages):  # none given, or the messages changed since
            st = summarize(self.messages)
            if private is not None:
                private["_stats"] = st
        return st

    def with_stats(self, stats: StepStats) -> Step:
        """This step with statistics computed elsewhere (they must describe exactly these messages)."""
        if self.__pydantic_private__ is not None:
            self.__pydantic_private__["_stats"] = stats
        return self

    def at_index(self, index: int) -> Step:
        """A copy at another position in the run (same messages, same statistics)."""
        return trusted(Step, messages=self.messages, tools=self.tools, index=index).with_stats(self.stats())

    @property
    def prompt(self) -> str:
        """The task: the first user message (the last one when several are present)."""
        return self.stats().prompt

    @property
    def tool_errors(self) -> int:
        return self.stats().tool_errors

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
