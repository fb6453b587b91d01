"""Replay benchmark: routing quality of difficulty estimators on recorded cheap/strong outcomes, per domain.

Domains: GSM8K (RouteLLM's Mixtral-8x7B -> GPT-4-1106 responses), the LLMRouter test pair (least -> most
accurate of its 9 models), RouterBench ARC-challenge / Winogrande / MBPP test (Mixtral-8x7B -> GPT-4-1106; the
prompt is the last question block of each few-shot prompt). They ship with the package (``effagent.data``);
``--data-dir`` / ``$EFFAGENT_DATA_DIR`` rebuild them from the raw shared files instead.

Per domain: APGR with a bootstrap 95 % interval, the strong-call share that reaches 95 % of the strong model's
accuracy, and $ saved against always-strong at that share, net of every cheap call (a router pays the cheap
model only where it does not escalate; a cascade pays every cheap call, its voters' calls, then the escalations).
"random" is the mean ± s.d. over random orders. Then: a cross-domain summary, a leave-one-domain-out table
(each trainable estimator fit on the other domains' recorded rows, scored on the held-out domain's test
split), in-domain learning curves of the ``learned`` estimator, and agreement cascades from the recorded
answers of other cheap models. Metrics: ``effagent.evaluation``.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from effagent.data import data_dir
from effagent.data.recorded import DOMAINS, VOTERS_RB, RecordedSet, load_sets
from effagent.evaluation import (
    GRID,
    QUALITY_TARGET,
    accuracy_curve,
    apgr,
    bootstrap_apgr,
    random_apgr,
    strong_share_for_quality,
)

__all__ = [
    "GRID",
    "QUALITY_TARGET",
    "ReplaySet",
    "RowResult",
    "accuracy_curve",
    "apgr",
    "evaluate_scores",
    "register",
    "run_replay",
    "strong_share_for_quality",
]

RANDOM_ORDERS = 200
LEARNING_SIZES: tuple[int | float, ...] = (100, 300, 1000, 0.1, 0.3)
LEARNING_SEEDS = 3
TRAINABLE = ("learned", "trained")
ScoreFn = Callable[[list[str]], Sequence[float]]


# ---------------------------------------------------------------- data


class ReplaySet(BaseModel):
    """One domain's recorded outcomes for one cheap/strong pair, with $ per call where recorded."""

    name: str
    cheap_model: str
    strong_model: str
    prompts: list[str]
    cheap_correct: list[float]
    strong_correct: list[float]
    cheap_usd: list[float] | None = None  # $ of each cheap call
    strong_usd: list[float] | None = None
    cheap_answers: list[str] | None = None  # the cheap model's extracted answers (agreement cascades)
    votes: dict[str, list[str]] = Field(default_factory=dict)  # other cheap model -> its extracted answers
    votes_usd: dict[str, list[float]] = Field(default_factory=dict)
    cheap_responses: list[str] | None = None  # full responses, where a cascade verifier reads them
    # legacy form of the costs: $ per million tokens (input, output), used with responses to count tokens
    strong_responses: list[str] | None = None
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @classmethod
    def from_recorded(cls, rs: RecordedSet) -> ReplaySet:
        h = rs.header
        voters = [m for m in VOTERS_RB if rs.rows and m in rs.rows[0].answers]
        cheap_answers = [r.answers.get(h.cheap_model, "") for r in rs.rows] if voters else None
        return cls(
            name=f"{h.domain} [{h.cheap_model} -> {h.strong_model}]",
            cheap_model=h.cheap_model,
            strong_model=h.strong_model,
            prompts=rs.prompts,
            cheap_correct=list(rs.cheap),
            strong_correct=list(rs.strong),
            cheap_usd=list(rs.cost(h.cheap_model)),
            strong_usd=list(rs.cost(h.strong_model)),
            cheap_answers=cheap_answers,
            votes={m: [r.answers.get(m, "") for r in rs.rows] for m in voters},
            votes_usd={m: list(rs.cost(m)) for m in voters},
            cheap_responses=([r.responses.get(h.cheap_model, "") for r in rs.rows]
                             if rs.rows and h.cheap_model in rs.rows[0].responses else None),
        )


