"""Ledger records and the interface every ledger backend implements."""

from __future__ import annotations

import asyncio
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")
GrantResult = Literal["added", "seen", "over"]
CallKind = Literal["model", "finalize", "probe", "sample", "verify", "grant", "shadow"]
# grant: budget a person gave; shadow: the strong tier asked for a label (learning.shadow_share), never shown
#: the kinds of call that make up a model step of the run (probes and verifications ride on a step)
STEP_KINDS = ("model", "finalize", "sample")


# A generator of its own for ids: seeded from os.urandom when made and again in a forked child (so two workers
# forked from one parent never share a stream), and never seeded by application code that calls random.seed().
# Ids must be unique, not secret; drawing them costs no system call, unlike os.urandom on every record.
_IDS = random.Random()
if hasattr(os, "register_at_fork"):  # a platform without fork (Windows) has no forked child to reseed
    os.register_at_fork(after_in_child=_IDS.seed)


def new_id() -> str:
    """A random 128-bit identifier as 32 hex digits (a record's, a reservation's, a run's): the format of
    ``uuid.uuid4().hex``. A shared ledger counts a record once per id, so ids never repeat across workers."""
    return _IDS.getrandbits(128).to_bytes(16, "big").hex()


class Usage(BaseModel):
    """Tokens and dollars; ``input + output`` is what budgets count (reasoning is part of output, and the
    prompt-cache counts are part of input: ``input_tokens`` is the whole prompt, cached or not, as LangChain's
    ``usage_metadata`` and litellm's ``prompt_tokens`` report it)."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    """Prompt tokens read from the provider's prompt cache (billed at its cache-read rate)."""
    cache_write_tokens: int = Field(default=0, ge=0)
    """Prompt tokens written to the provider's prompt cache (billed at its cache-write rate)."""
    cost_usd: float = Field(default=0.0, ge=0)
    calls: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
                     cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
                     cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
                     cost_usd=self.cost_usd + other.cost_usd, calls=self.calls + other.calls)


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
    reasoning_estimated: bool = False
    """True when ``usage.reasoning_tokens`` is an estimate (the provider reported no count of its own: Anthropic's
    thinking inside output_tokens, or a server that reports none and whose reasoning text was counted)."""
    id: str = Field(default_factory=new_id)
    """The record's identity: a shared ledger counts a record once per id, so a retried or replayed write (a
    journaled record written once the store is back) is not counted twice."""


_NOTHING = Usage()  # the zero a LedgerState defaults to (a Usage is never changed once made)


class LedgerState(NamedTuple):
    """What the decision needs to know about spending so far (built by the ledger before every step)."""

    run: Usage = _NOTHING
    thread: Usage = _NOTHING
    steps: int = 0  # model steps taken in this run


class RunSpent(BaseModel):
    """What a run spent and how many model steps it took, as the graph's checkpointed state keeps it (so a run
    resumed on another worker, whose ledger never saw it, keeps both)."""

    usage: Usage = Field(default_factory=Usage)
    steps: int = Field(default=0, ge=0)


def _most(a: Usage, b: Usage) -> Usage:
    return Usage(**{k: max(getattr(a, k), getattr(b, k)) for k in Usage.model_fields})


def spent_so_far(own: LedgerState, run_base: RunSpent | None, thread_base: Usage | None) -> LedgerState:
    """The spending a step is decided on: the ledger's own totals, or what the checkpointed state says where that
    is more (a worker that never saw the run, or an in-memory ledger that forgot it)."""
    run, thread, steps = own.run, own.thread, own.steps
    if run_base is not None and run_base.usage != run:
        run = _most(run, run_base.usage)
    if run_base is not None:
        steps = max(steps, run_base.steps)
    if thread_base is not None and thread_base != thread:
        thread = _most(thread, thread_base)
    if run is own.run and thread is own.thread and steps == own.steps:
        return own
    return LedgerState(run=run, thread=thread, steps=steps)


NANO = 10**9  # ledgers that store dollars as integers store nano-dollars (see ``to_nano``)
DEFAULT_RESERVATION_TTL_S = 300.0


def to_nano(usd: float) -> int:
    """Dollars as integer nano-dollars. Integers add exactly across workers; nano (not micro) because one
    call can cost less than a micro-dollar (12 tokens at $0.05/Mtok is $0.0000006)."""
    return round(usd * NANO)


class Reservation(BaseModel):
    """Budget held for one step in flight: its maximum tokens and dollars, counted against every scope in
    ``scopes`` (``{"run": id, "thread": id, "user": id, "team": name}``) until settled, released or expired."""

    id: str = Field(default_factory=new_id)
    scopes: dict[str, str]
    tokens: int = Field(default=0, ge=0)
    usd: float = Field(default=0.0, ge=0)
    expires_at: float = 0.0  # epoch seconds (the store's clock)
    backend: str = "memory"  # which store holds it ("memory", "redis", "local" for a degraded redis ledger)
    keys: dict[str, str] = Field(default_factory=dict)  # store keys resolved at reserve time (time windows)


class Denial(BaseModel):
    """Why a reservation was refused: the scope without room, and the numbers."""

    scope: str
    key: str = ""
    detail: str = ""


