"""The policy's sections (estimators, levers, bands, budgets, telemetry, ledger, learning, routing) and the
:class:`Policy` that holds them with its tiers; what providers refuse is checked in :mod:`.checks`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from effagent.capabilities import capabilities
from effagent.errors import UnknownTierError
from effagent.policy.checks import CrossCheckError, band_provider_problems, role_band_problems, tier_problems
from effagent.policy.environment import string_secrets
from effagent.policy.tiers import NonNeg, NonNegInt, Tier, _Strict
from effagent.records import STEP_ROLES, StepRole
from effagent.redact import Redactor, url_secrets

#: the estimators a policy can name (``effagent.difficulty`` builds each; a test keeps the two lists equal)
EstimatorName = Literal["rule", "learned", "probe"]
#: estimators policies could name before and what they are now
REMOVED_ESTIMATORS = ("heuristic", "length", "trained")


def removed_estimator(name: str) -> str:
    """What a policy (or a command) that names a removed estimator is told to change."""
    return (f"the {name!r} estimator was removed from policies: it is now a benchmark baseline (`effagent bench "
            f"replay --estimators rule,{name}` still compares against it). Use {{name: rule}} (the default), or "
            "{name: learned, path: MODEL} with a model file that `effagent difficulty learn` trains on your "
            "outcomes")


class EstimatorRef(_Strict):
    name: EstimatorName
    """Estimator name: rule (the default: prompt cues + agent context), learned (a model file from `effagent
    difficulty learn`, given as `path`) or probe (a short logprob call to a tier)."""
    weight: NonNeg = 1.0
    path: str | None = None
    """The model file of a `learned` estimator (written by `effagent difficulty learn --out PATH`)."""
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", mode="before")
    @classmethod
    def _not_removed(cls, v: object) -> object:
        if isinstance(v, str) and v in REMOVED_ESTIMATORS:
            raise ValueError(removed_estimator(v))
        return v

    @model_validator(mode="after")
    def _path_for_learned(self) -> EstimatorRef:
        if self.name == "learned" and not (self.path or self.options.get("path")):
            raise ValueError("the learned estimator needs its model file: {name: learned, path: MODEL}")
        if self.path and self.name != "learned":
            raise ValueError(f"path is an option of the learned estimator only, not of {self.name!r}")
        return self


class DifficultyConfig(_Strict):
    estimators: list[EstimatorRef] = Field(default_factory=lambda: [EstimatorRef(name="rule")])
    """The estimators whose weighted mean scores a step (default: `rule`, prompt cues that hold up across
    workloads plus the run so far)."""

    @field_validator("estimators")
    @classmethod
    def _some_weight(cls, v: list[EstimatorRef]) -> list[EstimatorRef]:
        if not v:
            raise ValueError("list at least one estimator, e.g. [{name: rule}]")
        if sum(e.weight for e in v) <= 0:
            raise ValueError("the estimator weights sum to 0; give at least one a positive weight")
        return v


class Consistency(_Strict):
    """Adaptive self-consistency for bands with samples > 1: sample in batches, stop early when the vote is
    settled (Adaptive-Consistency's Beta rule and/or ESC's all-agree window), return the majority."""

    batch: Annotated[int, Field(ge=1, le=16)] = 2
    """Samples drawn per round."""
    threshold: Annotated[float, Field(gt=0.5, lt=1.0)] | None = 0.95
    """Stop when P(the leading answer is the majority) reaches this (Beta rule); null = off."""
    window: Annotated[int, Field(ge=2)] | None = None
    """Stop when this many samples in a row agree (ESC); null = off."""
    decided: bool = True
    """Stop when the samples still allowed cannot change the majority (exact: never changes the answer)."""
    extractor: Literal["number", "boxed", "choice", "exact"] = "number"
    """How an answer is read from a sample (tool-call steps always vote on the exact call)."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """Sampling temperature for the samples."""
    seed: int = 0
    """Sample i is drawn with seed + i, so runs are reproducible."""


class Cascade(_Strict):
    """FrugalGPT-style cascade: the band's (cheap) tier answers first; the cascade verifier scores that answer
    (final answer present, arithmetic checks out, truncation, hedging) and the step goes to ``to`` only when
    the answer looks wrong. The cheap call is always paid."""

    to: str
    """Tier to escalate to."""
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Escalate when the verifier's P(cheap answer is wrong) is at least this."""
    thinking: bool = False
    """Thinking on the escalated call."""
    thinking_budget: NonNegInt = 0
    """Thinking budget of the escalated call (0 = the tier's own cap)."""