# ---------------------------------------------------------------- evaluation


class RowResult(BaseModel):
    name: str
    kind: str  # "router" | "cascade" | "reference"
    apgr: float
    apgr_low: float | None = None  # bootstrap 95 % interval (random: mean - s.d.)
    apgr_high: float | None = None
    apgr_sd: float | None = None  # random orders only
    strong_share_at_95: float
    accuracy_at_95: float
    dollars_saved: float | None = None  # vs always-strong, net of every cheap call
    dollars_saved_pct: float | None = None
    strong_tokens_saved: int | None = None  # legacy sets priced from token counts
    total_tokens_saved: int | None = None
    seconds: float = 0.0
    curve: list[float] = Field(default_factory=list)


class _Costs:
    """$ (and, for sets priced by tokens, token counts) per item for the cheap and strong model."""

    def __init__(self, rs: ReplaySet) -> None:
        n = len(rs.prompts)
        self.tokens: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if rs.cheap_usd is not None and rs.strong_usd is not None:
            self.cheap = np.asarray(rs.cheap_usd, dtype=float)
            self.strong = np.asarray(rs.strong_usd, dtype=float)
        elif rs.cheap_model in rs.prices and rs.strong_model in rs.prices:
            from effagent.data.recorded import token_counter

            count, _ = token_counter()
            inp = np.array([count(p) for p in rs.prompts], dtype=float)
            oc = np.array([count(t) for t in rs.cheap_responses or [""] * n], dtype=float)
            os_ = np.array([count(t) for t in rs.strong_responses or [""] * n], dtype=float)
            (ci, co), (si, so) = rs.prices[rs.cheap_model], rs.prices[rs.strong_model]
            self.cheap = (inp * ci + oc * co) / 1e6
            self.strong = (inp * si + os_ * so) / 1e6
            self.tokens = (inp, oc, os_)
        else:
            self.cheap = self.strong = np.zeros(0)
        self.votes = sum((np.asarray(v, dtype=float) for v in rs.votes_usd.values()), np.zeros(n))

    @property
    def known(self) -> bool:
        return len(self.strong) > 0 and float(self.strong.sum()) > 0

    def at(self, strong_mask: np.ndarray, cascade: bool, extra: np.ndarray | None = None) -> dict[str, Any]:
        """Savings vs always-strong when ``strong_mask`` items go strong. A cascade pays every cheap call and
        ``extra`` (its voters' calls)."""
        if not self.known:
            return {}
        cheap_mask = np.ones_like(strong_mask) if cascade else ~strong_mask
        spent = self.strong[strong_mask].sum() + self.cheap[cheap_mask].sum()
        if extra is not None:
            spent += extra.sum()
        total = float(self.strong.sum())
        saved = total - float(spent)
        res: dict[str, Any] = {"dollars_saved": saved, "dollars_saved_pct": 100.0 * saved / total}
        if self.tokens is not None:
            inp, oc, os_ = self.tokens
            strong_all = inp.sum() + os_.sum()
            strong_tok = (inp + os_)[strong_mask].sum()
            res["strong_tokens_saved"] = int(strong_all - strong_tok)
            res["total_tokens_saved"] = int(strong_all - strong_tok - (inp + oc)[cheap_mask].sum())
        return res


def _mask_at(scores: np.ndarray, f: float) -> np.ndarray:
    k = round(f * len(scores))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


