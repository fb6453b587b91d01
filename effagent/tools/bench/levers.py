"""``effagent bench levers``: each lever against a real local vLLM server, with and without it.

- thinking budget: the same prompts with thinking unbounded vs ``thinking_token_budget``;
- early exit (Dynasor-CoT): chunked thinking with answer probes vs unbounded thinking;
- adaptive self-consistency: Beta rule / ESC window vs a fixed N at temperature > 0, same seeds (the adaptive run
  draws a prefix of the fixed run's samples: vLLM seeds the i-th of ``n`` samples with ``seed + i``);
- loop guard: a real LangGraph ``create_agent`` graph with ``EfficiencyMiddleware`` whose model calls the same
  tool forever, with the guard on vs off (off runs to ``recursion_limit``).

``--model smol`` (default) runs them on the local SmolLM2-135M server: the mechanics (thinking budgets, token
counts), not answer quality. ``--model qwen`` runs the levers the stronger local model offers on a fixed GSM8K
slice (the first ``--prompts`` questions of ``effagent/demo_data/gsm8k_slice.jsonl``, GSM8K test lines 1-30) and
reports accuracy next to tokens:

- prompt-level length budgets (the band option ``prompt_budget``): TALE ("use less than N tokens") and
  Chain-of-Draft vs plain step-by-step, greedy;
- adaptive self-consistency (Beta rule) vs a fixed N, Chain-of-Draft samples at temperature > 0: majority accuracy
  and samples drawn;
- the loop guard as above.

Qwen2.5-Coder-0.5B has no thinking mode (its template has none; with think tokens added, a budgeted answer came
back as a refusal), so the thinking budget and early exit run on ``--model smol`` only.

The server is the model's URL variable (``$EFFAGENT_VLLM_URL``, ``$EFFAGENT_VLLM_STRONG_URL``), the one recorded
by ``vllm_local serve``, or one started for the run. Prints a table, writes JSON to ``--out``.

Like ``effagent.tools.cli``, this module is a composition root: it loads the framework adapters (vLLM launcher,
LangChain middleware) by module name at run time, so the core never imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from effagent.evaluation import mcnemar_p
from effagent.levers import answers, consistency, early_exit
from effagent.levers.length import prompt_budget_instruction
from effagent.tools.serving.vllm_local import THINK_PREFIX

SC_PROMPTS: tuple[str, ...] = (  # short questions the tiny local model answers fairly consistently
    "What is 2 + 2? Answer with just the number.",
    "How many legs does a dog have? Answer with just the number.",
    "What is 10 + 10? Answer with just the number.",
    "How many days are in a week? Answer with just the number.",
    "What is 5 + 5? Answer with just the number.",
    "How many hours are in a day? Answer with just the number.",
    "What is 3 times 3? Answer with just the number.",
    "How many months are in a year? Answer with just the number.",
    "What is 100 minus 1? Answer with just the number.",
    "How many sides does a triangle have? Answer with just the number.",
)
FALLBACK_MATH: tuple[str, ...] = (
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "A box holds 12 eggs. How many eggs are in 3 boxes?",
    "Tom had 20 dollars and spent 7. How many dollars does he have left?",
)


# ------------------------------------------------------------------------------------------- the server


@dataclass
class Out:
    content: str
    reasoning: str
    input_tokens: int
    output_tokens: int
    finish_reason: str


class Chat:
    """The few calls the bench needs: ``effagent.llm.client.complete`` on a tier per served name
    (``hosted_vllm/<name>`` through litellm), or litellm directly when that client is not installed."""

    def __init__(self, base_url: str, plain: str, think: str, timeout: float = 300.0) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import httpx

        self._http = httpx.Client(timeout=timeout, trust_env=False)
        self.base_url, self.plain, self.think, self.timeout = base_url, plain, think, timeout
        self.calls = 0
        try:
            from effagent.llm.client import complete
        except ImportError:
            complete = None
        self._complete = complete

    def tokenize(self, text: str) -> int:
        """Token count with the server's tokenizer (vLLM reports 0 reasoning tokens: count the text)."""
        if not text:
            return 0
        r = self._http.post(f"{self.base_url.removesuffix('/v1')}/tokenize",
                            json={"model": self.plain, "prompt": text, "add_special_tokens": False})
        r.raise_for_status()
        return int(r.json()["count"])

    def call(self, messages: list[dict[str, str]], *, model: str | None = None, max_tokens: int,
             temperature: float = 0.0, seed: int = 0, n: int = 1, extra: dict[str, Any] | None = None) -> list[Out]:
        """One request. With ``n > 1`` the prompt is counted on the first sample and the server's output total
        is split over the samples (their sum is what the server reported)."""
        self.calls += 1
        name = model or self.plain
        settings: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "extra_body": extra or {}}
        if self._complete is not None:
            from effagent.policy import Tier

            tier = Tier(model=f"hosted_vllm/{name}", api_base=self.base_url, timeout_s=self.timeout, retries=1)
            got = self._complete(tier, messages, settings=settings, n=n, seed=seed)
            return [Out(c.content or "", c.reasoning or "", c.input_tokens, c.output_tokens, str(c.finish_reason))
                    for c in got]
        import litellm

        litellm.suppress_debug_info = True
        resp = litellm.completion(model=f"hosted_vllm/{name}", api_base=self.base_url, api_key="EMPTY",
                                  messages=messages, n=n, seed=seed, timeout=self.timeout, **settings)
        prompt, total = int(resp.usage.prompt_tokens or 0), int(resp.usage.completion_tokens or 0)
        outs = [Out(ch.message.content or "", getattr(ch.message, "reasoning_content", None) or "",
                    prompt if i == 0 else 0, 0, str(ch.finish_reason)) for i, ch in enumerate(resp.choices)]
        weights = [len(o.content) + len(o.reasoning) + 1 for o in outs]
        for o, w in zip(outs, weights, strict=True):
            o.output_tokens = total * w // sum(weights)
        outs[0].output_tokens += total - sum(o.output_tokens for o in outs)
        return outs


