"""Outcomes: labels of real steps, for ``effagent difficulty learn`` and ``effagent calibrate``.

One JSON object a line, in the contract ``difficulty learn`` reads (extra keys are kept for people and tools):

    {"id": "<run_id>:<step>", "prompt": "...", "cheap_correct": true, "strong_correct": true,
     "label": "agreement" | "outcome", "cheap_tier": "...", "strong_tier": "...", "run_id": "...", "step": 3,
     "tier": "...", "band": "...", "difficulty": 0.41, "role": "restate", "ts": 1764540000.0}

``role`` is the step's role in its run (:data:`effagent.records.StepRole`); ``difficulty learn`` learns a shift
per role from it.

- ``label: agreement`` — ``learning.shadow_share``: a step a cheaper tier answered was also asked of the strong
  tier; ``cheap_correct`` says whether the two answers agree (the strong answer stands in for the truth).
- ``label: outcome`` — application code said whether the step's answer was right (task success, user feedback)
  through ``record_outcome``; written for steps a cheaper tier answered (an outcome of a strong-tier step says
  nothing about the cheap one; it goes to the trace only). ``strong_correct`` is assumed true there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from effagent.files import append_line


class OutcomeLog:
    """Appends outcome lines to a file, one whole line per write (safe across threads and processes that
    append to the same file: each line is one ``write`` on a file opened for appending)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, line: dict[str, Any]) -> None:
        text = json.dumps({**line, "ts": line.get("ts", time.time())}, ensure_ascii=False) + "\n"
        with self._lock:  # O_NONBLOCK: a FIFO put at the path is refused (InputFileError), never waited on
            append_line(self.path, text)


def label_line(*, run_id: str, step: int, prompt: str, cheap_correct: bool, label: str, cheap_tier: str,
               strong_tier: str, band: str | None, difficulty: float, **extra: Any) -> dict[str, Any]:
    return {"id": f"{run_id}:{step}", "prompt": prompt, "cheap_correct": bool(cheap_correct),
            "strong_correct": True, "label": label, "cheap_tier": cheap_tier, "strong_tier": strong_tier,
            "run_id": run_id, "step": step, "tier": cheap_tier, "band": band, "difficulty": difficulty, **extra}