class Agreement(_Strict):
    """An agreement cascade: the band's cheap tier answers with several votes (`samples` draws, or one call to
    each tier in `tiers`); when at least `threshold` of the votes give the majority's answer, that answer stands,
    otherwise the step escalates to `to`. Every vote and the escalation are paid for, reserved and accounted as
    one step; the answer's metadata and the trace carry the votes. On recorded outcomes this "do other cheap
    models give the cheap answer too?" signal routes far better than any prompt-only estimate
    (docs/benchmarks.md)."""

    to: str
    """Tier to escalate to when the votes disagree."""
    samples: Annotated[int, Field(ge=2, le=16)] = 3
    """Votes drawn on the band's tier (ignored when `tiers` is given)."""
    tiers: list[str] = Field(default_factory=list)
    """One vote from each of these tiers instead (e.g. several small models); the band's tier answers first."""
    threshold: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the votes that must give the majority's answer for it to stand (1.0 = all agree)."""
    extractor: Literal["number", "boxed", "choice", "exact", "code"] = "exact"
    """How an answer is read from a vote: a number, \\boxed{}, a choice letter, the normalised short text, or
    code compared with whitespace and comments removed. A vote that calls tools is compared by its exact call."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """Sampling temperature of the votes drawn on one tier."""
    seed: int = 0


class EarlyExit(_Strict):
    """Early exit of thinking (Dynasor-CoT): think in chunks, after each chunk probe for the answer with a few
    tokens, stop thinking when `agree` probes in a row give the same answer. For answer steps with thinking on
    (a step that offers tools is called normally); the tier's server must continue a partial assistant turn
    (vLLM: `continue_final_message`). Every chunk and probe is a ledger record (probes as kind `probe`)."""

    chunk: Annotated[int, Field(ge=1)] = 64
    """Thinking tokens between probes."""
    agree: Annotated[int, Field(ge=1)] = 2
    """Consecutive probes that must give the same (unhedged) answer to stop thinking."""
    probe_tokens: Annotated[int, Field(ge=1)] = 16
    """Tokens a probe may generate."""
    min_thinking: NonNegInt = 0
    """No probe before this many thinking tokens."""
    extractor: Literal["number", "boxed", "choice", "exact"] = "number"
    """How an answer is read from a probe."""
    answer: Literal["write", "probe"] = "write"
    """After the thinking stops: `write` closes the thinking and lets the model write its answer (one more
    call, within the step's max_tokens); `probe` returns the agreed probe's text as the answer (no call)."""


class Band(_Strict):
    """A difficulty band [min, max) and what a step in it gets."""

    name: str
    min: Annotated[float, Field(ge=0, le=1)] = 0.0
    max: Annotated[float, Field(ge=0, le=1)] = 1.0
    tier: str
    thinking: bool = False
    thinking_budget: NonNegInt = 0
    effort: Literal["minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    """Ask the tier's model for this effort or thinking level directly (needs thinking: true; instead of
    thinking_budget): OpenAI and DeepSeek `reasoning_effort`, Claude 4.6+ `output_config.effort`, Gemini 3
    `thinkingLevel`. Validation checks that the model takes it."""
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    samples: Annotated[int, Field(ge=1, le=64)] = 1
    """Most samples for adaptive self-consistency (1 = a single call)."""
    prompt_budget: Literal["none", "tale", "draft"] = "none"
    """Prompt-level length budget: TALE-style token estimate, or Chain-of-Draft terse steps."""
    consistency: Consistency = Field(default_factory=Consistency)
    """How the samples are drawn and when to stop (used when samples > 1)."""
    cascade: Cascade | None = None
    """Answer on this band's tier first and escalate only when the answer looks wrong (answer steps only;
    a step that calls tools is not verified)."""
    early_exit: EarlyExit | None = None
    """Stop thinking early once probes agree on the answer (needs thinking: true; answer steps only)."""
    agreement: Agreement | None = None
    """Answer with several cheap votes and escalate when they disagree (an agreement cascade)."""
    roles: list[StepRole] | None = None
    """Only for steps in these roles (first, after_tool, restate, tool_error, retry, final; see
    docs/routing.md): a step whose role is listed and whose score is in [min, max) gets this band before the
    bands without roles, which must still cover 0 to 1. Example, every restatement of a tool result on the
    small tier whatever its score: `{name: restate-small, min: 0, max: 1, tier: small, roles: [restate]}`."""

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.roles is not None and not self.roles:
            raise ValueError(f"roles is empty; list at least one of {', '.join(STEP_ROLES)} or drop roles")
        if self.thinking_budget and not self.thinking:
            raise ValueError("thinking_budget is set but thinking is false; set thinking: true or drop the budget")
        if self.effort is not None and not self.thinking:
            raise ValueError("effort is set but thinking is false; set thinking: true or drop effort")
        if self.effort is not None and self.thinking_budget:
            raise ValueError("effort and thinking_budget are both set; keep one of them")
        if self.early_exit is not None and not self.thinking:
            raise ValueError("early_exit is set but thinking is false; set thinking: true or drop early_exit")
        if self.early_exit is not None and self.samples > 1:
            raise ValueError("early_exit and samples > 1 do not combine; use one of them in a band")
        if self.early_exit is not None and self.cascade is not None:
            raise ValueError("early_exit and cascade do not combine; use one of them in a band")
        others = [k for k, on in (("samples > 1", self.samples > 1), ("cascade", self.cascade is not None),
                                  ("early_exit", self.early_exit is not None)) if on]
        if self.agreement is not None and others:
            raise ValueError(f"agreement does not combine with {', '.join(others)}; use one of them in a band")
        return self


class Limit(_Strict):
    tokens: Annotated[int, Field(ge=0, le=2**53)] | None = None
    """Token limit (input + output); unset = none."""
    usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """Dollar limit at the prices the provider bills (cache reads and writes included); unset = none."""

    @property
    def is_set(self) -> bool:
        return self.tokens is not None or self.usd is not None


class GrantLimit(_Strict):
    """The most a person's grants may add (`budgets.grants.per_grant`, `budgets.grants.per_thread`)."""

    tokens: Annotated[int, Field(ge=0)]
    """Tokens."""
    usd: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    """Dollars."""


