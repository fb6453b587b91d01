"""``effagent report``: the file exporter's spans as one self-contained HTML page.

Not part of the runtime telemetry layer (which only writes spans): this reads a trace file afterwards.
Charts need matplotlib (the ``report`` extra); without it the page has every table and says why the charts
are missing.

Summary cards (runs, steps, tokens, $, saved against the baseline tier, loops capped), a per-tier table,
charts (tokens and $ per step, per tier, difficulty and decisions over time; matplotlib PNGs embedded as
base64, no external resources), a per-run table and the decision timeline.

    effagent report [TRACES.jsonl] [-o report.html]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from effagent.errors import EffagentError
from effagent.tools.report.charts import CHARTS_MISSING, charts, has_matplotlib
from effagent.tools.report.data import (
    DEFAULT_TRACES,
    PALETTE,
    Call,
    Data,
    Run,
    as_float,
    esc,
    fmt_int,
    fmt_usd,
    load,
    tier_colors,
)

__all__ = ["CHARTS_MISSING", "DEFAULT_TRACES", "PALETTE", "Call", "Data", "Run", "charts", "fmt_int", "fmt_usd",
           "has_matplotlib", "load", "register", "render", "role_counts", "summary", "write_comparison",
           "write_report"]

# ---------------------------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;color:#111827;background:#f3f4f6}
header{background:#111827;color:#f9fafb;padding:22px 32px}header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#9ca3af;font-size:13px}main{padding:24px 32px;max-width:1400px;margin:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:14px;margin-bottom:24px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card .v{font-size:24px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .k{color:#6b7280;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .s{color:#6b7280;font-size:12px}.card.good .v{color:#15803d}.card.bad .v{color:#b91c1c}
section{background:#fff;border-radius:10px;padding:18px 20px;margin-bottom:22px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
section h2{margin:0 0 4px;font-size:16px}section p.cap{margin:0 0 12px;color:#6b7280;font-size:12.5px}
section img{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-size:12.5px;font-variant-numeric:tabular-nums}
th{text-align:left;color:#374151;font-weight:600;border-bottom:2px solid #e5e7eb;padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid #f1f5f9;padding:5px 8px;vertical-align:top}td.n,th.n{text-align:right}
tr.fin td{background:#fff7ed}tr.err td{background:#fef2f2}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:11.5px;font-weight:600}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:11px;margin-left:4px}
.tag.loop{background:#fee2e2;color:#991b1b}.tag.fin{background:#ffedd5;color:#9a3412}
.tag.err{background:#fee2e2;color:#991b1b}.tag.think{background:#e0e7ff;color:#3730a3}
.reason{color:#4b5563;max-width:520px}.muted{color:#9ca3af}.grid2{display:grid;grid-template-columns:1fr;gap:18px}
.scroll{max-height:900px;overflow:auto}
.side{display:grid;gap:18px;align-items:start}.side>div{min-width:0}h2.col{margin:0 0 10px;font-size:18px}
.side .cards{grid-template-columns:repeat(auto-fill,minmax(140px,1fr))}
"""


