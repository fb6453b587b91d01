"""Human check-in when a budget is spent (``budgets.on_exhausted: interrupt``).

The step pauses instead of finalizing: the integration raises a LangGraph ``interrupt()`` carrying
:func:`pause_payload` (what was spent, what is left, how to resume), and a person answers with
``Command(resume=...)``:

- ``{"grant": {"tokens": N}}`` and/or ``{"grant": {"usd": X}}``: the thread's run and thread budgets grow by that
  much for the rest of the thread, the grant is a ledger record of kind ``grant`` (and counted in the ledger's
  grant total of the thread, which every reservation reads), and the step goes on. ``budgets.grants`` bounds one
  grant and a thread's grants; only this resume value grants — graph state is never read for grants;
- ``{"refuse": true}`` (or ``{"grant": null}``): no more budget; the step is the final answer, saying so.

A malformed answer (a negative or non-numeric grant, an unknown key) is not applied: the step pauses again with
the error in the payload's ``error``, nothing spent. Framework-free: this module reads and writes plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effagent.errors import EffagentError

RESUME_HELP = ('resume with Command(resume={"grant": {"tokens": N}}) or {"grant": {"usd": X}} (or both in one '
               'grant), or Command(resume={"refuse": true}) to end with a final answer')


class CheckinError(EffagentError):
    """A resume value that is not a grant or a refusal; the message says what to send instead."""


@dataclass(frozen=True)
class Grant:
    """Extra budget a person granted a thread: added to its run and thread limits."""

    tokens: int = 0
    usd: float = 0.0

    def __add__(self, other: Grant) -> Grant:
        return Grant(self.tokens + other.tokens, self.usd + other.usd)

    def as_state(self) -> dict[str, Any]:
        """The plain dict kept in graph state (checkpointed with the thread)."""
        return {"tokens": self.tokens, "usd": self.usd}

    def __str__(self) -> str:
        parts = ([f"{self.tokens} tokens"] if self.tokens else []) + ([f"${self.usd:.6f}"] if self.usd else [])
        return " and ".join(parts) or "nothing"


REFUSED = None  # what read_resume gives for a refusal


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_resume(value: Any, bounds: Any = None, granted: Grant | None = None) -> Grant | None:
    """The grant a resume value asks for, or None for a refusal. Raises CheckinError for anything else: a value
    that is not a grant or a refusal, tokens that are not a whole number, dollars that are not a finite number,
    and a grant above ``bounds`` (the policy's ``budgets.grants``: per answer, and with ``granted``, what the
    thread was granted before, per thread)."""
    if not isinstance(value, Mapping):
        raise CheckinError(f"the resume value must be a mapping, got {type(value).__name__} {value!r:.80}; "
                           + RESUME_HELP)
    unknown = set(value) - {"grant", "refuse"}
    if unknown:
        raise CheckinError(f"unknown key(s) {sorted(map(str, unknown))!r:.120} in the resume value; " + RESUME_HELP)
    if value.get("refuse") is True or ("grant" in value and value["grant"] is None):
        return REFUSED
    if "refuse" in value and value["refuse"] is not False:
        raise CheckinError(f"'refuse' must be true, got {value['refuse']!r:.40}; " + RESUME_HELP)
    grant = value.get("grant")
    if not isinstance(grant, Mapping) or not grant:
        raise CheckinError(f"'grant' must be a mapping like {{'tokens': 5000}}, got {grant!r:.80}; " + RESUME_HELP)
    bad_keys = set(grant) - {"tokens", "usd"}
    if bad_keys:
        raise CheckinError(f"unknown grant key(s) {sorted(map(str, bad_keys))!r:.120}: a grant has 'tokens' and/or "
                           "'usd'")
    tokens, usd = grant.get("tokens", 0), grant.get("usd", 0)
    if not _whole(tokens) or tokens < 0:
        raise CheckinError(f"grant tokens must be a whole number >= 0, got {tokens!r:.40}")
    if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0 or (
            isinstance(usd, float) and not math.isfinite(usd)):
        raise CheckinError(f"grant usd must be a finite number >= 0, got {usd!r:.40}")
    if tokens == 0 and usd == 0:
        raise CheckinError("the grant is empty: give tokens > 0 or usd > 0, or refuse")
    if bounds is not None:
        one, total = bounds.per_grant, bounds.per_thread
        if tokens > one.tokens or usd > one.usd:
            raise CheckinError(f"a grant may add at most {one.tokens} tokens and ${one.usd:g} "
                               f"(budgets.grants.per_grant); asked for {tokens!r:.40} tokens and ${usd!r:.40}")
        before = granted or Grant()
        if before.tokens + tokens > total.tokens or before.usd + usd > total.usd + 1e-12:
            raise CheckinError(
                f"this thread was granted {before.tokens} tokens and ${before.usd:g} already; the grants of one "
                f"thread add up to at most {total.tokens} tokens and ${total.usd:g} (budgets.grants.per_thread): "
                f"grant at most {max(0, total.tokens - before.tokens)} tokens and "
                f"${max(0.0, total.usd - before.usd):g} more, or refuse")
    return Grant(int(tokens), float(usd))


def pause_payload(reason: str, spent: Mapping[str, Any], left: Mapping[str, Any], granted: Grant,
                  error: str | None = None) -> dict[str, Any]:
    """What the interrupt carries: why the run paused, what was spent and is left, and how to resume."""
    payload: dict[str, Any] = {"effagent": "budget_exhausted", "reason": reason, "spent": dict(spent),
                               "left": dict(left), "granted_so_far": granted.as_state(), "resume": RESUME_HELP}
    if error is not None:
        payload["error"] = error
    return payload
