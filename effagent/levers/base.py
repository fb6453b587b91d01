"""What the levers that take several calls share with the step that runs them (not a lever itself).

A multi-call lever (self-consistency, the agreement cascade, early exit) is handed the step's calls as
callables and returns a :class:`LeverResult`: the answer (None when it has none and one plain call must
answer), what its calls cost, and its own metadata for the answer's tag. Every call it makes is accounted
through the step's one route (:func:`effagent.step.StepProcedure.run` / ``arun``), as a :class:`CallReport`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from effagent.ledger.base import CallKind, Usage
from effagent.levers.answers import Extractor
from effagent.records import ToolCall
from effagent.request import TierRequest

T = TypeVar("T")
TOOL_VOTE = "\x00tool-calls:"  # marks a vote given with tool calls (compared exactly)


class CallReport(NamedTuple):
    """One call as the ledger is told about it (:meth:`effagent.governor.Governor.account`)."""

    tier: str
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0
    kind: CallKind = "model"
    ok: bool = True
    error: str | None = None
    duration_s: float = 0.0
    response_model: str | None = None
    content: dict[str, str] | None = None
    reasoning_estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Called(Generic[T]):
    """One call a lever made through the step: the integration's result, its answer, what the ledger recorded."""

    result: T
    answered: bool  # the result held an answer the step could read
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)

    def vote(self, extract: Extractor) -> str | None:
        """What the answer votes for: its exact tool calls, or the answer ``extract`` reads from its text."""
        return vote(self.text, self.tool_calls, extract) if self.answered else None


def vote(text: str, tool_calls: tuple[ToolCall, ...], extract: Extractor) -> str | None:
    """An answer's vote: its exact tool calls (as JSON, marked with :data:`TOOL_VOTE`), else ``extract(text)``."""
    if tool_calls:
        return TOOL_VOTE + json.dumps([[t.name, t.args] for t in tool_calls], sort_keys=True, default=str)
    return extract(text)


class Ask(Protocol[T]):
    """The step's call for a lever: one call on ``request`` (under the tier's retry rule), read and accounted
    (``kind``) — the call's failure is raised."""

    def __call__(self, request: TierRequest, kind: CallKind = "sample") -> Called[T]: ...


class LeverMeta(Protocol):
    name: str  # the key of the answer's tag it goes under

    def dump(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeverResult(Generic[T]):
    """What a multi-call lever made of the step."""

    answer: T | None  # None: the lever gave no answer, one plain call on the tier answers the step
    usage: Usage  # what all its calls cost (each one is already in the ledger)
    meta: LeverMeta | None = None

    def tag(self) -> dict[str, Any]:
        """The lever's part of the answer's effagent metadata."""
        return {} if self.meta is None else {self.meta.name: self.meta.dump()}


Account = Callable[[CallReport], Usage]  # report one call to the ledger; what it recorded
