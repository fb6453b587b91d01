"""The governor: plans a step (estimate, ``decide``, reserve) and accounts for its calls (ledger, observer).

It holds no per-run state itself: spending lives in the ledger (and, for threads, in the graph state the
integration passes back in). What happens between planning and accounting — the tier loop, fallback, cascade,
self-consistency, early exit — is :mod:`effagent.step`. Every method that touches the ledger or calls a model
has an async twin that awaits it, so an async agent's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Generator, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from effagent.checkin import Grant
from effagent.decide import Decision, PolicyFacts, decide, escalate, escalate_on_disagreement, steps_share
from effagent.difficulty import build_estimator
from effagent.difficulty.base import Estimator
from effagent.ledger import ledger_from_policy
from effagent.ledger.base import (
    CallKind,
    Denial,
    Ledger,
    LedgerState,
    Reservation,
    RunSpent,
    ScopeLimit,
    StepRecord,
    Usage,
    new_id,
    spent_so_far,
)
from effagent.levers import early_exit, loopguard
from effagent.levers.base import CallReport
from effagent.llm.tokens import PromptTokens
from effagent.observe import Observer
from effagent.outcomes import OutcomeLog, label_line
from effagent.policy import Policy
from effagent.records import Difficulty, Step
from effagent.request import max_tokens_sent
from effagent.telemetry.pricing import call_cost


def approx_tokens(text: str) -> int:
    """A rough prompt size (4 characters a token) used only to keep a step inside the remaining budget;
    accounting always uses the usage the server reports."""
    return max(1, len(text) // 4)


def cached_prefix(step: Step, input_tokens: int) -> tuple[str | None, int]:
    """The tier that answered the run's previous step (from the step's history: the tier effagent tagged the last
    answer with) and how many of this step's ``input_tokens`` it has cached: the conversation up to and
    including that answer — its prompt and answer tokens as the provider reported them, else its share of the
    prompt's characters (tool definitions included)."""
    st = step.stats()
    if st.last_tier is None:
        return None, 0
    if st.prefix_tokens > 0:
        return st.last_tier, min(input_tokens, st.prefix_tokens)
    schemas = len(step.tool_schemas)
    share = (st.prefix_chars + schemas) / max(1, st.chars + schemas)
    return st.last_tier, int(input_tokens * min(1.0, share))


def _several_calls(decision: Decision) -> bool:
    return decision.lever != "plain" or decision.shadow_tier is not None


def shadow_draw(run_id: str, step: int) -> float:
    """A uniform draw in [0, 1) for ``learning.shadow_share``, fixed by the run and step (reproducible)."""
    return int(hashlib.sha256(f"{run_id}:{step}".encode()).hexdigest()[:12], 16) / 16**12


class _Op(NamedTuple):
    """What planning asks its driver to do: read the ledger, estimate, reserve, start the step."""

    name: Literal["state", "estimate", "reserve", "started"]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = MappingProxyType({})

    def run(self, gov: Governor) -> Any:
        if self.name == "state":
            return gov.ledger.state(*self.args)
        if self.name == "estimate":
            return gov.estimator.estimate(*self.args)
        if self.name == "reserve":
            return gov.ledger.reserve(*self.args, **self.kwargs)
        return gov._started(*self.args)

    async def arun(self, gov: Governor) -> Any:
        if self.name == "state":
            return await gov.ledger.astate(*self.args)
        if self.name == "reserve":
            return await gov.ledger.areserve(*self.args, **self.kwargs)
        if gov._probe is not None:  # a probe estimator calls a model: off the event loop
            return await asyncio.to_thread(self.run, gov)
        return self.run(gov)


_NO_GRANT = Grant()


def _denied_text(denied: list[Denial]) -> str:
    return f"the {denied[0].scope} budget has no room: {denied[0].detail}" if denied else "no room"


