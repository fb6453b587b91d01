"""``effagent bench overhead``: the time effagent adds per model step, next to LangChain's own middleware.

The same ``create_agent`` graph (a tool-calling loop of N model steps against a zero-latency fake model)
runs in one process in three variants, interleaved (every iteration runs each once, in an order that
rotates through all six, so a swing in machine speed hits all three alike):

- ``plain``: no middleware;
- ``+ModelCallLimitMiddleware``: LangChain's ``ModelCallLimitMiddleware`` with a limit it never reaches
  (a ``before_model`` check and an ``after_model`` count: a yardstick of what one small middleware costs);
- ``+effagent``: :class:`~effagent.integrations.langchain.EfficiencyMiddleware`, built through its public
  constructor.

Reported per model step, p50/p99/mean over runs:

- absolute time of each variant;
- ``added``: (run time of a variant - run time of the plain graph, paired per iteration) / N -- everything a
  middleware costs end to end, its graph nodes and state channels included -- and the ratio
  effagent-added / ModelCallLimit-added;
- ``in-step``: the time spent inside effagent's ``wrap_model_call`` apart from the model call (planning,
  settings, accounting). Two more graphs, run alongside and not part of ``added``, carry a pair of timing
  middlewares: one outside effagent's and one inside it, and the same pair with nothing between them; the
  in-step time is the gap between the pair with effagent minus the gap without it.

``--checkpointer`` compiles every graph with an in-memory checkpointer (each run on a new thread): the
configuration where effagent also writes the thread's total into graph state at every step, and where what
each answer carries (``--answer-metadata``, the policy's ``telemetry.answer_metadata``) is stored again at
every step.

LangChain is imported when the benchmark runs, not when the command is listed; the progress bar needs the
``bench`` extra.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "effagent-out/bench/overhead.json"
TARGET_RATIO = 1.25  # effagent's added time per step, at most this many times ModelCallLimitMiddleware's (p50)
CALL_LIMIT = 1_000_000  # ModelCallLimitMiddleware's run and thread limits: never reached, it only counts

POLICY = """\
name: overhead-bench
tiers:
  small: {{model: fake/small, price: {{input_per_mtok: 0.05, output_per_mtok: 0.10}}, max_tokens: 512}}
  large:
    model: fake/large
    price: {{input_per_mtok: 0.50, output_per_mtok: 1.50}}
    thinking: {{control: chat_template_kwargs, max_budget: 2048}}
    max_tokens: 1024
bands:
  - {{name: easy, min: 0.0, max: 0.4, tier: small}}
  - {{name: hard, min: 0.4, max: 1.0, tier: large, thinking: true, thinking_budget: 512}}
budgets: {{run: {{tokens: 100000000, usd: 1000}}, thread: {{tokens: 1000000000}}}}
telemetry: {{enabled: false, answer_metadata: {answer_metadata}}}
"""

VARIANTS = ("plain", "call_limit", "effagent")  # the graphs whose run times are compared
LABELS = {"plain": "plain graph", "call_limit": "+ModelCallLimitMiddleware", "effagent": "+effagent"}


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs_s]
    return {"p50_ms": _pct(ms, 0.5), "p99_ms": _pct(ms, 0.99), "mean_ms": statistics.fmean(ms) if ms else float("nan"),
            "n": len(ms)}


def _ratio(num: float, den: float) -> float | None:
    """``num / den``; None where the yardstick added no time (the ratio would say nothing)."""
    return num / den if den > 0 else None


def _fake_model_class() -> type:
    """A zero-latency fake chat model: a tool call per step until the last, then an answer (usage reported)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class FakeZeroLatencyModel(BaseChatModel):
        steps: int = 10

        @property
        def _llm_type(self) -> str:
            return "zero-latency-fake"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(**kwargs)

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> Any:
            done = sum(1 for m in messages if isinstance(m, AIMessage))
            usage = {"input_tokens": 40 + 10 * done, "output_tokens": 12, "total_tokens": 52 + 10 * done}
            if done + 1 < self.steps:
                call = {"name": "noop", "args": {"i": done}, "id": f"c{done}", "type": "tool_call"}
                msg = AIMessage(content="", usage_metadata=usage, tool_calls=[call])
            else:
                msg = AIMessage(content="done", usage_metadata=usage)
            return ChatResult(generations=[ChatGeneration(message=msg)])

    return FakeZeroLatencyModel


