"""``effagent budgets suggest``: budgets sized from real runs.

Reads what real runs spent — a trace file (OTLP JSON lines, as ``telemetry: {exporter: file}`` writes it) or a
ledger export (JSON lines of ledger records, as ``StepRecord.model_dump_json()`` writes them) — and prints the
run, thread and step budgets that would have let a given share of them finish (the ``--quantile``), with what
a run or thread at that budget costs. A budget set below what a run needs cuts it short: the finalize step
answers with what the agent has so far.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effagent.errors import EffagentError


class BudgetInputError(EffagentError):
    """The file to size budgets from cannot be read as traces or ledger records."""


@dataclass
class Spent:
    """What one run, thread or step spent."""

    tokens: int = 0
    usd: float = 0.0
    output_tokens: int = 0


@dataclass
class Observed:
    runs: dict[str, Spent] = field(default_factory=dict)
    threads: dict[str, Spent] = field(default_factory=dict)
    steps: list[Spent] = field(default_factory=list)  # per model step: its largest single call's output


def _add(into: dict[str, Spent], key: str, tokens: int, usd: float, output: int) -> None:
    s = into.setdefault(key, Spent())
    s.tokens += tokens
    s.usd += usd
    s.output_tokens += output


def _count(v: Any) -> int:
    """A token count: a whole number >= 0 (a bool, a fraction, NaN or a negative number is refused)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or v != int(v):
        raise ValueError(f"{v!r} is not a token count")
    return int(v)


def _usd(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{v!r} is not an amount of $")
    return float(v)


def from_records(lines: Iterable[tuple[int, dict[str, Any]]]) -> Observed:
    """Ledger records: every call counts for its run and thread; a step's largest call sizes the step limit."""
    obs = Observed()
    steps: dict[tuple[str, int], Spent] = {}
    for n, rec in lines:
        try:
            usage = rec["usage"]
            inp, out = _count(usage.get("input_tokens", 0)), _count(usage.get("output_tokens", 0))
            usd = _usd(usage.get("cost_usd", 0.0))
            run = str(rec["run_id"])
            step = int(rec.get("step") or 0)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise BudgetInputError(f"line {n}: not a ledger record ({err}); each line must be a StepRecord as JSON "
                                   '(run_id, usage: {input_tokens, output_tokens, cost_usd}, ...)') from None
        _add(obs.runs, run, inp + out, usd, out)
        if rec.get("thread_id"):
            _add(obs.threads, str(rec["thread_id"]), inp + out, usd, out)
        s = steps.setdefault((run, step), Spent())
        s.output_tokens = max(s.output_tokens, out)
    obs.steps = list(steps.values())
    return obs


def from_spans(spans: Iterable[dict[str, Any]]) -> Observed:
    """Trace spans: each run span carries its run's totals; each step span its call's usage."""
    obs = Observed()
    for sp in spans:
        a = sp.get("attributes") or {}
        kind = a.get("effagent.span")
        try:
            if kind == "run":
                tokens = _count(a.get("effagent.run.total_tokens", 0))
                usd = _usd(a.get("effagent.run.cost_usd", 0.0))
                out = _count(a.get("effagent.run.output_tokens", 0))
                obs.runs[str(a.get("effagent.run_id") or sp.get("span_id"))] = Spent(tokens, usd, out)
                if a.get("effagent.thread_id"):
                    _add(obs.threads, str(a["effagent.thread_id"]), tokens, usd, out)
            elif kind == "step":
                obs.steps.append(Spent(output_tokens=_count(a.get("gen_ai.usage.output_tokens", 0))))
        except (ValueError, TypeError, OverflowError) as err:
            raise BudgetInputError(f"span {sp.get('name', '?')!r} ({kind}): {err}; is it a trace effagent wrote?"
                                   ) from None
    return obs


def read_observed(path: Path) -> Observed:
    """Traces or ledger records, whichever the file holds."""
    from effagent.files import InputFileError, decode_utf8, json_lines, json_value, read_bytes

    if not path.exists():
        raise BudgetInputError(f"{path}: no such file; give a trace file (telemetry exporter: file) or a ledger "
                               "export (JSON lines of ledger records)")
    try:
        data = read_bytes(path, "trace file or ledger export")
    except InputFileError as e:
        raise BudgetInputError(str(e)) from None
    records: list[tuple[int, dict[str, Any]]] = []
    for n, raw in json_lines(data):
        try:
            doc = json_value(decode_utf8(raw, f"{path}:{n}"))
        except InputFileError as err:
            raise BudgetInputError(f"{path}:{n}: not UTF-8 text; is it a trace file or a ledger export?") from err
        except json.JSONDecodeError as err:
            raise BudgetInputError(f"{path}:{n}: not JSON ({err.msg})") from None
        except (ValueError, RecursionError) as err:
            raise BudgetInputError(f"{path}:{n}: not usable JSON ({err})") from None
        if not isinstance(doc, dict):
            raise BudgetInputError(f"{path}:{n}: expected a JSON object")
        if "resourceSpans" in doc:
            from effagent.telemetry.exporters import scan_spans

            spans, skipped, first = scan_spans(path)
            if skipped:
                raise BudgetInputError(f"{path}: {skipped} line(s) are not OTLP JSON ({first}); fix or remove them")
            return from_spans(spans)
        records.append((n, doc))
    if not records:
        raise BudgetInputError(f"{path}: empty; run an agent with telemetry: {{exporter: file}} first")
    return from_records(records)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank: the smallest value at least a q share of the values are at or below)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Suggestion:
    scope: str  # run, thread, step
    count: int  # how many were observed
    tokens: int  # the budget
    usd: float | None  # ... in $ (None for the step limit, which is counted in tokens)
    finish_share: float  # the share of those observed that would have finished under it
    largest: int  # the most one of them spent


