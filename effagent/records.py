"""What one agent step looks like to effagent: the records every other module may import.

Integrations turn their own message objects into these (``effagent.integrations`` for LangChain); estimators,
the loop guard, ``decide`` and the step procedure read them. They are plain frozen dataclasses: built for
every model step, never validated twice, never changed once built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple, get_args

Role = Literal["system", "user", "assistant", "tool"]

StepRole = Literal["first", "after_tool", "restate", "tool_error", "retry", "final"]
"""What a model step is doing in its run, read off the conversation before the call (:func:`step_role`):

- ``first``: the first step of a user turn (the last message is the user's);
- ``after_tool``: reading tool results that are long, or before the work the request asks for is done;
- ``restate``: after short tool results once the request's steps are done: the answer restates what came back;
- ``tool_error``: a tool just reported an error: recover from it;
- ``retry``: the model asks again for a call it already made, or is asked again after its own answer;
- ``final``: a later step of a turn with no tools offered (the final answer)."""
STEP_ROLES: tuple[str, ...] = get_args(StepRole)

RESTATE_MAX_CHARS = 200  # a tool result at most this long can be restated in an answer
# a sequencing word that introduces more work ("then use the calculator"), not the answer ("then tell me")
_SEQUENCE = re.compile(r"\b(?:then|after that|afterwards|next|finally)\b(?!,?\s+(?:tell|say|give|answer|report|"
                       r"write|reply|state|what|how)\b)", re.I)


_CALL_ARGS = json.JSONEncoder(sort_keys=True, default=str)  # canonical arguments (one encoder, made once)


@dataclass(frozen=True, eq=False)
class ToolCall:
    """One tool call an assistant message asked for."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """Name and canonical JSON arguments: equal keys = the same call."""
        return self.name + _CALL_ARGS.encode(self.args)

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
    tier: str | None = None  # the tier that answered an assistant message, when effagent tagged it
    context_tokens: int = 0  # an assistant message's prompt + answer tokens as reported (what its tier cached)


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
    # what the step's role is read from (see :func:`step_role`)
    tail: str = ""  # the role of the last non-system message
    tail_results: int = 0  # tool results since the last assistant message
    tail_errors: int = 0  # ... of which errors
    tail_max_chars: int = 0  # the longest of them
    tail_repeat: bool = False  # the last assistant message asked for a call it had asked for before
    turn_rounds: int = 0  # assistant messages with tool calls since the last user message
    turn_answers: int = 0  # assistant messages since the last user message
    turn_failed_rounds: int = 0  # ... of those with tool calls, the rounds a tool reported an error in
    last_tier: str | None = None  # the tier that answered the last assistant message (when tagged)
    prefix_chars: int = 0  # characters up to and including the last assistant message (what a tier has cached)
    prefix_tokens: int = 0  # the last assistant message's reported prompt + answer tokens (0: not reported)
    turn_start: int = 0  # the position of the last user message (where the current turn starts)
    prompt_rounds: int = 1  # rounds of tool calls the last user message asks for (:func:`asked_rounds`)


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
    tail: str = ""
    tail_results: int = 0
    tail_errors: int = 0
    tail_max_chars: int = 0
    tail_repeat: bool = False
    turn_rounds: int = 0
    turn_answers: int = 0
    turn_failed_rounds: int = 0
    last_tier: str | None = None
    prefix_chars: int = 0
    prefix_tokens: int = 0
    turn_start: int = 0
    prompt_rounds: int = 1

    def add(self, m: Message) -> None:
        self.count += 1
        self.chars += len(m.content)
        if m.role != "system":
            self.tail = m.role
        if m.role == "user":
            self.prompt = m.content
            self.turn_start = self.count - 1
            self.prompt_rounds = asked_rounds(m.content)
            self.turn_rounds = self.turn_answers = self.turn_failed_rounds = 0
            self.tail_results = self.tail_errors = self.tail_max_chars = 0
            self.tail_repeat = False
        elif m.role == "assistant":
            self.last_reasoning = m.reasoning
            self.tail_repeat = False
            for c in m.tool_calls:
                n = self.keys[c.key] = self.keys.get(c.key, 0) + 1
                self.calls += 1
                self.max_call_repeats = max(self.max_call_repeats, n)
                self.tail_repeat = self.tail_repeat or n > 1
            if not m.tool_calls and m.content:
                self.drafts.append(m.content)
            self.turn_answers += 1
            self.turn_rounds += 1 if m.tool_calls else 0
            self.tail_results = self.tail_errors = self.tail_max_chars = 0
            self.last_tier = m.tier
            self.prefix_chars = self.chars
            self.prefix_tokens = m.context_tokens
        elif m.role == "tool":
            self.tail_results += 1
            self.tail_max_chars = max(self.tail_max_chars, len(m.content))
            if m.is_error:
                self.tool_errors += 1
                self.turn_failed_rounds += 1 if not self.tail_errors else 0
                self.tail_errors += 1

    def stats(self) -> StepStats:
        return StepStats(self.count, self.chars, self.prompt, self.calls, len(self.keys), self.max_call_repeats,
                         self.tool_errors, tuple(self.drafts), self.last_reasoning, self.tail, self.tail_results,
                         self.tail_errors, self.tail_max_chars, self.tail_repeat, self.turn_rounds,
                         self.turn_answers, self.turn_failed_rounds, self.last_tier, self.prefix_chars,
                         self.prefix_tokens, self.turn_start, self.prompt_rounds)


def summarize(messages: list[Message]) -> StepStats:
    h = History()
    for m in messages:
        h.add(m)
    return h.stats()


def asked_rounds(prompt: str) -> int:
    """How many rounds of tool calls a request sequences: 1 + its sequencing words that introduce more work
    ("look up A, then use the calculator" = 2; "look up A, then tell me B" = 1)."""
    return 1 + len(_SEQUENCE.findall(prompt))


def step_role(st: StepStats, tools_offered: bool = True) -> StepRole:
    """The step's role from its conversation's statistics (see :data:`StepRole`)."""
    if st.tail in ("", "user") or st.turn_answers == 0:
        return "first"
    if not tools_offered:
        return "final"
    if st.tail == "tool":
        if st.tail_errors:
            return "tool_error"
        if st.tail_repeat:
            return "retry"
        if st.tail_max_chars <= RESTATE_MAX_CHARS and st.turn_rounds - st.turn_failed_rounds >= st.prompt_rounds:
            return "restate"
        return "after_tool"
    return "retry"  # the model's own answer is last: it is asked again


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
    def role(self) -> StepRole:
        """What this step does in its run (:func:`step_role`); a step offered no tools after earlier answers of
        its turn is the final answer."""
        return step_role(self.stats(), tools_offered=bool(self.tools or self.tool_schemas))

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
