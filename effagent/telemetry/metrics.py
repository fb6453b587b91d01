"""OpenTelemetry metrics: the GenAI semantic-convention client metrics plus effagent's cost and savings.

Instruments (all recorded once per model call, in :meth:`CallMetrics.record`):

=================================  ==============  =========  ===========================================
name                               instrument      unit       what
=================================  ==============  =========  ===========================================
``gen_ai.client.token.usage``      histogram       ``{token}``  input and output tokens per call
                                                              (``gen_ai.token.type`` = input | output)
``gen_ai.client.operation.duration`` histogram     ``s``      call duration (``error.type`` on failure)
``effagent.cost``                  counter         ``USD``    what the calls cost at the tier's prices
``effagent.cost.baseline``         counter         ``USD``    the same tokens at the baseline tier's prices
``effagent.cost.saved``            up-down counter ``USD``    baseline - actual (negative when a step ran
                                                              on a tier dearer than the baseline)
``effagent.tokens.saved``          up-down counter ``{token}``  saved $ as baseline-equivalent tokens:
                                                              ``tokens * saved / baseline``
``effagent.token.usage``           counter         ``{token}``  tokens by tier and type (input, output,
                                                              reasoning, cache_read, cache_write: the
                                                              last two are parts of input), for totals
                                                              per tier
=================================  ==============  =========  ===========================================

Histogram bucket boundaries are the ones the GenAI semantic conventions specify (given as the advisory
``explicit_bucket_boundaries_advisory``, so an application's own MeterProvider views still win).

"Saved" is computed per call against ``policy.baseline_tier`` (the tier every step would use without
effagent; when the policy names none, the dearest tier by output price): the call's own input and output
tokens (with the same cache reads and writes) priced at the baseline tier the way a call there is priced
(:func:`effagent.telemetry.pricing.call_cost`), minus what they cost on the tier that served them. It does not guess
how many tokens the baseline model would have produced; compare runs with ``effagent bench`` for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import Meter

from effagent.telemetry.pricing import call_cost

if TYPE_CHECKING:
    from effagent.ledger.base import StepRecord
    from effagent.policy import Policy

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def baseline_tier(policy: Policy | None) -> str | None:
    """``policy.baseline_tier``, else the dearest tier (by output, then input price)."""
    if policy is None or not policy.tiers:
        return None
    if policy.baseline_tier:
        return policy.baseline_tier
    prices = {n: (t.price.output_per_mtok, t.price.input_per_mtok) for n, t in policy.tiers.items()}
    return max(prices, key=lambda n: prices[n])


def savings(policy: Policy | None, record: StepRecord) -> tuple[float, float, float]:
    """(baseline cost, saved $, saved baseline-equivalent tokens) of one call."""
    name = baseline_tier(policy)
    if policy is None or name is None or name not in policy.tiers:
        return record.usage.cost_usd, 0.0, 0.0
    u = record.usage
    base = call_cost(policy.tiers[name], u.input_tokens, u.output_tokens, cache_read_tokens=u.cache_read_tokens,
                     cache_write_tokens=u.cache_write_tokens,
                     reasoning_tokens=0 if record.reasoning_estimated else u.reasoning_tokens).total_usd
    saved = base - u.cost_usd
    tokens = (u.input_tokens + u.output_tokens) * saved / base if base > 0 else 0.0
    return base, saved, tokens


class CallMetrics:
    """The instruments; ``record`` is thread-safe (OTel instruments are)."""

    def __init__(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.cost = meter.create_counter("effagent.cost", unit="USD",
                                         description="Cost of model calls at the tier's prices")
        self.baseline_cost = meter.create_counter(
            "effagent.cost.baseline", unit="USD", description="Cost of the same tokens at the baseline tier's prices")
        self.saved = meter.create_up_down_counter(
            "effagent.cost.saved", unit="USD", description="Baseline cost minus actual cost")
        self.tokens_saved = meter.create_up_down_counter(
            "effagent.tokens.saved", unit="{token}",
            description="Saved cost expressed in baseline-priced tokens (tokens * saved / baseline)")
        self.tier_tokens = meter.create_counter("effagent.token.usage", unit="{token}",
                                                description="Tokens per tier and type (input, output, reasoning)")

    def record(self, common: dict[str, Any], record: StepRecord, duration_s: float, policy: Policy | None,
               error_type: str | None = None) -> None:
        """``common``: the semconv attributes (operation, provider, request/response model) of the call."""
        dur_attrs = dict(common)
        if error_type:
            dur_attrs["error.type"] = error_type
        self.duration.record(max(0.0, duration_s), dur_attrs)
        if not record.ok:
            return
        u = record.usage
        self.token_usage.record(u.input_tokens, {**common, "gen_ai.token.type": "input"})
        self.token_usage.record(u.output_tokens, {**common, "gen_ai.token.type": "output"})
        tier_attrs = {"effagent.tier": record.tier, "effagent.kind": record.kind}
        self.tier_tokens.add(u.input_tokens, {**tier_attrs, "gen_ai.token.type": "input"})
        self.tier_tokens.add(u.output_tokens, {**tier_attrs, "gen_ai.token.type": "output"})
        if u.reasoning_tokens:
            self.tier_tokens.add(u.reasoning_tokens, {**tier_attrs, "gen_ai.token.type": "reasoning"})
        if u.cache_read_tokens:
            self.tier_tokens.add(u.cache_read_tokens, {**tier_attrs, "gen_ai.token.type": "cache_read"})
        if u.cache_write_tokens:
            self.tier_tokens.add(u.cache_write_tokens, {**tier_attrs, "gen_ai.token.type": "cache_write"})
        base, saved, tokens = savings(policy, record)
        self.cost.add(u.cost_usd, tier_attrs)
        self.baseline_cost.add(base, tier_attrs)
        self.saved.add(saved, tier_attrs)
        self.tokens_saved.add(tokens, tier_attrs)
