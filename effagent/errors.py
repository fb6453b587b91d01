"""Every error effagent raises on purpose, each with a message that says what to change.

```
Exception
└── EffagentError                      anything effagent raises on purpose (the CLI prints it, exit 2)
    ├── PolicyError                    the policy file is invalid: .problems, one PATH:LINE:COL line each
    ├── UnknownTierError               a tier name the policy does not define
    ├── BudgetExceeded                 a run/thread/team budget is spent and on_exhausted is "error"
    ├── EndpointError                  no tier could answer a step: .attempts
    │   └── EndpointCallError          one call to one tier failed: .model, .api_base, .status, .retriable
    │       ├── EndpointUnavailable    unreachable, timeout, 5xx, malformed body (retried, then next tier)
    │       └── EndpointRejected       4xx: the request or the tier's settings must change
    ├── MalformedResponse              a body that is not a chat completion (also a ValueError)
    ├── TokenizeUnavailable            the server has no /tokenize (reasoning tokens are then not counted)
    ├── LedgerUnavailable              the shared ledger store is down and the policy fails closed
    ├── ServiceError                   a local service of the launchers (vLLM test bed, Phoenix)
    │   ├── ProvisionError             its environment or model could not be prepared
    │   ├── ServiceStartError          it exited while starting, did not answer in time, or its port is taken
    │   └── ServiceUnreachableError    a server to reuse does not answer
    └── MissingExtraError              an optional dependency is missing: names the extra to install
```
Only :class:`EndpointError` and its subclasses (with the client libraries' own connection, timeout and HTTP
errors: :func:`effagent.llm.client.is_endpoint_failure`) move a step to the next tier; every other error
surfaces as itself.
"""

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


class EndpointCallError(EndpointError):
    """A call to one tier's endpoint failed; ``retriable`` says whether it was a transient kind."""

    retriable = False

    def __init__(self, model: str, api_base: str | None, detail: str, *, status: int | None = None,
                 attempts: int = 1) -> None:
        from effagent.redact import redact_shapes  # a URL's userinfo and key-like query parameters are masked

        self.model = model
        self.api_base = api_base
        self.detail = redact_shapes(detail)
        self.status = status
        self.tries = attempts
        self.attempts = [f"{model} @ {redact_shapes(api_base or 'default endpoint')}: {self.detail}"]
        Exception.__init__(self, self._message())

    def _message(self) -> str:
        from effagent.redact import redact_shapes

        where = f"{self.model} at {redact_shapes(self.api_base or 'its default endpoint')}"
        return f"{where} failed after {self.tries} attempt(s): {self.detail}"


class EndpointUnavailable(EndpointCallError):
    """Unreachable, timed out, 5xx or a malformed body, after every retry: check the server is up."""

    retriable = True

    def _message(self) -> str:
        return super()._message() + ". Check that the server is running and reachable (tier api_base)."


class EndpointRejected(EndpointCallError):
    """The server refused the request (4xx): not retried; the request or the tier's settings must change."""

    def _message(self) -> str:
        return super()._message() + ". The server rejected the request: check the tier's model name and settings."


class MalformedResponse(EffagentError, ValueError):
    """A body that is not a chat completion (no choices, wrong types); retried like a 5xx."""


class TokenizeUnavailable(EffagentError):
    """The server has no ``/tokenize`` endpoint (not vLLM?) or it could not be reached."""


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
