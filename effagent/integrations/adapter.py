"""What the graph adapters share: :class:`~effagent.integrations.langchain.EfficiencyMiddleware` and
:class:`~effagent.integrations.langgraph.EfficiencyNode` both run every model step through one
:class:`~effagent.step.StepProcedure`, keep the run's id and the thread's total in graph state under the same keys,
and answer ``ledger`` and ``record_outcome`` the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from effagent.governor import Governor
from effagent.ledger.base import Ledger, Usage
from effagent.observe import Observer
from effagent.policy import Policy
from effagent.step import ReasoningCounter, StepProcedure

from .messages import MessageCache
from .state import RUN_KEY, THREAD_KEY, graph_context, thread_usage_from_state
from .tier_models import check_models, default_reasoning_counter


class GraphAdapter:
    """The governor, the tiers' chat models and the step procedure of an adapter that runs inside a graph, and
    where a step belongs (its run, its thread, and the thread's total the graph's state carries)."""

    governor: Governor
    policy: Policy
    models: dict[str, BaseChatModel]
    procedure: StepProcedure
    cache: MessageCache

    def _govern(self, policy: Policy, models: dict[str, BaseChatModel] | None, ledger: Ledger | None,
                governor: Governor | None, observer: Observer | None, reasoning_counter: ReasoningCounter | None,
                *, blocks_repeated_calls: bool = False) -> None:
        self.governor = governor or Governor(policy, ledger=ledger, observer=observer)
        self.policy = self.governor.policy
        self.models = check_models(self.policy, models)
        self.procedure = StepProcedure(self.governor, default_reasoning_counter(self.policy, models, reasoning_counter),
                                       blocks_repeated_calls=blocks_repeated_calls)
        self.cache = MessageCache()

    @property
    def ledger(self) -> Ledger:
        return self.governor.ledger

    def record_outcome(self, run_id: str, success: bool, *, step: int | None = None,
                       feedback: str | None = None) -> bool:
        """Say whether a step's answer was right (task success, user feedback): kept with the step's decision in
        the trace and, for steps a cheaper tier answered, in ``learning.outcomes`` for ``difficulty learn``.
        ``run_id`` is in every answer's ``response_metadata["effagent"]["run_id"]``; ``step`` None means the
        run's last step. Returns False when the step is not known (too old, or not answered here)."""
        return self.procedure.record_outcome(run_id, success, step=step, feedback=feedback)

    def _end_run(self, run_id: str) -> None:
        """The run is over: the governor ends it (ledger total, observer) and its converted history is dropped."""
        self.governor.end_run(run_id)
        self.cache.forget(run_id)

    async def _aend_run(self, run_id: str) -> None:
        await self.governor.aend_run(run_id)
        self.cache.forget(run_id)

    def _where(self, state: Mapping[str, Any],
               config: Mapping[str, Any] | None = None) -> tuple[str, bool, str | None, bool, Usage | None]:
        """(run id, whether this step starts the run, thread id, whether the graph checkpoints — only then is the
        thread's total kept in graph state —, that total). ``config`` None: the running graph's."""
        thread_id, checkpointed = graph_context(config)
        run_id = state.get(RUN_KEY)
        started = not run_id
        if started:
            run_id = self.governor.start_run(thread_id)
        base = thread_usage_from_state(state, THREAD_KEY) if checkpointed else None
        return str(run_id), started, thread_id, checkpointed, base
