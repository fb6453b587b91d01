"""The framework-free run loop both integrations share: plan a step, shape its call, account for it.

Integrations convert their messages to a :class:`Step`, call ``plan`` (which asks ``decide``), send the
call with ``settings``, and report usage with ``account``. The governor holds no per-run state itself:
spending lives in the ledger (and, for threads, in the graph state the integration passes back in).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from effagent._trusted import trusted
from effagent.decide import Decision, decide, escalate
from effagent.difficulty import build_estimator
from effagent.difficulty.base import Estimator, Step
from effagent.ledger import ledger_from_policy
from effagent.ledger.base import CallKind, Ledger, Reservation, StepRecord, Usage, make_usage
from effagent.levers import length, loopguard, thinking
from effagent.observe import Observer
from effagent.policy import Policy


def merge_settings(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge request-setting dicts; ``extra_body`` dicts are merged key by key."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k == "extra_body" and isinstance(v, dict):
                out.setdefault("extra_body", {}).update(v)
            else:
                out[k] = v
    return out


TURN_SLACK_TOKENS = 64  # an early-exit call's turn beyond prompt + thinking: the template's lead-in, the cue


def _several_calls(decision: Decision) -> bool:
    return decision.samples > 1 or decision.early_exit is not None or decision.verify


def _copy(value: Any) -> Any:
    """A copy of nested dicts/lists of plain values (much cheaper than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def approx_tokens(text: str) -> int:
    """A rough prompt size (4 characters a token) used only to keep a step inside the remaining budget;
    accounting always uses the usage the server reports."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """:func:`approx_tokens` of a text ``chars`` characters long."""
    return max(1, chars // 4)


class Governor:
    def __init__(self, policy: Policy, ledger: Ledger | None = None, estimator: Estimator | None = None,
                 observer: Observer | None = None) -> None:
        self.policy = policy
        self.ledger = ledger if ledger is not None else ledger_from_policy(policy)
        team = policy.budgets.team
        # reservations pay off where workers share a budget: a shared store, or a team limit
        self._reserving = self.ledger.supports_reservations and (
            policy.ledger.backend == "redis" or team.tokens is not None or team.usd is not None)
        self._holds: dict[tuple[str, int], Reservation] = {}
        self._holds_lock = threading.Lock()
        # decision's (tier, thinking, budget, max_tokens) -> (request settings, whether they hold only scalars)
        self._settings: dict[tuple[str, bool, int | None, int], tuple[dict[str, Any], bool]] = {}
        # tier -> (model, $ per million input tokens, per million output tokens): read on every call accounted
        # (Price.cost's sum); the policy is not changed once in use
        self._prices: dict[str, tuple[str, float, float]] = {}
        self.estimator = estimator if estimator is not None else build_estimator(policy.difficulty, policy)
        if observer is None:
            from effagent.telemetry import observer_from_policy

            observer = observer_from_policy(policy)
        self.observer: Observer = observer
        members = getattr(self.estimator, "members", {"self": self.estimator})
        self._probe = next((e for e in members.values() if getattr(e, "name", "") == "probe"), None)

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, thread_id: str | None = None) -> str:
        run_id = uuid.uuid4().hex
        self.observer.on_run_start(run_id, thread_id)
        return run_id

    def end_run(self, run_id: str) -> Usage:
        usage = self.ledger.run_usage(run_id)
        self.observer.on_run_end(run_id, usage)
        return usage

    # -- steps ----------------------------------------------------------------------------------
    def plan(self, step: Step, run_id: str, thread_id: str | None = None,
             thread_base: Usage | None = None) -> Decision:
        state = self.ledger.state(run_id, thread_id, thread_base)
        if step.index != state.steps:  # the step's position in the run is the ledger's count
            step = step.at_index(state.steps)
        loop = loopguard.check(step, self.policy.loop_guard)
        difficulty = self.estimator.estimate(step)
        # approx_tokens of the messages joined by spaces, without building the joined text every step
        st = step.stats()
        inp = tokens_for_chars(st.chars + max(0, st.count - 1))
        decision = decide(self.policy, difficulty, state, step=state.steps, loop=loop, input_tokens=inp)
        if decision.action == "call" and self._reserving:
            hold = self._reserve(decision, run_id, thread_id, inp)
            if hold is None:  # a shared budget has no room for this step's maximum
                decision = decide(self.policy, difficulty, state, step=state.steps, loop=loop, input_tokens=inp,
                                  shared_exhausted="no room left for this step's reserved maximum")
            else:
                with self._holds_lock:
                    self._holds[(run_id, decision.step)] = hold
        self.observer.on_step_start(run_id, decision)
        if self._probe is not None:
            self._account_probe(run_id, thread_id, decision, difficulty.signals)
        return decision

    def _account_probe(self, run_id: str, thread_id: str | None, decision: Decision, signals: dict[str, float]) -> None:
        """A logprob probe's call is paid for: record it (kind ``probe``) on the step it scored."""
        inp, out = int(signals.get("probe.input_tokens", 0)), int(signals.get("probe.output_tokens", 0))
        if inp or out:
            tier = getattr(self._probe, "tier_name", None) or self.policy.cheapest_tier
            self.account(run_id, thread_id, decision, tier=tier, input_tokens=inp, output_tokens=out, kind="probe",
                         duration_s=float(signals.get("probe.latency_s", 0.0)))

    # -- shared budgets: reserve a step's maximum before the call, settle after ---------------------------
    def _scopes(self, run_id: str, thread_id: str | None) -> dict[str, str]:
        scopes = {"run": run_id}
        if thread_id is not None:
            scopes["thread"] = thread_id
        team = self.policy.ledger.redis.team
        if team:
            scopes["team"] = team
        return scopes

    def _reserve(self, decision: Decision, run_id: str, thread_id: str | None, input_tokens: int) -> Reservation | None:
        b = self.policy.budgets
        limits = {"run": b.run, "team": b.team}
        if self.policy.ledger.backend == "redis":  # the shared store keeps thread totals for every worker
            limits["thread"] = b.thread
        tokens, usd, calls = self.step_maximum(decision, input_tokens)
        tiers = [self.policy.tier(n) for n in [decision.tier, *decision.fallback]]
        ttl = sum(t.timeout_s * (t.retries + 1) for t in tiers) * calls + 30.0
        return self.ledger.reserve(self._scopes(run_id, thread_id), tokens, usd, limits, ttl)

    def step_maximum(self, decision: Decision, input_tokens: int) -> tuple[int, float, int]:
        """The most tokens and dollars one step can spend (at the dearest of its tiers), and how many calls it
        can make: one call; ``samples`` calls; early exit's thinking chunks, a probe after each and the answer
        (each re-sending the prompt and the thinking so far); plus the escalated call of a cascade."""
        tiers = [self.policy.tier(n) for n in [decision.tier, *decision.fallback]]
        out = decision.max_tokens
        if decision.early_exit:
            thinking = min(decision.thinking_budget or out, out)
            chunk = max(1, int(decision.early_exit.get("chunk") or 1))
            chunks = -(-thinking // chunk)
            calls = 2 * chunks + 1
            # think call k re-sends the prompt + k chunks, the probe after it k + 1 chunks, the answer all
            # of it: sum over k < chunks of (2k + 1) chunks = chunks^2 chunks of thinking, plus the answer's
            inp = calls * (input_tokens + TURN_SLACK_TOKENS) + chunk * chunks * chunks + thinking
            outp = thinking + (chunks + 1) * int(decision.early_exit.get("probe_tokens") or 0) + out
        else:
            calls = decision.samples
            inp, outp = input_tokens * calls, out * calls
        tokens = inp + outp
        usd = max(t.price.cost(inp, outp) for t in tiers)
        up = escalate(self.policy, decision, 1.0) if decision.verify else None  # the escalation, if it comes
        if up is not None:
            tokens += input_tokens + up.max_tokens
            usd += self.policy.tier(up.tier).price.cost(input_tokens, up.max_tokens)
            calls += 1
        return tokens, usd, calls

    def _take_hold(self, run_id: str, step: int) -> Reservation | None:
        with self._holds_lock:
            return self._holds.pop((run_id, step), None)

    def release(self, run_id: str, decision: Decision) -> None:
        """Free the step's reservation if no call settled it (every tier failed)."""
        hold = self._take_hold(run_id, decision.step)
        if hold is not None:
            self.ledger.release(hold)

    def settings(self, decision: Decision, tier_name: str | None = None) -> dict[str, Any]:
        """Request keys (litellm / ChatLiteLLM kwargs) that carry the decision to ``tier_name``
        (the decided tier by default; a fallback tier gets the same decision within its own limits)."""
        name = tier_name or decision.tier
        key = (name, decision.thinking, decision.thinking_budget, decision.max_tokens)
        got = self._settings.get(key)
        if got is None:
            tier = self.policy.tier(name)
            on = decision.thinking and tier.thinking.supported
            budget = decision.thinking_budget if on else None
            if on and budget is not None and tier.thinking.max_budget:
                budget = min(budget, tier.thinking.max_budget)
            merged = merge_settings(
                {"extra_body": dict(tier.extra_body)} if tier.extra_body else {},
                thinking.thinking_settings(tier, on) if tier.thinking.supported else {},
                length.length_settings(tier, min(decision.max_tokens, tier.max_tokens), on, budget),
            )
            got = (merged, not any(isinstance(v, dict | list) for v in merged.values()))
            if len(self._settings) < 4096:  # a policy has few distinct settings; the bound guards odd callers
                self._settings[key] = got
        return dict(got[0]) if got[1] else _copy(got[0])  # callers may change their copy

    def account(self, run_id: str, thread_id: str | None, decision: Decision, *, tier: str,
                input_tokens: int, output_tokens: int, reasoning_tokens: int = 0, kind: CallKind = "model",
                ok: bool = True, error: str | None = None, duration_s: float = 0.0,
                response_model: str | None = None, content: dict[str, str] | None = None) -> StepRecord:
        """Record one call's usage (cost at the tier's prices) in the ledger and tell the observer."""
        priced = self._prices.get(tier)
        if priced is None:
            t = self.policy.tier(tier)  # an unknown tier raises here
            priced = self._prices[tier] = (t.model, t.price.input_per_mtok, t.price.output_per_mtok)
        model, per_in, per_out = priced
        # counts are clamped to non-negative ints here, so the records are built without re-validation
        inp, out = max(0, int(input_tokens)), max(0, int(output_tokens))
        usage = make_usage(inp, out, min(max(0, int(reasoning_tokens)), out), (inp * per_in + out * per_out) / 1e6, 1)
        rec = trusted(
            StepRecord,
            run_id=run_id, thread_id=thread_id, step=decision.step,
            kind="finalize" if kind == "model" and decision.action == "finalize" else kind,
            tier=tier, model=model, usage=usage, reason=decision.reason, ok=ok, error=error, ts=time.time())
        # a one-call step settles its hold with that call; a step of several calls (samples, early exit, a
        # cascade) records each call and keeps its hold, which end_step frees: spent + held never undercounts
        settles = self._reserving and ok and kind in ("model", "sample") and not _several_calls(decision)
        hold = self._take_hold(run_id, decision.step) if settles else None
        if hold is not None:
            self.ledger.settle(hold, rec)
        else:
            self.ledger.record(rec)
        self.observer.on_call(run_id, decision, rec, duration_s, response_model, content)
        return rec

    def end_step(self, run_id: str, decision: Decision, usage: Usage) -> None:
        if self._reserving:
            self.release(run_id, decision)  # what a step of several calls still holds
        self.observer.on_step_end(run_id, decision, usage)