def evaluate_scores(
    name: str,
    kind: str,
    scores: Sequence[float],
    rs: ReplaySet,
    costs: _Costs | None,
    seconds: float = 0.0,
    *,
    resamples: int = 0,
    extra_cost: np.ndarray | None = None,
) -> RowResult:
    s = np.asarray(scores, dtype=float)
    c, g = rs.cheap_correct, rs.strong_correct
    acc = accuracy_curve(s, c, g)
    f95 = strong_share_for_quality(s, c, g)
    lo = hi = None
    if resamples:
        lo, hi = bootstrap_apgr(s, c, g, resamples=resamples)
    row = RowResult(
        name=name, kind=kind, apgr=apgr(s, c, g), apgr_low=lo, apgr_high=hi, strong_share_at_95=f95,
        accuracy_at_95=float(acc[round(f95 * 100)]), seconds=seconds, curve=[float(a) for a in acc],
    )
    if costs is not None:
        row = row.model_copy(update=costs.at(_mask_at(s, f95), cascade=kind == "cascade", extra=extra_cost))
    return row


def random_row(rs: ReplaySet, costs: _Costs | None, orders: int = RANDOM_ORDERS) -> RowResult:
    mean, sd = random_apgr(rs.cheap_correct, rs.strong_correct, orders=orders)
    rows = [evaluate_scores("random", "reference", np.random.default_rng(seed).random(len(rs.prompts)), rs, costs)
            for seed in range(min(orders, 20))]
    avg: dict[str, Any] = {"name": f"random ({orders} orders)", "kind": "reference", "apgr": mean, "apgr_sd": sd,
                           "apgr_low": mean - sd, "apgr_high": mean + sd}
    for key in ("strong_share_at_95", "accuracy_at_95"):
        avg[key] = float(np.mean([getattr(r, key) for r in rows]))
    for key in ("dollars_saved", "dollars_saved_pct", "strong_tokens_saved", "total_tokens_saved"):
        vals = [getattr(r, key) for r in rows]
        avg[key] = None if vals[0] is None else type(vals[0])(np.mean(vals))
    avg["curve"] = [float(x) for x in np.mean([r.curve for r in rows], axis=0)]
    return RowResult(**avg)


def oracle_scores(rs: ReplaySet) -> np.ndarray:
    return np.asarray(rs.strong_correct) - np.asarray(rs.cheap_correct)


def agreement_rows(rs: ReplaySet, costs: _Costs | None, resamples: int) -> list[RowResult]:
    """Agreement cascades: the cheap model answers, other cheap models answer too; escalate to the strong model
    where they disagree with it (the share of disagreeing votes orders the escalations)."""
    if not rs.votes or rs.cheap_answers is None:
        return []
    cheap = np.asarray(rs.cheap_answers)
    rows = []
    panels = {f"agreement cascade ({len(rs.votes)} votes)": list(rs.votes)}
    first = next(iter(rs.votes))
    panels[f"agreement cascade (1 vote: {first.split('/')[-1]})"] = [first]
    for name, voters in panels.items():
        t0 = time.perf_counter()
        disagree = np.mean([(np.asarray(rs.votes[m]) != cheap) | (cheap == "") for m in voters], axis=0)
        extra = sum((np.asarray(rs.votes_usd[m], dtype=float) for m in voters), np.zeros(len(cheap)))
        rows.append(evaluate_scores(name, "cascade", disagree, rs, costs, time.perf_counter() - t0,
                                    resamples=resamples, extra_cost=extra))
    return rows


def run_replay(
    rs: ReplaySet,
    estimators: dict[str, ScoreFn],
    verifier: Callable[[list[str], list[str]], list[float]] | None = None,
    with_costs: bool = True,
    progress: bool = True,
    resamples: int = 0,
    random_orders: int = RANDOM_ORDERS,
) -> list[RowResult]:
    from tqdm import tqdm

    costs = _Costs(rs) if with_costs else None
    rows = [random_row(rs, costs, random_orders), evaluate_scores("oracle", "reference", oracle_scores(rs), rs, costs)]
    for name, fn in tqdm(list(estimators.items()), desc=f"estimators on {rs.name}", disable=not progress,
                         file=sys.stderr, leave=False):
        t0 = time.perf_counter()
        scores = fn(rs.prompts)
        rows.append(evaluate_scores(name, "router", scores, rs, costs, time.perf_counter() - t0,
                                    resamples=resamples))
    if verifier is not None and rs.cheap_responses:
        t0 = time.perf_counter()
        scores = verifier(rs.prompts, rs.cheap_responses)
        rows.append(evaluate_scores("verifier (cascade)", "cascade", scores, rs, costs, time.perf_counter() - t0,
                                    resamples=resamples))
    rows += agreement_rows(rs, costs, resamples)
    return rows


