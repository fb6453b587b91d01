"""Early exit of thinking (Dynasor-CoT style, Fu et al. 2025): think in chunks, probe, stop when settled.

The model thinks ``chunk`` tokens at a time. After each chunk a short *probe* asks for the answer right now,
continuing the partial reasoning with :data:`PROBE_CUE`. When ``agree`` consecutive probes give the same
extractable, unhedged answer, thinking stops and that answer is used; otherwise thinking goes on until the
model ends it, ``max_thinking`` tokens are spent, or the caller's ``stop_check`` (e.g. the loop guard's
reasoning cap) says stop. Every call's usage is returned, probes as ``kind="probe"``, so the ledger counts them.

Framework-free: the caller supplies the three calls (:func:`early_exit`), or a tier whose server continues a
partial assistant turn (:func:`run_on_tier`, vLLM's ``continue_final_message``).

- ``think(reasoning_so_far, max_new_tokens) -> Chunk``: continue the thinking by up to that many tokens;
- ``probe(reasoning_so_far) -> Generated``: the text the model writes right after ``reasoning + PROBE_CUE``;
- ``answer(reasoning, exited_early) -> Generated`` (optional): the final answer after the thinking; when it is
  omitted the agreed probe (or a last probe) is the answer, which costs no extra call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from effagent.ledger.base import Usage
from effagent.levers.answers import Extractor, get_extractor
from effagent.levers.base import Account, CallReport, LeverResult
from effagent.llm.budget_forcing import continue_message
from effagent.llm.client import THINK_CLOSE, Completion, complete
from effagent.policy import EarlyExit, Tier
from effagent.request import TierRequest, thinking_chunk_settings

PROBE_CUE = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**: "
HEDGES: tuple[str, ...] = ("wait", "hmm", "hold on", "maybe", "perhaps", "not sure", "unsure", "i think",
                           "double-check", "let me", "?")


@dataclass(frozen=True)
class Chunk:
    """The next piece of thinking. ``finished``: the model ended its thinking (or its whole output) by itself;
    ``answer``: text it wrote after ending the thinking, if any (then no answer call is needed)."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finished: bool = False
    answer: str = ""


@dataclass(frozen=True)
class Generated:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


Think = Callable[[str, int], Chunk]
Probe = Callable[[str], Generated]
Answer = Callable[[str, bool], Generated]
StopCheck = Callable[[str], str | None]

CallRole = Literal["model", "probe"]
ExitReason = Literal["probes_agree", "finished", "max_thinking", "stop_check"]


@dataclass(frozen=True)
class CallUsage:
    """One call the lever made, for the ledger (``kind`` maps to ``StepRecord.kind``)."""

    kind: CallRole
    role: Literal["think", "probe", "answer"]
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ProbeRecord:
    after_tokens: int  # thinking tokens when the probe ran
    text: str
    answer: str | None
    hedged: bool


class EarlyExitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk: Annotated[int, Field(ge=1)] = 64  # thinking tokens between probes
    agree: Annotated[int, Field(ge=1)] = 2  # consecutive agreeing probes that end the thinking
    max_thinking: Annotated[int, Field(ge=1)] = 1024  # hard cap on thinking tokens
    probe_tokens: Annotated[int, Field(ge=1)] = 16  # what a probe may generate (the caller's max_tokens)
    min_thinking: Annotated[int, Field(ge=0)] = 0  # no probe before this many thinking tokens
    extractor: str = "number"
    hedges: tuple[str, ...] = HEDGES


@dataclass
class EarlyExitResult:
    answer: str  # the final answer text
    extracted: str | None  # the answer as the extractor reads it
    reasoning: str  # the thinking that was generated
    thinking_tokens: int
    exited: ExitReason
    reason: str
    probes: list[ProbeRecord] = field(default_factory=list)
    calls: list[CallUsage] = field(default_factory=list)

    @property
    def exited_early(self) -> bool:
        return self.exited == "probes_agree"

    def tokens(self, kind: CallRole | None = None) -> tuple[int, int]:
        """(input, output) tokens over all calls, or over calls of one ledger kind."""
        sel = [c for c in self.calls if kind is None or c.kind == kind]
        return sum(c.input_tokens for c in sel), sum(c.output_tokens for c in sel)

    @property
    def output_tokens(self) -> int:
        return self.tokens()[1]

    @property
    def probe_tokens(self) -> tuple[int, int]:
        return self.tokens("probe")


