"""What ``effagent report`` reads from a trace file (calls, runs) and how it formats numbers."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effagent.errors import EffagentError
from effagent.redact import redact_shapes
from effagent.telemetry.exporters import scan_spans

DEFAULT_TRACES = "effagent-out/traces.jsonl"
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D", "#BAB0AC"]


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
@dataclass
class Call:
    run_id: str
    step: int
    kind: str
    tier: str
    model: str
    ok: bool
    is_step: bool
    start_ns: int
    end_ns: int
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0  # parts of input_tokens read from / written to the provider's prompt cache
    cache_write_tokens: int = 0
    cost: float = 0.0
    baseline: float = 0.0
    error: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass
class Run:
    run_id: str
    thread_id: str | None
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    incomplete: bool = False


@dataclass
class Data:
    runs: list[Run]
    calls: list[Call]  # every chat span (steps and extra calls), in start order
    baseline_tier: str | None
    skipped: str = ""  # lines of the file that were not OTLP JSON: how many, and the first one's problem

    @property
    def steps(self) -> list[Call]:
        return [c for c in self.calls if c.is_step]

    @property
    def ok_calls(self) -> list[Call]:
        return [c for c in self.calls if c.ok]


def as_int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def load(path: str | Path) -> Data:
    spans, skipped, first = scan_spans(path)
    if skipped and not spans:
        raise EffagentError(f"{path}: not a trace file: no line is OTLP JSON ({skipped} skipped; {first})")
    runs: dict[str, Run] = {}
    calls: list[Call] = []
    baseline = None
    for s in spans:
        # a trace written by another process may hold what effagent masks: mask secret shapes again
        a = {k: redact_shapes(v) if isinstance(v, str) else v for k, v in s["attributes"].items()}
        s = {**s, "status_message": redact_shapes(s["status_message"])}
        kind = a.get("effagent.span")
        if kind == "run":
            rid = str(a.get("effagent.run_id", s["span_id"]))
            runs[rid] = Run(rid, a.get("effagent.thread_id"), s["start_ns"], s["end_ns"], a,
                            bool(a.get("effagent.run.incomplete")))
            baseline = baseline or a.get("effagent.baseline_tier")
        elif kind in ("step", "call") and a.get("gen_ai.operation.name") == "chat":
            ok = bool(a.get("effagent.call.ok", s["status"] != "ERROR")) and s["status"] != "ERROR"
            calls.append(Call(
                run_id=str(a.get("effagent.run_id", "")), step=as_int(a.get("effagent.step")),
                kind=str(a.get("effagent.kind", a.get("effagent.decision.action", "model"))),
                tier=str(a.get("effagent.tier", a.get("effagent.decision.tier", "?"))),
                model=str(a.get("gen_ai.request.model", "")), ok=ok, is_step=kind == "step",
                start_ns=s["start_ns"], end_ns=s["end_ns"],
                input_tokens=as_int(a.get("gen_ai.usage.input_tokens")),
                output_tokens=as_int(a.get("gen_ai.usage.output_tokens")),
                reasoning_tokens=as_int(a.get("gen_ai.usage.reasoning.output_tokens")),
                cache_read_tokens=as_int(a.get("gen_ai.usage.cache_read.input_tokens")),
                cache_write_tokens=as_int(a.get("gen_ai.usage.cache_creation.input_tokens")),
                cost=as_float(a.get("effagent.cost.usd", a.get("llm.cost.total"))),
                baseline=as_float(a.get("effagent.cost.baseline_usd", a.get("effagent.cost.usd"))),
                error=s["status_message"] if s["status"] == "ERROR" else "", attrs=a))
            baseline = baseline or a.get("effagent.baseline_tier")
    calls.sort(key=lambda c: (c.start_ns, not c.is_step))
    # runs seen only through their steps (run span not exported yet: still running, or lost)
    for c in calls:
        if c.run_id and c.run_id not in runs:
            runs[c.run_id] = Run(c.run_id, None, c.start_ns, c.end_ns, {}, incomplete=True)
    ordered = sorted(runs.values(), key=lambda r: r.start_ns)
    return Data(ordered, calls, baseline, f"{skipped} line(s) not OTLP JSON, skipped ({first})" if skipped else "")


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------
def fmt_usd(v: float) -> str:
    if v == 0:
        return "$0"
    a = abs(v)
    if a >= 100:
        s = f"${a:,.2f}"
    elif a >= 0.01:
        s = f"${a:,.4f}"
    else:
        s = f"${a:.6f}"
    return ("-" if v < 0 else "") + s


def fmt_int(v: int | float) -> str:
    return f"{round(v):,}"


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def tier_colors(data: Data) -> dict[str, str]:
    names: list[str] = []
    for c in data.calls:
        if c.tier not in names:
            names.append(c.tier)
    # the cheaper tiers tend to show first; sort by name for a stable legend across reports
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(names))}

