"""What each hosted model accepts as a thinking control: one table that ``validate`` and ``encode`` both read.

Per model: the manual thinking-budget range (token counts the provider takes as a bound), whether it thinks
adaptively (Claude 4.6+: ``thinking: {type: adaptive}`` with ``output_config.effort``), the effort levels
(OpenAI / DeepSeek ``reasoning_effort``, Claude ``output_config.effort``), the thinking levels (Gemini 3
``thinkingLevel``), whether thinking can be switched off and whether the model thinks when asked nothing.

Where litellm's bundled model map knows a fact (``supports_adaptive_thinking``, ``supports_legacy_thinking``,
``thinking_on_by_default``, ``thinking_always_on``, ``supports_{none,minimal,xhigh,max}_reasoning_effort``,
``default_reasoning_effort``) it is taken from there: the same data ``litellm.get_model_info`` returns offline
(``LITELLM_LOCAL_MODEL_COST_MAP=True``), read from the installed package without importing litellm. The rest
comes from :data:`PROJECT_ROWS`, each row with its source. ``docs/providers.md`` prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

#: the day the project rows were checked against the providers' documentation
CHECKED = "2026-12-03"
#: litellm's own level <-> budget bounds (``litellm.constants.DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET``)
LITELLM_LEVEL_BUDGETS = {"minimal": 128, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
LEVEL_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ANTHROPIC_MIN_BUDGET = 1024

_DOCS = {
    "anthropic": "https://platform.claude.com/docs/en/build-with-claude/extended-thinking "
                 "(adaptive thinking, effort)",
    "openai": "https://platform.openai.com/docs/guides/reasoning (reasoning.effort per model)",
    "gemini": "https://ai.google.dev/gemini-api/docs/thinking (thinkingBudget ranges, thinkingLevel per model)",
    "deepseek": "https://api-docs.deepseek.com/guides/thinking_mode (thinking.type, reasoning_effort high/max)",
}


@dataclass(frozen=True)
class ModelCaps:
    """What one model accepts. ``budget``: the manual budget range (least, largest; largest 0 = below
    ``max_tokens``), None when the model takes no token budget; ``efforts``: effort levels; ``levels``: thinking
    levels (Gemini 3); ``off``: what "thinking off" sends when the model cannot switch it off (its least level,
    or None when it has nothing below its default)."""

    model: str
    family: str  # claude | openai | gemini | deepseek | other
    budget: tuple[int, int] | None = None
    adaptive: bool = False
    efforts: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    can_off: bool = True
    thinks_by_default: bool = False
    default_level: str | None = None
    sources: tuple[str, ...] = field(default=())

    @property
    def named_levels(self) -> tuple[str, ...]:
        """The levels a band's ``effort`` may name on this model (effort levels or thinking levels)."""
        return tuple(v for v in (self.efforts or self.levels) if v != "none")

    @property
    def least_level(self) -> str | None:
        """The lowest level above ``none`` (what thinking off sends on a model that cannot stop thinking)."""
        named = self.named_levels
        return min(named, key=LEVEL_ORDER.index) if named else None

    def describe(self) -> str:
        parts = []
        if self.budget:
            parts.append(f"budget {self.budget[0]:,}-{self.budget[1]:,}" if self.budget[1]
                         else f"budget >= {self.budget[0]:,} and < max_tokens")
        if self.adaptive:
            parts.append("adaptive")
        if self.efforts:
            parts.append("effort " + "/".join(self.efforts))
        if self.levels:
            parts.append("levels " + "/".join(self.levels))
        parts.append("can switch off" if self.can_off else "cannot switch off")
        if self.thinks_by_default:
            parts.append("thinks by default")
        return ", ".join(parts)