def is_hedged(text: str, hedges: Sequence[str] = HEDGES) -> bool:
    """A probe that hesitates ("wait", "maybe", a question mark...) does not count as an answer."""
    low = text.lower()
    for h in hedges:
        if h == "?":
            if "?" in low:
                return True
        elif re.search(rf"(?<![a-z]){re.escape(h)}(?![a-z])", low):
            return True
    return False


def early_exit(think: Think, probe: Probe, cfg: EarlyExitConfig | None = None, *, answer: Answer | None = None,
               stop_check: StopCheck | None = None, extractor: str | Extractor | None = None) -> EarlyExitResult:
    """Run chunked thinking with probes; see the module docstring."""
    cfg = cfg or EarlyExitConfig()
    extract = get_extractor(extractor if extractor is not None else cfg.extractor)
    reasoning = ""
    spent = 0
    calls: list[CallUsage] = []
    probes: list[ProbeRecord] = []
    streak: list[str] = []
    exited: ExitReason | None = None
    reason = ""
    tail_answer = ""

    while exited is None:
        if spent >= cfg.max_thinking:
            exited, reason = "max_thinking", f"thinking reached max_thinking={cfg.max_thinking} tokens"
            break
        want = min(cfg.chunk, cfg.max_thinking - spent)
        chunk = think(reasoning, want)
        reasoning += chunk.text
        spent += chunk.output_tokens
        calls.append(CallUsage("model", "think", chunk.input_tokens, chunk.output_tokens, chunk.output_tokens))
        if chunk.finished:
            exited, tail_answer = "finished", chunk.answer
            reason = f"the model ended its thinking after {spent} tokens"
            break
        if chunk.output_tokens <= 0:
            exited, reason = "finished", f"the model produced no more thinking after {spent} tokens"
            break
        if stop_check is not None:
            why = stop_check(reasoning)
            if why:
                exited, reason = "stop_check", f"thinking capped after {spent} tokens: {why}"
                break
        if spent < cfg.min_thinking:
            continue
        p = probe(reasoning)
        calls.append(CallUsage("probe", "probe", p.input_tokens, p.output_tokens))
        ans = extract(p.text)
        hedged = is_hedged(p.text, cfg.hedges)
        probes.append(ProbeRecord(spent, p.text, ans, hedged))
        if ans is None or hedged:
            streak = []
        elif streak and streak[-1] != ans:
            streak = [ans]
        else:
            streak.append(ans)
        if len(streak) >= cfg.agree:
            exited = "probes_agree"
            reason = (f"{cfg.agree} consecutive probes answered {ans!r} after {spent} thinking tokens "
                      f"(chunk {cfg.chunk}); thinking stopped early")
            break

    if exited == "probes_agree":
        last = probes[-1]
        final_text = last.text
        if answer is not None:
            a = answer(reasoning, True)
            calls.append(CallUsage("model", "answer", a.input_tokens, a.output_tokens))
            final_text = a.text
    elif tail_answer.strip():
        final_text = tail_answer
    elif answer is not None:
        a = answer(reasoning, False)
        calls.append(CallUsage("model", "answer", a.input_tokens, a.output_tokens))
        final_text = a.text
    else:  # no answer call given: one last probe is the answer
        p = probe(reasoning)
        calls.append(CallUsage("probe", "probe", p.input_tokens, p.output_tokens))
        probes.append(ProbeRecord(spent, p.text, extract(p.text), is_hedged(p.text, cfg.hedges)))
        final_text = p.text
    return EarlyExitResult(answer=final_text, extracted=extract(final_text), reasoning=reasoning,
                           thinking_tokens=spent, exited=exited, reason=reason, probes=probes, calls=calls)


# ------------------------------------------------------------------------ chat-completions adapter


CONTINUE_BODY = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM: continue the last turn


class ChatReply(Protocol):
    """What a chat call returns (``effagent.llm.client.Completion`` fits)."""

    content: str
    reasoning: str | None
    input_tokens: int
    output_tokens: int
    finish_reason: str | None


ChatCall = Callable[[list[dict[str, str]], int], ChatReply]  # (messages, max_tokens) -> one reply