# ---------------------------------------------------------------- trainable estimators


def fit_scorer(name: str, train: Sequence[RecordedSet]) -> ScoreFn:
    """A trainable estimator fit on the rows of ``train`` (each with its own cheap/strong pair's gain)."""
    prompts = [p for s in train for p in s.prompts]
    cheap = np.concatenate([s.cheap for s in train])
    strong = np.concatenate([s.strong for s in train])
    if name == "learned":
        from effagent.difficulty.learned import LabeledPrompt, learn, score_with

        model = learn([LabeledPrompt(prompt=p, cheap_correct=bool(c >= 0.5), strong_correct=bool(g >= 0.5))
                       for p, c, g in zip(prompts, cheap, strong, strict=True)])
        return lambda ps: score_with(model, ps)
    if name == "trained":
        from effagent.tools.bench.baselines.trained import fit_on, raw_scores

        art = fit_on(prompts, strong - cheap)
        return lambda ps: raw_scores(art, ps)
    raise KeyError(f"{name!r} is not trainable; trainable: {', '.join(TRAINABLE)}")


def _trainable(names: Sequence[str]) -> list[str]:
    import importlib.util

    out = []
    for n in names:
        if n not in TRAINABLE:
            print(f"skipping {n!r} in the leave-one-domain-out table: not trainable ({', '.join(TRAINABLE)})",
                  file=sys.stderr)
        elif n == "trained" and importlib.util.find_spec("sklearn") is None:
            print("skipping 'trained' in the leave-one-domain-out table: refitting it needs scikit-learn "
                  "(pip install 'effagent[bench]')", file=sys.stderr)
        else:
            out.append(n)
    return out


def leave_one_domain_out(
    evals: dict[str, RecordedSet], pool: Sequence[RecordedSet], trainable: Sequence[str],
    fixed: dict[str, ScoreFn], resamples: int, progress: bool,
) -> dict[str, dict[str, dict[str, float]]]:
    """domain -> estimator -> {apgr, low, high}: trainable estimators fit on every recorded row of the other
    domains (train and test splits), scored on the held-out domain's test split; fixed ones as they are."""
    from tqdm import tqdm

    out: dict[str, dict[str, dict[str, float]]] = {}
    jobs = [(d, n) for d in evals for n in trainable]
    bar = tqdm(total=len(jobs), desc="leave-one-domain-out fits", disable=not progress, file=sys.stderr)
    for d, rs in evals.items():
        res: dict[str, dict[str, float]] = {}
        fns = dict(fixed)
        for n in trainable:
            bar.set_postfix_str(f"{n} without {d}")
            fns[f"{n} (without {d})"] = fit_scorer(n, [s for s in pool if s.domain != d])
            bar.update()
        for n, fn in fns.items():
            s = np.asarray(fn(rs.prompts), dtype=float)
            lo, hi = bootstrap_apgr(s, rs.cheap, rs.strong, resamples=resamples) if resamples else (np.nan, np.nan)
            res[n.split(" (without")[0]] = {"apgr": apgr(s, rs.cheap, rs.strong), "low": lo, "high": hi}
        mean, sd = random_apgr(rs.cheap, rs.strong, orders=RANDOM_ORDERS)
        res["random"] = {"apgr": mean, "low": mean - sd, "high": mean + sd, "sd": sd}
        out[d] = res
    bar.close()
    return out


