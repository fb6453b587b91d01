"""What one agent step looks like to effagent: the records every other module may import.

Integrations turn their own message objects into these (``effagent.integrations`` for LangChain); estimators,
the loop guard, ``decide`` and the step procedure read them. They are plain frozen dataclasses: built for
every model step, never validated twice, never changed once built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, eq=False)
class ToolCall:
    """One tool call an assistant message asked for."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """Name and canonical JSON arguments: equal keys = the same call."""
        return self.name + json.dumps(self.args, sort_keys=True, default=str)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToolCall):
            return NotImplemented
        return self.name == other.name and self.args == other.args

    __hash__ = None  # type: ignore[assignment]  # args is a dict


@dataclass(frozen=True)
class Message:
    """A chat message reduced to what estimators and levers need."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    name: str | None = None
    is_error: bool = False  # a tool message that reported a failure
    reasoning: str = ""  # an assistant message's thinking text, when the server returned it


class StepStats(NamedTuple):
    """What estimators and the loop guard read off a step's messages, worked out in one pass."""

    count: int = 0  # messages
    chars: int = 0  # characters of their contents
    prompt: str = ""  # the last user message
    calls: int = 0  # tool calls the assistant asked for
    distinct_calls: int = 0  # ... of which different (name + arguments)
    max_call_repeats: int = 0  # the most times one call was asked for
    tool_errors: int = 0  # tool messages that reported a failure
    drafts: tuple[str, ...] = ()  # assistant answers (no tool calls), in order
    last_reasoning: str = ""  # the last assistant message's reasoning


@dataclass
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

    def add(self, m: Message) -> None:
        self.count += 1
        self.chars += len(m.content)
        if m.role == "user":
            self.prompt = m.content
        elif m.role == "assistant":
            self.last_reasoning = m.reasoning
            for c in m.tool_calls:
                n = self.keys[c.key] = self.keys.get(c.key, 0) + 1
                self.calls += 1
                self.max_call_repeats = max(self.max_call_repeats, n)
            if not m.tool_calls and m.content:
                self.drafts.append(m.content)
        elif m.role == "tool" and m.is_error:
            self.tool_errors += 1

    def stats(self) -> StepStats:
        return StepStats(self.count, self.chars, self.prompt, self.calls, len(self.keys), self.max_call_repeats,
                         self.tool_errors, tuple(self.drafts), self.last_reasoning)


def summarize(messages: list[Message]) -> StepStats:
    h = History()
    for m in messages:
        h.add(m)
    return h.stats()


@dataclass(frozen=True)
class Step:
    """One model step of an agent run, as seen right before the model is called.

    ``known_stats`` lets an integration that keeps a :class:`History` per run hand in the statistics of exactly
    these messages instead of having them worked out again."""

    messages: list[Message] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    index: int = 0  # 0-based position of this model call in the run
    known_stats: StepStats | None = field(default=None, repr=False, compare=False)
    tool_schemas: str = field(default="", repr=False)  # the offered tools' definitions (JSON), part of the prompt

    @classmethod
    def from_prompt(cls, prompt: str) -> Step:
        return cls(messages=[Message(role="user", content=prompt)])

    @cached_property
    def _stats(self) -> StepStats:
        if self.known_stats is not None and self.known_stats.count == len(self.messages):
            return self.known_stats
        return summarize(self.messages)

    def stats(self) -> StepStats:
        st = self._stats
        # the messages list was added to after the statistics were read: read them again
        return st if st.count == len(self.messages) else summarize(self.messages)

    def at_index(self, index: int) -> Step:
        """A copy at another position in the run (same messages, same statistics)."""
        return Step(messages=self.messages, tools=self.tools, index=index, known_stats=self.stats(),
                    tool_schemas=self.tool_schemas)

    @property
    def prompt(self) -> str:
        """The task: the last user message."""
        return self.stats().prompt

    @property
    def tool_errors(self) -> int:
        return self.stats().tool_errors

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [c for m in self.messages if m.role == "assistant" for c in m.tool_calls]

    @property
    def text(self) -> str:
        """The conversation's text (to estimate usage a server did not report)."""
        return " ".join(m.content for m in self.messages)


@dataclass(frozen=True)
class Difficulty:
    """An estimate: score in [0, 1], higher means more reason to spend on the step."""

    score: float
    signals: dict[str, float] = field(default_factory=dict)
    estimator: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a difficulty score is in [0, 1], got {self.score!r}")


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else float(x)