def role_counts(calls: list[Call]) -> dict[str, dict[str, int]]:
    """{step role: {tier: successful model steps}} of the calls whose span says the role (``effagent.step.role``)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in calls:
        role = c.attrs.get("effagent.step.role")
        if c.is_step and c.ok and isinstance(role, str):
            out[role][c.tier] += 1
    return {r: dict(t) for r, t in out.items()}


def _per_role(data: Data, colors: dict[str, str]) -> list[str]:
    """The 'Per role' section: model steps per step role and tier, and the steps that stayed for the cache."""
    counts = role_counts(data.calls)
    if not counts:
        return []
    stayed: dict[str, int] = defaultdict(int)
    for c in data.calls:
        if c.is_step and c.ok and c.attrs.get("effagent.decision.stayed_for_cache"):
            stayed[str(c.attrs.get("effagent.step.role"))] += 1
    tiers = [t for t in colors if any(t in v for v in counts.values())]
    rows = "".join(f"<tr><td>{esc(role)}</td>" + "".join(f"<td class=n>{counts[role].get(t, 0)}</td>" for t in tiers)
                   + f"<td class=n>{stayed.get(role, 0)}</td></tr>" for role in sorted(counts))
    head = "".join(f"<th class=n>{_chip(t, colors)}</th>" for t in tiers)
    return ["<section><h2>Per role</h2><p class=cap>Model steps by the step's role in its run (first step of a "
            "user turn, after tool results, a restatement of a short tool result, after a tool error, a retry, "
            "a final answer without tools) and the tier that answered; stayed: steps kept on the previous step's "
            "tier because switching would forfeit more cached prompt than it saves.</p><table><tr><th>role</th>"
            + head + "<th class=n>stayed</th></tr>" + rows + "</table></section>"]


def _chip(tier: str, colors: dict[str, str]) -> str:
    return f'<span class="chip" style="background:{colors.get(tier, "#6b7280")}">{esc(tier)}</span>'


def _card(key: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="card {cls}"><div class="k">{esc(key)}</div><div class="v">{esc(value)}</div>'
            f'<div class="s">{esc(sub)}</div></div>')


def summary(data: Data) -> dict[str, Any]:
    ok = data.ok_calls
    cost = sum(c.cost for c in ok)
    base = sum(c.baseline for c in ok)
    steps = data.steps
    return {
        "runs": len(data.runs), "steps": len(steps), "calls": len(data.calls),
        "failed_calls": sum(1 for c in data.calls if not c.ok),
        "input_tokens": sum(c.input_tokens for c in ok), "output_tokens": sum(c.output_tokens for c in ok),
        "reasoning_tokens": sum(c.reasoning_tokens for c in ok),
        "cache_read_tokens": sum(c.cache_read_tokens for c in ok),
        "cache_write_tokens": sum(c.cache_write_tokens for c in ok),
        "tokens": sum(c.tokens for c in ok), "cost": cost, "baseline": base, "saved": base - cost,
        "loops_capped": sum(1 for c in steps if c.attrs.get("effagent.loop.capped")),
        "finalized": sum(1 for c in steps if c.attrs.get("effagent.decision.action") == "finalize"),
        "thinking_steps": sum(1 for c in steps if c.attrs.get("effagent.thinking.enabled")),
    }


def _span_text(data: Data) -> str:
    t0 = min([r.start_ns for r in data.runs] + [c.start_ns for c in data.calls], default=0)
    t1 = max([r.end_ns for r in data.runs] + [c.end_ns for c in data.calls], default=0)
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t0 / 1e9))} → "
            f"{time.strftime('%H:%M:%S', time.localtime(t1 / 1e9))}") if t0 else "no spans"


def _head(title: str, subtitle: str) -> list[str]:
    return [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>",
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)} · generated "
            f"{esc(time.strftime('%Y-%m-%d %H:%M'))}</p></header><main>"]


NO_SPANS = ("<section><h2>No effagent spans</h2><p class=cap>The file holds no spans written by effagent's "
            "observer. Run an agent with <code>telemetry.exporter: file</code> (the default) and try "
            "again.</p></section>")


def render(data: Data, source: str = "", title: str = "effagent report") -> str:
    parts = _head(title, f"{source} · {_span_text(data)}")
    if not data.calls and not data.runs:
        parts.append(NO_SPANS + "</main></body></html>")
        return "".join(parts)
    parts += _body(data, tier_colors(data))
    parts.append("</main></body></html>")
    return "".join(parts)


def _body(data: Data, colors: dict[str, str]) -> list[str]:
    """The sections of one trace file's report: cards, per tier, charts, runs, decision timeline."""
    s = summary(data)
    t0 = min([r.start_ns for r in data.runs] + [c.start_ns for c in data.calls], default=0)
    saved_pct = f"{100 * s['saved'] / s['baseline']:.1f}% of {fmt_usd(s['baseline'])}" if s["baseline"] else ""
    parts: list[str] = []
    cards = [
        _card("runs", fmt_int(s["runs"]), f"{sum(1 for r in data.runs if r.incomplete)} incomplete"
              if any(r.incomplete for r in data.runs) else ""),
        _card("model steps", fmt_int(s["steps"]), f"{s['thinking_steps']} with thinking"),
        _card("tokens", fmt_int(s["tokens"]), f"{fmt_int(s['input_tokens'])} in · {fmt_int(s['output_tokens'])} out"
              f" · {fmt_int(s['reasoning_tokens'])} reasoning"
              + (f" · {fmt_int(s['cache_read_tokens'])} of the input from the prompt cache"
                 if s["cache_read_tokens"] else "")),
        _card("cost", fmt_usd(s["cost"]), f"{s['calls']} calls" + (f", {s['failed_calls']} failed"
                                                                     if s["failed_calls"] else "")),
        _card(f"saved vs {data.baseline_tier}" if data.baseline_tier else "saved", fmt_usd(s["saved"]), saved_pct,
              "good" if s["saved"] > 0 else ("bad" if s["saved"] < 0 else "")),
        _card("loops capped", fmt_int(s["loops_capped"]), f"{s['finalized']} finalize call(s)",
              "bad" if s["loops_capped"] else ""),
    ]
    parts.append(f'<div class="cards">{"".join(cards)}</div>')

    # per tier
    rows = []
    by_tier: dict[str, list[Call]] = defaultdict(list)
    for c in data.calls:
        by_tier[c.tier].append(c)
    for tier in colors:
        cs = by_tier.get(tier, [])
        ok = [c for c in cs if c.ok]
        cost = sum(c.cost for c in ok)
        lat = sum(c.duration_s for c in ok) / len(ok) if ok else 0.0
        models = ", ".join(sorted({c.model for c in cs}))
        base_tag = " <span class=muted>(baseline)</span>" if tier == data.baseline_tier else ""
        share = 100 * cost / s["cost"] if s["cost"] else 0.0
        rows.append(
            f"<tr><td>{_chip(tier, colors)}{base_tag}"
            f"</td><td>{esc(models)}</td><td class=n>{len(ok)}</td><td class=n>{sum(1 for c in cs if c.is_step)}</td>"
            f"<td class=n>{sum(1 for c in cs if not c.ok)}</td>"
            f"<td class=n>{fmt_int(sum(c.input_tokens for c in ok))}</td>"
            f"<td class=n>{fmt_int(sum(c.cache_read_tokens for c in ok))}</td>"
            f"<td class=n>{fmt_int(sum(c.cache_write_tokens for c in ok))}</td>"
            f"<td class=n>{fmt_int(sum(c.output_tokens for c in ok))}</td>"
            f"<td class=n>{fmt_int(sum(c.reasoning_tokens for c in ok))}</td><td class=n>{fmt_usd(cost)}</td>"
            f"<td class=n>{share:.1f}%</td><td class=n>{lat * 1000:,.0f} ms</td></tr>")
    parts.append("<section><h2>Per tier</h2><p class=cap>Every call, grouped by the tier that served it. "
                 "Cache read and cache write are the parts of the input the provider read from or wrote to its "
                 "prompt cache (billed at its cache rates).</p><table>"
                 "<tr><th>tier</th><th>model</th><th class=n>calls</th><th class=n>steps</th><th class=n>failed</th>"
                 "<th class=n>input</th><th class=n>cache read</th><th class=n>cache write</th><th class=n>output</th>"
                 "<th class=n>reasoning</th><th class=n>$</th>"
                 "<th class=n>share of $</th><th class=n>mean latency</th></tr>" + "".join(rows) + "</table></section>")

    parts.extend(_per_role(data, colors))

    for ctitle, cap, uri in charts(data, colors):
        parts.append(f"<section><h2>{esc(ctitle)}</h2><p class=cap>{esc(cap)}</p><img alt='{esc(ctitle)}' "
                     f"src='{uri}'></section>")
    if not has_matplotlib():
        parts.append(f"<section><p class=cap>{esc(CHARTS_MISSING)}</p></section>")

    # per run
    rows = []
    run_calls: dict[str, list[Call]] = defaultdict(list)
    for c in data.calls:
        run_calls[c.run_id].append(c)
    for i, r in enumerate(data.runs, 1):
        cs = run_calls.get(r.run_id, [])
        ok = [c for c in cs if c.ok]
        cost = sum(c.cost for c in ok)
        saved = sum(c.baseline for c in ok) - cost
        steps = [c for c in cs if c.is_step]
        loops = sum(1 for c in steps if c.attrs.get("effagent.loop.capped"))
        fins = sum(1 for c in steps if c.attrs.get("effagent.decision.action") == "finalize")
        tiers = " ".join(_chip(t, colors) for t in sorted({c.tier for c in ok}))
        status = "<span class='tag err'>incomplete</span>" if r.incomplete else ""
        rows.append(f"<tr><td>r{i}</td><td><code>{esc(r.run_id[:12])}</code>{status}</td>"
                    f"<td>{esc(r.thread_id or '')}</td><td class=n>{len(steps)}</td><td>{tiers}</td>"
                    f"<td class=n>{fmt_int(sum(c.tokens for c in ok))}</td>"
                    f"<td class=n>{fmt_int(sum(c.cache_read_tokens for c in ok))}</td>"
                    f"<td class=n>{fmt_usd(cost)}</td><td class=n>{fmt_usd(saved)}</td><td class=n>{loops}</td>"
                    f"<td class=n>{fins}</td><td class=n>{max(0, r.end_ns - r.start_ns) / 1e9:.2f} s</td></tr>")
    parts.append("<section><h2>Runs</h2><table><tr><th>#</th><th>run id</th><th>thread</th><th class=n>steps</th>"
                 "<th>tiers</th><th class=n>tokens</th><th class=n>cache read</th><th class=n>$</th>"
                 "<th class=n>saved</th><th class=n>loops capped</th><th class=n>finalized</th>"
                 "<th class=n>duration</th></tr>"
                 + "".join(rows) + "</table></section>")

    # decision timeline
    index = {r.run_id: i + 1 for i, r in enumerate(data.runs)}
    rows = []
    limit = 2000
    for c in data.calls[:limit]:
        a = c.attrs
        tags = ""
        if not c.ok:
            tags += f"<span class='tag err'>failed: {esc(c.error[:120])}</span>"
        if a.get("effagent.loop.capped"):
            tags += f"<span class='tag loop'>loop capped: {esc(a.get('effagent.loop.reason', ''))}</span>"
        if c.is_step and a.get("effagent.decision.action") == "finalize":
            tags += "<span class='tag fin'>finalize</span>"
        think = ""
        decided = a.get("effagent.decision.tier")
        if c.is_step and a.get("effagent.thinking.enabled") and decided in (None, c.tier):
            b = a.get("effagent.thinking.budget")
            think = f"<span class='tag think'>thinking {esc(b) if b is not None else 'unbounded'}</span>"
        tier_html = _chip(c.tier, colors)
        if c.is_step and decided and decided != c.tier:
            tier_html = f"{_chip(str(decided), colors)} → {tier_html}"
        cls = "err" if not c.ok else ("fin" if c.is_step and a.get("effagent.decision.action") == "finalize" else "")
        diff = f"{as_float(a.get('effagent.difficulty.score')):.2f}" if "effagent.difficulty.score" in a else ""
        reason = a.get("effagent.decision.reason", "") if c.is_step else ""
        sub = "" if c.is_step else f" <span class=muted>↳ {esc(c.kind if c.ok else 'attempt')}</span>"
        rows.append(
            f"<tr class='{cls}'><td class=n>+{(c.start_ns - t0) / 1e9:.2f}s</td><td>r{index.get(c.run_id, 0)}.{c.step}"
            f"{sub}</td><td>{esc(a.get('effagent.decision.band', ''))}"
            f"{' · ' + esc(a['effagent.step.role']) if c.is_step and a.get('effagent.step.role') else ''}"
            f"</td><td class=n>{diff}</td><td>{tier_html}{think}{tags}</td>"
            f"<td class=n>{esc(a.get('effagent.decision.max_tokens', ''))}</td>"
            f"<td class=n>{fmt_int(c.input_tokens)}</td>"
            f"<td class=n>{fmt_int(c.output_tokens)}</td><td class=n>{fmt_int(c.reasoning_tokens)}</td>"
            f"<td class=n>{fmt_usd(c.cost)}</td><td class=n>{c.duration_s * 1000:,.0f} ms</td>"
            f"<td class=reason>{esc(reason)}</td></tr>")
    more = (f"<p class=cap>Showing the first {limit} of {len(data.calls)} calls.</p>"
            if len(data.calls) > limit else "")
    parts.append("<section><h2>Decision timeline</h2><p class=cap>Every model step (and every extra call: failed "
                 "attempts before a fallback, probes, samples) in the order it started.</p>" + more +
                 "<div class=scroll><table><tr><th class=n>t</th><th>step</th><th>band</th><th class=n>difficulty</th>"
                 "<th>tier / decision</th><th class=n>max tok</th><th class=n>in</th><th class=n>out</th>"
                 "<th class=n>reasoning</th><th class=n>$</th><th class=n>latency</th><th>reason</th></tr>"
                 + "".join(rows) + "</table></div></section>")
    if data.baseline_tier:
        parts.append(f"<p class=cap style='color:#6b7280;font-size:12px'>Saved = the same tokens priced at the "
                     f"baseline tier <b>{esc(data.baseline_tier)}</b> minus what they cost on the tier that served "
                     f"them (see docs/tracing.md).</p>")
    return parts