def learning_curves(evals: dict[str, RecordedSet], progress: bool, seeds: int = LEARNING_SEEDS
                    ) -> dict[str, list[dict[str, float]]]:
    """In-domain: ``learned`` fit on a random sample of a set's rows, scored on the rest, against the default
    rule on the same rest (mean over ``seeds`` samples)."""
    from tqdm import tqdm

    from effagent.difficulty.rule import RuleEstimator

    rule = RuleEstimator()
    out: dict[str, list[dict[str, float]]] = {}
    jobs = []
    for d, rs in evals.items():
        n = len(rs.rows)
        for size in LEARNING_SIZES:
            k = int(size * n) if isinstance(size, float) else size
            if 10 <= k <= n - 50:
                jobs.append((d, size, k))
    for d, size, k in tqdm(jobs, desc="learning curves", disable=not progress, file=sys.stderr):
        rs = evals[d]
        agreement = agreement_labels(rs)
        learned_v, rule_v, agree_v = [], [], []
        for seed in range(seeds):
            perm = np.random.default_rng(seed).permutation(len(rs.rows))
            tr, te = perm[:k], perm[k:]
            sub = RecordedSet(header=rs.header, rows=[rs.rows[i] for i in tr])
            fn = fit_scorer("learned", [sub])
            rest = [rs.prompts[i] for i in te]
            c, g = rs.cheap[te], rs.strong[te]
            learned_v.append(apgr(fn(rest), c, g))
            rule_v.append(apgr(rule.score_prompts(rest), c, g))
            if agreement is not None:
                fa = fit_scorer("learned", [agreement.model_copy(update={"rows": [agreement.rows[i] for i in tr]})])
                agree_v.append(apgr(fa(rest), c, g))
        label = f"{int(size * 100)} %" if isinstance(size, float) else str(size)
        point = {"size": label, "rows": k, "learned": float(np.mean(learned_v)),
                 "learned_sd": float(np.std(learned_v)), "rule": float(np.mean(rule_v))}
        if agree_v:
            point["from_agreement"] = float(np.mean(agree_v))
        out.setdefault(d, []).append(point)
    return out


def agreement_labels(rs: RecordedSet) -> RecordedSet | None:
    """The set relabelled as production would label it without people: the strong answer counts as right and the
    cheap one as right when it agrees with it (needs both models' extracted answers), or None."""
    h = rs.header
    if not rs.rows or not {h.cheap_model, h.strong_model} <= set(rs.rows[0].answers):
        return None
    rows = []
    for r in rs.rows:
        same = bool(r.answers[h.cheap_model]) and r.answers[h.cheap_model] == r.answers[h.strong_model]
        rows.append(r.model_copy(update={"outcomes": {**r.outcomes, h.cheap_model: float(same),
                                                      h.strong_model: 1.0}}))
    return rs.model_copy(update={"rows": rows})


# ---------------------------------------------------------------- output


def _interval(r: RowResult) -> str:
    if r.apgr_sd is not None:
        return f"± {r.apgr_sd:.3f}"
    if r.apgr_low is None or r.apgr_high is None:
        return ""
    return f"[{r.apgr_low:.3f}, {r.apgr_high:.3f}]"


def format_table(rs: ReplaySet, rows: Sequence[RowResult]) -> str:
    head = (
        f"{rs.name}: cheap {np.mean(rs.cheap_correct):.3f}, strong {np.mean(rs.strong_correct):.3f}, "
        f"n={len(rs.prompts)}"
    )
    cols = (f"{'estimator':36s} {'kind':9s} {'APGR':>6s} {'95 % interval':>16s} {'strong@95%':>10s} "
            f"{'acc@95%':>8s} {'$ saved (net)':>13s} {'%':>6s}")
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        usd = "" if r.dollars_saved is None else f"{r.dollars_saved:.4f}"
        pct = "" if r.dollars_saved_pct is None else f"{r.dollars_saved_pct:.1f}"
        lines.append(f"{r.name:36s} {r.kind:9s} {r.apgr:6.3f} {_interval(r):>16s} {r.strong_share_at_95:10.2f} "
                     f"{r.accuracy_at_95:8.3f} {usd:>13s} {pct:>6s}")
    return "\n".join(lines)


