"""Trained difficulty estimator: predicts how much a stronger model gains over a weaker one on a prompt.

Fit only on ``llmrouter_train.json`` (5,608 questions x 9 open models, 0/1 correctness).

Target. For every ordered model pair (weak w, strong s) whose train accuracy differs by >= 0.10
(25 pairs), the per-question gain ``y_s - y_w`` (+1 where the weak model fails and the strong one
succeeds, -1 the other way round); the target is the mean gain over the pairs. Sorting by it is the
optimal routing order for an unknown cheap/strong pair. "Mean failure rate" (hard for everyone) was the
previous target and routes worse than random.

Features. Word unigrams+bigrams TF-IDF (sublinear tf, smooth idf, l2 rows, 20k terms, min_df 2) plus 20
standardised prompt-shape features (log length, numbers, sentences, code / multiple-choice / LaTeX /
fraction / percent flags ...). Model: ridge (alpha 1). Inference is pure Python + numpy (dict lookups),
~0.1 ms per prompt; the artifact is plain JSON.

Selection by 5-fold CV on the train set only (mean APGR over the 25 pairs, "cv_all"; and over the
898 math word problems of train, "cv_mwp"); the held-out numbers were looked at afterwards:

| variant                                  | cv_all | cv_mwp | GSM8K APGR | GSM8K strong@95% | test APGR |
|------------------------------------------|--------|--------|------------|------------------|-----------|
| words, target mean failure (old)         | 0.404  |        | 0.487      | 0.81             | 0.418     |
| words, target P(weak fails, strong ok)   | 0.643  |        | 0.575      | 0.73             | 0.618     |
| words, target mean gain                  | 0.643  | 0.686  | 0.592      | 0.69             | 0.628     |
| shape features only, mean gain           | 0.603  |        | 0.568      | 0.72             | 0.554     |
| words + shape, mean gain  (chosen)       | 0.646  |        | 0.594      | 0.70             | 0.629     |
| char 2-4grams, mean gain                 | 0.639  |        | 0.540      | 0.76             | 0.608     |
| words, per-model logistic -> mean gain   | 0.645  |        | 0.579      | 0.69             | 0.599     |
| words, gain small(<=9B)->large(>=49B)    | 0.512  |        | 0.542      | 0.76             | 0.572     |
| words + within-neighbourhood shape model | 0.645  | 0.687  | 0.591      | 0.70             | 0.623     |
| words + 0.5 x z(log length)              | 0.627  | 0.681  | 0.619      | 0.64             | 0.601     |
| MiniLM-L6 embeddings (384d), ridge       | 0.646  | 0.680  | 0.488-0.512| 0.82             | 0.601     |

(test = llmrouter_test weakest vs strongest: llama3-chatqa-1.5-8b vs llama-3.1-nemotron-51b.)
Embeddings were no better on CV, worse on GSM8K and cost ~100 ms per prompt on 2 cores plus torch, so
there is no embedding variant. Adding a length prior helps GSM8K but lowers the train CV, so it is
not in the default (it can be combined at run time: ``combine.WeightedEstimator``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from effagent.difficulty.base import Difficulty, Step, clamp01

DATA_ENV = "EFFAGENT_DATA_DIR"
ARTIFACT_PATH = Path(__file__).resolve().parent / "artifacts" / "trained_v1.json"
ARTIFACT_VERSION = 1
MIN_PAIR_GAP = 0.10

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_NUM = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?%?")
_SENT_END = re.compile(r"[.!?](?:\s|$)")
_FRACTION = re.compile(r"\d+/\d+")
_LATEX = re.compile(r"\\frac|\\sqrt|\$[^$]+\$|\^")
_CODE = re.compile(r"\bdef |```|\breturn\b|python|function")
_CHOICES = re.compile(r"\n\s*\(?[a-e][\).:]\s")
_RATE = re.compile(r"\b(percent|ratio|average|rate|speed|per)\b")
_MULT = re.compile(r"\b(twice|half|times|third|quarter|double|triple)\b")
_EACH = re.compile(r"\b(each|every)\b")

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


def data_dir() -> Path:
    """Where the shared data lives: $EFFAGENT_DATA_DIR, else ``../shared/data`` from the repo root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root.parent / "shared" / "data").resolve()


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


def terms(prompt: str) -> list[str]:
    """Lower-cased word unigrams and adjacent bigrams (sklearn's default token pattern)."""
    toks = _TOKEN.findall(prompt.lower())
    return toks + [f"{a} {b}" for a, b in pairwise(toks)]


