"""Cascade verifier (FrugalGPT-style): after the cheap tier answers, P(the cheap answer is wrong).

Not a pre-call estimator: it needs the answer. Signals, all task-agnostic text checks:

- ``no_final_answer``: no final-answer marker (``####``, ``\\boxed{}``, "answer is", "Answer:", ...)
  and no short concluding line.
- ``arithmetic_errors``: claims ``a op b ... = c`` and calculator annotations ``<<expr=c>>`` in the
  working, re-evaluated safely (numbers, + - * / x, parentheses); a wrong result is strong evidence.
- ``truncated``: the text stops mid-sentence / mid-number, or ends on an open ``<<`` / ``(`` / ``=``.
- ``hedging``: words such as "however", "assume", "approximately", "not possible", "cannot be
  determined", "round", "not enough information".
- ``final_not_in_work``: the final answer's number never appears earlier in the working.
- ``disagreement``: optional, when several cheap samples are given: share of samples whose final
  answer differs from the first.
- the pre-call difficulty of the prompt (default: the ``rule`` estimator, built once per verifier) as a weak
  prior.

The weights are set by hand (noisy-OR of per-signal error rates, a priori), not fitted: the only
recorded cheap answers (routellm_gsm8k) are the evaluation set. Measured results live in the replay
benchmark's output (``effagent bench replay``).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from effagent.records import clamp01

if TYPE_CHECKING:
    from effagent.difficulty.base import Estimator

_FINAL_MARKERS = re.compile(
    r"####|\\boxed\{|\banswer\s*(?:is|:|=)|\bfinal answer\b|\btherefore\b|\bthus\b|\bso,? the\b|\bin total\b",
    re.I,
)
_HEDGES = re.compile(
    r"\b(however|assum\w*|approximately|approx\.|roughly|about|not possible|impossible|cannot be determined|"
    r"can't be determined|not enough information|insufficient information|unclear|ambiguous|round(?:ed|ing)?"
    r"|i think|it seems|might|perhaps|probably|i'm not sure|not sure|estimate[sd]?)\b",
    re.I,
)
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?%?"
_CALC = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,40})>>")
_CLAIM = re.compile(rf"((?:\(?\s*{_NUMBER}\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*{_NUMBER}\s*\)?)\s*=\s*({_NUMBER})(?![\d/])")
_NUM_ONLY = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_OPS: dict[type, object] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _num(text: str) -> float | None:
    t = text.replace("$", "").replace(",", "").strip()
    t = t.rstrip("%").strip()
    try:
        v = float(t)
    except ValueError:
        return None
    return v


def _safe_eval(expr: str) -> float | None:
    """Evaluate + - * / on plain numbers; None for anything else."""
    e = expr.replace("$", "").replace("×", "*").replace("÷", "/").replace("%", "")
    e = re.sub(r"(?<=\d),(?=\d{3}\b)", "", e)
    e = re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", e)
    if not re.fullmatch(r"[\d.\s+\-*/()]+", e) or not re.search(r"\d", e):
        return None
    try:
        tree = ast.parse(e.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))  # type: ignore[operator]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))  # type: ignore[operator]
        raise ValueError("unsupported")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _close(a: float, b: float) -> bool:
    if math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-2):
        return True
    # people round: accept b equal to a rounded to 0-2 decimals
    return any(math.isclose(round(a, d), b, abs_tol=1e-9) for d in (0, 1, 2))


def arithmetic_check(text: str) -> tuple[int, int]:
    """(claims checked, claims wrong) over ``a op b = c`` statements and ``<<expr=c>>`` annotations."""
    checked = wrong = 0
    seen: set[tuple[str, str]] = set()
    found = [(m.group(1), m.group(2)) for m in _CALC.finditer(text)]
    found += [(m.group(1), m.group(2)) for m in _CLAIM.finditer(_CALC.sub(" ", text))]
    for expr, res in found:
        key = (expr.replace(" ", ""), res.strip())
        if key in seen:
            continue
        seen.add(key)
        lhs, rhs = _safe_eval(expr), _num(res)
        if lhs is None or rhs is None:
            continue
        checked += 1
        if not _close(lhs, rhs):
            wrong += 1
    return checked, wrong


def final_answer(text: str) -> str | None:
    """The final answer's text, when a marker or a concluding line gives one."""
    m = re.search(r"####\s*(.+)", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"\\boxed\{([^{}]*)\}", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"(?:final answer|answer)\s*(?:is|:|=)\s*(.+)", text, re.I)
    if m:
        return m.group(1).strip()
    return None


def _last_number(text: str) -> float | None:
    nums = _NUM_ONLY.findall(text)
    return _num(nums[-1]) if nums else None


