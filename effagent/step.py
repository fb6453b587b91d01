"""What happens in one model step — the procedure both integrations run.

1. **plan**: the governor estimates the step's difficulty and ``decide`` chooses tier, thinking, budgets,
   samples or a final answer (:meth:`StepProcedure.plan`);
2. **call**: the decision is encoded for the tier (:func:`effagent.request.encode`) and sent through the
   integration's :class:`Endpoint` — or, for the levers that take several calls, run by the lever:
   adaptive self-consistency (``samples > 1``) and early exit of thinking (chunked calls on the tier's server);
   every endpoint call is made under the tier's retry rule (:func:`effagent.llm.client.retried`), and only
   its final failure is a ledger record;
3. **fall back**: only an endpoint failure (:func:`effagent.llm.client.is_endpoint_failure`) moves the step to
   the next tier of ``decision.fallback``; any other error — effagent's own included — surfaces as itself;
4. **cascade**: a band that verifies has its answer scored (:mod:`effagent.levers.cascade`) and, when it looks
   wrong, the escalated decision (``decide.escalate``) is called;
5. **account**: every call is a ledger record (estimated when the server reported no usage), the answer is
   tagged with its decision, and the step's reservation is settled or freed.

The procedure is written once, as a generator that yields what it needs done (:class:`_Call`, :class:`_Account`,
:class:`_Whole`, :class:`_End`, :class:`_Release`); :meth:`StepProcedure.run` does those things synchronously,
:meth:`StepProcedure.arun` awaits them, so an async agent never blocks its event loop on the ledger.
The integration supplies the framework side: its messages become a :class:`~effagent.records.Step`, its model
calls and answers go through an :class:`Endpoint`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from effagent.checkin import CheckinError, Grant, pause_payload, read_resume
from effagent.decide import Decision, escalate
from effagent.errors import EndpointError
from effagent.governor import Governor, approx_tokens
from effagent.ledger.base import CallKind, LedgerState, RunSpent, StepRecord, Usage
from effagent.levers.agreement import run_agreement
from effagent.levers.answers import get_extractor
from effagent.levers.base import Ask, Called, CallReport, LeverResult, vote
from effagent.levers.consistency import run_samples
from effagent.levers.length import prompt_budget_instruction
from effagent.llm.client import aretried, is_endpoint_failure, retried
from effagent.records import Step, ToolCall
from effagent.request import TierRequest, encode

T = TypeVar("T")
R = TypeVar("R")
ReasoningCounter = Callable[[str, str], int]  # (tier name, reasoning text) -> tokens


class Reply(NamedTuple):
    """A model's answer as the step procedure reads it (an integration builds it from its message type)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int | None = None  # None: the server reported no usable count
    output_tokens: int | None = None
    reasoning_tokens: int = 0
    reasoning: str = ""
    model: str | None = None
    cache_read_tokens: int = 0  # parts of input_tokens read from / written to the provider's prompt cache
    cache_write_tokens: int = 0


class Endpoint(Protocol[T]):
    """The integration's side of one step: how it calls a tier, and how it reads and tags the answer ``T``."""

    def call(self, request: TierRequest) -> T:
        """One call on ``request.tier`` with ``request.settings`` (raises the endpoint's error)."""
        ...

    async def acall(self, request: TierRequest) -> T: ...

    def read(self, result: T) -> Reply | None:
        """The answer in ``result`` (None when it holds none)."""
        ...

    def tag(self, result: T, meta: dict[str, Any], final_note: str | None) -> None:
        """Attach effagent's metadata to the answer. ``final_note`` is set on a finalize step: the answer must
        end the run, so tool calls it still asks for are dropped and the note stands in for an empty text."""
        ...

    def conversation(self) -> list[dict[str, Any]]:
        """The conversation as the tier sees it, in OpenAI chat format (for levers that call the server)."""
        ...

    def wrap(self, reply: Reply) -> T:
        """A result holding an answer effagent obtained from the server itself (early exit)."""
        ...


