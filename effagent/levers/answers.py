"""Answer extraction: turn a completion into a comparable answer (for voting and for probe agreement).

An extractor maps text to a normalised answer string, or None when the text holds no answer of its kind.
Built-ins, by name: ``number`` (``#### 18`` first, else the last number; commas removed, ``18.0`` -> ``18``),
``boxed`` (the last ``\\boxed{...}``), ``choice`` (a letter A-E) and ``exact`` (the whole text, normalised).
``get_extractor(name_or_callable)`` resolves a name; a callable passes through, so callers can plug their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from effagent.errors import EffagentError

Extractor = Callable[[str], str | None]

_NUM = re.compile(r"(?:(?<![\w)])-)?\$?\d[\d,]*(?:\.\d+)?")
_HASHES = re.compile(r"####\s*([^\n]*)")


def normalize_number(raw: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``, ``"18.0"`` -> ``"18"``, ``"-3"`` -> ``"-3"``; None when not a number."""
    s = raw.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if not s:
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def number(text: str) -> str | None:
    """The number after the last ``####`` if there is one, else the last number in the text."""
    if not text:
        return None
    marked = _HASHES.findall(text)
    for seg in reversed(marked):
        nums = _NUM.findall(seg)
        if nums:
            return normalize_number(nums[0])
    nums = _NUM.findall(text)
    for raw in reversed(nums):
        n = normalize_number(raw)
        if n is not None:
            return n
    return None


def _boxed_contents(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    while True:
        i = text.find("\\boxed", start)
        if i < 0:
            return out
        j = i + len("\\boxed")
        while j < len(text) and text[j] == " ":
            j += 1
        if j >= len(text) or text[j] != "{":
            start = j
            continue
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if depth != 0:  # unclosed: take the rest (a probe cut by max_tokens)
            out.append(text[j + 1:])
            return out
        out.append(text[j + 1:k])
        start = k + 1


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces kept), numbers normalised."""
    found = _boxed_contents(text or "")
    if not found:
        return None
    content = found[-1].strip().strip("$").strip()
    if not content:
        return None
    n = normalize_number(content)
    return n if n is not None else re.sub(r"\s+", "", content)


_CHOICE_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)?\s*[:\-]?\s*\(?\**\s*([A-E])\b(?!['\w])", re.IGNORECASE),
    re.compile(r"\(([A-E])\)"),
    re.compile(r"(?:^|\s)([A-E])[.):]?\s*$"),
    re.compile(r"(?:^|[\s*])([A-E])[.)](?:\s|$)"),
)


def choice(text: str) -> str | None:
    """A multiple-choice letter A-E: ``answer is (B)`` / ``Answer: B`` first, then ``(C)``, then a bare letter."""
    if not text:
        return None
    for pat in _CHOICE_PATTERNS:
        hits = pat.findall(text)
        if hits:
            return hits[-1].upper()
    return None


def exact(text: str) -> str | None:
    """The whole text, case-folded, whitespace collapsed, surrounding quotes and final punctuation removed."""
    s = re.sub(r"\s+", " ", (text or "").strip()).casefold()
    s = s.strip("\"'`*").rstrip(".!").strip()
    return s or None


def code(text: str) -> str | None:
    """Code compared by what it does not say: the fenced block if there is one, comments and whitespace removed."""
    fenced = re.findall(r"```[\w+-]*\n(.*?)```", text or "", flags=re.DOTALL)
    body = fenced[-1] if fenced else (text or "")
    body = re.sub(r"#[^\n]*", "", body)
    s = re.sub(r"\s+", "", body)
    return s or None


EXTRACTORS: Mapping[str, Extractor] = MappingProxyType({
    "number": number, "boxed": boxed, "choice": choice, "exact": exact, "code": code,
})


def get_extractor(spec: str | Extractor) -> Extractor:
    """An extractor by name (``number``, ``boxed``, ``choice``, ``exact``) or the callable itself."""
    if callable(spec):
        return spec
    try:
        return EXTRACTORS[spec]
    except KeyError:
        raise EffagentError(f"unknown answer extractor {spec!r}; use one of {', '.join(EXTRACTORS)} "
                            f"or pass a callable text -> answer") from None
