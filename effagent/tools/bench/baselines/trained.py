"""The ``trained`` baseline: predicts how much a stronger model gains over a weaker one on a prompt; fit on
``llmrouter_train.json`` (ridge on TF-IDF + dense features, blended with boosted trees). It routes well on
LLMRouter-like questions and below a random order on other recorded domains, so the library does not ship it;
``effagent bench replay`` compares against it and ``effagent bench train-baseline`` refits it. How it was built
and measured: docs/estimators.md."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from effagent.data import require
from effagent.difficulty.base import Difficulty, Step, clamp01
from effagent.evaluation import apgr

ARTIFACT_PATH = Path(__file__).resolve().parent / "artifacts" / "trained_v2.json"
ARTIFACT_VERSION = 2
MIN_PAIR_GAP = 0.10

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_NUM = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?%?")
_SENT_END = re.compile(r"[.!?](?:\s|$)")
_SENT_SPLIT = re.compile(r"[.!?]+\s")
_FRACTION = re.compile(r"\d+/\d+")
_LATEX = re.compile(r"\\frac|\\sqrt|\$[^$]+\$|\^")
_CODE = re.compile(r"\bdef |```|\breturn\b|python|function")
_CHOICES = re.compile(r"\n\s*\(?[a-e][\).:]\s")
_RATE = re.compile(r"\b(percent|ratio|average|rate|speed|per)\b")
_MULT = re.compile(r"\b(twice|half|times|third|quarter|double|triple)\b")
_EACH = re.compile(r"\b(each|every)\b")
_NUM_WORD = re.compile(
    r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty"
    r"|hundred|thousand|million|half|twice|double|triple|dozen|third|quarter|fourth|fifth)\b"
)
_ASKS_QUANTITY = re.compile(
    r"\b(how (many|much|long|old|far|fast|often|tall|big)|what (is|was|will|are|were|percent|percentage"
    r"|fraction|number)|calculate|find|determine|compute|total)\b"
)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")

SHAPE_FEATURES = (
    "log_chars",
    "log_words",
    "log_numbers",
    "log_distinct_numbers",
    "log_sentences",
    "log_lines",
    "number_density",
    "has_decimal",
    "has_percent",
    "has_dollar",
    "has_fraction",
    "has_latex",
    "has_code",
    "has_choices",
    "is_logic_grid",
    "log_longest_number",
    "question_marks",
    "has_rate_words",
    "has_multiplier_words",
    "has_each_every",
)

# Word-problem structure: which operations / quantities the wording implies (log1p of hit counts).
_CUES: dict[str, re.Pattern[str]] = {
    k: re.compile(v)
    for k, v in {
        "compare": r"\b(more|less|fewer|longer|shorter|older|younger|bigger|smaller|higher|lower|cheaper)\s+than\b",
        "mult": r"\b(twice|half|times|double|triple|thrice|quadruple)\b",
        "frac_word": r"\b(third|quarter|fourth|fifth|tenth|thirds|quarters|fifths)\b",
        "each": r"\b(each|every|per|apiece)\b",
        "percent": r"%|\bpercent|\bpercentage\b",
        "remain": r"\b(remaining|remainder|rest|left|leftover|left over)\b",
        "how_more": r"\bhow (many|much) (more|less|fewer|longer|taller|older)\b",
        "diff": r"\b(difference|differ)\b",
        "avg": r"\b(average|mean)\b",
        "total": r"\b(total|altogether|in all|combined|sum)\b",
        "ratio": r"\b(ratio|proportion|rate)\b",
        "money": r"\$|\b(dollars?|cents?|price|cost|costs|paid|pay|spend|spent|earn|earns|earned|salary|profit"
        r"|discount|tax|interest|sale)\b",
        "money_adv": r"\b(profit|discount|tax|interest|commission|tip|markup|loss|sales tax)\b",
        "time": r"\b(seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b",
        "speed": r"\b(mph|km/h|speed|miles per|kilometers per|per hour|per minute)\b",
        "length": r"\b(inch|inches|feet|foot|yards?|miles?|meters?|centimeters?|cm|km|kilometers?)\b",
        "weight": r"\b(pounds?|ounces?|grams?|kilograms?|kg|lbs?|tons?|liters?|gallons?|quarts?|cups?|ml)\b",
        "cond": r"\b(if|when|unless|after|before|then|until)\b",
        "increase": r"\b(increase[sd]?|decrease[sd]?|grow|grows|double[sd]?|reduce[sd]?|raise[sd]?|drop(s|ped)?)\b",
        "sharing": r"\b(split|share[sd]?|divide[sd]?|distribute[sd]?|equally|evenly)\b",
        "round": r"\b(round|nearest|approximately|estimate)\b",
    }.items()
}
_UNIT_GROUPS = ("time", "speed", "length", "weight", "money")

STRUCT_FEATURES = (
    "log_quantities",
    "log_number_words",
    "log10_max_number",
    "n_decimals",
    "n_fractions",
    "log_words_per_sentence",
    "log_names",
    "n_unit_groups",
    "n_cue_kinds",
    "log_cue_hits",
    *(f"cue_{k}" for k in _CUES),
)
DENSE_FEATURES = SHAPE_FEATURES + STRUCT_FEATURES


class RoutingRecord(BaseModel):
    """One question with per-model correctness (0..1; a few are averages over samples)."""

    question: str
    scores: dict[str, float]


def load_routing(path: Path) -> list[RoutingRecord]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [RoutingRecord(question=r["question"], scores=r["scores"]) for r in rows]


def shape_features(prompt: str) -> list[float]:
    """Prompt-shape features, in the order of SHAPE_FEATURES."""
    low = prompt.lower()
    words = prompt.split()
    nums = _NUM.findall(prompt)
    return [
        math.log1p(len(prompt)),
        math.log1p(len(words)),
        math.log1p(len(nums)),
        math.log1p(len(set(nums))),
        math.log1p(max(1, len(_SENT_END.findall(prompt)))),
        math.log1p(prompt.count("\n") + 1),
        len(nums) / max(1, len(words)),
        float(any("." in n for n in nums)),
        float(any("%" in n for n in nums)),
        float("$" in prompt),
        float(bool(_FRACTION.search(prompt))),
        float(bool(_LATEX.search(prompt))),
        float(bool(_CODE.search(low))),
        float(bool(_CHOICES.search(low)) or "options" in low or "choices" in low),
        float(low.startswith("q: there are")),
        math.log1p(max((len(n) for n in nums), default=0)),
        float(low.count("?")),
        float(bool(_RATE.search(low))),
        float(bool(_MULT.search(low))),
        float(bool(_EACH.search(low))),
    ]


def struct_features(prompt: str) -> list[float]:
    """Word-problem structure features, in the order of STRUCT_FEATURES (meaningful for any prompt)."""
    low = prompt.lower()
    nums = _NUM.findall(prompt)
    number_words = _NUM_WORD.findall(low)
    values = []
    for n in nums:
        try:
            values.append(abs(float(n.replace("$", "").replace(",", "").replace("%", ""))))
        except ValueError:
            continue
    n_sent = sum(1 for s in _SENT_SPLIT.split(prompt) if s.strip())
    hits = {k: len(r.findall(low)) for k, r in _CUES.items()}
    return [
        math.log1p(len(nums) + len(number_words)),
        math.log1p(len(number_words)),
        math.log10(1.0 + min(max(values, default=0.0), 1e300)),
        float(sum("." in n for n in nums)),
        float(len(_FRACTION.findall(prompt))),
        math.log1p(len(prompt.split()) / max(1, n_sent)),
        math.log1p(len(set(_NAME.findall(prompt)))),
        float(sum(hits[g] > 0 for g in _UNIT_GROUPS)),
        float(sum(v > 0 for v in hits.values())),
        math.log1p(sum(hits.values())),
        *(math.log1p(hits[k]) for k in _CUES),
    ]


def dense_features(prompt: str) -> list[float]:
    """SHAPE_FEATURES then STRUCT_FEATURES."""
    return shape_features(prompt) + struct_features(prompt)


def looks_like_word_problem(prompt: str) -> bool:
    """A math word problem: quantities in prose plus a request for a quantity; no code, LaTeX commands,
    multiple choice or logic grid. Defines the domain copy of the features and the cv_mwp subset."""
    low = prompt.lower()
    if low.startswith("q: there are") or "\\" in prompt or _CODE.search(low) or _CHOICES.search(low):
        return False
    if "options" in low or "which of the following" in low:
        return False
    nums = _NUM.findall(prompt)
    n_words = len(prompt.split())
    quantities = len(nums) + len(_NUM_WORD.findall(low))
    return quantities >= 2 and len(nums) >= 1 and 12 <= n_words <= 250 and bool(_ASKS_QUANTITY.search(low))


def terms(prompt: str) -> list[str]:
    """Lower-cased word unigrams and adjacent bigrams (sklearn's default token pattern)."""
    toks = _TOKEN.findall(prompt.lower())
    return toks + [f"{a} {b}" for a, b in pairwise(toks)]


def ordered_pairs(y: np.ndarray, min_gap: float = MIN_PAIR_GAP) -> list[tuple[int, int]]:
    """(weak, strong) column pairs whose mean accuracy differs by at least min_gap."""
    acc = y.mean(axis=0)
    n = y.shape[1]
    return [(i, j) for i in range(n) for j in range(n) if acc[j] - acc[i] >= min_gap]


def pair_gain_target(
    scores: Sequence[dict[str, float]], models: Sequence[str], min_gap: float = MIN_PAIR_GAP
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Mean over (weak, strong) pairs with accuracy gap >= min_gap of ``y_strong - y_weak``."""
    y = np.array([[s[m] for m in models] for s in scores], dtype=float)
    pairs = ordered_pairs(y, min_gap)
    if not pairs:
        raise ValueError("no model pair differs enough in accuracy to define a gain target")
    target = np.mean([y[:, j] - y[:, i] for i, j in pairs], axis=0)
    return target, [(models[i], models[j]) for i, j in pairs]


class TreeEnsemble(BaseModel):
    """Regression trees over the dense features, flattened: node arrays; a leaf has feature -1."""

    model_config = ConfigDict(frozen=True)

    base: float
    roots: list[int]
    feature: list[int]
    threshold: list[float]
    left: list[int]
    right: list[int]
    value: list[float]
    max_depth: int


class TrainedArtifact(BaseModel):
    """Everything inference needs, as plain JSON.

    ridge(prompt) = intercept + tfidf . term_weights + [is_wp] tfidf . wp_term_weights
                    + z([dense, is_wp * dense, is_wp]) . dense_weights
    trees(prompt) = boosted trees on the raw dense features
    raw = ridge_weight * z_ridge + (1 - ridge_weight) * z_trees;  score = sigmoid(z(raw)).
    """

    model_config = ConfigDict(frozen=True)

    version: int = ARTIFACT_VERSION
    terms: list[str]
    idf: list[float]
    term_weights: list[float]
    wp_term_index: list[int]
    wp_term_weights: list[float]
    dense_names: list[str]
    dense_mean: list[float]
    dense_scale: list[float]
    dense_weights: list[float]
    intercept: float
    trees: TreeEnsemble
    ridge_center: float
    ridge_scale: float
    trees_center: float
    trees_scale: float
    ridge_weight: float
    raw_center: float
    raw_scale: float
    meta: dict[str, Any] = Field(default_factory=dict)


class _Vectorizer:
    """TF-IDF over ``terms`` (sublinear tf, smooth idf, l2-normalised rows); fit on the train questions."""

    def __init__(self, vocab: dict[str, int], idf: np.ndarray) -> None:
        self.vocab = vocab
        self.idf = idf

    @classmethod
    def fit(cls, docs: Sequence[str], max_terms: int, min_df: int) -> _Vectorizer:
        df: Counter[str] = Counter()
        tf_total: Counter[str] = Counter()
        for d in docs:
            c = Counter(terms(d))
            df.update(c.keys())
            tf_total.update(c)
        kept = [t for t in df if df[t] >= min_df]
        kept.sort(key=lambda t: (-tf_total[t], t))
        kept = sorted(kept[:max_terms])
        n = len(docs)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in kept])
        return cls({t: i for i, t in enumerate(kept)}, idf)

    def row(self, doc: str) -> tuple[list[int], list[float]]:
        c = Counter(t for t in terms(doc) if t in self.vocab)
        idx = [self.vocab[t] for t in c]
        val = [(1.0 + math.log(n)) * self.idf[self.vocab[t]] for t, n in c.items()]
        norm = math.sqrt(sum(v * v for v in val)) or 1.0
        return idx, [v / norm for v in val]

    def matrix(self, docs: Sequence[str]) -> Any:
        from scipy import sparse  # training only (comes with scikit-learn)

        rows, cols, vals = [], [], []
        for r, d in enumerate(docs):
            idx, val = self.row(d)
            rows.extend([r] * len(idx))
            cols.extend(idx)
            vals.extend(val)
        return sparse.csr_matrix((vals, (rows, cols)), shape=(len(docs), len(self.vocab)))


class TrainConfig(BaseModel):
    max_terms: int = 20000
    min_df: int = 2
    alpha: float = 3.0
    word_problem_copies: bool = True
    tree_iter: int = 400
    tree_depth: int = 3
    tree_learning_rate: float = 0.05
    tree_min_leaf: int = 40
    ridge_weight: float = 0.5
    min_pair_gap: float = MIN_PAIR_GAP
    folds: int = 5
    seed: int = 0


def _design_dense(dense: np.ndarray, wp: np.ndarray) -> np.ndarray:
    """[dense, is_wp * dense, is_wp] (the domain copy) before standardisation."""
    m = wp.astype(float)[:, None]
    return np.hstack([dense, dense * m, m])


def _flatten_trees(hgb: Any) -> TreeEnsemble:
    roots, feature, threshold, left, right, value = [], [], [], [], [], []
    depth = 0
    for predictors in hgb._predictors:  # one TreePredictor per iteration (single output)
        nodes = predictors[0].nodes
        off = len(feature)
        roots.append(off)
        for nd in nodes:
            leaf = bool(nd["is_leaf"])
            feature.append(-1 if leaf else int(nd["feature_idx"]))
            threshold.append(0.0 if leaf else float(nd["num_threshold"]))
            left.append(off if leaf else off + int(nd["left"]))
            right.append(off if leaf else off + int(nd["right"]))
            value.append(float(nd["value"]) if leaf else 0.0)
            depth = max(depth, int(nd["depth"]))
    base = float(np.ravel(hgb._baseline_prediction)[0])
    return TreeEnsemble(
        base=base,
        roots=roots,
        feature=feature,
        threshold=threshold,
        left=left,
        right=right,
        value=value,
        max_depth=depth,
    )


class _Trees:
    """Vectorised evaluation of a TreeEnsemble (numpy only)."""

    def __init__(self, t: TreeEnsemble) -> None:
        self.base = t.base
        self.roots = np.asarray(t.roots, dtype=np.int64)
        self.feature = np.asarray(t.feature, dtype=np.int64)
        self.threshold = np.asarray(t.threshold, dtype=float)
        self.left = np.asarray(t.left, dtype=np.int64)
        self.right = np.asarray(t.right, dtype=np.int64)
        self.value = np.asarray(t.value, dtype=float)
        self.max_depth = t.max_depth

    def predict(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        out = np.empty(len(x))
        for s in range(0, len(x), chunk):
            xc = x[s : s + chunk]
            node = np.broadcast_to(self.roots, (len(xc), len(self.roots))).copy()
            for _ in range(self.max_depth):
                f = self.feature[node]
                leaf = f < 0
                xv = np.take_along_axis(xc, np.where(leaf, 0, f), axis=1)
                nxt = np.where(xv <= self.threshold[node], self.left[node], self.right[node])
                node = np.where(leaf, node, nxt)
            out[s : s + chunk] = self.base + self.value[node].sum(axis=1)
        return out


def _fit(questions: Sequence[str], target: np.ndarray, cfg: TrainConfig) -> TrainedArtifact:
    try:
        from scipy import sparse
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("training needs scikit-learn: pip install 'effagent[bench]'") from e
    vec = _Vectorizer.fit(questions, cfg.max_terms, cfg.min_df)
    dense = np.array([dense_features(q) for q in questions])
    wp = np.array([looks_like_word_problem(q) for q in questions]) & cfg.word_problem_copies
    design = _design_dense(dense, wp)
    mu, sd = design.mean(axis=0), design.std(axis=0)
    sd[sd == 0] = 1.0
    text = vec.matrix(questions)
    parts = [text]
    if cfg.word_problem_copies:
        parts.append(sparse.csr_matrix(text.multiply(wp.astype(float)[:, None])))
    parts.append(sparse.csr_matrix((design - mu) / sd))
    x = sparse.hstack(parts).tocsr()
    ridge = Ridge(alpha=cfg.alpha).fit(x, target)
    coef = ridge.coef_
    n_terms = len(vec.vocab)
    wp_coef = coef[n_terms : 2 * n_terms] if cfg.word_problem_copies else np.zeros(n_terms)
    wp_idx = np.flatnonzero(np.abs(wp_coef) > 1e-9)
    ridge_pred = ridge.predict(x)

    hgb = HistGradientBoostingRegressor(
        max_iter=cfg.tree_iter,
        max_depth=cfg.tree_depth,
        learning_rate=cfg.tree_learning_rate,
        min_samples_leaf=cfg.tree_min_leaf,
        early_stopping=False,
        random_state=cfg.seed,
    ).fit(dense, target)
    trees = _flatten_trees(hgb)
    tree_pred = _Trees(trees).predict(dense)
    if not np.allclose(tree_pred, hgb.predict(dense), atol=1e-6):  # the flattening must be exact
        raise RuntimeError("flattened trees disagree with scikit-learn's predictions")

    w = cfg.ridge_weight
    rc, rs = float(ridge_pred.mean()), float(ridge_pred.std() or 1.0)
    tc, ts = float(tree_pred.mean()), float(tree_pred.std() or 1.0)
    raw = w * (ridge_pred - rc) / rs + (1 - w) * (tree_pred - tc) / ts
    inv = sorted(vec.vocab, key=vec.vocab.__getitem__)
    return TrainedArtifact(
        terms=inv,
        idf=[round(float(v), 6) for v in vec.idf],
        term_weights=[round(float(v), 7) for v in coef[:n_terms]],
        wp_term_index=[int(i) for i in wp_idx],
        wp_term_weights=[round(float(wp_coef[i]), 7) for i in wp_idx],
        dense_names=list(DENSE_FEATURES),
        dense_mean=[float(v) for v in mu],
        dense_scale=[float(v) for v in sd],
        dense_weights=[float(v) for v in coef[-design.shape[1] :]],
        intercept=float(ridge.intercept_),
        trees=trees,
        ridge_center=rc,
        ridge_scale=rs,
        trees_center=tc,
        trees_scale=ts,
        ridge_weight=w,
        raw_center=float(np.median(raw)),
        raw_scale=float(raw.std() or 1.0),
    )


class _Scorer:
    """Fast inference from an artifact: dict lookups, dot products and vectorised trees."""

    def __init__(self, art: TrainedArtifact) -> None:
        self.art = art
        self.vec = _Vectorizer({t: i for i, t in enumerate(art.terms)}, np.asarray(art.idf))
        self.w_terms = art.term_weights
        self.w_wp = dict(zip(art.wp_term_index, art.wp_term_weights, strict=True))
        self.dense_mean = np.asarray(art.dense_mean)
        self.dense_scale = np.asarray(art.dense_scale)
        self.w_dense = np.asarray(art.dense_weights)
        self.trees = _Trees(art.trees)

    def components(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(raw blend, ridge prediction, text part of the ridge, tree prediction) per prompt."""
        dense = np.array([dense_features(p) for p in prompts], dtype=float).reshape(len(prompts), -1)
        wp = np.array([looks_like_word_problem(p) for p in prompts], dtype=bool)
        text = np.empty(len(prompts))
        for k, p in enumerate(prompts):
            idx, val = self.vec.row(p)
            t = sum(self.w_terms[i] * v for i, v in zip(idx, val, strict=True))
            if wp[k]:
                t += sum(self.w_wp.get(i, 0.0) * v for i, v in zip(idx, val, strict=True))
            text[k] = t
        z = (_design_dense(dense, wp) - self.dense_mean) / self.dense_scale
        ridge = self.art.intercept + text + z @ self.w_dense
        tree = self.trees.predict(dense)
        a, w = self.art, self.art.ridge_weight
        raw = w * (ridge - a.ridge_center) / a.ridge_scale + (1 - w) * (tree - a.trees_center) / a.trees_scale
        return raw, ridge, text, tree

    def raw(self, prompts: Sequence[str]) -> np.ndarray:
        return self.components(prompts)[0]

    def score(self, raw: float) -> float:
        z = (raw - self.art.raw_center) / self.art.raw_scale
        return clamp01(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))


def fit_on(questions: Sequence[str], target: np.ndarray, cfg: TrainConfig | None = None) -> TrainedArtifact:
    """Fit the model's ridge + trees on any questions and per-question gain target (needs scikit-learn)."""
    return _fit(questions, np.asarray(target, dtype=float), cfg or TrainConfig())


def raw_scores(art: TrainedArtifact, prompts: Sequence[str]) -> list[float]:
    """The blended raw prediction per prompt (higher = more to gain from the stronger model)."""
    return [float(v) for v in _Scorer(art).raw(prompts)]


def pair_apgr_mean(scores: np.ndarray, y: np.ndarray, pairs: Iterable[tuple[int, int]]) -> float:
    return float(np.mean([apgr(scores, y[:, i], y[:, j]) for i, j in pairs]))


def train(
    train_path: Path | None = None, cfg: TrainConfig | None = None, *, cross_validate: bool = True
) -> tuple[TrainedArtifact, dict[str, float]]:
    """Fit the estimator on llmrouter_train.json; returns the artifact and 5-fold CV metrics (train only).

    cv_apgr_mean_over_pairs: mean APGR over the target's model pairs; cv_apgr_word_problems: the same on
    the train questions that ``looks_like_word_problem``, over the pairs whose accuracy on that subset
    differs by >= min_pair_gap; cv_apgr_weakest_vs_strongest: one pair, all questions.
    """
    cfg = cfg or TrainConfig()
    path = train_path or require("routing/llmrouter_train.json")
    recs = load_routing(path)
    models = sorted(recs[0].scores)
    questions = [r.question for r in recs]
    target, pairs = pair_gain_target([r.scores for r in recs], models, cfg.min_pair_gap)
    metrics: dict[str, float] = {"n_train": float(len(recs)), "n_pairs": float(len(pairs))}
    if cross_validate and cfg.folds > 1:
        y = np.array([[r.scores[m] for m in models] for r in recs])
        idx_pairs = [(models.index(a), models.index(b)) for a, b in pairs]
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(recs))
        oof = np.zeros(len(recs))
        for k in range(cfg.folds):
            held = order[k :: cfg.folds]
            fit_idx = np.setdiff1d(order, held)
            art = _fit([questions[i] for i in fit_idx], target[fit_idx], cfg)
            oof[held] = _Scorer(art).raw([questions[i] for i in held])
        metrics["cv_apgr_mean_over_pairs"] = pair_apgr_mean(oof, y, idx_pairs)
        wp = np.flatnonzero([looks_like_word_problem(q) for q in questions])
        metrics["n_word_problems"] = float(len(wp))
        wp_pairs = ordered_pairs(y[wp], cfg.min_pair_gap)
        if wp_pairs:
            metrics["cv_apgr_word_problems"] = pair_apgr_mean(oof[wp], y[wp], wp_pairs)
        w = int(np.argmin(y.mean(0)))
        s = int(np.argmax(y.mean(0)))
        metrics["cv_apgr_weakest_vs_strongest"] = pair_apgr_mean(oof, y, [(w, s)])
    art = _fit(questions, target, cfg)
    meta = {
        "trained_on": Path(path).name,
        "target": f"mean over model pairs (acc gap >= {cfg.min_pair_gap:.2f}) of y_strong - y_weak",
        "model": "0.5 z(ridge on tf-idf + dense features with a word-problem domain copy) + 0.5 z(boosted trees)",
        "pairs": [list(p) for p in pairs],
        "config": cfg.model_dump(),
        "metrics": metrics,
    }
    return art.model_copy(update={"meta": meta}), metrics