class Grants(_Strict):
    """Bounds on what a person may grant at a check-in (`on_exhausted: interrupt`). A resume value above them is
    not applied: the run stays paused and the pause says why. Grants are ledger records and reach every scope's
    reservations; only the interrupt's resume value grants (a graph-state update cannot)."""

    per_grant: GrantLimit = Field(default_factory=lambda: GrantLimit(tokens=1_000_000, usd=10.0))
    """The most one answer may grant."""
    per_thread: GrantLimit = Field(default_factory=lambda: GrantLimit(tokens=10_000_000, usd=100.0))
    """The most all grants of one thread may add up to."""


class StepLimit(_Strict):
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    max_thinking_tokens: NonNegInt | None = None


class Finalize(_Strict):
    tier: str | None = None  # default: the cheapest tier
    instruction: str = (
        "The budget for this task is spent. Do not call tools. Using what you already know, "
        "give your best final answer now, briefly."
    )
    """Appended to the conversation of the last call when a budget is spent."""
    loop_instruction: str = (
        "You are repeating yourself without progress ({reason}). Do not call tools. Using what you already "
        "know, give your best final answer now, briefly."
    )
    """Appended when the loop guard ends the run; `{reason}` is what it found."""
    halt_message: str = ("I have to stop here: the budget for this task is spent and there is no room left for "
                         "another answer ({reason}).")
    """The run's last answer when not even a final model call fits what is left (made without a model call);
    `{reason}` says which budget and why."""
    max_tokens: Annotated[int, Field(gt=0)] = 256
    """The final answer's output cap (cut further to what the reserve has room for)."""
    reserve: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """The share of every token and dollar limit (run, thread, team) kept back for final answers: ordinary steps
    stop at `limit x (1 - reserve)`, and the final answer of an exhausted run is reserved like any step from what
    is left up to the limit itself. When even that has no room, the run ends with a final message made without a
    model call that says why. 0 keeps nothing back (exhausted runs then end without a final model call)."""


