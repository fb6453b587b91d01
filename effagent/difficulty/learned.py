"""A difficulty model learned from a user's own outcomes, leaning on the default rule when it knows little.

``effagent difficulty learn --out MODEL`` reads JSON lines ``{"id", "prompt", "cheap_correct", "strong_correct"}``
and fits, in closed form with numpy alone, a ridge regression of the gain ``strong_correct - cheap_correct`` on

- hashed word unigrams and bigrams (``HASH_DIM`` buckets, sublinear tf x idf, rows l2-normalised), and
- the default rule's cues (length, specialised vocabulary, quantities, clauses), standardised;

and, from rows that name the step's ``role`` (outcome lines written by effagent do), a shift per role
(:func:`role_shifts`) added to an agent step's score on top of the rule's own role shift.

Score = the rule's squash of the blend ``z(rule_raw) + shrink * z(ridge)``, mapped back to the rule's raw scale
(the rule's mean and s.d. on the rows), so scores keep the default's range and a policy's band boundaries keep
their meaning; with ``shrink`` 0 it is exactly the default. ``shrink`` = (the blend weight with the best
cross-validated APGR on the rows) x n / (n + ``PRIOR_ROWS``), so a few hundred rows move the order a little and
thousands move it more; rows that teach nothing (no cross-validated gain over the default) leave it at 0. The
model file is plain JSON, written atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from effagent.difficulty.base import Difficulty, Step
from effagent.difficulty.rule import prompt_cues, prompt_raw, squash, step_raw
from effagent.errors import EffagentError
from effagent.evaluation import apgr

MODEL_KIND = "effagent-learned-difficulty"
MODEL_VERSION = 1
HASH_DIM = 2048  # 4096 buckets routed no better on the recorded sets and learned 4x slower
ALPHA = 3.0
PRIOR_ROWS = 300
FOLDS = 5
BLEND_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class LearnError(EffagentError, ValueError):
    """Input to ``learn`` or a model file that cannot be used; the message names the line or file."""


class LabeledPrompt(BaseModel):
    """One labelled prompt: did the cheap tier and the strong tier answer it correctly?"""

    model_config = ConfigDict(extra="allow")

    id: Any = None
    prompt: str
    cheap_correct: bool
    strong_correct: bool


class LearnedModel(BaseModel):
    """The model file."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["effagent-learned-difficulty"] = MODEL_KIND
    version: int = MODEL_VERSION
    base: str = "rule"
    hash_dim: int = HASH_DIM
    idf: list[float]
    text_weights: list[float]
    cue_names: list[str]
    cue_mean: list[float]
    cue_scale: list[float]
    cue_weights: list[float]
    intercept: float
    pred_mean: float
    pred_scale: float
    base_mean: float  # mean and s.d. of the rule's raw sum on the rows
    base_scale: float
    shrink: float
    blend_scale: float  # s.d. of the blend z(rule) + shrink * z(ridge) on the rows
    rows: int
    cheap_accuracy: float
    strong_accuracy: float
    cv_apgr: dict[str, float]  # blend weight -> cross-validated APGR on the rows
    role_shift: dict[str, float] = {}  # step role -> raw-score shift learned from the rows that name a role


ROLE_PRIOR_ROWS = 50  # a role's shift counts n / (n + this) of what its rows say


def role_shifts(roles: Sequence[str | None], gain: np.ndarray, base_scale: float) -> dict[str, float]:
    """Per step role (outcome lines carry ``role``): how much more (or less) the strong tier gains over the cheap
    one on that role's rows than on all rows, in the rule's raw units (the gain's s.d. maps to the rule's),
    shrunk toward 0 for roles with few rows. A role the cheap tier does as well on moves its steps down."""
    named = [(r, g) for r, g in zip(roles, gain, strict=True) if isinstance(r, str) and r]
    if not named:
        return {}
    mean, sd = float(gain.mean()), max(float(gain.std()), 0.1)
    out: dict[str, float] = {}
    for role in sorted({r for r, _ in named}):
        g = np.array([v for r, v in named if r == role])
        out[role] = round((float(g.mean()) - mean) / sd * base_scale * len(g) / (len(g) + ROLE_PRIOR_ROWS), 6)
    return out


# ---------------------------------------------------------------- input