def _timing_pair() -> tuple[Any, Any, list[float]]:
    """Two middlewares for one graph: the first in the list times its ``wrap_model_call`` handler (all the
    middlewares inside it and the model), the last times the model call alone. Returns them and the list that
    receives, per model step, the outer time minus the inner time."""
    from langchain.agents.middleware import AgentMiddleware

    perf = time.perf_counter
    gaps: list[float] = []
    inner_t = [0.0]

    class OuterTimer(AgentMiddleware):
        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            inner_t[0] = 0.0
            t = perf()
            out = handler(request)
            gaps.append(perf() - t - inner_t[0])
            return out

    class InnerTimer(AgentMiddleware):
        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            t = perf()
            try:
                return handler(request)
            finally:
                inner_t[0] += perf() - t

    return OuterTimer(), InnerTimer(), gaps


def measure(steps: int = 10, runs: int = 300, warmup: int = 30, ledger: str = "memory", redis_url: str | None = None,
            progress: bool = True, checkpointer: bool = False, answer_metadata: str = "decision") -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    from langchain.agents import create_agent
    from langchain.agents.middleware import ModelCallLimitMiddleware
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from tqdm import tqdm

    from effagent.integrations.langchain import EfficiencyMiddleware
    from effagent.policy import parse_policy

    @tool
    def noop(i: int) -> str:
        """Return its argument."""
        return str(i)

    policy = parse_policy(POLICY.format(answer_metadata=answer_metadata), source="<bench>", env={})
    model = _fake_model_class()(steps=steps)
    models = {"small": model, "large": model}  # every tier answers alike: only the middleware differs
    mw_kwargs: dict[str, Any] = {}
    if ledger == "redis":
        from effagent.ledger.redis import RedisLedger

        mw_kwargs["ledger"] = RedisLedger(redis_url or "redis://127.0.0.1:6379/0",
                                          key_prefix=f"bench-{time.time_ns()}", on_unavailable="fail_closed")

    def agent(*middleware: Any) -> Any:  # with --checkpointer every graph checkpoints (each run on a new thread)
        saver = InMemorySaver() if checkpointer else None
        return create_agent(model, tools=[noop], middleware=list(middleware), checkpointer=saver)

    graphs = {
        "plain": agent(),
        "call_limit": agent(ModelCallLimitMiddleware(thread_limit=CALL_LIMIT, run_limit=CALL_LIMIT)),
        "effagent": agent(EfficiencyMiddleware(policy, models=models, **mw_kwargs)),
    }
    # the in-step split comes from two more graphs, so the timing middlewares are not part of what "added" measures
    outer, inner, timed_gaps = _timing_pair()
    timed = agent(outer, EfficiencyMiddleware(policy, models=models, **mw_kwargs), inner)
    outer0, inner0, empty_gaps = _timing_pair()
    empty = agent(outer0, inner0)
    inputs = {"messages": [HumanMessage("What is the capital of France?")]}

    threads = itertools.count()

    def once(graph: Any) -> float:
        config = {"configurable": {"thread_id": f"bench-{next(threads)}"}} if checkpointer else None
        t = time.perf_counter()
        out = graph.invoke(inputs, config)
        dt = time.perf_counter() - t
        n = sum(1 for m in out["messages"] if isinstance(m, AIMessage))
        if n != steps:
            raise RuntimeError(f"expected {steps} model steps, the agent took {n}")
        return dt

    for _ in range(warmup):
        for graph in (*graphs.values(), timed, empty):
            once(graph)
    timed_gaps.clear()
    empty_gaps.clear()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    orders = list(itertools.permutations(VARIANTS))  # no variant always runs first, or right after another
    gc_was = gc.isenabled()
    gc.disable()  # collections land at random in any variant; collect between iterations instead
    try:
        for i in tqdm(range(runs), desc=f"overhead ({steps} steps/run)", unit="run", disable=not progress,
                      file=sys.stderr):
            for v in orders[i % len(orders)]:
                times[v].append(once(graphs[v]))
            if i % 2:
                once(empty)
                once(timed)
            else:
                once(timed)
                once(empty)
            if i % 10 == 9:
                gc.collect()
    finally:
        if gc_was:
            gc.enable()

    def added(variant: str) -> list[float]:
        return [(t - b) / steps for t, b in zip(times[variant], times["plain"], strict=True)]

    per_step = {
        "baseline_abs": _stats([t / steps for t in times["plain"]]),
        "call_limit_abs": _stats([t / steps for t in times["call_limit"]]),
        "effagent_abs": _stats([t / steps for t in times["effagent"]]),
        "call_limit_added": _stats(added("call_limit")),
        "added": _stats(added("effagent")),
        "in_step": _stats([g - e for g, e in zip(timed_gaps, empty_gaps, strict=True)]),
    }
    result: dict[str, Any] = {
        "benchmark": "overhead",
        "steps_per_run": steps,
        "runs": runs,
        "warmup": warmup,
        "ledger": ledger,
        "checkpointer": checkpointer,
        "answer_metadata": answer_metadata,
        "python": sys.version.split()[0],
        "call_limit_middleware": {"class": "langchain.agents.middleware.ModelCallLimitMiddleware",
                                  "thread_limit": CALL_LIMIT, "run_limit": CALL_LIMIT},
        "per_step": per_step,
        "effagent_vs_call_limit": {
            "p50": _ratio(per_step["added"]["p50_ms"], per_step["call_limit_added"]["p50_ms"]),
            "mean": _ratio(per_step["added"]["mean_ms"], per_step["call_limit_added"]["mean_ms"]),
        },
        "target_ratio": TARGET_RATIO,
    }
    p50 = result["effagent_vs_call_limit"]["p50"]
    result["meets_target"] = p50 is not None and p50 <= TARGET_RATIO
    return result