def save_artifact(art: TrainedArtifact, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(art.model_dump_json(), encoding="utf-8")
    return path


def load_artifact(path: Path | None = None) -> TrainedArtifact:
    p = Path(path) if path else ARTIFACT_PATH
    if not p.exists():
        raise FileNotFoundError(f"no trained artifact at {p}; run `effagent bench train-baseline`")
    raw = json.loads(p.read_text(encoding="utf-8"))
    if raw.get("version") != ARTIFACT_VERSION:
        raise ValueError(f"artifact {p} has version {raw.get('version')}, expected {ARTIFACT_VERSION}")
    return TrainedArtifact.model_validate(raw)


@lru_cache(maxsize=4)
def _cached_scorer(path: str) -> _Scorer:
    return _Scorer(load_artifact(Path(path)))


@lru_cache(maxsize=2048)  # an agent re-reads the same task every step: score it once
def _estimate_prompt(path: str, prompt: str) -> tuple[float, tuple[tuple[str, float], ...]]:
    sc = _cached_scorer(path)
    raw, ridge, text, tree = (float(v[0]) for v in sc.components([prompt]))
    w = sc.art.ridge_weight  # the gain both parts predict, weighted as the blend weights them
    signals = {"predicted_gain": w * ridge + (1 - w) * tree, "blend": raw, "ridge": ridge, "text": text, "trees": tree}
    return sc.score(raw), tuple(signals.items())


class TrainedEstimator:
    """Pre-call estimator from the shipped artifact. Score = sigmoid of the standardised blended prediction."""

    name = "trained"

    def __init__(self, artifact_path: Path | None = None) -> None:
        self.artifact_path = str(Path(artifact_path) if artifact_path else ARTIFACT_PATH)

    @property
    def _scorer(self) -> _Scorer:
        return _cached_scorer(self.artifact_path)

    def estimate(self, step: Step) -> Difficulty:
        score, signals = _estimate_prompt(self.artifact_path, step.prompt)
        return Difficulty(score=score, signals=dict(signals), estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        if not prompts:
            return []
        sc = self._scorer
        return [sc.score(float(r)) for r in sc.raw(prompts)]
