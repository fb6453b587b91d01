"""Hook points the governor calls as a run goes; telemetry implements them. The default does nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from effagent.decide import Decision
    from effagent.ledger.base import StepRecord, Usage


class Observer(Protocol):
    def on_run_start(self, run_id: str, thread_id: str | None) -> None: ...

    def on_step_start(self, run_id: str, decision: Decision) -> None: ...

    def on_call(self, run_id: str, decision: Decision, record: StepRecord, duration_s: float,
                response_model: str | None = None, content: dict[str, str] | None = None) -> None: ...

    def on_step_end(self, run_id: str, decision: Decision, usage: Usage) -> None: ...

    def on_run_end(self, run_id: str, usage: Usage) -> None: ...

    def on_outcome(self, run_id: str, decision: Decision, success: bool, feedback: str | None) -> None:
        """Application code said whether a step's answer was right (``record_outcome``)."""
        ...


class NullObserver:
    """Records nothing."""

    def on_run_start(self, run_id: str, thread_id: str | None) -> None:
        return None

    def on_step_start(self, run_id: str, decision: Decision) -> None:
        return None

    def on_call(self, run_id: str, decision: Decision, record: StepRecord, duration_s: float,
                response_model: str | None = None, content: dict[str, str] | None = None) -> None:
        return None

    def on_step_end(self, run_id: str, decision: Decision, usage: Usage) -> None:
        return None

    def on_run_end(self, run_id: str, usage: Usage) -> None:
        return None

    def on_outcome(self, run_id: str, decision: Decision, success: bool, feedback: str | None) -> None:
        return None