class Budgets(_Strict):
    run: Limit = Field(default_factory=Limit)
    """Per agent invocation."""
    thread: Limit = Field(default_factory=Limit)
    """Per conversation thread (carried in graph state, so a resumed thread keeps its budget)."""
    team: Limit = Field(default_factory=Limit)
    """Shared by every worker of `ledger.redis.team` (per `ledger.redis.window`); enforced by atomic
    reservations of each step's maximum before the call."""
    step: StepLimit = Field(default_factory=StepLimit)
    warn_at: Annotated[float, Field(gt=0, lt=1)] | None = None
    """A soft limit: once this share of the run's or the thread's budget is spent, each further step's request
    gets a short note ("budget nearly spent: wrap up"), recorded on the decision and in the trace (unset = none)."""
    on_exhausted: Literal["finalize", "error", "interrupt"] = "finalize"
    """When a budget is spent: `finalize` makes one last cheap call without tools or thinking for the final
    answer; `error` raises effagent.BudgetExceeded; `interrupt` pauses a checkpointed agent with a LangGraph
    `interrupt()` carrying what was spent and what is left: resume with `Command(resume={"grant": {"tokens": N}})`
    (or `{"usd": X}`) to go on with that much more budget for the thread (a ledger record of kind `grant`), or
    `Command(resume={"refuse": true})` for the final answer. A team budget that is spent finalizes."""
    finalize: Finalize = Field(default_factory=Finalize)
    grants: Grants = Field(default_factory=Grants)


class Fallback(_Strict):
    """On endpoint failure after retries, try the next tier in ``order`` (default: the tiers as listed)."""

    enabled: bool = True
    order: list[str] | None = None


class LoopGuard(_Strict):
    enabled: bool = True
    scope: Literal["turn", "thread"] = "turn"
    """Where repeats are counted: `turn` (since the last user message: a new user message starts a fresh count,
    so a loop in one turn does not hold back the next) or `thread` (the whole conversation)."""
    max_repeated_tool_calls: Annotated[int, Field(ge=1)] = 2
    """The same tool call (same name and arguments) may run this many times in a turn. With the LangChain
    middleware a further identical call is not run: the agent gets a tool message saying why, and may change
    course or answer; if it asks for that same call once more, its next step is a final answer. (With the
    LangGraph node, which does not run the tools, the step after the over-limit call is a final answer.)
    A call whose arguments changed is progress, not a repeat."""
    max_reflection_rounds: Annotated[int, Field(ge=1)] = 3
    """Critique→revise rounds whose drafts barely change before a final answer is forced."""
    min_change_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """A revision that changes less than this share of the draft counts as no progress."""
    max_reasoning_verifications: Annotated[int, Field(ge=1)] = 8
    """Self-verification sentences ("wait", "let me double-check", ...) allowed in one step's reasoning; a step
    whose reasoning re-verified itself more often forces a final answer on the next step."""
    max_steps: Annotated[int, Field(ge=1)] | None = None
    """Hard cap on model steps per run (unset = none)."""


class Telemetry(_Strict):
    enabled: bool = True
    exporter: Literal["file", "console", "otlp", "none"] = "file"
    """Where spans go: a local JSONL file (read by `effagent report`), the console, or OTLP (configured by the
    standard OTEL_* variables)."""
    path: str = "effagent-out/traces.jsonl"
    service_name: str = "effagent"
    project: str | None = None
    record_content: bool = False
    """Record prompt and completion text in spans (off by default)."""
    answer_metadata: Literal["decision", "summary"] = "decision"
    """What each answer carries in `response_metadata["effagent"]`: `decision`, the whole decision (tier,
    thinking, budgets, signals, reason, what was left of the budget); or `summary`, its tier, band, action,
    difficulty, thinking and max_tokens only. A checkpointer stores every answer again at every step, so
    `summary` makes checkpointed agents cheaper to run."""


