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


class ServiceError(EffagentError):
    """A local service that a launcher manages (the CPU vLLM test bed, Phoenix) could not be provisioned,
    started or reached. Base class of the launchers' errors; the message says what to change."""


class ProvisionError(ServiceError):
    """A launcher could not build its service's virtual environment (pip, disk, registry) or prepare its model."""


class ServiceStartError(ServiceError):
    """A service process exited while starting, did not answer in time, or its port is taken."""


class ServiceUnreachableError(ServiceError):
    """A server to reuse (``$EFFAGENT_VLLM_URL``, a recorded ``serve``) does not answer or lacks a served name."""


class MissingExtraError(EffagentError):
    """A command needs an optional dependency that is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, needed_for: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{needed_for} needs the Python package {module!r}, which is not installed. "
            f"Install the {extra!r} extra: pip install 'effagent[{extra}]'"
        )
