"""Token and dollar accounting."""

from effagent.ledger.base import Ledger, LedgerState, StepRecord, Usage
from effagent.ledger.memory import InMemoryLedger

__all__ = ["InMemoryLedger", "Ledger", "LedgerState", "StepRecord", "Usage"]