class RedisLedger(_Strict):
    """The shared ledger in Redis (`backend: redis`): every worker with the same `url` and `key_prefix` shares
    its totals, records and reservations. docs/budgets.md, "Redis faults and namespacing", says what each
    fault does."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Field(min_length=1, pattern=r"^[^{}]+$")] | None = None
    """The namespace of every key: the apps (or environments) that share one Redis keep apart by it, and the
    workers of one app share budgets through it. Unset: `effagent:NAME` from the policy's `name`, so two
    policies with different names never share totals; set it to share a team budget between policies, or to
    `effagent` to keep the keys that earlier versions wrote (they all used `effagent`)."""
    on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open"
    """Redis unreachable: fail_open keeps going on a local ledger that starts from the last totals this worker
    saw (with a warning); fail_closed refuses new steps (LedgerUnavailable). In both modes the record of a call
    that was made is never lost: it is journaled and written once Redis is back."""
    team: str | None = None
    window: Literal["none", "daily"] = "none"
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.5
    """The most one Redis call waits for a reply (a frozen or unreachable Redis holds a ledger call, and so an
    agent step, at most about a second longer: pool wait and connect are bounded too)."""
    hold_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """A step's reservation expires this long after its worker last renewed it. A live worker renews its
    holds every third of it while their calls run (however long), so only a dead worker's holds expire, and
    its budget is free again within this time."""
    journal: str | None = None
    """JSON-lines file (appended, fsync'd) that keeps the records Redis could not take until they are written
    to it, each once by its id; a worker restarted after a crash writes what it holds. Default
    `effagent-out/ledger-journal-PREFIX.jsonl` under the working directory; give workers a path on a disk
    that survives them."""
    run_ttl_s: Annotated[int, Field(ge=3600)] = 7 * 86400
    """How long a run's totals, records and step set are kept after its last record."""
    thread_ttl_s: Annotated[int, Field(ge=3600)] = 30 * 86400
    """How long a thread's total (its budget) and grants are kept after its last record."""
    totals_ttl_s: Annotated[int, Field(ge=86400)] = 400 * 86400
    """How long a user or team total without a window is kept after its last record (a daily window's total
    is kept 3 days)."""


class LedgerConfig(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisLedger = Field(default_factory=RedisLedger)


class Learning(_Strict):
    """Labels from production without people: for `shadow_share` of the steps a cheaper tier answers, the
    strong tier is asked too (never shown to the agent; its cost is recorded as kind `shadow` in the ledger and
    the trace, and reserved under shared budgets), and a line saying whether the two answers agree is appended
    to `outcomes` — the input of `effagent difficulty learn` and `effagent calibrate`."""

    shadow_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of cheap-tier steps that are also asked of the strong tier (0 = off)."""
    outcomes: str | None = None
    """JSON-lines file the shadow comparisons and `record_outcome` calls are appended to."""
    strong_tier: str | None = None
    """The tier that labels (default: the tier of the band with the highest max)."""
    extractor: Literal["number", "boxed", "choice", "exact", "code"] = "exact"
    """How the two answers are compared."""

    @model_validator(mode="after")
    def _file_for_shadows(self) -> Learning:
        if self.shadow_share > 0 and not self.outcomes:
            raise ValueError("shadow_share needs an outcomes file to write to: learning: {outcomes: PATH}")
        return self


class Routing(_Strict):
    """When a run's steps may change tier. A step sent to another tier than the one that answered the run's
    previous step pays the whole conversation again at the new tier's input price instead of the old tier's
    cache-read price (providers and vLLM cache the prefix)."""

    switch: Literal["cost", "step", "turn"] = "cost"
    """`cost`: a step moves to a cheaper tier only when the expected saving is larger than what the switch
    forfeits (the conversation at the new tier's input price vs the old tier's cache-read price; moving to a
    dearer tier is always allowed); `step`: every step goes where its band says; `turn`: the tier is chosen on
    the first step of each user turn and kept for the rest of the turn."""


class Policy(_Strict):
    """A validated budget policy. Immutable (every section is frozen): effagent works its per-step plans out
    once per policy, so a changed policy is a new one, validated like the first
    (``Policy.model_validate({**policy.model_dump(), ...})``, or load the file again)."""

    version: Literal[1] = 1
    name: str = "policy"
    tiers: dict[str, Tier]
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    bands: list[Band]
    budgets: Budgets = Field(default_factory=Budgets)
    fallback: Fallback = Field(default_factory=Fallback)
    loop_guard: LoopGuard = Field(default_factory=LoopGuard)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    learning: Learning = Field(default_factory=Learning)
    routing: Routing = Field(default_factory=Routing)
    baseline_tier: str | None = Field(
        default=None, description="tier every step would use without effagent (for 'tokens saved')"
    )
    # secret values read from the environment while loading (see effagent.redact); never serialised
    _env_secrets: frozenset[str] = PrivateAttr(default=frozenset())
    _redactor: Redactor | None = PrivateAttr(default=None)

    @field_validator("tiers")
    @classmethod
    def _has_tiers(cls, v: dict[str, Tier]) -> dict[str, Tier]:
        if not v:
            raise ValueError("define at least one tier")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Policy:
        problems: list[tuple[tuple[Any, ...], str]] = []
        names = list(self.tiers)

        def need_tier(loc: tuple[Any, ...], name: str | None) -> None:
            if name is not None and name not in self.tiers:
                problems.append((loc, f"unknown tier {name!r}; defined tiers: {', '.join(names)}"))

        bands = sorted(((i, b) for i, b in enumerate(self.bands) if b.roles is None), key=lambda ib: ib[1].min)
        problems.extend(role_band_problems(self.bands))
        if not bands:
            problems.append((("bands",), "define at least one band covering difficulty 0 to 1"))
        else:
            if bands[0][1].min > 0:
                problems.append(((("bands", bands[0][0], "min")), "bands must start at 0 (missing [0, "
                                 f"{bands[0][1].min}))"))
            if bands[-1][1].max < 1:
                problems.append(((("bands", bands[-1][0], "max")), f"bands must end at 1 (missing "
                                 f"[{bands[-1][1].max}, 1])"))
            for (_, a), (j, b) in zip(bands, bands[1:], strict=False):
                if b.min < a.max:
                    problems.append((("bands", j, "min"), f"band {b.name!r} overlaps band {a.name!r} "
                                     f"([{b.min}, {b.max}) vs [{a.min}, {a.max})); make min >= {a.max}"))
                elif b.min > a.max:
                    problems.append((("bands", j, "min"), f"gap between band {a.name!r} and {b.name!r}: "
                                     f"[{a.max}, {b.min}) is not covered; set min: {a.max}"))
        for i, band in enumerate(self.bands):
            need_tier(("bands", i, "tier"), band.tier)
            if band.agreement is not None:
                need_tier(("bands", i, "agreement", "to"), band.agreement.to)
                for j, name in enumerate(band.agreement.tiers):
                    need_tier(("bands", i, "agreement", "tiers", j), name)
            if band.cascade is not None:
                need_tier(("bands", i, "cascade", "to"), band.cascade.to)
                target = self.tiers.get(band.cascade.to)
                if target is not None and band.cascade.thinking and not target.thinking.supported:
                    problems.append((("bands", i, "cascade", "thinking"), f"tier {band.cascade.to!r} cannot think; "
                                     "set cascade.thinking: false or escalate to a thinking tier"))
            tier = self.tiers.get(band.tier)
            if tier is not None and band.thinking:
                if not tier.thinking.supported:
                    problems.append((("bands", i, "thinking"), f"tier {band.tier!r} cannot think "
                                     "(thinking.control: none); set thinking: false or pick a thinking tier"))
                elif tier.thinking.max_budget and band.thinking_budget > tier.thinking.max_budget:
                    problems.append((("bands", i, "thinking_budget"), f"{band.thinking_budget} exceeds tier "
                                     f"{band.tier!r}'s max_budget {tier.thinking.max_budget}"))
        for name, tier in self.tiers.items():
            problems.extend(tier_problems(name, tier))
        for i, band in enumerate(self.bands):
            problems.extend(band_provider_problems(i, band, self.tiers))
        need_tier(("budgets", "finalize", "tier"), self.budgets.finalize.tier)
        need_tier(("learning", "strong_tier"), self.learning.strong_tier)
        need_tier(("baseline_tier",), self.baseline_tier)
        for i, name in enumerate(self.fallback.order or []):
            need_tier(("fallback", "order", i), name)
        if problems:
            raise CrossCheckError(problems)
        return self

    # -- helpers the rest of the code uses -------------------------------------------------------
    def band_named(self, name: str | None) -> Band | None:
        return next((b for b in self.bands if b.name == name), None)

    def band_for(self, score: float, role: str | None = None) -> Band:
        """The band of a score: a band listing the step's ``role`` first, then the bands without roles."""
        if role is not None:
            for band in self.bands:
                if band.roles is not None and role in band.roles and (band.min <= score < band.max
                                                                      or score == band.max == 1.0):
                    return band
        plain = [b for b in self.bands if b.roles is None]
        for band in plain:
            if band.min <= score < band.max:
                return band
        return max(plain, key=lambda b: b.max)  # score == 1.0 falls in the top band

    @property
    def strong_tier(self) -> str:
        """The tier that labels shadowed steps: ``learning.strong_tier``, else the top band's tier."""
        return self.learning.strong_tier or max(self.bands, key=lambda b: b.max).tier

    def tier(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(f"unknown tier {name!r}; defined tiers: {', '.join(self.tiers)}") from None

    @property
    def cheapest_tier(self) -> str:
        return min(self.tiers, key=lambda n: (self.tiers[n].price.output_per_mtok, self.tiers[n].price.input_per_mtok))

    @property
    def fallback_order(self) -> list[str]:
        return list(self.fallback.order or self.tiers)

    def summary(self) -> str:
        lines = [f"policy {self.name!r}: {len(self.tiers)} tier(s), {len(self.bands)} band(s)"]
        for n, t in self.tiers.items():
            think = t.thinking.control if t.thinking.supported else "no thinking"
            caps = capabilities(t.model)
            if t.thinking.supported and not caps.can_off and t.thinking.provider_native:
                least = (f"its least budget ({caps.budget[0]})" if t.thinking.control == "gemini" and caps.budget
                         else f"level {caps.least_level}")
                think += f"; {t.model} cannot switch thinking off: thinking off sends {least}"
            lines.append(f"  tier {n}: {t.model} @ {t.api_base or 'default endpoint'} "
                         f"(${t.price.input_per_mtok}/${t.price.output_per_mtok} per Mtok, {think})")
        for b in sorted(self.bands, key=lambda b: b.min):
            think = f"thinking {b.thinking_budget or 'unbounded'}" if b.thinking else "no thinking"
            more = "".join([f", early exit every {b.early_exit.chunk} tokens" if b.early_exit else "",
                            f", cascade to {b.cascade.to}" if b.cascade else ""])
            lines.append(f"  band {b.name} [{b.min}, {b.max}) -> {b.tier}, {think}, samples {b.samples}{more}")
        r, t = self.budgets.run, self.budgets.thread
        lines.append(f"  budgets: run {r.tokens or '-'} tok / ${r.usd if r.usd is not None else '-'}, "
                     f"thread {t.tokens or '-'} tok / ${t.usd if t.usd is not None else '-'}, "
                     f"on_exhausted={self.budgets.on_exhausted}")
        return self.redact("\n".join(lines))

    @property
    def redactor(self) -> Redactor:
        """Masks this policy's secrets (tier api keys, values read from ``${VAR}``, URL userinfo and key-like
        query parameters) and every secret shape in a text: use it on anything written out."""
        if self._redactor is None:
            values = set(self._env_secrets)
            for tier in self.tiers.values():
                if tier.api_key is not None:
                    values.add(tier.api_key.get_secret_value())
                values.update(string_secrets(tier.model_dump(mode="json", exclude={"api_key"})))
            values.update(url_secrets(self.ledger.redis.url))
            self._redactor = Redactor(values)
        return self._redactor

    def redact(self, text: str) -> str:
        """``text`` with this policy's secrets masked (see :attr:`redactor`)."""
        return self.redactor(text)