def format_matrix(title: str, table: dict[str, dict[str, dict[str, float]]], names: Sequence[str]) -> str:
    domains = list(table)
    width = 22
    lines = [title, f"{'estimator':14s}" + "".join(f"{d:>{width}s}" for d in domains) + f"{'mean':>8s}"]
    lines.append("-" * len(lines[-1]))
    for n in names:
        cells, vals = [], []
        for d in domains:
            v = table[d].get(n)
            if v is None:
                cells.append(f"{'':>{width}s}")
                continue
            vals.append(v["apgr"])
            if "sd" in v:
                cells.append(f"{v['apgr']:.3f} ± {v['sd']:.3f}".rjust(width))
            elif np.isfinite(v.get("low", np.nan)):
                cells.append(f"{v['apgr']:.3f} [{v['low']:.2f},{v['high']:.2f}]".rjust(width))
            else:
                cells.append(f"{v['apgr']:.3f}".rjust(width))
        mean = f"{np.mean(vals):8.3f}" if len(vals) == len(domains) else f"{'':8s}"
        lines.append(f"{n:14s}" + "".join(cells) + mean)
    return "\n".join(lines)


def format_curves(curves: dict[str, list[dict[str, float]]]) -> str:
    lines = ["in-domain learning curves: `learned` fit on N rows of a set, APGR on the rest (mean of "
             f"{LEARNING_SEEDS} samples) vs the default rule on the same rest; 'from agreement': learned from "
             "labels without people (cheap right = it agrees with the strong answer), scored on true correctness",
             f"{'domain':14s} {'N':>6s} {'rows':>6s} {'learned':>8s} {'± s.d.':>7s} {'rule':>7s} "
             f"{'from agreement':>15s}"]
    for d, pts in curves.items():
        for p in pts:
            agree = f"{p['from_agreement']:15.3f}" if "from_agreement" in p else f"{'':15s}"
            lines.append(f"{d:14s} {p['size']:>6s} {p['rows']:6d} {p['learned']:8.3f} {p['learned_sd']:7.3f} "
                         f"{p['rule']:7.3f} {agree}")
    return "\n".join(lines)


def _matrix(results: dict[str, tuple[ReplaySet, list[RowResult]]]) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for d, (_, rows) in results.items():
        table[d] = {}
        for r in rows:
            key = "random" if r.name.startswith("random") else r.name
            cell = {"apgr": r.apgr, "low": r.apgr_low if r.apgr_low is not None else np.nan,
                    "high": r.apgr_high if r.apgr_high is not None else np.nan}
            if r.apgr_sd is not None:
                cell["sd"] = r.apgr_sd
            table[d][key] = cell
    return table


