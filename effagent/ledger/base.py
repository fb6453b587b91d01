"""Ledger records and the interface every ledger backend implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Literal

from pydantic import BaseModel, Field

CallKind = Literal["model", "finalize", "probe", "sample", "verify"]


class Usage(BaseModel):
    """Tokens and dollars; ``input + output`` is what budgets count (reasoning is part of output)."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    calls: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
        )


class StepRecord(BaseModel):
    """One model call as the ledger keeps it."""

    run_id: str
    thread_id: str | None = None
    step: int = 0
    kind: CallKind = "model"
    tier: str
    model: str
    usage: Usage
    reason: str = ""
    ok: bool = True
    error: str | None = None
    ts: float = Field(default_factory=time.time)


class LedgerState(BaseModel):
    """What the decision needs to know about spending so far."""

    run: Usage = Field(default_factory=Usage)
    thread: Usage = Field(default_factory=Usage)
    steps: int = 0  # model steps taken in this run


class Ledger(ABC):
    """Token/$ accounting per step, run and thread. Implementations must be thread- and task-safe."""

    @abstractmethod
    def record(self, rec: StepRecord) -> None: ...

    @abstractmethod
    def run_usage(self, run_id: str) -> Usage: ...

    @abstractmethod
    def thread_usage(self, thread_id: str) -> Usage: ...

    @abstractmethod
    def records(self, run_id: str | None = None) -> list[StepRecord]: ...

    def steps(self, run_id: str) -> int:
        return len({r.step for r in self.records(run_id) if r.kind in ("model", "finalize")})

    def state(self, run_id: str, thread_id: str | None = None, thread_base: Usage | None = None) -> LedgerState:
        """Spending so far. ``thread_base`` is the thread total carried in graph state (checkpointed),
        which wins over this process's memory when given: a resumed thread keeps its budget."""
        if thread_base is not None:
            thread = thread_base
        elif thread_id is not None:
            thread = self.thread_usage(thread_id)
        else:
            thread = Usage()
        return LedgerState(run=self.run_usage(run_id), thread=thread, steps=self.steps(run_id))

    async def arecord(self, rec: StepRecord) -> None:
        self.record(rec)