ROWS = (("per step, plain graph", "baseline_abs"), ("per step, +ModelCallLimitMiddleware", "call_limit_abs"),
        ("per step, +effagent", "effagent_abs"), ("added by ModelCallLimitMiddleware", "call_limit_added"),
        ("added by effagent", "added"), ("effagent in-step (its own code)", "in_step"))


def render(result: dict[str, Any]) -> str:
    ps = result["per_step"]
    lines = [f"effagent overhead: {result['runs']} runs x {result['steps_per_run']} model steps, "
             f"zero-latency fake model, {result['ledger']} ledger, variants interleaved in one process"
             + (", checkpointed graphs" if result.get("checkpointer") else "")
             + (f", answer metadata: {result['answer_metadata']}" if result.get("answer_metadata", "decision")
                != "decision" else ""),
             f"{'':36s} {'p50 ms':>9s} {'p99 ms':>9s} {'mean ms':>9s}"]
    for label, key in ROWS:
        s = ps[key]
        lines.append(f"{label:36s} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['mean_ms']:9.3f}")

    def fmt(r: float | None) -> str:
        return "n/a" if r is None else f"{r:.2f}"

    ratio = result["effagent_vs_call_limit"]
    lines.append(f"effagent added / ModelCallLimitMiddleware added: {fmt(ratio['p50'])} (p50), "
                 f"{fmt(ratio['mean'])} (mean)")
    verdict = "meets" if result["meets_target"] else "MISSES"
    lines.append(f"target: effagent added <= {result['target_ratio']:.2f} x ModelCallLimitMiddleware added (p50) "
                 f"-> {verdict}")
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    result = measure(steps=args.steps, runs=args.runs, warmup=args.warmup, ledger=args.ledger,
                     redis_url=args.redis_url, progress=not args.no_progress, checkpointer=args.checkpointer,
                     answer_metadata=args.answer_metadata)
    print(render(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def register(bench_subparsers: Any) -> None:
    """Add ``overhead`` to ``effagent bench``."""
    p = bench_subparsers.add_parser(
        "overhead", help="time effagent adds per model step (p50/p99) to a create_agent graph, next to the time "
                         "LangChain's ModelCallLimitMiddleware adds, measured in one process")
    p.add_argument("--steps", type=int, default=10, help="model steps per run (a tool-calling loop; default 10)")
    p.add_argument("--runs", type=int, default=300, help="measured runs of each variant (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="unmeasured runs of each variant first (default 30)")
    p.add_argument("--ledger", choices=["memory", "redis"], default="memory", help="ledger backend (default memory)")
    p.add_argument("--redis-url", default=None, help="Redis URL for --ledger redis (default redis://127.0.0.1:6379/0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    p.add_argument("--checkpointer", action="store_true",
                   help="compile every graph with an in-memory checkpointer (effagent then also keeps the thread's "
                        "total in graph state at every step)")
    p.add_argument("--answer-metadata", choices=["decision", "summary"], default="decision",
                   help="what each answer carries (the policy's telemetry.answer_metadata; default decision)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="effagent bench")
    register(parser.add_subparsers(dest="bench_command", required=True))
    args = parser.parse_args(["overhead", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