def record_scopes(rec: StepRecord, scopes: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scopes a record counts against: its run and thread, plus ``scopes`` (user, team, ...)."""
    out = dict(scopes or {})
    out["run"] = rec.run_id
    if rec.thread_id is not None:
        out["thread"] = rec.thread_id
    else:
        out.pop("thread", None)
    return out


class ScopeLimit(NamedTuple):
    """One scope's limit as a reservation is checked against it (None = no limit in that unit)."""

    tokens: int | None = None
    usd: float | None = None


def over_limit(limit: ScopeLimit, spent_tokens: int, spent_nano: int, reserved_tokens: int, reserved_nano: int,
               tokens: int, nano: int) -> str | None:
    """Why ``spent + reserved + amount`` does not fit ``limit`` (None when it fits)."""
    if limit.tokens is not None and spent_tokens + reserved_tokens + tokens > limit.tokens:
        return f"tokens: {spent_tokens} spent + {reserved_tokens} reserved + {tokens} > {limit.tokens}"
    if limit.usd is not None and spent_nano + reserved_nano + nano > to_nano(limit.usd):
        return (f"usd: ${spent_nano / NANO:.6f} spent + ${reserved_nano / NANO:.6f} reserved + "
                f"${nano / NANO:.6f} > ${limit.usd:.6f}")
    return None


class Ledger(ABC):
    """Token/$ accounting per step, run and thread. Implementations must be thread- and task-safe.

    Ledgers that share a budget between workers also *reserve*: before a call, ``reserve`` atomically
    checks ``spent + reserved + step maximum <= limit`` for every scope and holds the maximum; after the
    call, ``settle`` records the real usage and frees the hold (``release`` frees it when no call was
    made). Holds expire after their TTL, so a crashed worker does not keep budget forever.
    """

    #: True when ``reserve``/``settle``/``release`` are implemented
    supports_reservations: bool = False
    #: True while a shared ledger runs on its local fallback (the shared store is unreachable)
    degraded: bool = False

    @abstractmethod
    def record(self, rec: StepRecord) -> None: ...

    @abstractmethod
    def run_usage(self, run_id: str) -> Usage: ...

    @abstractmethod
    def thread_usage(self, thread_id: str) -> Usage: ...

    @abstractmethod
    def records(self, run_id: str | None = None) -> list[StepRecord]: ...

    def steps(self, run_id: str) -> int:
        return len({r.step for r in self.records(run_id) if r.kind in STEP_KINDS})

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

    # -- the async face: what async agents await. A ledger whose calls wait on I/O (``blocking_io``: a network
    # store) runs them in a worker thread, so the event loop is never blocked; one kept in memory answers
    # at once.
    blocking_io = True

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args) if self.blocking_io else fn(*args)

    async def astate(self, run_id: str, thread_id: str | None = None,
                     thread_base: Usage | None = None) -> LedgerState:
        return await self._io(self.state, run_id, thread_id, thread_base)

    async def arecord(self, rec: StepRecord) -> None:
        await self._io(self.record, rec)

    async def arun_usage(self, run_id: str) -> Usage:
        return await self._io(self.run_usage, run_id)

    # -- scopes and reservations (optional; see supports_reservations) ------------------------------
    def scope_usage(self, scope: str, key: str) -> Usage:
        """Usage recorded against one scope (``run``, ``thread``, ``user``, ``team``...)."""
        if scope == "run":
            return self.run_usage(key)
        if scope == "thread":
            return self.thread_usage(key)
        raise NotImplementedError(f"{type(self).__name__} keeps no {scope!r} totals")

    def reserved(self, scope: str, key: str) -> tuple[int, float]:
        """(tokens, usd) held by live reservations against one scope."""
        return 0, 0.0

    def reserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, ScopeLimit],
                ttl_s: float = DEFAULT_RESERVATION_TTL_S, why: list[Denial] | None = None) -> Reservation | None:
        """Hold ``tokens``/``usd`` against every scope in ``scopes``, all or nothing: granted only when for each
        scope with a limit in ``limits`` (keyed by scope name) ``spent + reserved + amount <= limit``.
        Returns the reservation, or None when some scope has no room (appended to ``why`` when given)."""
        raise NotImplementedError(f"{type(self).__name__} does not support reservations")

    def settle(self, reservation: Reservation, rec: StepRecord) -> None:
        """Record ``rec`` (its real usage) against the reservation's scopes and free the hold, atomically."""
        raise NotImplementedError(f"{type(self).__name__} does not support reservations")

    def release(self, reservation: Reservation) -> None:
        """Free a hold without recording usage (the call was not made). Idempotent."""
        raise NotImplementedError(f"{type(self).__name__} does not support reservations")

    # -- grants: budget a person added to a thread at a check-in (``budgets.on_exhausted: interrupt``) ------------
    def add_grant(self, thread_id: str, grant_id: str, tokens: int, usd: float,
                  cap: tuple[int, float] | None = None) -> GrantResult:
        """Add a grant to the thread's grant total, atomically: ``"seen"`` when ``grant_id`` was added before (a
        resume LangGraph replays is counted once), ``"over"`` (nothing added) when the total would pass ``cap``
        (tokens, usd), else ``"added"``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no grants")

    def granted(self, thread_id: str) -> tuple[int, float]:
        """(tokens, usd) granted to the thread so far."""
        raise NotImplementedError(f"{type(self).__name__} keeps no grants")

    async def aadd_grant(self, thread_id: str, grant_id: str, tokens: int, usd: float,
                         cap: tuple[int, float] | None = None) -> GrantResult:
        return await self._io(self.add_grant, thread_id, grant_id, tokens, usd, cap)

    async def agranted(self, thread_id: str) -> tuple[int, float]:
        return await self._io(self.granted, thread_id)

    async def areserve(self, scopes: Mapping[str, str], tokens: int, usd: float, limits: Mapping[str, ScopeLimit],
                       ttl_s: float = DEFAULT_RESERVATION_TTL_S, why: list[Denial] | None = None) -> Reservation | None:
        return await self._io(self.reserve, scopes, tokens, usd, limits, ttl_s, why)

    async def asettle(self, reservation: Reservation, rec: StepRecord) -> None:
        await self._io(self.settle, reservation, rec)

    async def arelease(self, reservation: Reservation) -> None:
        await self._io(self.release, reservation)
