"""Errors a user can cause, each with a message that says what to change."""

from __future__ import annotations


class EffagentError(Exception):
    """Base class of every error effagent raises on purpose."""


class PolicyError(EffagentError):
    """The policy file is not valid. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problems) if problems else f"{source}: invalid policy")


class UnknownTierError(EffagentError):
    """A tier name that the policy does not define."""


class BudgetExceeded(EffagentError):
    """A run/thread budget is spent and the policy says ``on_exhausted: error``."""

    def __init__(self, scope: str, spent: str, limit: str) -> None:
        self.scope = scope
        self.spent = spent
        self.limit = limit
        super().__init__(
            f"{scope} budget exhausted: spent {spent} of {limit}. Raise budgets.{scope} in the policy, "
            f"or set budgets.on_exhausted: finalize to end with a final answer instead."
        )


class EndpointError(EffagentError):
    """Every tier the policy allows for a step failed (unreachable, timeout, 5xx, malformed body)."""

    def __init__(self, attempts: list[str]) -> None:
        self.attempts = attempts
        super().__init__(
            "no tier could answer this step; attempts: "
            + "; ".join(attempts)
            + ". Check that the servers in the policy's tiers are running and reachable."
        )


class LedgerUnavailable(EffagentError):
    """The shared ledger store cannot be reached and the policy says fail closed."""
