"""The report's charts: matplotlib (Agg, no pyplot global state), embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

from effagent.tools.report.data import Call, Data, as_float


# ---------------------------------------------------------------------------------------------------
# Charts (matplotlib, Agg, no pyplot global state)
# ---------------------------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def _step_labels(data: Data, steps: list[Call]) -> list[str]:
    index = {r.run_id: i + 1 for i, r in enumerate(data.runs)}
    return [f"r{index.get(c.run_id, 0)}.{c.step}" for c in steps]


def _thin_ticks(ax: Any, labels: list[str], limit: int = 40) -> None:
    every = max(1, (len(labels) + limit - 1) // limit)
    ax.set_xticks(range(0, len(labels), every))
    ax.set_xticklabels(labels[::every], rotation=60 if len(labels) > 12 else 0, ha="right" if len(labels) > 12
                       else "center")


CHARTS_MISSING = ("charts left out: they need matplotlib, which is in the 'report' extra "
                  "(pip install 'effagent[report]')")


def has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def charts(data: Data, colors: dict[str, str]) -> list[tuple[str, str, str]]:
    """[(title, caption, data-uri)]; empty when matplotlib is missing or there is nothing to plot."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        return []
    steps = [c for c in data.steps if c.ok] or data.steps
    if not steps:
        return []
    out: list[tuple[str, str, str]] = []
    labels = _step_labels(data, steps)
    x = list(range(len(steps)))
    width = 12.5

    # 1. tokens per step, stacked by type, edge coloured by tier
    fig = Figure(figsize=(width, 3.4))
    ax = fig.add_subplot()
    inp = [c.input_tokens for c in steps]
    vis = [max(0, c.output_tokens - c.reasoning_tokens) for c in steps]
    rea = [c.reasoning_tokens for c in steps]
    ax.bar(x, inp, color="#cbd5e1", label="input")
    ax.bar(x, vis, bottom=inp, color=[colors[c.tier] for c in steps], label="output")
    ax.bar(x, rea, bottom=[a + b for a, b in zip(inp, vis, strict=True)], color=[colors[c.tier] for c in steps],
           alpha=0.45, hatch="///", edgecolor="white", linewidth=0, label="reasoning (part of output)")
    _style(ax)
    _thin_ticks(ax, labels)
    ax.set_ylabel("tokens", fontsize=9)
    handles = [Patch(color="#cbd5e1", label="input")]
    handles += [Patch(color=col, label=f"output · {t}") for t, col in colors.items()]
    handles += [Patch(facecolor="#94a3b8", alpha=0.45, hatch="///", edgecolor="white", label="reasoning")]
    ax.legend(handles=handles, fontsize=8, frameon=False, ncol=min(6, len(handles)), loc="upper left",
              bbox_to_anchor=(0, 1.18))
    out.append(("Tokens per step", "Input (grey), output coloured by the tier that served the step, reasoning "
                "hatched. Labels: run.step.", _png(fig)))

    # 2. $ per step + cumulative actual vs baseline
    fig = Figure(figsize=(width, 3.4))
    ax = fig.add_subplot()
    ax.bar(x, [c.cost for c in steps], color=[colors[c.tier] for c in steps])
    _style(ax)
    _thin_ticks(ax, labels)
    ax.set_ylabel("$ per step", fontsize=9)
    ax2 = ax.twinx()
    cum, cum_b, tot, totb = [], [], 0.0, 0.0
    for c in steps:
        tot += c.cost
        totb += c.baseline
        cum.append(tot)
        cum_b.append(totb)
    ax2.plot(x, cum, color="#111827", linewidth=1.8, label="cumulative $")
    if data.baseline_tier:
        ax2.plot(x, cum_b, color="#dc2626", linewidth=1.4, linestyle="--",
                 label=f"cumulative $ if every step used {data.baseline_tier}")
    ax2.set_ylabel("cumulative $", fontsize=9)
    ax2.tick_params(labelsize=8)
    ax2.spines["top"].set_visible(False)
    ax2.set_ylim(bottom=0)
    ax.set_ylim(0, max(c.cost for c in steps) * 1.08 or 1)
    ax2.legend(fontsize=8, frameon=False, ncol=2, loc="upper left", bbox_to_anchor=(0, 1.18))
    out.append(("Cost per step", "Bars: $ per step (tier colour). Lines: cumulative cost, and what the same "
                "tokens would cost at the baseline tier's prices.", _png(fig)))

    # 3. per tier: tokens and $
    tiers = list(colors)
    agg = {t: [0, 0, 0, 0.0] for t in tiers}
    for c in data.ok_calls:
        a = agg[c.tier]
        a[0] += c.input_tokens
        a[1] += c.output_tokens - c.reasoning_tokens
        a[2] += c.reasoning_tokens
        a[3] += c.cost
    fig = Figure(figsize=(12.5, 0.45 * len(tiers) + 1.4))
    ax, bx = fig.subplots(1, 2)
    y = list(range(len(tiers)))
    left = [0] * len(tiers)
    for i, (lab, col) in enumerate((("input", "#cbd5e1"), ("output", None), ("reasoning", None))):
        vals = [agg[t][i] for t in tiers]
        ax.barh(y, vals, height=0.6, left=left, color=col or [colors[t] for t in tiers], alpha=0.45 if i == 2 else 1,
                hatch="///" if i == 2 else None, edgecolor="white", linewidth=0, label=lab)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(y)
    ax.set_yticklabels(tiers)
    ax.set_title("tokens (input · output · reasoning)", fontsize=9)
    bx.barh(y, [agg[t][3] for t in tiers], height=0.6, color=[colors[t] for t in tiers])
    bx.set_yticks(y)
    bx.set_yticklabels(tiers)
    bx.set_title("$", fontsize=9)
    for a in (ax, bx):
        _style(a)
        a.grid(axis="x", color="#e5e7eb", linewidth=0.8)
        a.grid(axis="y", visible=False)
        a.invert_yaxis()
    fig.tight_layout()
    out.append(("Tokens and $ per tier", "Tokens and dollars of every successful call, per tier.", _png(fig)))

    # 4. decisions over time: difficulty, tier, thinking, loop caps
    fig = Figure(figsize=(width, 3.2))
    ax = fig.add_subplot()
    def thinking(c: Call) -> bool:  # thinking as served: a fallback tier got the decision within its limits
        return bool(c.attrs.get("effagent.thinking.enabled")) and c.attrs.get("effagent.decision.tier") == c.tier

    for t in tiers:
        for think, marker in ((False, "o"), (True, "^")):
            pts = [(i, as_float(c.attrs.get("effagent.difficulty.score"))) for i, c in enumerate(steps)
                   if c.tier == t and thinking(c) == think]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors[t], marker=marker, s=46,
                           label=f"{t}{' · thinking' if think else ''}", zorder=3)
    capped = [(i, as_float(c.attrs.get("effagent.difficulty.score"))) for i, c in enumerate(steps)
              if c.attrs.get("effagent.loop.capped") or c.attrs.get("effagent.decision.action") == "finalize"]
    if capped:
        ax.scatter([p[0] for p in capped], [p[1] for p in capped], s=150, facecolors="none", edgecolors="#dc2626",
                   linewidths=1.8, label="finalize / loop capped", zorder=4)
    fell = [(i, as_float(c.attrs.get("effagent.difficulty.score"))) for i, c in enumerate(steps)
            if c.attrs.get("effagent.decision.tier") not in (None, c.tier)]
    if fell:
        ax.scatter([p[0] for p in fell], [p[1] for p in fell], s=150, facecolors="none", edgecolors="#6b7280",
                   linewidths=1.4, linestyles="--", label="fell back to another tier", zorder=4)
    _style(ax)
    _thin_ticks(ax, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("difficulty", fontsize=9)
    ax.legend(fontsize=8, frameon=False, ncol=6, loc="upper left", bbox_to_anchor=(0, 1.2))
    out.append(("Decisions over time", "Each step's difficulty score, the tier it went to (colour) and whether "
                "thinking was on (triangle). Red rings: the step finalized (budget spent or loop capped); grey "
                "dashed rings: the decided tier failed and the step fell back to the next one.",
                _png(fig)))
    return out


# ---------------------------------------------------------------------------------------------------
# HTML