def is_truncated(text: str) -> bool:
    t = text.rstrip()
    if not t:
        return True
    if re.search(r"(<<[^>]*|[=(+\-*/,:]|\band|\bthe|\bof|\bto)$", t, re.I):
        return True
    last_line = t.splitlines()[-1]
    if re.search(r"\d,\d{1,2}$", last_line):  # "130,00"
        return True
    if t[-1] in ".!?)\"'`*]}$%" or t[-1].isdigit():
        return False
    return len(last_line.split()) > 3  # a long final line that stops without punctuation


class VerifierSignals(BaseModel):
    no_final_answer: float = 0.0
    arithmetic_checked: int = 0
    arithmetic_errors: int = 0
    truncated: float = 0.0
    hedges: int = 0
    final_not_in_work: float = 0.0
    disagreement: float = 0.0
    log_length: float = 0.0
    prior: float = 0.5


class VerifierWeights(BaseModel):
    """Per-signal 'probability the answer is wrong given this signal fires', combined by noisy-OR."""

    base: float = 0.10
    no_final_answer: float = 0.45
    arithmetic_error: float = 0.70
    truncated: float = 0.80
    hedge: float = 0.20  # per hedge word, at most three counted
    final_not_in_work: float = 0.30
    disagreement: float = 0.80  # scaled by the share of disagreeing samples
    long_answer: float = 0.15  # per doubling of length above 250 tokens
    prior: float = 0.35  # scaled by the pre-call difficulty


class VerifierResult(BaseModel):
    score: float = Field(ge=0.0, le=1.0)
    signals: VerifierSignals


class CascadeVerifier:
    """Scores a cheap answer; ``score`` = P(wrong). Escalate to the strong tier when it is high."""

    name = "verifier"

    def __init__(self, weights: VerifierWeights | None = None, prior_estimator: str | None = "rule") -> None:
        self.weights = weights or VerifierWeights()
        self.prior_estimator = prior_estimator
        self._prior: Estimator | None = None  # built once, here: every verify scores its prompt with it
        if prior_estimator:
            from effagent.difficulty.combine import get_estimator

            self._prior = get_estimator(prior_estimator)

    def signals(self, answer: str, samples: Sequence[str] = (), prior: float = 0.5) -> VerifierSignals:
        fa = final_answer(answer)
        checked, wrong = arithmetic_check(answer)
        concluding = bool(_FINAL_MARKERS.search(answer[-300:])) if answer else False
        fin_num = _last_number(fa) if fa else None
        work = answer[: answer.rfind(fa)] if fa else answer
        not_in_work = 0.0
        if fin_num is not None and work.strip():
            nums = [_num(n) for n in _NUM_ONLY.findall(work)]
            not_in_work = float(not any(n is not None and _close(n, fin_num) for n in nums))
        disagreement = 0.0
        if samples:
            ref = _last_number(final_answer(answer) or answer)
            others = [_last_number(final_answer(s) or s) for s in samples]
            disagreement = sum(o != ref for o in others) / len(others)
        n_tokens = max(1, len(answer.split()))
        return VerifierSignals(
            no_final_answer=float(fa is None and not concluding),
            arithmetic_checked=checked,
            arithmetic_errors=wrong,
            truncated=float(is_truncated(answer)),
            hedges=len(_HEDGES.findall(answer)),
            final_not_in_work=not_in_work,
            disagreement=disagreement,
            log_length=math.log2(n_tokens),
            prior=prior,
        )

    def combine(self, s: VerifierSignals) -> float:
        w = self.weights
        parts = [
            w.base,
            w.no_final_answer * s.no_final_answer,
            1.0 - (1.0 - w.arithmetic_error) ** s.arithmetic_errors,
            w.truncated * s.truncated,
            1.0 - (1.0 - w.hedge) ** min(s.hedges, 3),
            w.final_not_in_work * s.final_not_in_work,
            w.disagreement * s.disagreement,
            min(0.9, w.long_answer * max(0.0, s.log_length - math.log2(250 / 1.3))),
            w.prior * s.prior,
        ]
        keep = 1.0
        for p in parts:
            keep *= 1.0 - clamp01(p)
        return clamp01(1.0 - keep)

    def verify(self, prompt: str, answer: str, samples: Sequence[str] = ()) -> VerifierResult:
        prior = self._priors([prompt])[0]
        s = self.signals(answer, samples, prior)
        return VerifierResult(score=self.combine(s), signals=s)

    def _priors(self, prompts: list[str]) -> list[float]:
        if self._prior is None:
            return [0.5] * len(prompts)
        return self._prior.score_prompts(prompts)

    def score_answers(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Batch: P(wrong) for each (prompt, cheap answer)."""
        if len(prompts) != len(answers):
            raise ValueError("prompts and answers differ in length")
        priors = self._priors(prompts)
        return [self.combine(self.signals(a, (), p)) for a, p in zip(answers, priors, strict=True)]