def _demo_sections(demo: dict[str, Any], colors: dict[str, str]) -> list[str]:
    """The demo's comparison (one row per run) and its task list (per run: right or not, tiers per step)."""
    rows = demo.get("rows") or []
    out = []
    if rows:
        trs = "".join(
            f"<tr><td><b>{esc(r['label'])}</b></td><td class=n>{r['correct']}/{r['tasks']}</td>"
            f"<td class=n>{fmt_int(r['steps'])}</td><td class=n>{fmt_int(r['input_tokens'])}</td>"
            f"<td class=n>{fmt_int(r['output_tokens'])}</td><td class=n>{fmt_usd(r['cost_usd'])}</td>"
            f"<td>{' '.join(f'{_chip(t, colors)} {n}' for t, n in sorted(r['calls_per_tier'].items()))}</td>"
            f"<td class=n>{r['loops_capped']}</td><td class=n>{r['failed_calls']}</td>"
            f"<td class=n>{r['seconds']:.0f} s</td></tr>" for r in rows)
        paired = demo.get("paired") or {}
        note = (f"Right in the plain run only: {paired['only_plain']}; in the governed run only: "
                f"{paired['only_governed']} (exact McNemar p = {paired['mcnemar_p']}). Wilson 95 % intervals: plain "
                f"{paired['plain_ci95']}, governed {paired['governed_ci95']}.") if paired else ""
        out.append("<section><h2>Plain vs governed</h2><p class=cap>The same tasks, the same agent and tools; the "
                   "plain run sends every step to the baseline tier, the governed run follows the policy. $ at the "
                   f"policy's prices for both. {esc(note)}</p><table><tr><th>run</th><th class=n>correct</th>"
                   "<th class=n>steps</th><th class=n>input tok</th><th class=n>output tok</th><th class=n>$</th>"
                   "<th>calls per tier</th><th class=n>loops capped</th><th class=n>failed calls</th>"
                   "<th class=n>time</th></tr>" + trs + "</table></section>")
    answers: dict[str, list[dict[str, Any]]] = demo.get("answers") or {}
    tasks = demo.get("tasks") or []
    if answers and tasks:
        labels = list(answers)
        by = {label: {a["id"]: a for a in answers[label]} for label in labels}
        trs = []
        for t in tasks:
            cells = []
            for label in labels:
                a = by[label].get(t["id"], {})
                mark = ("<span class='tag think'>right</span>" if a.get("correct")
                        else "<span class='tag err'>wrong</span>")
                tiers = " ".join(_chip(x, colors) for x in a.get("tiers") or [])
                said = (a.get("reply") or a.get("error") or "")[-120:]
                cells.append(f"<td>{mark} {tiers}<div class=muted>{esc(said)}</div></td>")
            trs.append(f"<tr><td><code>{esc(t['id'])}</code></td><td>{esc(t.get('kind', ''))}</td>"
                       f"<td>{esc(t['question'])}</td><td>{esc(t['answer'])}</td>{''.join(cells)}</tr>")
        out.append("<section><h2>Tasks</h2><p class=cap>Each task, what it needs, the expected answer, and per run "
                   "whether the final answer was right, the tier of each model step in order, and the answer's end."
                   "</p><div class=scroll><table><tr><th>task</th><th>kind</th><th>question</th><th>expected</th>"
                   + "".join(f"<th>{esc(label)}</th>" for label in labels) + "</tr>" + "".join(trs)
                   + "</table></div></section>")
    return out