def suggest(obs: Observed, q: float) -> list[Suggestion]:
    out = []
    for scope, spent in (("run", list(obs.runs.values())), ("thread", list(obs.threads.values()))):
        if not spent:
            continue
        tokens = int(quantile([s.tokens for s in spent], q))
        usd = quantile([s.usd for s in spent], q)
        fits = sum(1 for s in spent if s.tokens <= tokens and s.usd <= usd) / len(spent)
        out.append(Suggestion(scope, len(spent), tokens, usd, fits, max(s.tokens for s in spent)))
    if obs.steps:
        outs = [s.output_tokens for s in obs.steps]
        tokens = int(quantile(outs, q))
        out.append(Suggestion("step", len(outs), tokens, None, sum(1 for o in outs if o <= tokens) / len(outs),
                              max(outs)))
    return out


def render(suggestions: list[Suggestion], q: float, source: str) -> str:
    lines = [f"budgets from {source} (quantile {q:g}: the budget that lets that share finish)",
             f"{'scope':<8}{'observed':>9}{'tokens':>10}{'$':>12}{'would finish':>14}{'largest':>10}  policy key"]
    keys = {"run": "budgets.run.{tokens,usd}", "thread": "budgets.thread.{tokens,usd}",
            "step": "budgets.step.max_output_tokens"}
    for s in suggestions:
        usd = f"{s.usd:.6f}" if s.usd is not None else "-"
        lines.append(f"{s.scope:<8}{s.count:>9}{s.tokens:>10}{usd:>12}{s.finish_share:>13.0%}{s.largest:>10}  "
                     f"{keys[s.scope]}")
    if not any(s.scope == "thread" for s in suggestions):
        lines.append("no thread ids in the input: run the agent with a thread_id to size thread budgets")
    return "\n".join(lines)


def cmd_suggest(args: argparse.Namespace) -> int:
    from effagent.files import check_output, write_text

    if not 0 < args.quantile <= 1:  # (NaN fails this too)
        raise BudgetInputError(f"--quantile must be in (0, 1], got {args.quantile}")
    if args.json:
        check_output(args.json, "JSON output")  # before any work: a folder or a missing parent is refused
    obs = read_observed(Path(args.path))
    if not obs.runs:
        raise BudgetInputError(f"{args.path}: no runs found (no run spans or ledger records)")
    suggestions = suggest(obs, args.quantile)
    print(render(suggestions, args.quantile, args.path))
    if args.json:
        write_text(args.json, json.dumps({"quantile": args.quantile, "source": args.path,
                                          "budgets": [s.__dict__ for s in suggestions]}, indent=2), "JSON output")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("budgets", help="size budgets from real runs")
    sub = p.add_subparsers(dest="budgets_command", metavar="ACTION", required=True)
    s = sub.add_parser("suggest", help="the run/thread/step budgets that would have let a share of real runs finish",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("path", metavar="TRACES_OR_LEDGER",
                   help="a trace file (OTLP JSON lines, telemetry exporter: file) or a ledger export (JSON lines)")
    s.add_argument("--quantile", type=float, default=0.95,
                   help="the share of runs the budgets should let finish (default 0.95)")
    s.add_argument("--json", metavar="PATH", help="also write the suggestions as JSON")
    s.set_defaults(func=cmd_suggest)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="effagent")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