@lru_cache(maxsize=1)
def _model_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    try:
        data = json.loads((Path(spec.origin).parent / "model_prices_and_context_window_backup.json")
                          .read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def litellm_entry(model: str) -> tuple[str, dict[str, Any]] | None:
    """litellm's model-map entry for ``model``: the full string, then the name after each ``/`` in turn."""
    table = _model_map()
    parts = model.split("/")
    for key in ("/".join(parts[i:]) for i in range(len(parts))):
        entry = table.get(key)
        if isinstance(entry, dict):
            return key, entry
    return None


def family_of(model: str) -> str:
    provider = model.split("/", 1)[0].lower() if "/" in model else ""
    name = model.lower()
    tail = name.rsplit("/", 1)[-1]
    if "claude" in name and provider in ("anthropic", "bedrock", "vertex_ai", ""):
        return "claude"
    if provider == "gemini" or (provider == "vertex_ai" and tail.startswith("gemini")):
        return "gemini"
    if provider == "deepseek":
        return "deepseek"
    if provider in ("openai", "azure", "") and re.match(r"(o\d|gpt-5)", tail):
        return "openai"
    return "other"


def is_gemini_3(model: str) -> bool:
    return bool(re.match(r"gemini-([3-9]|\d\d)", model.lower().rsplit("/", 1)[-1]))


#: (family, name pattern, facts, source): what litellm's map does not say (or says wrong), checked on CHECKED
PROJECT_ROWS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    # OpenAI: litellm flags gpt-5-pro and gpt-5.2-pro as taking `minimal`; OpenAI's docs say otherwise
    ("openai", r"gpt-5-pro", {"efforts": ("high",), "can_off": False, "default_level": "high"},
     _DOCS["openai"] + ": gpt-5-pro defaults to and only supports high"),
    ("openai", r"gpt-5\.\d+-pro", {"efforts": ("medium", "high", "xhigh"), "can_off": False,
                                    "default_level": "medium"},
     _DOCS["openai"] + ": gpt-5.2-pro takes medium, high, xhigh (no none)"),
    ("openai", r"o\d", {"efforts": ("low", "medium", "high"), "can_off": False, "default_level": "medium"},
     _DOCS["openai"] + ": o-series take low, medium, high and always reason"),
    # Gemini 2.5: thinkingBudget ranges
    ("gemini", r"gemini-2\.5-flash-lite", {"budget": (512, 24576), "can_off": True}, _DOCS["gemini"]),
    ("gemini", r"gemini-2\.5-pro", {"budget": (128, 32768), "can_off": False}, _DOCS["gemini"]),
    ("gemini", r"gemini-2\.5-flash", {"budget": (1, 24576), "can_off": True}, _DOCS["gemini"]),
    # Gemini 3: thinkingLevel per model; Gemini 3 cannot switch thinking off
    ("gemini", r"gemini-3-pro", {"levels": ("low", "high"), "default_level": "high"},
     _DOCS["gemini"] + ": Gemini 3 Pro takes low and high"),
    ("gemini", r"gemini-3\.\d+-pro", {"levels": ("low", "medium", "high"), "default_level": "high"},
     _DOCS["gemini"] + ": Gemini 3.1 Pro takes low, medium, high (no minimal)"),
    ("gemini", r"gemini-\d+(\.\d+)?-flash", {"levels": ("minimal", "low", "medium", "high"),
                                             "default_level": "high"},
     _DOCS["gemini"] + ": Gemini 3 Flash takes minimal, low, medium, high"),
    # DeepSeek V4 API: thinking.type enabled/disabled, reasoning_effort high/max
    ("deepseek", r"deepseek-reasoner", {"efforts": ("high", "max"), "can_off": False, "thinks_by_default": True,
                                        "default_level": "high"}, _DOCS["deepseek"]),
    ("deepseek", r"deepseek-chat", {"efforts": ("high", "max"), "thinks_by_default": False,
                                    "default_level": "high"}, _DOCS["deepseek"]),
    ("deepseek", r"deepseek", {"efforts": ("high", "max"), "thinks_by_default": True, "default_level": "high"},
     _DOCS["deepseek"] + ": V4 models think by default"),
)


def _claude_version(name: str) -> tuple[int, int] | None:
    m = re.search(r"claude-(?:opus|sonnet|haiku|fable|mythos)-(\d+)(?:[-.](\d))?(?!\d)", name)
    if m:
        return int(m.group(1)), int(m.group(2) or 0)
    m = re.search(r"claude-(\d+)[-.](\d)", name)  # claude-3-7-sonnet
    return (int(m.group(1)), int(m.group(2))) if m else None


def _claude(model: str, entry: dict[str, Any] | None, key: str | None) -> ModelCaps:
    name = model.lower()
    version = _claude_version(name) or (0, 0)
    if entry is not None and ("supports_adaptive_thinking" in entry or version < (4, 6)):
        adaptive = bool(entry.get("supports_adaptive_thinking"))
        legacy = bool(entry.get("supports_legacy_thinking"))
        always = bool(entry.get("thinking_always_on"))
        by_default = always or bool(entry.get("thinking_on_by_default"))
        xhigh = bool(entry.get("supports_xhigh_reasoning_effort"))
        top = bool(entry.get("supports_max_reasoning_effort"))
        src = (f"litellm model map `{key}` (supports_adaptive_thinking, supports_legacy_thinking, "
               "thinking_on_by_default, thinking_always_on, supports_xhigh/max_reasoning_effort)")
    else:  # litellm's map does not say: by version, as Anthropic's docs do
        adaptive = version >= (4, 6)
        legacy = version == (4, 6)
        always = False
        by_default = version >= (5, 0) and "sonnet" in name
        xhigh, top = version >= (4, 7), adaptive
        src = f"project table: {_DOCS['anthropic']} (Claude {version[0]}.{version[1]}), checked {CHECKED}"
    efforts = ("low", "medium", "high") + (("xhigh",) if xhigh else ()) + (("max",) if top else ())
    return ModelCaps(model=model, family="claude",
                     budget=(ANTHROPIC_MIN_BUDGET, 0) if (not adaptive or legacy) else None,
                     adaptive=adaptive, efforts=efforts if adaptive else (), can_off=not always,
                     thinks_by_default=by_default, default_level="high" if adaptive else None, sources=(src,))