def parse_outcomes(lines: Sequence[str], source: str = "stdin") -> list[LabeledPrompt]:
    """Validate every line; the first bad one raises a LearnError naming it and what to change."""
    out: list[LabeledPrompt] = []
    for n, line in enumerate(lines, start=1):
        where = f"{source} line {n}"
        if not line.strip():
            raise LearnError(f"{where}: empty line; every line must be a JSON object "
                             '{"id": ..., "prompt": "...", "cheap_correct": true|false, "strong_correct": true|false}')
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LearnError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise LearnError(f"{where}: expected a JSON object with prompt, cheap_correct and strong_correct")
        missing = [k for k in ("prompt", "cheap_correct", "strong_correct") if k not in obj]
        if missing:
            raise LearnError(f"{where}: missing field(s) {', '.join(missing)}")
        for k in ("cheap_correct", "strong_correct"):
            if not isinstance(obj[k], bool):
                raise LearnError(f"{where}: {k} must be true or false (a JSON boolean), got {json.dumps(obj[k])}")
        if not isinstance(obj["prompt"], str):
            raise LearnError(f"{where}: prompt must be a string, got {type(obj['prompt']).__name__}")
        try:
            out.append(LabeledPrompt.model_validate(obj))
        except ValidationError as e:  # pragma: no cover - the checks above catch what a user can write
            raise LearnError(f"{where}: {e.errors()[0]['msg']}") from None
    if not out:
        raise LearnError(f"{source}: no outcomes; give at least one JSON line")
    return out


def merge_labels(outcomes: Sequence[LabeledPrompt]) -> list[LabeledPrompt]:
    """Outcome files from production (``learning.outcomes``) may label one step twice: ``"label": "agreement"``
    from a shadow call and ``"label": "outcome"`` from ``record_outcome``. A step's outcome (what really happened)
    replaces its agreement label; every other row is kept as it is, in order."""
    def key(o: LabeledPrompt) -> str | None:
        return None if o.id is None else json.dumps(o.id, sort_keys=True, default=str)

    told = {key(o) for o in outcomes if getattr(o, "label", None) == "outcome" and key(o) is not None}
    return [o for o in outcomes if not (getattr(o, "label", None) == "agreement" and key(o) in told)]


# ---------------------------------------------------------------- features


def _terms(prompt: str) -> list[str]:
    toks = _TOKEN.findall(prompt.lower())
    return toks + [f"{a} {b}" for a, b in pairwise(toks)]


def _bucket(term: str, dim: int) -> int:
    return zlib.crc32(term.encode("utf-8")) % dim


def _counts(prompts: Sequence[str], dim: int) -> np.ndarray:
    """Sublinear term counts per hash bucket (float32, dense)."""
    x = np.zeros((len(prompts), dim), dtype=np.float32)
    for i, p in enumerate(prompts):
        c = Counter(_bucket(t, dim) for t in _terms(p))
        if c:
            idx = np.fromiter(c.keys(), dtype=np.int64, count=len(c))
            val = np.fromiter(c.values(), dtype=np.float32, count=len(c))
            x[i, idx] = 1.0 + np.log(val)
    return x


