"""Fake thinking for the early-exit lever: ``think`` / ``probe`` callables with a call log, no model."""

from __future__ import annotations

from effagent.levers.early_exit import Chunk, Generated


def fake_thinker(probe_answers: list[str], chunk_text: str = "step. ", finish_after: int | None = None):
    """Thinking that never ends by itself (unless finish_after chunks); probes answer from the list.
    Returns ``(think, probe, log)``; ``log`` counts the calls and keeps the chunk sizes asked for."""
    log = {"think": 0, "probe": 0, "asked": []}
    answers_ = iter(probe_answers)

    def think(reasoning, k):
        log["think"] += 1
        log["asked"].append(k)
        done = finish_after is not None and log["think"] >= finish_after
        return Chunk(chunk_text * k, input_tokens=50 + len(reasoning), output_tokens=k, finished=done,
                     answer="The answer is 9." if done else "")

    def probe(reasoning):
        log["probe"] += 1
        return Generated(next(answers_, "no idea"), input_tokens=60 + len(reasoning), output_tokens=4)

    return think, probe, log
