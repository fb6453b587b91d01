"""The budget policy: pydantic schema of the YAML file, and its loader.

``load_policy(path)`` returns a validated :class:`Policy` or raises :class:`PolicyError` whose lines read
``PATH:LINE:COL: field.path: what is wrong — what to change``.

- :mod:`.tiers`: a tier, its provider, price (policy or litellm's table) and thinking control;
- :mod:`.schema`: the policy's sections and :class:`Policy`;
- :mod:`.checks`: cross-checks beyond one field (band overlaps by role, what a provider refuses);
- :mod:`.environment`: ``${VAR}`` interpolation and which values read are secrets;
- :mod:`.loader`: the bounded YAML loader with ``PATH:LINE:COL`` errors.
"""

from effagent.errors import PolicyError
from effagent.policy.checks import sends_manual_budget
from effagent.policy.loader import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_POLICY_BYTES,
    load_policy,
    parse_policy,
    policy_json_schema,
)
from effagent.policy.schema import (
    Agreement,
    Band,
    Budgets,
    Cascade,
    Consistency,
    DifficultyConfig,
    EarlyExit,
    EstimatorName,
    EstimatorRef,
    Fallback,
    Finalize,
    GrantLimit,
    Grants,
    Learning,
    LedgerConfig,
    Limit,
    LoopGuard,
    Policy,
    RedisLedger,
    Routing,
    StepLimit,
    Telemetry,
)
from effagent.policy.tiers import (
    ANTHROPIC_MIN_BUDGET,
    GEMINI_BUDGETS,
    GEMINI_DEFAULT_BUDGETS,
    LEVEL_CONTROLS,
    LOCAL_PROVIDERS,
    PROVIDER_CONTROLS,
    ControlKind,
    NonNeg,
    NonNegInt,
    Price,
    ThinkingControl,
    Tier,
    auto_control,
    gemini_budget_limits,
    provider_of,
    table_price,
)

__all__ = [
    "ANTHROPIC_MIN_BUDGET",
    "GEMINI_BUDGETS",
    "GEMINI_DEFAULT_BUDGETS",
    "LEVEL_CONTROLS",
    "LOCAL_PROVIDERS",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_POLICY_BYTES",
    "PROVIDER_CONTROLS",
    "Agreement",
    "Band",
    "Budgets",
    "Cascade",
    "Consistency",
    "ControlKind",
    "DifficultyConfig",
    "EarlyExit",
    "EstimatorName",
    "EstimatorRef",
    "Fallback",
    "Finalize",
    "GrantLimit",
    "Grants",
    "Learning",
    "LedgerConfig",
    "Limit",
    "LoopGuard",
    "NonNeg",
    "NonNegInt",
    "Policy",
    "PolicyError",
    "Price",
    "RedisLedger",
    "Routing",
    "StepLimit",
    "Telemetry",
    "ThinkingControl",
    "Tier",
    "auto_control",
    "gemini_budget_limits",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
    "provider_of",
    "sends_manual_budget",
    "table_price",
]
