"""What one model call cost, as the provider bills it.

A tier priced from litellm's table (``price_source: litellm``: the policy gave no ``price``) is priced with
**litellm's own cost calculation** (``litellm.cost_per_token`` on a litellm ``Usage``): cache reads, cache writes,
long-context rates and reasoning tokens are billed the way litellm bills them for that model. A tier priced by
the policy is priced with :meth:`effagent.policy.Price.cost`, whose optional ``cache_read_per_mtok`` and
``cache_write_per_mtok`` bill the cached part of the prompt. When litellm is not installed or cannot price the
model, the tier's ``price`` stands in (for a table-priced tier: the table's highest rates, so never less than
litellm would charge).

Every count follows LangChain's ``usage_metadata`` and litellm's ``prompt_tokens``: ``input_tokens`` is the
whole prompt, and the cache-read and cache-write counts are parts of it.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from effagent.policy import Tier

log = logging.getLogger("effagent.pricing")


class CallCost(NamedTuple):
    """USD of one call: its prompt (cached parts included) and its output (reasoning included)."""

    prompt_usd: float
    completion_usd: float

    @property
    def total_usd(self) -> float:
        return self.prompt_usd + self.completion_usd


def _litellm() -> Any | None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at run time
    try:
        import litellm
    except ImportError:  # pragma: no cover - litellm is a dependency; a trimmed install falls back
        return None
    return litellm


def _usage(litellm: Any, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int,
           reasoning: int) -> Any:
    return litellm.Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens,
                         total_tokens=input_tokens + output_tokens, reasoning_tokens=reasoning or None,
                         cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_write)


@lru_cache(maxsize=256)
def litellm_model_key(model: str) -> str | None:
    """The model string litellm prices ``model`` under (the tier's own string, or the name after each ``/``
    prefix in turn, as :func:`effagent.policy.table_price` found it), or None when litellm cannot price it."""
    litellm = _litellm()
    if litellm is None:
        return None
    parts = model.split("/")
    probe = _usage(litellm, 1, 1, 0, 0, 0)
    for key in ("/".join(parts[i:]) for i in range(len(parts))):
        try:
            litellm.cost_per_token(model=key, usage_object=probe)
        except Exception:  # litellm raises its own (and plain) exceptions for a model it does not know
            continue
        return key
    log.warning("litellm cannot price %r; its calls are priced at the tier's price", model)
    return None


def litellm_cost(model: str, input_tokens: int, output_tokens: int, *, cache_read_tokens: int = 0,
                 cache_write_tokens: int = 0, reasoning_tokens: int = 0) -> CallCost | None:
    """litellm's cost of one call on ``model`` (None when litellm cannot price it)."""
    key = litellm_model_key(model)
    litellm = _litellm()
    if key is None or litellm is None:
        return None
    usage = _usage(litellm, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens)
    try:
        prompt, completion = litellm.cost_per_token(model=key, usage_object=usage)
    except Exception:
        log.warning("litellm could not price a call on %r; priced at the tier's price", model, exc_info=True)
        return None
    prompt, completion = float(prompt or 0.0), float(completion or 0.0)
    if not (math.isfinite(prompt) and math.isfinite(completion)) or prompt < 0 or completion < 0:
        return None
    return CallCost(prompt, completion)


def call_cost(tier: Tier, input_tokens: int, output_tokens: int, *, cache_read_tokens: int = 0,
              cache_write_tokens: int = 0, reasoning_tokens: int = 0) -> CallCost:
    """What one call on ``tier`` cost. ``reasoning_tokens`` is passed only when the provider reported it (a
    model with its own reasoning rate bills them at it; they are part of ``output_tokens`` either way)."""
    inp, out = max(0, int(input_tokens)), max(0, int(output_tokens))
    read = min(max(0, int(cache_read_tokens)), inp)
    write = min(max(0, int(cache_write_tokens)), inp - read)
    if tier.price_source == "litellm":
        got = litellm_cost(tier.model, inp, out, cache_read_tokens=read, cache_write_tokens=write,
                           reasoning_tokens=min(max(0, int(reasoning_tokens)), out))
        if got is not None:
            return got
    price = tier.price
    return CallCost(price.prompt_cost(inp, read, write), out * price.output_per_mtok / 1e6)
