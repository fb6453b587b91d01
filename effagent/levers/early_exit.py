"""Early exit of thinking (Dynasor-CoT style, Fu et al. 2025): think in chunks, probe, stop when settled.

The model thinks ``chunk`` tokens at a time. After each chunk a short *probe* asks for the answer right now,
continuing the partial reasoning with :data:`PROBE_CUE`. When ``agree`` consecutive probes give the same
extractable, unhedged answer, thinking stops and that answer is used; otherwise thinking goes on until the
model ends it, ``max_thinking`` tokens are spent, or the caller's ``stop_check`` (e.g. the loop guard's
reasoning cap) says stop. Every call's usage is returned, probes as ``kind="probe"``, so the ledger counts them.

Framework-free: the caller supplies the three calls.

- ``think(reasoning_so_far, max_new_tokens) -> Chunk``: continue the thinking by up to that many tokens;
- ``probe(reasoning_so_far) -> Completion``: the text the model writes right after ``reasoning + PROBE_CUE``;
- ``answer(reasoning, exited_early) -> Completion`` (optional): the final answer after the thinking; when it is
  omitted the agreed probe (or a last probe) is the answer, which costs no extra call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from effagent.levers.answers import Extractor, get_extractor

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
class Completion:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


Think = Callable[[str, int], Chunk]
Probe = Callable[[str], Completion]
Answer = Callable[[str, bool], Completion]
StopCheck = Callable[[str], str | None]

CallKind = Literal["model", "probe"]
ExitReason = Literal["probes_agree", "finished", "max_thinking", "stop_check"]


@dataclass(frozen=True)
class CallUsage:
    """One call the lever made, for the ledger (``kind`` maps to ``StepRecord.kind``)."""

    kind: CallKind
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

    def tokens(self, kind: CallKind | None = None) -> tuple[int, int]:
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


THINK_PREFIX = "<think>\nLet me think step by step.\n"  # how the local think-capable template opens the turn
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
                           probe_tokens: int = 16, think_prefix: str = THINK_PREFIX,
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

    def probe(reasoning: str) -> Completion:
        o = call([*base, {"role": "assistant", "content": think_prefix + reasoning.rstrip() + "\n" + cue}],
                 probe_tokens)
        return Completion(((o.reasoning or "") + (o.content or "")).strip(), o.input_tokens, o.output_tokens)

    return think, probe