def continuation_callables(call: ChatCall, messages: Sequence[dict[str, str]], *,
                           think_prefix: str, probe_tokens: int = 16,
                           cue: str = PROBE_CUE) -> tuple[Think, Probe]:
    """``think`` and ``probe`` for a chat endpoint that can continue a partial assistant turn (vLLM with
    ``continue_final_message``): ``call`` must send ``CONTINUE_BODY`` and thinking on in its request body,
    e.g. ``lambda m, k: complete(tier, m, settings={"max_tokens": k, "extra_body": {**CONTINUE_BODY,
    "chat_template_kwargs": {"enable_thinking": True}}})[0]``. ``think_prefix`` is what the chat template
    puts at the start of a thinking turn (the partial turn is sent without the template's generation prompt).
    """
    base = [dict(m) for m in messages]

    def think(reasoning: str, k: int) -> Chunk:
        o = call([*base, {"role": "assistant", "content": think_prefix + reasoning}], k)
        content, thought = o.content or "", o.reasoning or ""
        text = thought if thought or not content else ""
        ended = o.finish_reason == "stop" or bool(content and thought)
        return Chunk(text, o.input_tokens, o.output_tokens, finished=ended, answer=content if thought else "")

    def probe(reasoning: str) -> Generated:
        o = call([*base, {"role": "assistant", "content": think_prefix + reasoning.rstrip() + "\n" + cue}],
                 probe_tokens)
        return Generated(((o.reasoning or "") + (o.content or "")).strip(), o.input_tokens, o.output_tokens)

    return think, probe


# ------------------------------------------------------------------------ on a tier's endpoint

CompleteFn = Callable[..., list[Completion]]
Role = Literal["think", "probe", "answer"]
OnCall = Callable[[Role, Completion], None]


def run_on_tier(tier: Tier, messages: Sequence[Mapping[str, Any]], cfg: EarlyExitConfig, *, max_tokens: int,
                answer: Literal["write", "probe"] = "write", seed: int | None = None,
                stop_check: StopCheck | None = None, on_call: OnCall | None = None,
                complete_fn: CompleteFn = complete) -> EarlyExitResult:
    """Answer ``messages`` on ``tier`` with early exit. ``max_tokens`` bounds thinking + probes' answer room:
    thinking stops at ``cfg.max_thinking``; a written answer gets what is left of ``max_tokens`` (at least
    ``cfg.probe_tokens``). Raises the endpoint error of a failing call (calls made before it were reported)."""
    msgs = [dict(m) for m in messages]
    role: list[Role] = ["think"]  # what the next call is, for on_call
    thought = [0]  # thinking tokens spent so far

    def call(turn: list[dict[str, str]], k: int) -> Completion:
        # thinking on, continuing the partial turn, at most k tokens (budget forcing's first-call settings)
        settings = thinking_chunk_settings(tier, {"extra_body": CONTINUE_BODY}, k)
        got = complete_fn(tier, turn, settings=settings, seed=seed)[0]
        if on_call is not None:
            on_call(role[0], got)
        return got

    think_c, probe_c = continuation_callables(call, msgs, probe_tokens=cfg.probe_tokens,
                                              think_prefix=tier.thinking.think_prefix)

    def think(reasoning: str, k: int) -> Chunk:
        role[0] = "think"
        chunk = think_c(reasoning, k)
        thought[0] += chunk.output_tokens
        return chunk

    def probe(reasoning: str) -> Generated:
        role[0] = "probe"
        return probe_c(reasoning)

    def write(reasoning: str, early: bool) -> Generated:
        # the thinking closed, the answer continues the turn: budget forcing's continuation (chat
        # continuation, or the server-rendered prompt on /v1/completions where the chat template drops
        # closed thinking blocks from assistant turns)
        room = max(cfg.probe_tokens, max_tokens - thought[0])
        o, _ = continue_message(tier, msgs, f"{reasoning.rstrip()}\n{THINK_CLOSE}\n\n",
                                settings={"extra_body": dict(tier.extra_body)}, max_tokens=room, seed=seed,
                                complete_fn=complete_fn)
        if on_call is not None:
            on_call("answer", o)
        # without a closing tag in its own output a reasoning parser may file the answer as reasoning
        return Generated(((o.reasoning or "") + (o.content or "")).strip(), o.input_tokens, o.output_tokens)

    return early_exit(think, probe, cfg, answer=write if answer == "write" else None, stop_check=stop_check)


# ------------------------------------------------------------------------ the lever in an agent step

TURN_SLACK_TOKENS = 64  # an early-exit call's turn beyond prompt + thinking: the template's lead-in, the cue


def max_thinking(thinking_budget: int | None, max_tokens: int) -> int:
    """The thinking tokens early exit may spend on a step: the decided budget within ``max_tokens`` (the one
    place this cap is computed: the lever's run and the step's reserved maximum both use it)."""
    return max(1, min(thinking_budget or max_tokens, max_tokens))