def plot(results: dict[str, tuple[ReplaySet, list[RowResult]]], path: Path,
         lodo: dict[str, dict[str, dict[str, float]]] | None = None) -> Path:
    """APGR per domain and estimator (bars with 95 % intervals; leave-one-domain-out beside when given), then
    each domain's accuracy curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_top = 2 if lodo else 1
    cols = max(len(results), n_top)
    fig, axes = plt.subplots(2, cols, figsize=(5.2 * cols, 9), squeeze=False)
    for j, (title, table) in enumerate([("APGR per domain (test splits)", _matrix(results))]
                                       + ([("leave-one-domain-out APGR", lodo)] if lodo else [])):
        ax = axes[0][j]
        domains = list(table)
        names = [n for n in dict.fromkeys(k for d in domains for k in table[d]) if n not in ("oracle",)]
        width = 0.8 / max(1, len(names))
        for i, n in enumerate(names):
            ys = [table[d].get(n, {}).get("apgr", np.nan) for d in domains]
            lo = [table[d].get(n, {}).get("low", np.nan) for d in domains]
            hi = [table[d].get(n, {}).get("high", np.nan) for d in domains]
            err = np.array([[y - a if np.isfinite(a) else 0 for y, a in zip(ys, lo, strict=True)],
                            [b - y if np.isfinite(b) else 0 for y, b in zip(ys, hi, strict=True)]])
            ax.bar(np.arange(len(domains)) + i * width, ys, width, yerr=err, capsize=2, label=n)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, fontsize=8, rotation=15)
        ax.set_ylabel("APGR (0.5 = random)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    for j in range(n_top, cols):
        axes[0][j].axis("off")
    for ax, (_, (rs, rows)) in zip(axes[1], results.items(), strict=False):
        for r in rows:
            style = "--" if r.kind == "reference" else ":" if r.kind == "cascade" else "-"
            ax.plot(GRID, r.curve, style, label=f"{r.name} ({r.apgr:.2f})")
        ax.axhline(QUALITY_TARGET * np.mean(rs.strong_correct), color="grey", lw=0.6)
        ax.set_title(rs.name, fontsize=8)
        ax.set_xlabel("share of calls to the strong model")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=6)
    for ax in axes[1][len(results):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_html(path: Path, text: str, png: Path | None) -> Path:
    img = ""
    if png is not None and png.exists():
        img = f'<img alt="APGR per domain and estimator" src="data:image/png;base64,' \
              f'{base64.b64encode(png.read_bytes()).decode()}" style="max-width:100%">'
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>effagent bench replay</title>"
                    f"<h1>Routing quality on recorded outcomes</h1>{img}<pre>{html.escape(text)}</pre>",
                    encoding="utf-8")
    return path


# ---------------------------------------------------------------- command


def _estimator_fns(names: Sequence[str]) -> dict[str, ScoreFn]:
    from effagent.tools.bench.baselines import available, get_scorer

    out: dict[str, ScoreFn] = {}
    for n in names:
        if n not in available() and ":" not in n:
            print(f"skipping estimator {n!r}: not available", file=sys.stderr)
            continue
        try:
            out[n] = get_scorer(n).score_prompts
        except (KeyError, ValueError, ImportError) as e:
            print(f"skipping estimator {n!r}: {e}", file=sys.stderr)
    return out


def _verifier() -> Callable[[list[str], list[str]], list[float]] | None:
    try:
        from effagent.levers.cascade import CascadeVerifier
    except ImportError:
        return None
    return CascadeVerifier().score_answers


def _load(args: argparse.Namespace, sets: Sequence[str]) -> tuple[dict[str, RecordedSet], list[RecordedSet]]:
    raw = data_dir(args.data_dir)
    if raw is not None and not (raw / "routing").is_dir():
        raise FileNotFoundError(f"{raw}/routing not found (--data-dir / $EFFAGENT_DATA_DIR)")
    every = load_sets(raw, None) if raw is not None else load_sets()
    if raw is not None and not every:
        raise FileNotFoundError(f"no recorded sets under {raw}/routing")
    evals = {s.domain: s for s in every if s.header.split == "eval" and s.domain in sets}
    if "llmrouter" in evals and (args.cheap or args.strong):
        evals["llmrouter"] = evals["llmrouter"].with_pair(args.cheap, args.strong)
    pool = [s.with_pair(evals[s.domain].header.cheap_model, evals[s.domain].header.strong_model)
            for s in every if s.domain in evals]  # the requested domains' rows, both splits
    return evals, pool


def cmd_replay(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in DOMAINS]
    if unknown:
        print(f"error: unknown set(s) {', '.join(unknown)}; choose from {', '.join(DOMAINS)}", file=sys.stderr)
        return 2
    try:
        evals, pool = _load(args, sets)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [s for s in sets if s not in evals]
    if missing:
        print(f"note: no recorded data for {', '.join(missing)} in this data folder; left out", file=sys.stderr)
    if not evals:
        print("error: none of the requested sets is recorded in this data folder", file=sys.stderr)
        return 2
    resamples = 200 if args.quick else args.resamples
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    fns = _estimator_fns(names)
    verifier = _verifier()
    results: dict[str, tuple[ReplaySet, list[RowResult]]] = {}
    report: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        report.append(text)

    for d, recorded in evals.items():
        rs = ReplaySet.from_recorded(recorded)
        ver = verifier if rs.cheap_responses else None
        rows = run_replay(rs, fns, ver, progress=progress, resamples=resamples, random_orders=args.random_orders)
        results[d] = (rs, rows)
        say(format_table(rs, rows) + "\n")

    est_names = list(fns)
    matrix = _matrix(results)
    say(format_matrix("cross-domain APGR [bootstrap 95 % interval]; random: mean ± s.d.", matrix,
                      [*est_names, "random"]) + "\n")
    lodo: dict[str, dict[str, dict[str, float]]] | None = None
    curves: dict[str, list[dict[str, float]]] | None = None
    if not args.quick and len(evals) > 1:
        trainable = _trainable([n.strip() for n in args.lodo.split(",") if n.strip()])
        fixed = {n: fns[n] for n in est_names if n not in TRAINABLE}
        lodo = leave_one_domain_out(evals, pool, trainable, fixed, resamples, progress)
        say(format_matrix("leave-one-domain-out APGR [bootstrap 95 % interval]: trainable estimators fit without "
                          "the domain, scored on it", lodo, [*fixed, *trainable, "random"]) + "\n")
    if not args.quick:
        curves = learning_curves(evals, progress)
        say(format_curves(curves) + "\n")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "quality_target": QUALITY_TARGET,
        "bootstrap_resamples": resamples,
        "random_orders": args.random_orders,
        "data": str(data_dir(args.data_dir) or "shipped with effagent (effagent/data/routing)"),
        "grid": [float(x) for x in GRID],
        "sets": {
            d: {
                "name": rs.name,
                "cheap_model": rs.cheap_model,
                "strong_model": rs.strong_model,
                "n": len(rs.prompts),
                "cheap_accuracy": float(np.mean(rs.cheap_correct)),
                "strong_accuracy": float(np.mean(rs.strong_correct)),
                "cost_basis": evals[d].header.cost_basis,
                "rows": [r.model_dump() for r in rows],
            }
            for d, (rs, rows) in results.items()
        },
        "cross_domain": matrix,
        "leave_one_domain_out": lodo,
        "learning_curves": curves,
    }
    (out / "replay.json").write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    written = [out / "replay.json"]
    png: Path | None = None
    try:
        png = plot(results, out / "replay.png", lodo)
        written.append(png)
    except ImportError:
        print("(no plot: matplotlib is not installed; pip install 'effagent[bench]')", file=sys.stderr)
    written.append(write_html(out / "replay.html", "\n".join(report), png))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _json_default(v: object) -> object:
    if isinstance(v, np.floating | np.integer):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def register(bench_subparsers: Any) -> None:
    """Add ``replay`` to the ``bench`` sub-command group."""
    p = bench_subparsers.add_parser(
        "replay", help="routing quality of estimators on recorded outcomes, per domain and leave-one-domain-out")
    p.add_argument("--estimators", default="rule,length,heuristic,trained",
                   help="comma-separated estimators: the library's (rule, learned, probe) and the baselines of "
                        "effagent.tools.bench.baselines (length, heuristic, trained) (default: %(default)s)")
    p.add_argument("--sets", default=",".join(DOMAINS), help="comma-separated domains (default: %(default)s)")
    p.add_argument("--lodo", default=",".join(TRAINABLE),
                   help="trainable estimators for the leave-one-domain-out table (default: %(default)s)")
    p.add_argument("--cheap", default=None, help="llmrouter cheap model (default: the least accurate)")
    p.add_argument("--strong", default=None, help="llmrouter strong model (default: the most accurate)")
    p.add_argument("--data-dir", default=None,
                   help="raw data folder to rebuild the sets from (default: $EFFAGENT_DATA_DIR, else the sets "
                        "shipped with effagent)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
    p.add_argument("--random-orders", type=int, default=RANDOM_ORDERS, help="random orders for the random row")
    p.add_argument("--quick", action="store_true",
                   help="per-domain tables only (200 resamples; no leave-one-domain-out, no learning curves)")
    p.add_argument("--out", default="effagent-out/bench/", help="folder for replay.json, replay.png, replay.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_replay)