def _tfidf(counts: np.ndarray, idf: np.ndarray) -> np.ndarray:
    x = counts * idf.astype(np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return x / norm


def _cues(prompts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    rows = [prompt_cues(p) for p in prompts]
    names = list(rows[0]) if rows else list(prompt_cues(""))
    return np.array([[r[k] for k in names] for r in rows], dtype=float).reshape(len(prompts), len(names)), names


def _base_raw(prompts: Sequence[str]) -> np.ndarray:
    return np.array([prompt_raw(p)[0] for p in prompts], dtype=float)


class _Gram:
    """Ridge regressions (unpenalised intercept) on row subsets of one design matrix, in closed form: the Gram
    matrix is computed once (float32 products, float64 solves) and a subset's is the whole minus the rows left
    out, so cross-validation costs about two Gram products instead of one per fold. Dual form when the subset
    has fewer rows than columns."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x.astype(np.float32, copy=False)
        self.y = np.asarray(y, dtype=np.float64)
        n, d = self.x.shape
        self.primal = n >= d
        if self.primal:
            self.g = (self.x.T @ self.x).astype(np.float64)
            self.s = self.x.sum(axis=0, dtype=np.float64)
            self.xy = self.x.T.astype(np.float64) @ self.y

    def fit(self, rows: np.ndarray | None, alpha: float) -> tuple[np.ndarray, float]:
        """(weights, intercept) fit on ``rows`` (None: all rows)."""
        idx = np.arange(len(self.y)) if rows is None else np.asarray(rows)
        n = len(idx)
        y = self.y[idx]
        ym = float(y.mean())
        if self.primal and n >= self.x.shape[1]:
            if rows is None or n == len(self.y):
                g, s, xy = self.g, self.s, self.xy
            else:
                out = np.setdiff1d(np.arange(len(self.y)), idx)
                xo = self.x[out]
                g = self.g - (xo.T @ xo).astype(np.float64)
                s = self.s - xo.sum(axis=0, dtype=np.float64)
                xy = self.xy - xo.T.astype(np.float64) @ self.y[out]
            m = s / n
            a = g - n * np.outer(m, m)
            a[np.diag_indices_from(a)] += alpha
            w = np.linalg.solve(a, xy - n * m * ym)
            return w, ym - float(m @ w)
        xs = self.x[idx]
        m32 = xs.mean(axis=0)
        xc = xs - m32
        k = (xc @ xc.T).astype(np.float64)
        k[np.diag_indices_from(k)] += alpha
        w = xc.T.astype(np.float64) @ np.linalg.solve(k, y - ym)
        return w, ym - float(m32.astype(np.float64) @ w)


def _zs(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std() or 1.0)


def _safe_apgr(scores: np.ndarray, cheap: np.ndarray, strong: np.ndarray) -> float | None:
    if math.isclose(float(cheap.mean()), float(strong.mean())):
        return None
    return apgr(scores, cheap, strong)


def learn(outcomes: Sequence[LabeledPrompt], *, seed: int = 0) -> LearnedModel:
    """Fit the model on labelled outcomes (see the module docstring)."""
    if not outcomes:
        raise LearnError("no outcomes to learn from")
    prompts = [o.prompt for o in outcomes]
    cheap = np.array([o.cheap_correct for o in outcomes], dtype=float)
    strong = np.array([o.strong_correct for o in outcomes], dtype=float)
    gain = strong - cheap
    n = len(prompts)
    counts = _counts(prompts, HASH_DIM)
    df = (counts > 0).sum(axis=0)
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    text = _tfidf(counts, idf)
    cues, names = _cues(prompts)
    cmu, csd = cues.mean(axis=0), cues.std(axis=0)
    csd[csd == 0] = 1.0
    x = np.hstack([text, ((cues - cmu) / csd).astype(np.float32)])
    base = _base_raw(prompts)
    b_mu, b_sd = _zs(base)

    # cross-validated blend weight: out-of-fold ridge predictions blended with the rule
    cv: dict[str, float] = {}
    best = 0.0
    folds = min(FOLDS, n)
    if folds >= 2 and np.any(gain != 0):
        gram = _Gram(x, gain)
        order = np.random.default_rng(seed).permutation(n)
        oof = np.zeros(n)
        for k in range(folds):
            held = order[k::folds]
            fit = np.setdiff1d(order, held)
            if np.all(gain[fit] == gain[fit][0]):
                continue
            w, b = gram.fit(fit, ALPHA)
            oof[held] = x[held] @ w + b
        o_mu, o_sd = _zs(oof)
        zb = (base - b_mu) / b_sd
        zo = (oof - o_mu) / o_sd
        scored = {lam: _safe_apgr(zb + lam * zo, cheap, strong) for lam in BLEND_GRID}
        cv = {f"{lam:g}": v for lam, v in scored.items() if v is not None}
        if cv:
            best = max((lam for lam in BLEND_GRID if scored[lam] is not None),
                       key=lambda lam: (scored[lam], -lam))  # type: ignore[arg-type]
    if np.all(gain == gain[0]):
        w, b = np.zeros(x.shape[1]), float(gain.mean())
    else:
        w, b = (gram if folds >= 2 and np.any(gain != 0) else _Gram(x, gain)).fit(None, ALPHA)
    pred = x @ w + b
    p_mu, p_sd = _zs(pred)
    shrink = float(best * n / (n + PRIOR_ROWS))
    blend_sd = float(((base - b_mu) / b_sd + shrink * (pred - p_mu) / p_sd).std() or 1.0)
    return LearnedModel(
        hash_dim=HASH_DIM,
        idf=[round(float(v), 5) for v in idf],
        text_weights=[round(float(v), 7) for v in w[:HASH_DIM]],
        cue_names=names,
        cue_mean=[float(v) for v in cmu],
        cue_scale=[float(v) for v in csd],
        cue_weights=[float(v) for v in w[HASH_DIM:]],
        intercept=float(b),
        pred_mean=p_mu,
        pred_scale=p_sd,
        base_mean=b_mu,
        base_scale=b_sd,
        shrink=shrink,
        blend_scale=blend_sd,
        rows=n,
        cheap_accuracy=float(cheap.mean()),
        strong_accuracy=float(strong.mean()),
        cv_apgr=cv,
        role_shift=role_shifts([getattr(o, "role", None) for o in outcomes], gain, b_sd),
    )


# ---------------------------------------------------------------- model files


def save_model(model: LearnedModel, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a temporary file in the same folder, renamed over ``path`` once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file would be (mkstemp makes it private)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(model.model_dump_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | os.PathLike[str]) -> LearnedModel:
    from effagent.files import InputFileError, read_text

    p = Path(path)
    if not p.exists():
        raise LearnError(f"{p}: no such model file; write one with `effagent difficulty learn --out {p}`")
    try:
        raw = json.loads(read_text(p, "model file", 256 << 20))  # never blocks on a FIFO
    except InputFileError as e:
        raise LearnError(str(e)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise LearnError(f"{p}: not a learned difficulty model ({e}); write one with `effagent difficulty learn`"
                         ) from None
    if not isinstance(raw, dict) or raw.get("kind") != MODEL_KIND:
        raise LearnError(f"{p}: not a learned difficulty model (written by `effagent difficulty learn`)")
    if raw.get("version") != MODEL_VERSION:
        raise LearnError(f"{p}: model version {raw.get('version')}, this effagent reads version {MODEL_VERSION}; "
                         "learn it again from the outcomes with `effagent difficulty learn`")
    try:
        model = LearnedModel.model_validate(raw)
    except ValidationError as e:
        raise LearnError(f"{p}: damaged model file ({e.error_count()} field errors); learn it again") from None
    if len(model.idf) != model.hash_dim or len(model.text_weights) != model.hash_dim:
        raise LearnError(f"{p}: damaged model file (vector sizes differ from hash_dim); learn it again")
    return model


class _Scorer:
    def __init__(self, m: LearnedModel) -> None:
        self.m = m
        self.idf = np.asarray(m.idf, dtype=np.float32)
        self.w_text = np.asarray(m.text_weights)
        self.cmu, self.csd = np.asarray(m.cue_mean), np.asarray(m.cue_scale)
        self.w_cue = np.asarray(m.cue_weights)

    def raw(self, prompts: Sequence[str]) -> np.ndarray:
        """The blended raw sum (rule units) per prompt."""
        base = _base_raw(prompts)
        if self.m.shrink == 0.0 or not prompts:
            return base
        out = np.empty(len(prompts))
        for s in range(0, len(prompts), 2048):  # bounded memory for large batches
            chunk = prompts[s : s + 2048]
            text = _tfidf(_counts(chunk, self.m.hash_dim), self.idf)
            cues, _ = _cues(chunk)
            pred = text @ self.w_text + ((cues - self.cmu) / self.csd) @ self.w_cue + self.m.intercept
            out[s : s + len(chunk)] = (pred - self.m.pred_mean) / self.m.pred_scale
        m = self.m
        blend = (base - m.base_mean) / m.base_scale + m.shrink * out
        return m.base_mean + m.base_scale * blend / m.blend_scale


def score_with(model: LearnedModel, prompts: Sequence[str]) -> list[float]:
    """Scores of ``prompts`` under a model in memory (what ``LearnedEstimator`` does with a model file)."""
    return [squash(float(r)) for r in _Scorer(model).raw(prompts)]


@lru_cache(maxsize=8)
def _scorer(path: str, mtime: float) -> _Scorer:
    return _Scorer(load_model(path))


class LearnedEstimator:
    """Scores with a model file from ``effagent difficulty learn``; the run's signals come from the rule."""

    name = "learned"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(Path(path).expanduser())
        self._scorer()  # fail now, with the file named, not on the first step

    def _scorer(self) -> _Scorer:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            mtime = 0.0
        return _scorer(self.path, mtime)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [squash(float(r)) for r in self._scorer().raw(prompts)]

    def estimate(self, step: Step) -> Difficulty:
        raw, signals = step_raw(step)
        prompt = step.prompt
        scorer = self._scorer()
        shift = float(scorer.raw([prompt])[0] - _base_raw([prompt])[0])
        signals["learned_shift"] = shift
        role = scorer.m.role_shift.get(step.role, 0.0)
        if role:
            signals["learned_role_shift"] = role
            shift += role
        return Difficulty(score=squash(raw + shift), signals=signals, estimator=self.name)