def worst_case(opts: EarlyExit, thinking: int, input_tokens: int, max_tokens: int) -> tuple[int, int, int]:
    """(calls, input tokens, output tokens) of an early-exit step at its most: every chunk of ``thinking``, a
    probe after each and the answer, each re-sending the prompt and the thinking so far."""
    chunk = opts.chunk
    chunks = -(-thinking // chunk)
    calls = 2 * chunks + 1
    # think call k re-sends the prompt + k chunks, the probe after it k + 1 chunks, the answer all of it:
    # sum over k < chunks of (2k + 1) chunks = chunks^2 chunks of thinking, plus the answer's
    inp = calls * (input_tokens + TURN_SLACK_TOKENS) + chunk * chunks * chunks + thinking
    outp = thinking + (chunks + 1) * opts.probe_tokens + max_tokens
    return calls, inp, outp


@dataclass(frozen=True)
class EarlyExitMeta:
    """What early exit did on a step (the answer's ``early_exit`` tag)."""

    exited: ExitReason
    reason: str
    thinking_tokens: int
    probes: int
    answer: str | None
    calls: int
    answer_from_probes: bool
    plain_call_answered: bool
    name: str = "early_exit"

    def dump(self) -> dict[str, Any]:
        return {"exited": self.exited, "reason": self.reason, "thinking_tokens": self.thinking_tokens,
                "probes": self.probes, "answer": self.answer, "calls": self.calls,
                "answer_from_probes": self.answer_from_probes, "plain_call_answered": self.plain_call_answered}


@dataclass(frozen=True)
class EarlyExitAnswer:
    """The step's answer made from early exit's calls (the step wraps it as the integration's answer)."""

    text: str
    reasoning: str
    reasoning_tokens: int  # the thinking as accounted
    model: str


def run_step(request: TierRequest, tier: Tier, opts: EarlyExit, conversation: Sequence[Mapping[str, Any]], *,
             account: Account, stop_check: StopCheck | None = None,
             reasoning_counter: Callable[[str, str], int] | None = None,
             complete_fn: CompleteFn = complete) -> LeverResult[EarlyExitAnswer]:
    """A step with early exit (``decision.lever == "early_exit"``) on the tier's server: every call is
    accounted through ``account`` as it returns (probes as kind ``probe``). The answer is never empty: when the
    written answer comes back empty, the agreeing probes' answer stands in for it; when there is none either,
    the answer is None and one plain call answers the step.

    The calls go to the tier's endpoint (``complete_fn``: litellm), not to a chat model the integration was
    given: early exit continues a partial assistant turn (vLLM's ``continue_final_message``, or the
    server-rendered prompt on ``/v1/completions``) and reads each chunk's reasoning and finish reason, which a
    chat model's ``invoke`` does not offer."""
    cfg = EarlyExitConfig(chunk=opts.chunk, agree=opts.agree, probe_tokens=opts.probe_tokens,
                          min_thinking=opts.min_thinking, extractor=opts.extractor,
                          max_thinking=max_thinking(request.thinking_budget, request.max_tokens))
    total = Usage()
    thinking_tokens = 0
    last = [time.perf_counter()]

    def on_call(role: Role, c: Completion) -> None:
        nonlocal total, thinking_tokens
        reasoning, counted = 0, False
        if role == "think":
            reasoning = c.reasoning_tokens if c.reasoning_tokens is not None else c.output_tokens
            if c.content and c.reasoning and c.reasoning_tokens is None and reasoning_counter is not None:
                reasoning = reasoning_counter(request.tier, c.reasoning)  # the chunk holds the answer too
                counted = True
            thinking_tokens += reasoning
        now = time.perf_counter()
        total = total + account(CallReport(
            tier=request.tier, input_tokens=c.input_tokens, output_tokens=c.output_tokens, reasoning_tokens=reasoning,
            kind="probe" if role == "probe" else "model", duration_s=now - last[0], response_model=c.model,
            reasoning_estimated=counted, cache_read_tokens=c.cache_read_tokens,
            cache_write_tokens=c.cache_write_tokens))
        last[0] = now

    result = run_on_tier(tier, conversation, cfg, max_tokens=request.max_tokens, answer=opts.answer,
                         stop_check=stop_check, on_call=on_call, complete_fn=complete_fn)
    agreed = result.probes[-1].text.strip() if result.exited == "probes_agree" and result.probes else ""
    answer = result.answer.strip() or agreed
    meta = EarlyExitMeta(result.exited, result.reason, result.thinking_tokens, len(result.probes), result.extracted,
                         len(result.calls), not result.answer.strip() and bool(answer), not answer)
    if not answer:  # neither the written answer nor the probes: a plain call on the tier answers the step
        return LeverResult(None, total, meta)
    return LeverResult(EarlyExitAnswer(answer, result.reasoning, thinking_tokens, tier.model), total, meta)
