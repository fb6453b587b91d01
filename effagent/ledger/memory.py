"""The default ledger: in process memory, guarded by a lock."""

from __future__ import annotations

import threading
from collections import defaultdict

from effagent.ledger.base import Ledger, StepRecord, Usage


class InMemoryLedger(Ledger):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[StepRecord] = []
        self._runs: dict[str, Usage] = defaultdict(Usage)
        self._threads: dict[str, Usage] = defaultdict(Usage)

    def record(self, rec: StepRecord) -> None:
        with self._lock:
            self._records.append(rec)
            self._runs[rec.run_id] = self._runs[rec.run_id] + rec.usage
            if rec.thread_id is not None:
                self._threads[rec.thread_id] = self._threads[rec.thread_id] + rec.usage

    def run_usage(self, run_id: str) -> Usage:
        with self._lock:
            return self._runs.get(run_id, Usage())

    def thread_usage(self, thread_id: str) -> Usage:
        with self._lock:
            return self._threads.get(thread_id, Usage())

    def records(self, run_id: str | None = None) -> list[StepRecord]:
        with self._lock:
            return [r for r in self._records if run_id is None or r.run_id == run_id]

    def total(self) -> Usage:
        with self._lock:
            return sum((u for u in self._runs.values()), Usage())