class Governor:
    def __init__(self, policy: Policy, ledger: Ledger | None = None, estimator: Estimator | None = None,
                 observer: Observer | None = None) -> None:
        self.policy = policy
        self.ledger = ledger if ledger is not None else ledger_from_policy(policy)
        team = policy.budgets.team
        # reservations pay off where workers share a budget: a shared store, or a team limit
        b = policy.budgets
        #: some budget is set: prompts are counted with a tokenizer, and (where the ledger can) every call is
        #: reserved before it is sent, so no limit is passed under any concurrency
        self._budgeted = b.run.is_set or b.thread.is_set or team.is_set
        self._reserving = self.ledger.supports_reservations and (policy.ledger.backend == "redis" or self._budgeted)
        self._counter = PromptTokens(policy.tier(policy.strong_tier).model)
        #: the budgets a step's reservation is checked against, and each tier's longest call (its TTL)
        self._limits = [(scope, limit) for scope, limit in (("run", b.run), ("thread", b.thread), ("team", team))
                        if limit.is_set]
        #: ... as an ordinary step's reservation is checked against them (less the final answer's reserve), when no
        #: grant raised them and no other worker spent part of them: most steps
        self._steps_limits = {scope: ScopeLimit(steps_share(limit.tokens, b.finalize.reserve),
                                                steps_share(limit.usd, b.finalize.reserve))
                              for scope, limit in self._limits}
        self._call_time_s = {name: t.timeout_s * (t.retries + 1) for name, t in policy.tiers.items()}
        self._facts = PolicyFacts.of(policy)  # what every decision reads of the policy alone
        self._holds: dict[tuple[str, int], Reservation] = {}
        self._holds_lock = threading.Lock()
        self.estimator = estimator if estimator is not None else build_estimator(policy.difficulty, policy)
        if observer is None:
            from effagent.telemetry import observer_from_policy

            observer = observer_from_policy(policy)
        self.observer: Observer = observer
        learning = policy.learning
        self.outcomes: OutcomeLog | None = OutcomeLog(learning.outcomes) if learning.outcomes else None
        members = getattr(self.estimator, "members", {"self": self.estimator})
        self._probe = next((e for e in members.values() if getattr(e, "name", "") == "probe"), None)

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, thread_id: str | None = None) -> str:
        run_id = new_id()
        self.observer.on_run_start(run_id, thread_id)
        return run_id

    def end_run(self, run_id: str) -> Usage:
        usage = self.ledger.run_usage(run_id)
        self.observer.on_run_end(run_id, usage)
        return usage

    async def aend_run(self, run_id: str) -> Usage:
        usage = await self.ledger.arun_usage(run_id)
        self.observer.on_run_end(run_id, usage)
        return usage

    # -- planning: estimate, decide, reserve --------------------------------------------------------
    def plan(self, step: Step, run_id: str, thread_id: str | None = None,
             thread_base: Usage | None = None, *, run_base: RunSpent | None = None, blocks_calls: bool = False,
             grant: Grant | None = None, refused: bool = False) -> Decision:
        """The step's Decision, its reservation held. ``thread_base``/``run_base``: what the thread and the run
        spent as the graph's checkpointed state says (a run resumed on another worker keeps what it spent);
        ``blocks_calls``: the integration does not run an over-limit repeated tool call (see
        :func:`effagent.levers.loopguard.check`); ``grant``/``refused``: a person's answer to a pause
        (:mod:`effagent.checkin`). A ``pause`` decision starts no step."""
        return self.plan_spent(step, run_id, thread_id, thread_base, run_base=run_base, blocks_calls=blocks_calls,
                               grant=grant, refused=refused)[0]

    async def aplan(self, step: Step, run_id: str, thread_id: str | None = None,
                    thread_base: Usage | None = None, *, run_base: RunSpent | None = None,
                    blocks_calls: bool = False, grant: Grant | None = None, refused: bool = False) -> Decision:
        return (await self.aplan_spent(step, run_id, thread_id, thread_base, run_base=run_base,
                                       blocks_calls=blocks_calls, grant=grant, refused=refused))[0]

    def plan_spent(self, step: Step, run_id: str, thread_id: str | None = None, thread_base: Usage | None = None, *,
                   run_base: RunSpent | None = None, blocks_calls: bool = False, grant: Grant | None = None,
                   refused: bool = False) -> tuple[Decision, LedgerState]:
        """:meth:`plan`, and the spending it was decided on."""
        planning = self._planning(step, run_id, thread_id, thread_base, run_base, blocks_calls, grant, refused)
        try:
            op = next(planning)
            while True:
                op = planning.send(op.run(self))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def aplan_spent(self, step: Step, run_id: str, thread_id: str | None = None,
                          thread_base: Usage | None = None, *, run_base: RunSpent | None = None,
                          blocks_calls: bool = False, grant: Grant | None = None,
                          refused: bool = False) -> tuple[Decision, LedgerState]:
        planning = self._planning(step, run_id, thread_id, thread_base, run_base, blocks_calls, grant, refused)
        try:
            op = next(planning)
            while True:
                op = planning.send(await op.arun(self))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _planning(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None,
                  run_base: RunSpent | None, blocks_calls: bool, grant: Grant | None,
                  refused: bool) -> Generator[_Op, Any, tuple[Decision, LedgerState]]:
        """Planning written once: it yields what touches the ledger or may call a model (:class:`_Op`), which
        ``plan`` does in this thread and ``aplan`` awaits."""
        own: LedgerState = yield _Op("state", (run_id, thread_id))
        state = spent_so_far(own, run_base, thread_base)
        step, loop = self._read(step, state, blocks_calls)
        difficulty: Difficulty = yield _Op("estimate", (step,))
        inp = self.prompt_tokens(step)
        final_inp = inp + self._instruction_tokens(loop) if self._budgeted else inp
        draw = self._draw(run_id, state.steps)

        prev_tier, cached = cached_prefix(step, inp)

        def again(**why: Any) -> Decision:
            return decide(self.policy, difficulty, state, step=state.steps, loop=loop, input_tokens=inp,
                          final_input_tokens=final_inp, grant=grant, refused=refused, shadow_draw=draw,
                          role=step.role, prev_tier=prev_tier, cached_tokens=cached, tools_offered=bool(step.tools),
                          facts=self._facts, **why)

        decision = again()
        if self._reserving and decision.action in ("call", "finalize"):
            denied: list[Denial] = []
            args, kw = self._reservation(decision, run_id, thread_id, inp, own, state, grant)
            hold = yield _Op("reserve", args, {**kw, "why": denied})
            if hold is None and decision.action == "call":  # no room for the step: the final answer, or a pause
                first = denied[0] if denied else Denial(scope="team")
                decision = again(shared_exhausted=f"no room for this step's reserved maximum: {first.detail}",
                                 denied_scope=first.scope)
                if decision.action == "finalize":
                    denied.clear()
                    args, kw = self._reservation(decision, run_id, thread_id, inp, own, state, grant)
                    hold = yield _Op("reserve", args, {**kw, "why": denied})
                    if hold is None:
                        decision = again(shared_exhausted=f"no room for this step's reserved maximum: "
                                                          f"{first.detail}", denied_scope=first.scope,
                                         final_denied=_denied_text(denied))
            elif hold is None:  # an exhausted run's final answer does not fit what is left
                decision = again(final_denied=_denied_text(denied))
            if hold is not None:
                with self._holds_lock:
                    self._holds[(run_id, decision.step)] = hold
        if decision.action != "pause":
            yield _Op("started", (run_id, thread_id, decision, difficulty))
        return decision, state

    def prompt_tokens(self, step: Step) -> int:
        """The step's prompt in tokens: counted with litellm's counter (:class:`effagent.llm.tokens.PromptTokens`)
        where a budget needs it, the rough 4-characters-a-token size otherwise."""
        if not self._budgeted:
            st = step.stats()
            return max(1, (st.chars + len(step.tool_schemas) + max(0, st.count - 1)) // 4)
        calls = [c.key for m in step.messages for c in m.tool_calls]
        return self._counter.messages([m.content for m in step.messages], [*calls, step.tool_schemas])

    def _instruction_tokens(self, loop: str | None) -> int:
        """The finalize instruction a final answer's prompt carries (one more message)."""
        fin = self.policy.budgets.finalize
        text = fin.loop_instruction.replace("{reason}", loop) if loop else fin.instruction
        return int(self._counter.text(text) * 1.1) + 8

    def _draw(self, run_id: str, step: int) -> float | None:
        return shadow_draw(run_id, step) if self.policy.learning.shadow_share > 0 else None

    def _read(self, step: Step, state: LedgerState, blocks_calls: bool) -> tuple[Step, str | None]:
        """The step at its place in the run (the ledger's count), and the loop guard's verdict."""
        if step.index != state.steps:
            step = step.at_index(state.steps)
        return step, loopguard.check(step, self.policy.loop_guard, blocks_calls=blocks_calls)

    def _started(self, run_id: str, thread_id: str | None, decision: Decision, difficulty: Difficulty) -> Decision:
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

    def _reservation(self, decision: Decision, run_id: str, thread_id: str | None, input_tokens: int,
                     own: LedgerState, state: LedgerState,
                     grant: Grant | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of ``ledger.reserve`` for this step's maximum, against each scope's limit
        (:meth:`_scope_limits`)."""
        final = decision.action == "finalize"
        scopes = self._scopes(run_id, thread_id)
        limits = self._scope_limits(final, grant, own, state, scopes)
        if final:  # the final answer's prompt also carries the finalize instruction
            input_tokens += self._instruction_tokens(decision.loop)
        tokens, usd, calls = self.step_maximum(decision, input_tokens)
        kw: dict[str, Any] = {}  # a shared store keeps each hold alive while its worker lives (its own TTL)
        if self.policy.ledger.backend != "redis":
            call_time = self._call_time_s
            kw["ttl_s"] = sum(call_time[n] for n in [decision.tier, *decision.fallback]) * calls + 30.0
        return (scopes, tokens, usd, limits), kw

    def _scope_limits(self, final: bool, grant: Grant | None, own: LedgerState, state: LedgerState,
                      scopes: Mapping[str, str]) -> dict[str, ScopeLimit]:
        """Each budget's limit as a step's reservation is checked against it (for the ``scopes`` the step counts
        against): raised by a person's grant, less the final answer's reserve — the whole limit for the final
        answer itself (``final``) — and less what the checkpointed state says the run or thread spent beyond what
        this ledger saw (another worker)."""
        if not final and grant is None and state is own:  # nothing raises or lowers the limits steps may use
            return {scope: limit for scope, limit in self._steps_limits.items() if scope in scopes}
        share = 0.0 if final else self.policy.budgets.finalize.reserve
        seen = {"run": (own.run, state.run), "thread": (own.thread, state.thread)}
        limits: dict[str, ScopeLimit] = {}
        for scope, limit in self._limits:
            if scope not in scopes:  # no thread id: no thread scope
                continue
            extra = grant if grant is not None and scope != "team" else _NO_GRANT  # a grant raises run and thread
            tokens, usd = limit.tokens, limit.usd
            if tokens is not None:
                tokens = steps_share(tokens + extra.tokens, share)
            if usd is not None:
                usd = steps_share(usd + extra.usd, share)
            if scope in seen:  # spent elsewhere, as the checkpoint says: counted against this scope too
                mine, known = seen[scope]
                if tokens is not None:
                    tokens = max(0, tokens - max(0, known.total_tokens - mine.total_tokens))
                if usd is not None:
                    usd = max(0.0, usd - max(0.0, known.cost_usd - mine.cost_usd))
            limits[scope] = ScopeLimit(tokens, usd)
        return limits

    def step_maximum(self, decision: Decision, input_tokens: int) -> tuple[int, float, int]:
        """The most tokens and dollars one step can spend (at the dearest of its tiers), and how many calls it
        can make: one call; ``samples`` calls; early exit's thinking chunks, a probe after each and the answer
        (each re-sending the prompt and the thinking so far); plus the escalated call of a cascade."""
        names = [decision.tier, *decision.fallback]
        tiers = [self.policy.tier(n) for n in names]
        # what the calls may really ask for: a provider rule may raise max_tokens (request.encode)
        out = max(decision.max_tokens, *(max_tokens_sent(decision, n, t) for n, t in zip(names, tiers, strict=True)))
        if decision.lever == "early_exit" and decision.early_exit is not None:
            thinking = early_exit.max_thinking(decision.thinking_budget, out)
            calls, inp, outp = early_exit.worst_case(decision.early_exit, thinking, input_tokens, out)
        else:
            calls = self._votes(decision) if decision.lever == "agreement" else decision.samples
            inp, outp = input_tokens * calls, out * calls
        tokens = inp + outp
        usd = max(t.price.max_cost(inp, outp) for t in tiers)
        if decision.lever == "agreement" and decision.agreement is not None and decision.agreement.tiers:
            # votes on other tiers: their prices
            usd = max(usd, sum(self.policy.tier(n).price.max_cost(input_tokens, out)
                               for n in [decision.tier, *decision.agreement.tiers]))
        if decision.lever == "cascade":
            up = escalate(self.policy, decision, 1.0)  # the escalation, if it comes
        else:
            up = escalate_on_disagreement(self.policy, decision, 0.0) if decision.lever == "agreement" else None
        if decision.shadow_tier is not None:  # the strong tier asked for a label
            tokens += input_tokens + out
            usd += self.policy.tier(decision.shadow_tier).price.max_cost(input_tokens, out)
            calls += 1
        if up is not None:
            tokens += input_tokens + up.max_tokens
            usd += self.policy.tier(up.tier).price.max_cost(input_tokens, up.max_tokens)
            calls += 1
        return tokens, usd, calls

    @staticmethod
    def _votes(decision: Decision) -> int:
        a = decision.agreement
        assert a is not None
        return 1 + len(a.tiers) if a.tiers else a.samples

    def _take_hold(self, run_id: str, step: int) -> Reservation | None:
        with self._holds_lock:
            return self._holds.pop((run_id, step), None)

    def release(self, run_id: str, decision: Decision) -> None:
        """Free the step's reservation if no call settled it (every tier failed)."""
        hold = self._take_hold(run_id, decision.step)
        if hold is not None:
            self.ledger.release(hold)

    async def arelease(self, run_id: str, decision: Decision) -> None:
        hold = self._take_hold(run_id, decision.step)
        if hold is not None:
            await self.ledger.arelease(hold)

    # -- accounting ---------------------------------------------------------------------------------
    def call_record(self, run_id: str, thread_id: str | None, decision: Decision, *, tier: str,
                    input_tokens: int, output_tokens: int, reasoning_tokens: int = 0, kind: CallKind = "model",
                    ok: bool = True, error: str | None = None, reasoning_estimated: bool = False,
                    cache_read_tokens: int = 0, cache_write_tokens: int = 0) -> StepRecord:
        """The ledger record of one call (:meth:`record_of`, from keyword arguments)."""
        return self.record_of(run_id, thread_id, decision, CallReport(
            tier=tier, input_tokens=input_tokens, output_tokens=output_tokens, reasoning_tokens=reasoning_tokens,
            kind=kind, ok=ok, error=error, reasoning_estimated=reasoning_estimated,
            cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens))

    def record_of(self, run_id: str, thread_id: str | None, decision: Decision, c: CallReport) -> StepRecord:
        """The ledger record of one call: counts clamped to what is believable, cost as the provider bills it
        (:func:`effagent.telemetry.pricing.call_cost`: litellm's calculation for a table-priced tier, the policy's
        price with its cache rates otherwise). The cache counts are parts of ``input_tokens``.
        ``reasoning_estimated``: the reasoning count was not reported by the provider but estimated (counted from
        the thinking text); a tier whose provider never reports one (Anthropic-style) is always estimated."""
        t = self.policy.tier(c.tier)  # an unknown tier raises here
        inp, out = max(0, int(c.input_tokens)), max(0, int(c.output_tokens))
        read = min(max(0, int(c.cache_read_tokens)), inp)
        write = min(max(0, int(c.cache_write_tokens)), inp - read)
        reasoning = min(max(0, int(c.reasoning_tokens)), out)
        estimated = reasoning > 0 and (c.reasoning_estimated or not t.reports_reasoning_tokens)
        cost = call_cost(t, inp, out, cache_read_tokens=read, cache_write_tokens=write,
                         reasoning_tokens=0 if estimated else reasoning)
        usage = {"input_tokens": inp, "output_tokens": out, "reasoning_tokens": reasoning, "cache_read_tokens": read,
                 "cache_write_tokens": write, "cost_usd": cost.total_usd, "calls": 1}  # validated with the record
        kind = "finalize" if c.kind == "model" and decision.action == "finalize" else c.kind
        return StepRecord(run_id=run_id, thread_id=thread_id, step=decision.step, kind=kind, tier=c.tier,
                          model=t.model, usage=usage, reason=decision.reason, ok=c.ok, error=c.error, ts=time.time(),
                          reasoning_estimated=estimated, id=new_id())

    def _settling_hold(self, rec: StepRecord, decision: Decision) -> Reservation | None:
        """A one-call step settles its hold with that call; a step of several calls (samples, early exit, a
        cascade) records each call and keeps its hold, which ``end_step`` frees: spent + held never undercounts."""
        if self._reserving and rec.ok and rec.kind in ("model", "sample", "finalize") and not _several_calls(decision):
            return self._take_hold(rec.run_id, decision.step)
        return None

    def _traced(self, run_id: str, decision: Decision, rec: StepRecord, duration_s: float = 0.0,
                response_model: str | None = None, content: dict[str, str] | None = None) -> StepRecord:
        """After the ledger took ``rec``: the observer is told of it; ``rec`` is returned."""
        self.observer.on_call(run_id, decision, rec, duration_s, response_model, content)
        return rec

    def book(self, run_id: str, thread_id: str | None, decision: Decision, c: CallReport) -> StepRecord:
        """Record one call (its record: :meth:`record_of`) in the ledger — settling the step's hold when the call
        answers a one-call step — and tell the observer. Every call of a step is accounted here."""
        rec = self.record_of(run_id, thread_id, decision, c)
        hold = self._settling_hold(rec, decision)
        if hold is None:
            self.ledger.record(rec)
        else:
            self.ledger.settle(hold, rec)
        return self._traced(run_id, decision, rec, c.duration_s, c.response_model, c.content)

    async def abook(self, run_id: str, thread_id: str | None, decision: Decision, c: CallReport) -> StepRecord:
        rec = self.record_of(run_id, thread_id, decision, c)
        hold = self._settling_hold(rec, decision)
        await (self.ledger.arecord(rec) if hold is None else self.ledger.asettle(hold, rec))
        return self._traced(run_id, decision, rec, c.duration_s, c.response_model, c.content)

    def account(self, run_id: str, thread_id: str | None, decision: Decision, *, tier: str,
                input_tokens: int, output_tokens: int, reasoning_tokens: int = 0, kind: CallKind = "model",
                ok: bool = True, error: str | None = None, duration_s: float = 0.0,
                response_model: str | None = None, content: dict[str, str] | None = None,
                reasoning_estimated: bool = False, cache_read_tokens: int = 0,
                cache_write_tokens: int = 0) -> StepRecord:
        """:meth:`book`, the call given as keyword arguments."""
        return self.book(run_id, thread_id, decision, CallReport(
            tier=tier, input_tokens=input_tokens, output_tokens=output_tokens, reasoning_tokens=reasoning_tokens,
            kind=kind, ok=ok, error=error, duration_s=duration_s, response_model=response_model, content=content,
            reasoning_estimated=reasoning_estimated, cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens))

    @staticmethod
    def _grant_record(run_id: str, thread_id: str | None, decision: Decision, grant: Grant) -> StepRecord:
        return StepRecord(run_id=run_id, thread_id=thread_id, step=decision.step, kind="grant", tier=decision.tier,
                          model=decision.model, usage=Usage(), reason=f"budget granted: {grant}", ts=time.time())

    def record_grant(self, run_id: str, thread_id: str | None, decision: Decision, grant: Grant) -> StepRecord:
        """A person granted more budget: a ledger record of kind ``grant`` (no usage), traced like a call."""
        rec = self._grant_record(run_id, thread_id, decision, grant)
        self.ledger.record(rec)
        return self._traced(run_id, decision, rec)

    async def arecord_grant(self, run_id: str, thread_id: str | None, decision: Decision, grant: Grant) -> StepRecord:
        rec = self._grant_record(run_id, thread_id, decision, grant)
        await self.ledger.arecord(rec)
        return self._traced(run_id, decision, rec)

    # -- labels for learning -------------------------------------------------------------------------------
    def record_label(self, run_id: str, decision: Decision, prompt: str, *, cheap_correct: bool, label: str,
                     **extra: object) -> None:
        """A labelled step for ``difficulty learn`` / ``calibrate``, appended to ``learning.outcomes`` (a shadow
        comparison, or an outcome application code reported for a step a cheaper tier answered)."""
        if self.outcomes is not None:
            self.outcomes.append(label_line(run_id=run_id, step=decision.step, prompt=prompt,
                                            cheap_correct=cheap_correct, label=label, cheap_tier=decision.tier,
                                            strong_tier=self.policy.strong_tier, band=decision.band,
                                            difficulty=decision.difficulty,
                                            **{"role": decision.role, **extra}))

    def end_step(self, run_id: str, decision: Decision, usage: Usage) -> None:
        """The step answered: free what a step of several calls still holds (a one-call step's call settled its
        hold, see ``_settling_hold``) and tell the observer."""
        if self._reserving and _several_calls(decision):
            self.release(run_id, decision)
        self.observer.on_step_end(run_id, decision, usage)

    async def aend_step(self, run_id: str, decision: Decision, usage: Usage) -> None:
        if self._reserving and _several_calls(decision):
            await self.arelease(run_id, decision)
        self.observer.on_step_end(run_id, decision, usage)