def thinking_body(budget: int | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": True}, **more}
    if budget is not None:
        body["thinking_token_budget"] = budget
    return body


CONTINUE = early_exit.CONTINUE_BODY


# -------------------------------------------------------------------------------------------- prompts


GSM8K_SLICE = "gsm8k_slice.jsonl"  # in effagent/demo_data: GSM8K test lines 1-30, gold numbers after ####


def gsm8k_slice(n: int | None = None) -> list[dict[str, str]]:
    """The first ``n`` rows ``{id, question, answer}`` of the shipped GSM8K slice (package data)."""
    text = (resources.files("effagent") / "demo_data" / GSM8K_SLICE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[:n] if n else rows


def math_prompts(n: int) -> tuple[list[str], str]:
    """Short GSM8K questions (under 260 characters) from the shipped slice, for the tiny model's mechanics."""
    try:
        qs = [r["question"] for r in gsm8k_slice() if len(r["question"]) < 260][:n]
        if qs:
            return qs, f"effagent/demo_data/{GSM8K_SLICE}"
    except (OSError, ValueError, KeyError):
        pass
    return list(FALLBACK_MATH[:n]), "embedded"


# --------------------------------------------------------------------------------------------- levers


@dataclass
class Row:
    lever: str
    prompts: int
    without: dict[str, float]
    with_: dict[str, float]
    verdict: str
    ok: bool
    detail: list[dict[str, Any]] = field(default_factory=list)


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else 0.0


def unbounded(chat: Chat, qs: Sequence[str], max_tokens: int, seed: int, bar: Any) -> list[Out]:
    outs = []
    for q in qs:
        outs.append(chat.call([{"role": "user", "content": q}], model=chat.think, max_tokens=max_tokens,
                              seed=seed, extra=thinking_body())[0])
        bar.update(1)
    return outs


def bench_budget(chat: Chat, qs: Sequence[str], base: Sequence[Out], budget: int, answer_tokens: int,
                 max_tokens: int, seed: int, bar: Any) -> Row:
    """The length lever as ``decide`` sets it: ``thinking_token_budget`` plus a max_tokens that leaves
    ``answer_tokens`` for the answer after the forced end of thinking."""
    detail = []
    cap = min(max_tokens, budget + answer_tokens)
    for q, b in zip(qs, base, strict=True):
        o = chat.call([{"role": "user", "content": q}], model=chat.think, max_tokens=cap, seed=seed,
                      extra=thinking_body(budget))[0]
        bar.update(1)
        detail.append({"prompt": q[:60], "unbounded_out": b.output_tokens, "budget_out": o.output_tokens,
                       "budget_thinking": chat.tokenize(o.reasoning), "unbounded_thinking": chat.tokenize(b.reasoning),
                       "answer": answers.number(o.content or o.reasoning)})
    w = [d["unbounded_out"] for d in detail]
    x = [d["budget_out"] for d in detail]
    bounded = all(d["budget_thinking"] <= budget + 2 for d in detail)
    ok = sum(x) < sum(w) and bounded
    return Row("thinking budget", len(qs),
               {"out_tokens": _mean(w), "thinking": _mean([d["unbounded_thinking"] for d in detail]), "calls": 1.0},
               {"out_tokens": _mean(x), "thinking": _mean([d["budget_thinking"] for d in detail]), "calls": 1.0},
               f"thinking_token_budget={budget}, max_tokens={cap}: output {sum(x)} vs {sum(w)} tokens unbounded "
               f"({1 - sum(x) / max(1, sum(w)):.0%} less); thinking <= budget on "
               f"{'every prompt' if bounded else 'NOT every prompt'}", ok, detail)


def early_exit_callables(chat: Chat, q: str, seed: int, probe_tokens: int
                         ) -> tuple[early_exit.Think, early_exit.Probe]:
    """Chunked thinking and probes on the think-capable served name, greedy, one seed."""
    def call(messages: list[dict[str, str]], k: int) -> Out:
        return chat.call(messages, model=chat.think, max_tokens=k, seed=seed, extra=thinking_body(**CONTINUE))[0]

    return early_exit.continuation_callables(call, [{"role": "user", "content": q}], probe_tokens=probe_tokens,
                                             think_prefix=THINK_PREFIX)


def bench_early_exit(chat: Chat, qs: Sequence[str], base: Sequence[Out], cfg: early_exit.EarlyExitConfig, seed: int,
                     bar: Any) -> Row:
    detail = []
    for q, b in zip(qs, base, strict=True):
        think, probe = early_exit_callables(chat, q, seed, cfg.probe_tokens)
        r = early_exit.early_exit(think, probe, cfg)
        bar.update(1)
        pin, pout = r.probe_tokens
        detail.append({"prompt": q[:60], "unbounded_out": b.output_tokens, "unbounded_in": b.input_tokens,
                       "ee_out": r.output_tokens, "ee_in": r.tokens()[0], "ee_thinking": r.thinking_tokens,
                       "probe_out": pout, "probe_in": pin, "calls": len(r.calls), "exited": r.exited,
                       "answer": r.extracted, "unbounded_answer": answers.number(b.content or b.reasoning),
                       "reason": r.reason})
    w = [d["unbounded_out"] for d in detail]
    x = [d["ee_out"] for d in detail]
    early = sum(d["exited"] == "probes_agree" for d in detail)
    return Row("early exit", len(qs), {"out_tokens": _mean(w), "in_tokens": _mean([d["unbounded_in"] for d in detail]),
                                       "calls": 1.0},
               {"out_tokens": _mean(x), "in_tokens": _mean([d["ee_in"] for d in detail]),
                "calls": _mean([d["calls"] for d in detail]), "probe_out": _mean([d["probe_out"] for d in detail])},
               f"chunk {cfg.chunk}, {cfg.agree} agreeing probes: output {sum(x)} vs {sum(w)} tokens unbounded "
               f"(probes included; {early}/{len(qs)} exited on agreeing probes)", sum(x) < sum(w), detail)


def bench_consistency(chat: Chat, qs: Sequence[str], cfg: consistency.SCConfig, fixed_n: int, temperature: float,
                      max_tokens: int, seed: int, bar: Any) -> Row:
    detail = []
    for q in qs:
        msgs = [{"role": "user", "content": q}]

        def draw(k: int, start: int, msgs: list[dict[str, str]] = msgs) -> list[consistency.Sample]:
            outs = chat.call(msgs, max_tokens=max_tokens, temperature=temperature, seed=seed + start, n=k)
            return [consistency.Sample(o.content, o.input_tokens, o.output_tokens) for o in outs]

        fixed = consistency.fixed_consistency(draw(fixed_n, 0), cfg.extractor)
        adaptive = consistency.adaptive_consistency(draw, cfg)
        bar.update(1)
        detail.append({"prompt": q[:60], "fixed_answer": fixed.answer, "fixed_counts": fixed.counts,
                       "fixed_out": fixed.output_tokens, "fixed_in": fixed.input_tokens,
                       "adaptive_answer": adaptive.answer, "adaptive_used": adaptive.used,
                       "adaptive_out": adaptive.output_tokens, "adaptive_in": adaptive.input_tokens,
                       "adaptive_calls": -(-adaptive.used // cfg.batch), "stopped": adaptive.stopped,
                       "reason": adaptive.reason,
                       "prefix_of_fixed": [s.text for s in adaptive.samples] ==
                                          [s.text for s in fixed.samples[:adaptive.used]]})
    same = sum(d["fixed_answer"] == d["adaptive_answer"] for d in detail)
    fewer_same = sum(d["fixed_answer"] == d["adaptive_answer"] and d["adaptive_used"] < fixed_n for d in detail)
    pct_same = 100.0 * same / max(1, len(detail))
    pct_fewer_same = 100.0 * fewer_same / max(1, len(detail))
    used = [d["adaptive_used"] for d in detail]
    rules = f"beta>={cfg.threshold}" if cfg.threshold is not None else ""
    rules += f"{', ' if rules else ''}window={cfg.window}" if cfg.window else ""
    rules += f"{', ' if rules else ''}decided" if cfg.decided else ""
    return Row("adaptive SC", len(qs),
               {"samples": float(fixed_n), "out_tokens": _mean([d["fixed_out"] for d in detail]),
                "in_tokens": _mean([d["fixed_in"] for d in detail]), "calls": 1.0},
               {"samples": _mean(used), "out_tokens": _mean([d["adaptive_out"] for d in detail]),
                "in_tokens": _mean([d["adaptive_in"] for d in detail]),
                "calls": _mean([d["adaptive_calls"] for d in detail]),
                "same_answer_pct": round(pct_same, 1), "fewer_and_same_pct": round(pct_fewer_same, 1)},
               f"{rules}, batch {cfg.batch}, T={temperature}: {_mean(used)} vs {fixed_n} samples on average; same "
               f"majority as fixed N on {pct_same:.0f}% of prompts; stopped early (fewer samples, same majority) on "
               f"{pct_fewer_same:.0f}%", pct_same >= 95.0 and sum(used) < fixed_n * len(used), detail)


# ------------------------------------------------------------------------------ accuracy (--model qwen)

COT = "Solve the problem step by step. End with the line 'The answer is N.', where N is a number."


def _pmap(fn: Any, items: Sequence[Any], workers: int, bar: Any) -> list[Any]:
    """``fn`` over ``items``, ``workers`` requests in flight (the CPU server batches them), results in order."""
    def one(item: Any) -> Any:
        out = fn(item)
        bar.update(1)
        return out
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, items))


def _question(q: str, style: str | None) -> list[dict[str, str]]:
    from effagent.difficulty.rule import score_prompt

    extra = prompt_budget_instruction(style, q, score_prompt(q)) if style else None
    return [{"role": "system", "content": COT}, {"role": "user", "content": q + (f"\n\n{extra}" if extra else "")}]


def bench_length_accuracy(chat: Chat, rows: Sequence[dict[str, str]], styles: Sequence[str], max_tokens: int,
                          seed: int, workers: int, bar: Any) -> list[Row]:
    """Plain step-by-step vs each prompt-level length budget (TALE, Chain-of-Draft), greedy, same questions."""
    def run(style: str | None) -> list[dict[str, Any]]:
        def one(r: dict[str, str]) -> dict[str, Any]:
            o = chat.call(_question(r["question"], style), max_tokens=max_tokens, seed=seed)[0]
            got = answers.number(o.content)
            return {"id": r["id"], "answer": got, "gold": r["answer"], "right": got == r["answer"],
                    "out": o.output_tokens, "in": o.input_tokens, "finish": o.finish_reason}
        return _pmap(one, rows, workers, bar)

    base = run(None)
    out = []
    for style in styles:
        got = run(style)
        only_base = sum(b["right"] and not g["right"] for b, g in zip(base, got, strict=True))
        only_style = sum(g["right"] and not b["right"] for b, g in zip(base, got, strict=True))
        p = mcnemar_p(only_base, only_style)
        acc_b, acc_s = sum(b["right"] for b in base), sum(g["right"] for g in got)
        tok_b, tok_s = sum(b["out"] for b in base), sum(g["out"] for g in got)
        name = {"tale": "TALE budget", "draft": "Chain-of-Draft"}.get(style, style)
        out.append(Row(
            name, len(rows),
            {"accuracy": round(acc_b / len(rows), 3), "out_tokens": _mean([b["out"] for b in base]),
             "in_tokens": _mean([b["in"] for b in base])},
            {"accuracy": round(acc_s / len(rows), 3), "out_tokens": _mean([g["out"] for g in got]),
             "in_tokens": _mean([g["in"] for g in got])},
            f"prompt_budget {style} vs plain step-by-step: {acc_s}/{len(rows)} vs {acc_b}/{len(rows)} right "
            f"(only plain: {only_base}, only {style}: {only_style}; exact McNemar p = {p:.2f}); output {tok_s} vs "
            f"{tok_b} tokens ({1 - tok_s / max(1, tok_b):.0%} less)",
            tok_s < tok_b and (acc_s >= acc_b or p >= 0.05),
            [{"id": b["id"], "gold": b["gold"], "plain": b["answer"], style: g["answer"], "plain_out": b["out"],
              f"{style}_out": g["out"]} for b, g in zip(base, got, strict=True)]))
    return out


def bench_consistency_accuracy(chat: Chat, rows: Sequence[dict[str, str]], cfg: consistency.SCConfig, fixed_n: int,
                               temperature: float, max_tokens: int, style: str | None, seed: int, workers: int,
                               bar: Any) -> Row:
    """Adaptive self-consistency vs a fixed N on the GSM8K slice: majority accuracy, samples and tokens."""
    def one(r: dict[str, str]) -> dict[str, Any]:
        msgs = _question(r["question"], style)
        cache: dict[int, list[consistency.Sample]] = {}

        def draw(k: int, start: int) -> list[consistency.Sample]:
            outs = chat.call(msgs, max_tokens=max_tokens, temperature=temperature, seed=seed + start, n=k)
            got = [consistency.Sample(o.content, o.input_tokens, o.output_tokens) for o in outs]
            cache[start] = got
            return got

        fixed = consistency.fixed_consistency(draw(fixed_n, 0), cfg.extractor)
        adaptive = consistency.adaptive_consistency(draw, cfg)
        return {"id": r["id"], "gold": r["answer"], "fixed": fixed.answer, "adaptive": adaptive.answer,
                "fixed_right": fixed.answer == r["answer"], "adaptive_right": adaptive.answer == r["answer"],
                "used": adaptive.used, "fixed_out": fixed.output_tokens, "adaptive_out": adaptive.output_tokens,
                "stopped": adaptive.stopped}

    detail = _pmap(one, rows, workers, bar)
    n = len(detail)
    acc_f, acc_a = sum(d["fixed_right"] for d in detail), sum(d["adaptive_right"] for d in detail)
    only_f = sum(d["fixed_right"] and not d["adaptive_right"] for d in detail)
    only_a = sum(d["adaptive_right"] and not d["fixed_right"] for d in detail)
    tok_f, tok_a = sum(d["fixed_out"] for d in detail), sum(d["adaptive_out"] for d in detail)
    used = [d["used"] for d in detail]
    return Row("adaptive SC", n,
               {"accuracy": round(acc_f / n, 3), "samples": float(fixed_n), "out_tokens": _mean([d["fixed_out"]
                                                                                               for d in detail])},
               {"accuracy": round(acc_a / n, 3), "samples": _mean(used),
                "out_tokens": _mean([d["adaptive_out"] for d in detail])},
               f"beta>={cfg.threshold}, batch {cfg.batch}, T={temperature}, {style or 'step-by-step'} samples: "
               f"majority right {acc_a}/{n} vs {acc_f}/{n} with {fixed_n} samples (only fixed: {only_f}, only "
               f"adaptive: "
               f"{only_a}; exact McNemar p = {mcnemar_p(only_f, only_a):.2f}); {_mean(used)} samples on average, "
               f"output {tok_a} vs {tok_f} tokens ({1 - tok_a / max(1, tok_f):.0%} less)",
               tok_a < tok_f and (acc_a >= acc_f or mcnemar_p(only_f, only_a) >= 0.05), detail)


# ---------------------------------------------------------------------------------------- loop guard

_LOOP_POLICY = """\
tiers:
  small: {{model: hosted_vllm/smol, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}, max_tokens: 256}}
bands:
  - {{name: all, min: 0.0, max: 1.0, tier: small}}
loop_guard: {{enabled: {enabled}, max_repeated_tool_calls: {repeats}}}
"""


def bench_loopguard(recursion_limit: int, repeats: int, bar: Any) -> Row:
    """A create_agent graph whose model calls ``lookup(q='same')`` forever; guard on vs off."""
    from langchain.agents import create_agent
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool as as_tool
    from langgraph.errors import GraphRecursionError

    from effagent import InMemoryLedger, parse_policy
    from effagent.integrations.langchain import EfficiencyMiddleware

    class Looper(BaseChatModel):
        """Always asks for the same tool call; usage grows with the conversation like a real model's."""

        @property
        def _llm_type(self) -> str:
            return "looper"

        def bind_tools(self, tools: Any, **kw: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
            inp = 40 + 25 * len(messages)
            if final_cue in str(messages[-1].content):  # effagent's finalize call: answer, no tools
                msg = AIMessage(content="best answer: unknown (stopped)", usage_metadata={
                    "input_tokens": inp, "output_tokens": 12, "total_tokens": inp + 12})
            else:
                msg = AIMessage(content="", tool_calls=[
                    {"name": "lookup", "args": {"q": "same"}, "id": f"c{len(messages)}", "type": "tool_call"}],
                    usage_metadata={"input_tokens": inp, "output_tokens": 20, "total_tokens": inp + 20})
            return ChatResult(generations=[ChatGeneration(message=msg)])

    ran: list[str] = []

    def lookup(q: str) -> str:
        """Look something up."""
        ran.append(q)
        return "no new information"

    tool = as_tool(lookup)
    final_cue = "Do not call tools."  # in every finalize instruction (spent budget or loop)
    results = {}
    for enabled in (True, False):
        pol = parse_policy(_LOOP_POLICY.format(enabled=str(enabled).lower(), repeats=repeats), env={})
        model = Looper()
        ledger = InMemoryLedger()
        ran.clear()
        mw = EfficiencyMiddleware(pol, models={"small": model}, ledger=ledger)
        agent = create_agent(mw.default_model, tools=[tool], middleware=[mw])
        stopped_by = "guard"
        try:
            agent.invoke({"messages": [HumanMessage("Find the answer with the lookup tool.")]},
                         {"recursion_limit": recursion_limit})
        except GraphRecursionError:
            stopped_by = f"recursion_limit={recursion_limit}"
        recs = ledger.records()
        tot = ledger.total()
        results[enabled] = {"model_calls": len(recs), "tool_calls": sum(1 for r in recs if r.kind == "model"),
                            "tools_run": len(ran), "tokens": tot.total_tokens, "out_tokens": tot.output_tokens,
                            "stopped_by": stopped_by,
                            "reason": next((r.reason for r in recs if r.kind == "finalize"), "")}
        bar.update(1)
    on, off = results[True], results[False]
    saved = off["tokens"] - on["tokens"]
    # the guard runs the call `repeats` times, answers the next identical ask (not run), and after one more
    # identical ask ends the run with a final answer
    ok = (on["stopped_by"] == "guard" and on["tools_run"] == repeats and on["tool_calls"] <= repeats + 2
          and saved > 0)
    return Row("loop guard", 1, {"tokens": float(off["tokens"]), "calls": float(off["model_calls"])},
               {"tokens": float(on["tokens"]), "calls": float(on["model_calls"]), "saved_tokens": float(saved)},
               f"the tool ran {on['tools_run']} times (limit {repeats}), {on['tool_calls'] - on['tools_run']} more "
               f"identical asks were answered without running it, then 1 final answer; without the guard it ran "
               f"to {off['stopped_by']} ({off['model_calls']} calls); {saved} tokens saved", ok,
               [{"guard_on": on, "guard_off": off}])


# ------------------------------------------------------------------------------------------------ run


def _server(url: str | None, model: str = "smol") -> tuple[str, list[str], Any]:
    from effagent.tools.serving.vllm_local import LocalVLLM, local_model

    if url:
        os.environ[local_model(model).url_env] = url
    srv = LocalVLLM(model=model)
    srv.start()
    return srv.base_url, list(srv.names), srv


def render(rows: Sequence[Row]) -> str:
    lines = [f"{'lever':<16} {'n':>3}  {'without':<40} {'with':<62} ok", "-" * 130]
    for r in rows:
        wo = ", ".join(f"{k} {v:g}" for k, v in r.without.items())
        wi = ", ".join(f"{k} {v:g}" for k, v in r.with_.items())
        lines.append(f"{r.lever:<16} {r.prompts:>3}  {wo:<40} {wi:<62} {'yes' if r.ok else 'NO'}")
        lines.append(f"{'':<21}{r.verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.model == "qwen":
        return run_qwen(args)
    from tqdm import tqdm  # the `bench` extra (checked by the CLI before this runs)

    started = time.monotonic()
    only = set(args.only.split(",")) if args.only else {"budget", "early_exit", "sc", "loop"}
    rows: list[Row] = []
    srv = None
    meta: dict[str, Any] = {"seed": args.seed, "model": "smol"}
    try:
        need_server = bool(only - {"loop"})
        if need_server:
            base_url, names, srv = _server(args.url)
            plain = names[0]
            think = next((n for n in names if "think" in n), plain)
            chat = Chat(base_url, plain, think)
            meta.update(base_url=base_url, models=names)
            qs, source = math_prompts(args.prompts)
            meta["math_prompts"] = source
            sc_qs = list(SC_PROMPTS[:args.sc_prompts])
            total = (len(qs) * (("budget" in only) + ("early_exit" in only))
                     + (len(qs) if only & {"budget", "early_exit"} else 0)
                     + (len(sc_qs) if "sc" in only else 0) + (2 if "loop" in only else 0))
        else:
            total = 2
        with tqdm(total=total, desc="bench levers", file=sys.stderr) as bar:
            if need_server and only & {"budget", "early_exit"}:
                base = unbounded(chat, qs, args.max_tokens, args.seed, bar)
                if "budget" in only:
                    rows.append(bench_budget(chat, qs, base, args.budget, args.answer_tokens, args.max_tokens,
                                             args.seed, bar))
                if "early_exit" in only:
                    cfg = early_exit.EarlyExitConfig(chunk=args.chunk, agree=args.agree, probe_tokens=args.probe_tokens,
                                                     max_thinking=args.max_tokens)
                    rows.append(bench_early_exit(chat, qs, base, cfg, args.seed, bar))
            if need_server and "sc" in only:
                sc_cfg = consistency.SCConfig(max_samples=args.samples, batch=args.batch, threshold=args.threshold,
                                              window=args.window or None, decided=args.decided, extractor="number",
                                              seed=args.seed)
                rows.append(bench_consistency(chat, sc_qs, sc_cfg, args.samples, args.temperature,
                                              args.sc_max_tokens, args.seed, bar))
            if "loop" in only:
                rows.append(bench_loopguard(args.recursion_limit, args.repeats, bar))
        if need_server:
            meta["server_calls"] = chat.calls
    finally:
        if srv is not None:
            srv.stop()  # stops only a server this run started
    return _finish(args, rows, meta, started)


def _finish(args: argparse.Namespace, rows: list[Row], meta: dict[str, Any], started: float) -> int:
    meta["seconds"] = round(time.monotonic() - started, 1)
    print(render(rows))
    print(f"({meta['seconds']} s; seed {args.seed}; server {meta.get('base_url', '-')}"
          + (f"; {meta['slice']}" if meta.get("slice") else "") + ")")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if all(r.ok for r in rows) else 1


QWEN_LEVERS = {"length", "sc", "loop"}


def run_qwen(args: argparse.Namespace) -> int:
    """The levers on the stronger local model, with accuracy on the shipped GSM8K slice."""
    from tqdm import tqdm

    started = time.monotonic()
    only = set(args.only.split(",")) if args.only else set(QWEN_LEVERS)
    unknown = only - QWEN_LEVERS
    if unknown:
        print(f"error: --model qwen runs {', '.join(sorted(QWEN_LEVERS))}; not {', '.join(sorted(unknown))} "
              "(Qwen2.5-Coder-0.5B has no thinking mode: thinking budget and early exit run on --model smol)",
              file=sys.stderr)
        return 2
    rows_in = gsm8k_slice(args.prompts)
    sc_rows = rows_in[:args.sc_prompts]
    styles = [s for s in args.styles.split(",") if s]
    meta: dict[str, Any] = {"seed": args.seed, "model": "qwen",
                            "slice": f"GSM8K test lines 1-{len(rows_in)} (effagent/demo_data/{GSM8K_SLICE})"}
    result: list[Row] = []
    srv = None
    try:
        need_server = bool(only - {"loop"})
        total = (len(rows_in) * (1 + len(styles)) if "length" in only else 0) \
            + (len(sc_rows) if "sc" in only else 0) + (2 if "loop" in only else 0)
        if need_server:
            base_url, names, srv = _server(args.url, "qwen")
            chat = Chat(base_url, names[0], names[0])
            meta.update(base_url=base_url, models=names)
        with tqdm(total=total, desc="bench levers (qwen)", file=sys.stderr) as bar:
            if "length" in only:
                result += bench_length_accuracy(chat, rows_in, styles, args.cot_max_tokens, args.seed, args.workers,
                                                bar)
            if "sc" in only:
                cfg = consistency.SCConfig(max_samples=args.samples, batch=args.batch, threshold=args.threshold,
                                           decided=args.decided, extractor="number", seed=args.seed)
                result.append(bench_consistency_accuracy(chat, sc_rows, cfg, args.samples, args.sc_temperature,
                                                         args.cot_max_tokens, args.sc_style or None, args.seed,
                                                         args.workers, bar))
            if "loop" in only:
                result.append(bench_loopguard(args.recursion_limit, args.repeats, bar))
        if need_server:
            meta["server_calls"] = chat.calls
    finally:
        if srv is not None:
            srv.stop()
    return _finish(args, result, meta, started)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["smol", "qwen"], default="smol",
                   help="smol: the levers' mechanics on SmolLM2-135M (thinking budget, early exit, SC, loop guard); "
                        "qwen: accuracy next to tokens on Qwen2.5-Coder-0.5B (TALE / Chain-of-Draft, adaptive SC, "
                        "loop guard) on the shipped GSM8K slice (default: %(default)s)")
    p.add_argument("--url", default=None, help="a running vLLM server (http://HOST:PORT/v1) of that model; default: "
                   "$EFFAGENT_VLLM_URL (smol) / $EFFAGENT_VLLM_STRONG_URL (qwen), the recorded `vllm_local serve`, "
                   "or start one")
    p.add_argument("--only", default="", help="comma list of budget,early_exit,sc,loop (smol) or length,sc,loop "
                   "(qwen) (default: all)")
    p.add_argument("--prompts", type=int, default=None,
                   help="GSM8K prompts: thinking budget / early exit (smol, default 3), the length levers (qwen, "
                        "default 20)")
    p.add_argument("--max-tokens", type=int, default=256, help="max_tokens of the unbounded-thinking baseline")
    p.add_argument("--budget", type=int, default=32, help="thinking_token_budget")
    p.add_argument("--answer-tokens", type=int, default=32, help="room for the answer after a thinking budget")
    p.add_argument("--chunk", type=int, default=16, help="early exit: thinking tokens between probes")
    p.add_argument("--agree", type=int, default=2, help="early exit: consecutive agreeing probes")
    p.add_argument("--probe-tokens", type=int, default=8, help="early exit: tokens a probe may generate")
    p.add_argument("--sc-prompts", type=int, default=None,
                   help=f"prompts for adaptive self-consistency (default {len(SC_PROMPTS)} short questions for "
                        "smol; the first 10 of the GSM8K slice for qwen)")
    p.add_argument("--samples", type=int, default=None, help="fixed N and adaptive max_samples (default 8; qwen 4)")
    p.add_argument("--styles", default="tale,draft", help="qwen: prompt-level length budgets to compare with plain "
                   "step-by-step (default: %(default)s)")
    p.add_argument("--cot-max-tokens", type=int, default=400, help="qwen: max_tokens of each answer (default "
                   "%(default)s)")
    p.add_argument("--sc-temperature", type=float, default=0.7, help="qwen: sampling temperature (default "
                   "%(default)s)")
    p.add_argument("--sc-style", default="draft", help="qwen: prompt style of the SC samples (default %(default)s; "
                   "'' for plain step-by-step)")
    p.add_argument("--workers", type=int, default=4, help="qwen: requests in flight (default %(default)s)")
    p.add_argument("--batch", type=int, default=2, help="adaptive SC batch size")
    p.add_argument("--threshold", type=float, default=0.95, help="Beta rule threshold")
    p.add_argument("--window", type=int, default=0, help="ESC window (0: off)")
    p.add_argument("--decided", action=argparse.BooleanOptionalAction, default=True,
                   help="stop when the remaining samples cannot change the majority (default on)")
    p.add_argument("--temperature", type=float, default=0.3, help="sampling temperature for self-consistency")
    p.add_argument("--sc-max-tokens", type=int, default=12, help="max_tokens of each self-consistency sample")
    p.add_argument("--recursion-limit", type=int, default=25,
                   help="LangGraph recursion_limit of the loop-guard run without the guard")
    p.add_argument("--repeats", type=int, default=2, help="loop_guard.max_repeated_tool_calls")
    p.add_argument("--seed", type=int, default=0, help="request seed (samples use seed + i)")
    p.add_argument("--out", default="effagent-out/bench/levers.json", help="JSON result path")
    p.set_defaults(func=_defaults_then_run)


def _defaults_then_run(args: argparse.Namespace) -> int:
    """Per-model defaults for the options whose sensible value depends on the model."""
    qwen = args.model == "qwen"
    if args.prompts is None:
        args.prompts = 20 if qwen else 3
    if args.sc_prompts is None:
        args.sc_prompts = 10 if qwen else len(SC_PROMPTS)
    if args.samples is None:
        args.samples = 4 if qwen else 8
    return run(args)


def register(bench_subparsers: Any) -> None:
    """Add ``levers`` to ``effagent bench``."""
    p = bench_subparsers.add_parser("levers", help="each lever against the local vLLM: tokens and calls with "
                                    "and without it")
    add_arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effagent.tools.bench.levers", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