def _openai_from_map(model: str, entry: dict[str, Any] | None, key: str | None) -> ModelCaps | None:
    if entry is None or not any(k.endswith("_reasoning_effort") for k in entry):
        return None
    efforts = tuple(lvl for lvl, flag in (("none", "supports_none_reasoning_effort"),
                                          ("minimal", "supports_minimal_reasoning_effort"))
                    if entry.get(flag)) + ("low", "medium", "high")
    if entry.get("supports_xhigh_reasoning_effort"):
        efforts += ("xhigh",)
    default = entry.get("default_reasoning_effort") or "medium"
    return ModelCaps(model=model, family="openai", efforts=efforts, can_off="none" in efforts,
                     thinks_by_default=default != "none", default_level=default if default != "none" else "medium",
                     sources=(f"litellm model map `{key}` (supports_none/minimal/xhigh_reasoning_effort, "
                              "default_reasoning_effort)",))


@lru_cache(maxsize=256)
def capabilities(model: str) -> ModelCaps:
    """What ``model`` (a litellm model string) accepts as a thinking control."""
    family = family_of(model)
    found = litellm_entry(model)
    key, entry = found if found else (None, None)
    tail = model.lower().rsplit("/", 1)[-1]
    if family == "claude":
        return _claude(model, entry, key)
    caps: ModelCaps
    if family == "openai":
        caps = _openai_from_map(model, entry, key) or ModelCaps(
            model=model, family="openai", efforts=("low", "medium", "high"), can_off=False, thinks_by_default=True,
            default_level="medium", sources=(f"project table: {_DOCS['openai']}, checked {CHECKED}",))
    elif family == "gemini":
        caps = ModelCaps(model=model, family="gemini", thinks_by_default=True,
                         levels=("low", "medium", "high") if is_gemini_3(model) else (),
                         budget=None if is_gemini_3(model) else (1, 24576), can_off=not is_gemini_3(model),
                         default_level="high" if is_gemini_3(model) else None,
                         sources=(f"litellm model map `{key}` (supports_reasoning)",) if key else ())
        if is_gemini_3(model) and entry is not None and entry.get("supports_xhigh_reasoning_effort"):
            caps = replace(caps, levels=(*caps.levels, "xhigh"))
    elif family == "deepseek":
        caps = ModelCaps(model=model, family="deepseek",
                         sources=(f"litellm model map `{key}` (supports_reasoning)",) if key else ())
    else:
        return ModelCaps(model=model, family="other")
    for fam, pattern, facts, source in PROJECT_ROWS:
        if fam == family and re.match(pattern, tail):
            if family == "gemini" and "levels" in facts and not is_gemini_3(model):
                continue
            if "levels" in facts and "xhigh" in caps.levels:
                facts = {**facts, "levels": (*facts["levels"], "xhigh")}
            caps = replace(caps, **facts, sources=(*caps.sources, f"project table: {source}, checked {CHECKED}"))
            break
    return caps


def level_for_budget(budget: int | None, bounds: dict[str, int], accepted: tuple[str, ...],
                     default: str) -> str:
    """The level a thinking budget maps to: among the ``accepted`` levels that have a bound, the first whose bound
    is at least the budget (the nearest level at or above it); above every bound, the largest; ``default``
    without a budget or without a bounded accepted level."""
    usable = sorted(((lvl, b) for lvl, b in bounds.items() if not accepted or lvl in accepted), key=lambda kv: kv[1])
    if budget is None or not usable:
        return default
    return next((lvl for lvl, b in usable if budget <= b), usable[-1][0])


def table_rows(models: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(model, what it accepts, source) for the docs' capability table."""
    return [(m, capabilities(m).describe(), "; ".join(capabilities(m).sources) or "-") for m in models]