class StepContext(NamedTuple):
    """A planned step: where it runs, what was decided, and what it looked like."""

    run_id: str
    thread_id: str | None
    thread_base: Usage | None  # the thread's total kept in graph state (checkpointed graphs)
    decision: Decision
    step: Step
    spent: LedgerState  # what the run and thread spent before this step


class Outcome(NamedTuple, Generic[T]):
    """The step's result and what its calls spent; the thread's and the run's totals after it (what a checkpointed
    graph keeps in its state, so a run resumed on another worker keeps what it spent) are worked out when asked."""

    result: T
    usage: Usage
    before: LedgerState  # what the run and the thread spent before the step
    step: int

    @property
    def thread_total(self) -> Usage:
        return self.before.thread + self.usage

    @property
    def run_total(self) -> RunSpent:
        return RunSpent(usage=self.before.run + self.usage, steps=max(self.before.steps, self.step + 1))


# -- what the procedure asks its driver to do (built every step: NamedTuples, immutable and cheap) ---------
class _Call(NamedTuple):
    request: TierRequest


class _Account(NamedTuple):
    ctx: StepContext
    call: CallReport


class _Whole(NamedTuple):
    """A lever that runs the whole step on one tier with a synchronous model call (samples, agreement, early
    exit); what it made of the step is a :class:`~effagent.levers.base.LeverResult`."""

    run: Callable[[Callable[[TierRequest], Any]], LeverResult[Any]]


class _End(NamedTuple):
    ctx: StepContext
    usage: Usage


class _Release(NamedTuple):
    ctx: StepContext


_Effect = _Call | _Account | _Whole | _End | _Release
Procedure = Generator[_Effect, Any, Outcome[T]]


