"""What effagent keeps in a graph's state and reads from its config: the state keys the adapters share, the
checkpointed values under them (the thread's total, what the run spent), and the running graph's thread id and
whether it checkpoints. Checkpointers serialise plain values, so every value is a plain dict in the state and is
validated when read back (it may come from another worker's checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.config import get_config

from effagent.ledger.base import RunSpent, Usage

THREAD_KEY = "effagent_thread_usage"  # graph state: the thread's total (only where the graph checkpoints)
RUN_KEY = "effagent_run_id"  # graph state: the run's id while it lasts ("" once it ended)
RUN_SPENT_KEY = "effagent_run_spent"  # graph state: what the run spent and its steps (a resumed run keeps both)


def thread_usage_for_state(total: Usage) -> dict[str, Any]:
    """The thread total as the plain dict kept in graph state (checkpointers serialise plain values)."""
    return total.model_dump()


def thread_usage_from_state(state: Mapping[str, Any], key: str) -> Usage | None:
    """The thread total the previous step wrote into graph state (validated: it may come from a checkpoint)."""
    raw = state.get(key)
    if isinstance(raw, Usage):
        return raw
    if isinstance(raw, Mapping):
        return Usage.model_validate(dict(raw))
    return None


_CHECKPOINTER_KEY = "__pregel_checkpointer"  # langgraph's config key for the graph's checkpointer (or None)


def graph_context(config: Mapping[str, Any] | None = None) -> tuple[str | None, bool]:
    """The thread id of the running graph (from ``config``, or the current graph run's), and whether the graph
    checkpoints its state. Only a checkpointed state outlives one invocation, so only then is the thread's
    total kept in graph state; otherwise the ledger's own thread totals are the thread's spending."""
    if config is None:
        try:
            config = get_config()
        except Exception:  # outside a graph run
            return None, False
    conf = config.get("configurable") or {}
    tid = conf.get("thread_id")
    return (None if tid is None else str(tid)), bool(conf.get(_CHECKPOINTER_KEY))


def run_spent_from_state(state: Mapping[str, Any]) -> RunSpent | None:
    """What the run spent as the checkpointed state says (None when the state holds nothing readable)."""
    raw = state.get(RUN_SPENT_KEY)
    if isinstance(raw, RunSpent):
        return raw
    if isinstance(raw, Mapping) and raw:
        try:
            return RunSpent.model_validate(dict(raw))
        except ValueError:
            return None
    return None