def pair_gain_target(
    scores: Sequence[dict[str, float]], models: Sequence[str], min_gap: float = MIN_PAIR_GAP
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Mean over (weak, strong) pairs with accuracy gap >= min_gap of ``y_strong - y_weak``."""
    y = np.array([[s[m] for m in models] for s in scores], dtype=float)
    acc = y.mean(axis=0)
    pairs = [(i, j) for i in range(len(models)) for j in range(len(models)) if acc[j] - acc[i] >= min_gap]
    if not pairs:
        raise ValueError("no model pair differs enough in accuracy to define a gain target")
    target = np.mean([y[:, j] - y[:, i] for i, j in pairs], axis=0)
    return target, [(models[i], models[j]) for i, j in pairs]


class TrainedArtifact(BaseModel):
    """Everything inference needs, as plain JSON."""

    model_config = ConfigDict(frozen=True)

    version: int = ARTIFACT_VERSION
    terms: list[str]
    idf: list[float]
    term_weights: list[float]
    shape_names: list[str]
    shape_mean: list[float]
    shape_scale: list[float]
    shape_weights: list[float]
    intercept: float
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
    alpha: float = 1.0
    min_pair_gap: float = MIN_PAIR_GAP
    folds: int = 5
    seed: int = 0


def _fit(questions: Sequence[str], target: np.ndarray, cfg: TrainConfig) -> TrainedArtifact:
    try:
        from scipy import sparse
        from sklearn.linear_model import Ridge
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("training needs scikit-learn: pip install 'effagent[bench]'") from e
    vec = _Vectorizer.fit(questions, cfg.max_terms, cfg.min_df)
    shape = np.array([shape_features(q) for q in questions])
    mu, sd = shape.mean(axis=0), shape.std(axis=0)
    sd[sd == 0] = 1.0
    x = sparse.hstack([vec.matrix(questions), sparse.csr_matrix((shape - mu) / sd)]).tocsr()
    ridge = Ridge(alpha=cfg.alpha).fit(x, target)
    coef = ridge.coef_
    n_terms = len(vec.vocab)
    raw = ridge.predict(x)
    inv = sorted(vec.vocab, key=vec.vocab.__getitem__)
    return TrainedArtifact(
        terms=inv,
        idf=[round(float(v), 6) for v in vec.idf],
        term_weights=[round(float(v), 7) for v in coef[:n_terms]],
        shape_names=list(SHAPE_FEATURES),
        shape_mean=[float(v) for v in mu],
        shape_scale=[float(v) for v in sd],
        shape_weights=[float(v) for v in coef[n_terms:]],
        intercept=float(ridge.intercept_),
        raw_center=float(np.median(raw)),
        raw_scale=float(raw.std() or 1.0),
    )


class _Scorer:
    """Fast inference from an artifact: dict lookups and a dot product."""

    def __init__(self, art: TrainedArtifact) -> None:
        self.art = art
        self.vec = _Vectorizer({t: i for i, t in enumerate(art.terms)}, np.asarray(art.idf))
        self.w_terms = art.term_weights
        self.shape_mean = np.asarray(art.shape_mean)
        self.shape_scale = np.asarray(art.shape_scale)
        self.w_shape = np.asarray(art.shape_weights)

    def raw(self, prompt: str) -> tuple[float, float, float]:
        idx, val = self.vec.row(prompt)
        text_part = sum(self.w_terms[i] * v for i, v in zip(idx, val, strict=True))
        shape = (np.asarray(shape_features(prompt)) - self.shape_mean) / self.shape_scale
        shape_part = float(shape @ self.w_shape)
        return self.art.intercept + text_part + shape_part, text_part, shape_part

    def score(self, raw: float) -> float:
        z = (raw - self.art.raw_center) / self.art.raw_scale
        return clamp01(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))


def pair_apgr_mean(scores: np.ndarray, y: np.ndarray, pairs: Iterable[tuple[int, int]]) -> float:
    from effagent.bench.replay import apgr

    return float(np.mean([apgr(scores, y[:, i], y[:, j]) for i, j in pairs]))


def train(
    train_path: Path | None = None, cfg: TrainConfig | None = None, *, cross_validate: bool = True
) -> tuple[TrainedArtifact, dict[str, float]]:
    """Fit the estimator on llmrouter_train.json; returns the artifact and 5-fold CV metrics (train only)."""
    cfg = cfg or TrainConfig()
    path = train_path or data_dir() / "routing" / "llmrouter_train.json"
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
            sc = _Scorer(art)
            oof[held] = [sc.raw(questions[i])[0] for i in held]
        metrics["cv_apgr_mean_over_pairs"] = pair_apgr_mean(oof, y, idx_pairs)
        w = int(np.argmin(y.mean(0)))
        s = int(np.argmax(y.mean(0)))
        metrics["cv_apgr_weakest_vs_strongest"] = pair_apgr_mean(oof, y, [(w, s)])
    art = _fit(questions, target, cfg)
    meta = {
        "trained_on": Path(path).name,
        "target": f"mean over model pairs (acc gap >= {cfg.min_pair_gap:.2f}) of y_strong - y_weak",
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
        raise FileNotFoundError(f"no trained artifact at {p}; run `effagent difficulty train`")
    art = TrainedArtifact.model_validate_json(p.read_text(encoding="utf-8"))
    if art.version != ARTIFACT_VERSION:
        raise ValueError(f"artifact {p} has version {art.version}, expected {ARTIFACT_VERSION}")
    return art


@lru_cache(maxsize=4)
def _cached_scorer(path: str) -> _Scorer:
    return _Scorer(load_artifact(Path(path)))


class TrainedEstimator:
    """Pre-call estimator from the shipped artifact. Score = sigmoid of the standardised predicted gain."""

    name = "trained"

    def __init__(self, artifact_path: Path | None = None) -> None:
        self.artifact_path = str(Path(artifact_path) if artifact_path else ARTIFACT_PATH)

    @property
    def _scorer(self) -> _Scorer:
        return _cached_scorer(self.artifact_path)

    def estimate(self, step: Step) -> Difficulty:
        sc = self._scorer
        raw, text_part, shape_part = sc.raw(step.prompt)
        return Difficulty(
            score=sc.score(raw),
            signals={"predicted_gain": raw, "text": text_part, "shape": shape_part},
            estimator=self.name,
        )

    def score_prompts(self, prompts: list[str]) -> list[float]:
        sc = self._scorer
        return [sc.score(sc.raw(p)[0]) for p in prompts]