@dataclass
class StepProcedure:
    """Runs model steps for an integration. One per middleware / node; it keeps no per-step state."""

    governor: Governor
    reasoning_counter: ReasoningCounter | None = None
    #: early exit's endpoint call (default :func:`effagent.llm.client.complete`; tests pass a fake)
    complete_fn: Callable[..., Any] | None = None
    verifier: Any = field(default=None, repr=False)  # the cascade verifier, loaded on first use
    #: the integration answers an over-limit repeated tool call instead of running it (the LangChain middleware)
    blocks_repeated_calls: bool = False
    #: the prompt and decision of the last steps answered, for record_outcome
    _answered: OrderedDict[tuple[str, int], tuple[str, Decision]] = field(default_factory=OrderedDict, repr=False)

    # -- 1. plan ----------------------------------------------------------------------------------------
    def plan(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None, *,
             run_base: RunSpent | None = None, grant: Grant | None = None, refused: bool = False) -> StepContext:
        decision, spent = self.governor.plan_spent(step, run_id, thread_id, thread_base, run_base=run_base,
                                                   blocks_calls=self.blocks_repeated_calls, grant=grant,
                                                   refused=refused)
        return StepContext(run_id, thread_id, thread_base, decision, step, spent)

    async def aplan(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None, *,
                    run_base: RunSpent | None = None, grant: Grant | None = None,
                    refused: bool = False) -> StepContext:
        decision, spent = await self.governor.aplan_spent(step, run_id, thread_id, thread_base, run_base=run_base,
                                                          blocks_calls=self.blocks_repeated_calls, grant=grant,
                                                          refused=refused)
        return StepContext(run_id, thread_id, thread_base, decision, step, spent)

    # -- 1b. a spent budget with on_exhausted: interrupt — ask a person ----------------------------------
    def plan_checked_in(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None,
                        ask: Callable[[dict[str, Any]], Any], *, run_base: RunSpent | None = None) -> StepContext:
        """:meth:`plan`, and while the decision is a pause: ``ask(payload)`` (LangGraph's ``interrupt``) for a grant
        or a refusal, then plan again. Grants are the ledger's (:meth:`effagent.ledger.base.Ledger.add_grant`),
        never graph state's; a malformed or too large answer is asked again with its error in the payload: the
        run stays paused, nothing spent. Answers LangGraph replays (a node re-run after a later pause, or on
        another worker) carry the same grant id, so a grant is counted once."""
        ledger = self.governor.ledger
        does = {"granted": ledger.granted, "plan": self.plan, "add_grant": ledger.add_grant,
                "record_grant": self.governor.record_grant}
        checking = self._checking_in(step, run_id, thread_id, thread_base, run_base, ask)
        return _drive(checking, lambda op: does[op[0]](*op[1], **op[2]))

    async def aplan_checked_in(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None,
                               ask: Callable[[dict[str, Any]], Any], *,
                               run_base: RunSpent | None = None) -> StepContext:
        ledger = self.governor.ledger
        does = {"granted": ledger.agranted, "plan": self.aplan, "add_grant": ledger.aadd_grant,
                "record_grant": self.governor.arecord_grant}
        checking = self._checking_in(step, run_id, thread_id, thread_base, run_base, ask)
        return await _adrive(checking, lambda op: does[op[0]](*op[1], **op[2]))

    def _checking_in(self, step: Step, run_id: str, thread_id: str | None, thread_base: Usage | None,
                     run_base: RunSpent | None,
                     ask: Callable[[dict[str, Any]], Any]) -> Generator[tuple[str, tuple[Any, ...], dict[str, Any]],
                                                                       Any, StepContext]:
        """The check-in written once: it yields the ledger reads and writes and the plans it needs
        (``(name, args, kwargs)``), which ``plan_checked_in`` does in this thread and ``aplan_checked_in`` awaits."""
        owner = thread_id or run_id
        where = (step, run_id, thread_id, thread_base)
        grant = Grant(*(yield "granted", (owner,), {}))
        ctx: StepContext = yield "plan", where, {"run_base": run_base, "grant": grant}
        asked, error = 0, None
        while ctx.decision.action == "pause":
            value = ask(self._pause_payload(ctx, grant, error))
            asked += 1
            answer, error = self._answer(value, grant)
            if error is not None:
                continue
            if answer is None:
                return (yield "plan", where, {"run_base": run_base, "grant": grant, "refused": True})
            added = yield "add_grant", (owner, f"{run_id}:{ctx.decision.step}:{asked}", answer.tokens, answer.usd,
                                        self._grant_cap()), {}
            if added == "over":
                error = self._over_cap(grant)
                continue
            if added == "added":
                yield "record_grant", (run_id, thread_id, ctx.decision, answer), {}
            grant = Grant(*(yield "granted", (owner,), {}))
            ctx = yield "plan", where, {"run_base": run_base, "grant": grant}
        return ctx

    def _answer(self, value: Any, grant: Grant) -> tuple[Grant | None, str | None]:
        """(the grant asked for, or None for a refusal; the error that keeps the run paused)."""
        try:
            return read_resume(value, self.governor.policy.budgets.grants, grant), None
        except CheckinError as err:
            return None, str(err)

    def _grant_cap(self) -> tuple[int, float]:
        cap = self.governor.policy.budgets.grants.per_thread
        return cap.tokens, cap.usd

    def _over_cap(self, grant: Grant) -> str:
        cap = self.governor.policy.budgets.grants.per_thread
        return (f"the thread's grants would pass {cap.tokens} tokens / ${cap.usd:g} (budgets.grants.per_thread; "
                f"granted so far: {grant}); grant less, or refuse")

    def _pause_payload(self, ctx: StepContext, grant: Grant, error: str | None) -> dict[str, Any]:
        spent = {"run": ctx.spent.run.model_dump(), "thread": ctx.spent.thread.model_dump()}
        return pause_payload(ctx.decision.reason, spent, ctx.decision.budget_left.model_dump(), grant, error)

    def instruction(self, ctx: StepContext) -> str | None:
        """A user message to append to the conversation: the finalize instruction (saying why: a loop, or a spent
        budget), or a prompt-level length budget (TALE / Chain-of-Draft); None when nothing is added."""
        d = ctx.decision
        fin = self.governor.policy.budgets.finalize
        if d.action == "finalize":
            return fin.loop_instruction.replace("{reason}", d.loop) if d.loop is not None else fin.instruction
        if d.prompt_budget == "none" and not d.warning:  # most steps
            return None
        parts = [prompt_budget_instruction(d.prompt_budget, ctx.step.prompt, d.difficulty)
                 if d.prompt_budget != "none" else None,
                 f"Note: {d.warning}." if d.warning else None]
        return "\n".join(p for p in parts if p) or None

    # -- 2.-5. the procedure ---------------------------------------------------------------------------------
    def _procedure(self, ctx: StepContext, endpoint: Endpoint[T]) -> Procedure[T]:
        attempts: list[str] = []
        policy = self.governor.policy
        if ctx.decision.action == "halt":  # no room even for a final answer: say so without a model call
            note = policy.budgets.finalize.halt_message.replace("{reason}", ctx.decision.reason)
            return (yield from self._finish(ctx, ctx.decision.tier, endpoint, endpoint.wrap(Reply(text=note)),
                                            Usage()))
        for tier in [ctx.decision.tier, *ctx.decision.fallback]:
            request = encode(ctx.decision, tier, policy.tier(tier))
            whole = self._whole_step(ctx, request, endpoint)
            started = time.perf_counter()
            lever_spent: Usage | None = None  # what a lever that gave no answer already spent
            meta: dict[str, Any] = {}
            try:
                if whole is not None:
                    done: LeverResult[T] = yield whole
                    lever_spent, meta = done.usage, done.tag()
                    if done.answer is not None:
                        return (yield from self._finish(ctx, tier, endpoint, done.answer, done.usage, meta))
                    started = time.perf_counter()  # the lever gave no answer: one plain call answers
                result = yield _Call(request)
            except Exception as err:
                if not is_endpoint_failure(err):
                    raise
                yield self._failed(ctx, tier, err, started, attempts)
                continue
            reply = endpoint.read(result)
            rec: StepRecord = yield self._account(ctx, tier, reply, started)
            spent = rec.usage if lever_spent is None else lever_spent + rec.usage
            up = self._escalation(ctx, reply)
            if up is None:
                if ctx.decision.shadow_tier is not None and reply is not None and tier == ctx.decision.tier:
                    shadow, agree = yield from self._shadow(ctx, endpoint, reply)
                    spent, meta = spent + shadow, {**meta, "shadow": {"tier": ctx.decision.shadow_tier,
                                                                      "agree": agree}}
                return (yield from self._finish(ctx, tier, endpoint, result, spent, meta))
            up_tier = up.decision.tier
            started = time.perf_counter()
            try:
                better = yield _Call(encode(up.decision, up_tier, policy.tier(up_tier)))
            except Exception as err:
                if not is_endpoint_failure(err):
                    raise
                yield self._failed(up, up_tier, err, started, attempts)  # the cheap answer stands
                return (yield from self._finish(ctx, tier, endpoint, result, spent, meta))
            up_rec: StepRecord = yield self._account(up, up_tier, endpoint.read(better), started)
            return (yield from self._finish(up, up_tier, endpoint, better, spent + up_rec.usage, meta))
        yield _Release(ctx)
        raise EndpointError(attempts)

    def _finish(self, ctx: StepContext, tier: str, endpoint: Endpoint[T], result: T, usage: Usage,
                extra: Mapping[str, Any] | None = None) -> Generator[_Effect, Any, Outcome[T]]:
        """Tag the answer with its decision, close the step, and give the thread's new total."""
        d = ctx.decision
        telemetry = self.governor.policy.telemetry
        shown = d.summary()  # what the step got, and why it ended the run early when it did
        if telemetry.answer_metadata == "decision":
            shown["decision"] = d.model_dump()  # plain values only (no enums, tuples or sets)
        note = (f"(no final answer: the model still asked for a tool; {d.reason})" if d.action == "finalize"
                else None)
        endpoint.tag(result, {"tier": tier, "run_id": ctx.run_id, **shown, **(extra or {})}, note)
        self._answered[(ctx.run_id, d.step)] = (ctx.step.prompt, d)
        if len(self._answered) > 4096:
            self._answered.popitem(last=False)
        yield _End(ctx, usage)
        return Outcome(result, usage, ctx.spent, d.step)

    def _account(self, ctx: StepContext, tier: str, reply: Reply | None, started: float,
                 kind: CallKind = "model") -> _Account:
        """One call's ledger record (usage estimated when the server reported none)."""
        inp, out, reasoning, note, counted = 0, 0, 0, None, False
        cached: dict[str, int] = {}
        if reply is not None:
            inp, out, reasoning = reply.input_tokens, reply.output_tokens, reply.reasoning_tokens
            cached = {"cache_read_tokens": reply.cache_read_tokens, "cache_write_tokens": reply.cache_write_tokens}
            if inp is None or out is None:
                note = "usage not reported; estimated"
                inp = approx_tokens(ctx.step.text) if inp is None else inp
                out = approx_tokens(reply.text + reply.reasoning) if out is None else out
            if not reasoning and reply.reasoning and self.reasoning_counter is not None:
                reasoning, counted = self.reasoning_counter(tier, reply.reasoning), True
        content = None
        if reply is not None and self.governor.policy.telemetry.record_content:
            content = {"prompt": ctx.step.prompt, "completion": reply.text}
        return _Account(ctx, CallReport(tier=tier, input_tokens=inp, output_tokens=out, reasoning_tokens=reasoning,
                                        kind=kind, duration_s=time.perf_counter() - started,
                                        response_model=reply.model if reply is not None else None,
                                        content=content, error=note, reasoning_estimated=counted, **cached))

    def _failed(self, ctx: StepContext, tier: str, err: Exception, started: float, attempts: list[str],
                kind: CallKind = "model") -> _Account:
        policy = self.governor.policy
        msg = f"{tier}: {type(err).__name__}: {policy.redact(str(err))[:200]}"  # secrets masked, then cut
        attempts.append(msg)  # the EndpointError the application gets
        if not policy.telemetry.record_content:  # an error may echo the prompt or a tool result: the ledger
            status = getattr(err, "status", None)  # record (and the trace) keep its kind only
            msg = (f"{tier}: {type(err).__name__}: {f'HTTP {status}, ' if isinstance(status, int) else ''}"
                   "message not recorded (telemetry.record_content is false)")
        return _Account(ctx, CallReport(tier=tier, input_tokens=0, output_tokens=0, ok=False, error=msg, kind=kind,
                                        duration_s=time.perf_counter() - started))

    # -- labels for learning: the strong tier asked too (learning.shadow_share) -----------------------------
    def _shadow(self, ctx: StepContext, endpoint: Endpoint[T],
                reply: Reply) -> Generator[_Effect, Any, tuple[Usage, bool | None]]:
        """Ask the strong tier the same step (its answer is never shown to the agent), account it as kind
        ``shadow``, and append whether the two answers agree to the outcomes file."""
        policy = self.governor.policy
        strong = ctx.decision.shadow_tier
        assert strong is not None
        started = time.perf_counter()
        try:
            got = yield _Call(encode(ctx.decision, strong, policy.tier(strong)))
        except Exception as err:
            if not is_endpoint_failure(err):
                raise
            yield self._failed(ctx, strong, err, started, [], kind="shadow")
            return Usage(), None
        theirs = endpoint.read(got)
        rec: StepRecord = yield self._account(ctx, strong, theirs, started, kind="shadow")
        extract = get_extractor(policy.learning.extractor)
        agree = theirs is not None and vote(reply.text, reply.tool_calls, extract) == vote(
            theirs.text, theirs.tool_calls, extract)
        self.governor.record_label(ctx.run_id, ctx.decision, ctx.step.prompt, cheap_correct=agree, label="agreement")
        return rec.usage, agree

    def record_outcome(self, run_id: str, success: bool, *, step: int | None = None,
                       feedback: str | None = None) -> bool:
        """Application code says whether a step's answer was right (task success, user feedback); ``step`` None
        means the run's last step. Written to ``learning.outcomes`` for a step a cheaper tier answered (with the
        step's decision) and to the trace; returns whether the step was known (the last 4,096 steps are)."""
        key = (run_id, step) if step is not None else next(
            (k for k in reversed(self._answered) if k[0] == run_id), None)
        seen = self._answered.get(key) if key is not None else None
        if seen is None:
            return False
        prompt, decision = seen
        self.governor.observer.on_outcome(run_id, decision, success, feedback)
        if decision.tier != self.governor.policy.strong_tier:
            self.governor.record_label(run_id, decision, prompt, cheap_correct=success, label="outcome",
                                       feedback=feedback)
        return True

    # -- cascade -------------------------------------------------------------------------------------------
    def _escalation(self, ctx: StepContext, reply: Reply | None) -> StepContext | None:
        """The escalated step when the decision verifies and the answer looks wrong. Only answers are verified:
        a step that calls tools goes on as the agent asked."""
        if ctx.decision.lever != "cascade" or reply is None or reply.tool_calls:
            return None
        if self.verifier is None:
            from effagent.levers.cascade import CascadeVerifier

            self.verifier = CascadeVerifier()
        p_wrong = self.verifier.verify(ctx.step.prompt, reply.text).score
        up = escalate(self.governor.policy, ctx.decision, p_wrong)
        return None if up is None else ctx._replace(decision=up)

    # -- levers that run the whole step: samples, agreement, early exit ------------------------------------------
    def _whole_step(self, ctx: StepContext, request: TierRequest, endpoint: Endpoint[T]) -> _Whole | None:
        """The lever ``decide`` chose (``decision.lever``), when it takes several calls. Early exit needs the
        request to think: on a fallback tier that cannot, one plain call answers."""
        d, policy = ctx.decision, self.governor.policy
        if d.lever == "samples":
            assert d.consistency is not None  # decide sets it with this lever
            consistency = d.consistency
            return _Whole(lambda call: run_samples(request, consistency, d.samples, self._asker(ctx, endpoint, call)))
        if d.lever == "agreement":
            def agreed(call: Callable[[TierRequest], T]) -> LeverResult[T]:
                def ask_up(up: Decision) -> Called[T]:
                    return self._asker(ctx._replace(decision=up), endpoint, call)(
                        encode(up, up.tier, policy.tier(up.tier)), "model")

                return run_agreement(policy, d, request, self._asker(ctx, endpoint, call), ask_up)

            return _Whole(agreed)
        if d.lever == "early_exit" and request.thinking:
            return _Whole(lambda call: self._early_exit(ctx, request, endpoint))
        return None

    def _asker(self, ctx: StepContext, endpoint: Endpoint[T], call: Callable[[TierRequest], T]) -> Ask[T]:
        """A lever's call: made under the tier's retry rule (``call``), read, and accounted (the one route)."""
        gov = self.governor

        def ask(request: TierRequest, kind: CallKind = "sample") -> Called[T]:
            started = time.perf_counter()
            res = call(request)
            reply = endpoint.read(res)
            rec = _book(gov, ctx, self._account(ctx, request.tier, reply, started, kind=kind).call)
            if reply is None:
                return Called(res, False, usage=rec.usage)
            return Called(res, True, reply.text, reply.tool_calls, rec.usage)

        return ask

    def _early_exit(self, ctx: StepContext, request: TierRequest, endpoint: Endpoint[T]) -> LeverResult[T]:
        """Chunked thinking with answer probes on the tier's endpoint (:func:`effagent.levers.early_exit.run_step`);
        its answer, when it has one, wrapped as the integration's answer."""
        from effagent.levers.early_exit import run_step
        from effagent.levers.loopguard import check_reasoning

        d, gov = ctx.decision, self.governor
        assert d.early_exit is not None  # decide sets it with this lever
        guard = gov.policy.loop_guard
        stop_check = ((lambda r: check_reasoning(r, guard.max_reasoning_verifications)) if guard.enabled else None)
        more = {"complete_fn": self.complete_fn} if self.complete_fn is not None else {}
        done = run_step(request, gov.policy.tier(request.tier), d.early_exit, endpoint.conversation(),
                        account=lambda c: _book(gov, ctx, c).usage, stop_check=stop_check,
                        reasoning_counter=self.reasoning_counter, **more)
        if done.answer is None:
            return LeverResult(None, done.usage, done.meta)
        a, total = done.answer, done.usage
        reply = Reply(text=a.text, input_tokens=total.input_tokens, output_tokens=total.output_tokens,
                      reasoning_tokens=a.reasoning_tokens, reasoning=a.reasoning, model=a.model,
                      cache_read_tokens=total.cache_read_tokens, cache_write_tokens=total.cache_write_tokens)
        return LeverResult(endpoint.wrap(reply), total, done.meta)

    # -- the drivers ---------------------------------------------------------------------------------------
    def run(self, ctx: StepContext, endpoint: Endpoint[T]) -> Outcome[T]:
        """Run the planned step, every call and ledger write in this thread."""
        gov = self.governor

        def call(request: TierRequest) -> T:  # every model call under its tier's retry rule (llm.client)
            return retried(gov.policy.tier(request.tier), lambda: endpoint.call(request))

        def do(effect: _Effect) -> Any:
            if isinstance(effect, _Call):
                return call(effect.request)
            if isinstance(effect, _Account):
                return _book(gov, effect.ctx, effect.call)
            if isinstance(effect, _Whole):
                return effect.run(call)
            if isinstance(effect, _End):
                return gov.end_step(effect.ctx.run_id, effect.ctx.decision, effect.usage)
            return gov.release(effect.ctx.run_id, effect.ctx.decision)

        return _drive(self._procedure(ctx, endpoint), do)

    async def arun(self, ctx: StepContext, endpoint: Endpoint[T]) -> Outcome[T]:
        """Run the planned step on the event loop: model calls and ledger writes are awaited; the levers that run
        a whole step (sampling, early exit) run in a worker thread whose model calls are awaited on this loop."""
        gov = self.governor
        loop = asyncio.get_running_loop()

        async def acall(request: TierRequest) -> T:  # every model call under its tier's retry rule (llm.client)
            return await aretried(gov.policy.tier(request.tier), lambda: endpoint.acall(request))

        def call_on_loop(request: TierRequest) -> T:  # from the worker thread
            return asyncio.run_coroutine_threadsafe(acall(request), loop).result()

        async def do(effect: _Effect) -> Any:
            if isinstance(effect, _Call):
                return await acall(effect.request)
            if isinstance(effect, _Account):
                return await _abook(gov, effect.ctx, effect.call)
            if isinstance(effect, _Whole):
                return await asyncio.to_thread(effect.run, call_on_loop)
            if isinstance(effect, _End):
                return await gov.aend_step(effect.ctx.run_id, effect.ctx.decision, effect.usage)
            return await gov.arelease(effect.ctx.run_id, effect.ctx.decision)

        return await _adrive(self._procedure(ctx, endpoint), do)


def _book(gov: Governor, ctx: StepContext, c: CallReport) -> StepRecord:
    """Every call of a step goes to the ledger here (or in :func:`_abook`): the procedure's and the levers'."""
    return gov.book(ctx.run_id, ctx.thread_id, ctx.decision, c)


async def _abook(gov: Governor, ctx: StepContext, c: CallReport) -> StepRecord:
    return await gov.abook(ctx.run_id, ctx.thread_id, ctx.decision, c)


def _drive(proc: Generator[Any, Any, R], do: Callable[[Any], Any]) -> R:
    """Run ``proc`` (the step procedure, or the check-in), doing each effect it yields; an effect's error is raised
    inside it."""
    try:
        effect = next(proc)
        while True:
            try:
                value = do(effect)
            except Exception as err:
                effect = proc.throw(err)
            else:
                effect = proc.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _adrive(proc: Generator[Any, Any, R], do: Callable[[Any], Awaitable[Any]]) -> R:
    try:
        effect = next(proc)
        while True:
            try:
                value = await do(effect)
            except Exception as err:
                effect = proc.throw(err)
            else:
                effect = proc.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