def write_comparison(runs: list[tuple[str, str | Path]], output: str | Path, title: str = "effagent: runs side by side",
                     demo: dict[str, Any] | None = None) -> Path:
    """One page with several trace files side by side (e.g. the demo's plain and governed runs), each column the
    report of one file; ``demo`` (the demo's result) adds the comparison table and the task list above them."""
    loaded = [(label, load(path), Path(path)) for label, path in runs]
    colors = tier_colors(Data(runs=[], calls=[c for _, data, _ in loaded for c in data.calls], baseline_tier=None))
    parts = _head(title, " · ".join(f"{label}: {path} ({_span_text(data)})" for label, data, path in loaded))
    if demo:
        parts += _demo_sections(demo, colors)
    columns = []
    for label, data, _ in loaded:
        body = _body(data, colors) if data.calls or data.runs else [NO_SPANS]
        columns.append(f"<div><h2 class=col>{esc(label)}</h2>{''.join(body)}</div>")
    parts.append(f"<div class=side style='grid-template-columns:repeat({len(columns)},minmax(0,1fr))'>"
                 + "".join(columns) + "</div></main></body></html>")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(parts), encoding="utf-8")
    return out


def write_report(traces: str | Path, output: str | Path | None = None, title: str = "effagent report") -> Path:
    """Render ``traces`` to ``output`` (default: report.html beside it), written atomically. A trace file that
    is missing, not a regular file, or holds no effagent spans, and an output that is a folder, a special
    file or in a missing folder, raise an :class:`EffagentError` (one line) and leave the output as it was."""
    from effagent.files import check_output, write_text

    src = Path(traces)
    if not src.exists():
        raise EffagentError(f"{src}: no such trace file; run an agent with telemetry.exporter: file (the default, "
                            f"written to telemetry.path) first, or pass the file's path")
    out = check_output(output if output else src.with_name("report.html"), "report")
    data = load(src)
    if not data.calls and not data.runs:
        raise EffagentError(f"{src}: no effagent spans (is it a trace file written by telemetry.exporter: file?); "
                            f"{out} was not written" + (f"; {data.skipped}" if data.skipped else ""))
    if data.skipped:
        print(f"effagent report: {src}: {data.skipped}", file=sys.stderr)
    write_text(out, render(data, str(src), title), "report")
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    out = write_report(args.traces, args.output, args.title)
    if not has_matplotlib():
        print(f"effagent report: {CHARTS_MISSING}", file=sys.stderr)
    s = summary(load(args.traces))
    print(f"wrote {out}: {s['runs']} run(s), {s['steps']} step(s), {fmt_int(s['tokens'])} tokens, "
          f"{fmt_usd(s['cost'])}, saved {fmt_usd(s['saved'])}, {s['loops_capped']} loop(s) capped")
    return 0


def register(subparsers: Any) -> None:
    """Add ``effagent report`` to the CLI's sub-commands."""
    p = subparsers.add_parser(
        "report", help="render a trace file (telemetry.exporter: file) as a self-contained HTML page",
        description="Read the spans effagent wrote (OTLP JSON lines, telemetry.path) and write one HTML page: "
                    "summary, per-tier table, charts of tokens and $ per step and per tier, decision timeline.")
    p.add_argument("traces", nargs="?", default=DEFAULT_TRACES, metavar="TRACES.jsonl",
                   help=f"the trace file (default: {DEFAULT_TRACES})")
    p.add_argument("-o", "--output", metavar="HTML", help="where to write the page (default: report.html next to "
                   "the trace file)")
    p.add_argument("--title", default="effagent report", help="the page title")
    p.set_defaults(func=_cmd_report)
