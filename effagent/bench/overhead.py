"""``effagent bench overhead``: the time effagent adds per model step.

The same ``create_agent`` graph (a tool-calling loop of N model steps against a zero-latency fake model)
runs with and without :class:`~effagent.integrations.langchain.EfficiencyMiddleware`, interleaved. Reported
per model step, p50/p99 over runs:

- ``added``: (run time with effagent - run time without, paired per iteration) / N -- everything the plugin
  costs end to end, its graph nodes and state channels included;
- ``in-step``: the time spent inside the middleware's ``wrap_model_call`` minus the model call itself
  (planning, settings, accounting), from a separately built instrumented copy run alongside (its timing
  code is not part of ``added``);
- ``absolute``: per-step time of each variant.

``--checkpointer`` compiles every graph with an in-memory checkpointer (each run on a new thread): the
configuration where effagent also writes the thread's total into graph state at every step, and where what
each answer carries (``--answer-metadata``, the policy's ``telemetry.answer_metadata``) is stored again at
every step.

The framework is imported by module name at run time (like ``effagent.cli``), so the core keeps no import
of it; this command needs the ``langchain`` extra, which effagent installs by default.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "effagent-out/bench/overhead.json"
TARGET_P50_MS = 0.3

POLICY = """\
name: overhead-bench
tiers:
  small: {model: fake/small, price: {input_per_mtok: 0.05, output_per_mtok: 0.10}, max_tokens: 512}
  large:
    model: fake/large
    price: {input_per_mtok: 0.50, output_per_mtok: 1.50}
    thinking: {control: chat_template_kwargs, max_budget: 2048}
    max_tokens: 1024
bands:
  - {name: easy, min: 0.0, max: 0.4, tier: small}
  - {name: hard, min: 0.4, max: 1.0, tier: large, thinking: true, thinking_budget: 512}
budgets: {run: {tokens: 100000000, usd: 1000}, thread: {tokens: 1000000000}}
telemetry: {enabled: false}
"""


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


def _fake_model_class() -> type:
    """A zero-latency chat model: a tool call per step until the last, then an answer (usage reported)."""
    lc_models = importlib.import_module("langchain_core.language_models")
    lc_messages = importlib.import_module("langchain_core.messages")
    lc_outputs = importlib.import_module("langchain_core.outputs")
    AIMessage = lc_messages.AIMessage

    class ZeroLatencyModel(lc_models.BaseChatModel):  # type: ignore[misc, name-defined]
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
            return lc_outputs.ChatResult(generations=[lc_outputs.ChatGeneration(message=msg)])

    return ZeroLatencyModel


def _timed_middleware(base: type, samples: list[float]) -> type:
    """The middleware, recording the time ``wrap_model_call`` spends outside the model call."""
    perf = time.perf_counter

    class TimedEfficiencyMiddleware(base):  # type: ignore[misc, valid-type]
        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            inner = [0.0]

            def timed(req: Any) -> Any:
                t = perf()
                try:
                    return handler(req)
                finally:
                    inner[0] += perf() - t

            t0 = perf()
            out = super().wrap_model_call(request, timed)
            samples.append(perf() - t0 - inner[0])
            return out

    return TimedEfficiencyMiddleware


def measure(steps: int = 10, runs: int = 300, warmup: int = 30, ledger: str = "memory", redis_url: str | None = None,
            progress: bool = True, checkpointer: bool = False, answer_metadata: str = "decision") -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    from effagent.ledger import InMemoryLedger
    from effagent.observe import NullObserver
    from effagent.policy import parse_policy

    agents = importlib.import_module("langchain.agents")
    lc_messages = importlib.import_module("langchain_core.messages")
    lc_tools = importlib.import_module("langchain_core.tools")
    lc_mw = importlib.import_module("effagent.integrations.langchain")
    tqdm = importlib.import_module("tqdm").tqdm

    @lc_tools.tool
    def noop(i: int) -> str:
        """Return its argument."""
        return str(i)

    policy = parse_policy(POLICY, source="<bench>", env={})
    policy = policy.model_copy(update={"telemetry": policy.telemetry.model_validate(
        {**policy.telemetry.model_dump(), "answer_metadata": answer_metadata})})
    model_cls = _fake_model_class()
    model = model_cls(steps=steps)

    def saver() -> Any:  # with --checkpointer every graph checkpoints its state (each run on a thread of its own)
        return importlib.import_module("langgraph.checkpoint.memory").InMemorySaver() if checkpointer else None

    baseline = agents.create_agent(model, tools=[noop], checkpointer=saver())

    in_step: list[float] = []
    if ledger == "redis":
        from effagent.ledger.redis import RedisLedger

        led: Any = RedisLedger(redis_url or "redis://127.0.0.1:6379/0", key_prefix=f"bench-{time.time_ns()}",
                               on_unavailable="fail_closed")
    else:
        led = InMemoryLedger()
    mw = lc_mw.EfficiencyMiddleware(policy, models={"small": model, "large": model}, ledger=led,
                                    observer=NullObserver())
    plugged = agents.create_agent(mw.default_model, tools=[noop], middleware=[mw], checkpointer=saver())
    # the in-step split comes from a separately built, instrumented copy, so the timing code is not part of
    # what "added" measures
    timed_mw = _timed_middleware(lc_mw.EfficiencyMiddleware, in_step)(
        policy, models={"small": model, "large": model}, ledger=led, observer=NullObserver())
    timed = agents.create_agent(timed_mw.default_model, tools=[noop], middleware=[timed_mw], checkpointer=saver())
    inputs = {"messages": [lc_messages.HumanMessage("What is the capital of France?")]}

    threads = itertools.count()

    def once(agent: Any) -> float:
        config = {"configurable": {"thread_id": f"bench-{next(threads)}"}} if checkpointer else None
        t = time.perf_counter()
        out = agent.invoke(inputs, config)
        dt = time.perf_counter() - t
        n = sum(1 for m in out["messages"] if isinstance(m, lc_messages.AIMessage))
        if n != steps:
            raise RuntimeError(f"expected {steps} model steps, the agent took {n}")
        return dt

    for _ in range(warmup):
        once(baseline)
        once(plugged)
        once(timed)
    in_step.clear()
    base_t: list[float] = []
    plug_t: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()  # collections land at random in either variant; collect between iterations instead
    try:
        for i in tqdm(range(runs), desc=f"overhead ({steps} steps/run)", unit="run", disable=not progress,
                      file=sys.stderr):
            if i % 2:  # alternate the order: neither variant always runs on a warmer cache
                plug_t.append(once(plugged))
                base_t.append(once(baseline))
            else:
                base_t.append(once(baseline))
                plug_t.append(once(plugged))
            once(timed)
            if i % 10 == 9:
                gc.collect()
    finally:
        if gc_was:
            gc.enable()

    added = [(p - b) / steps for p, b in zip(plug_t, base_t, strict=True)]
    result = {
        "benchmark": "overhead",
        "steps_per_run": steps,
        "runs": runs,
        "warmup": warmup,
        "ledger": ledger,
        "checkpointer": checkpointer,
        "answer_metadata": answer_metadata,
        "python": sys.version.split()[0],
        "per_step": {
            "added": _stats(added),
            "in_step": _stats(in_step),
            "baseline_abs": _stats([t / steps for t in base_t]),
            "effagent_abs": _stats([t / steps for t in plug_t]),
        },
        "target_p50_ms": TARGET_P50_MS,
    }
    result["meets_target"] = result["per_step"]["added"]["p50_ms"] <= TARGET_P50_MS
    return result


def render(result: dict[str, Any]) -> str:
    rows = [("added per step (end to end)", "added"), ("in-step (middleware code)", "in_step"),
            ("per step without effagent", "baseline_abs"), ("per step with effagent", "effagent_abs")]
    ps = result["per_step"]
    lines = [f"effagent overhead: {result['runs']} runs x {result['steps_per_run']} model steps, "
             f"zero-latency fake model, {result['ledger']} ledger"
             + (", checkpointed graphs" if result.get("checkpointer") else "")
             + (f", answer metadata: {result['answer_metadata']}" if result.get("answer_metadata", "decision")
                != "decision" else ""),
             f"{'':30s} {'p50 ms':>9s} {'p99 ms':>9s} {'mean ms':>9s}"]
    for label, key in rows:
        s = ps[key]
        lines.append(f"{label:30s} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['mean_ms']:9.3f}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    lines.append(f"target: added p50 <= {result['target_p50_ms']} ms per step -> {verdict}")
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
        "overhead", help="time effagent adds per model step (p50/p99) vs the same create_agent graph without it")
    p.add_argument("--steps", type=int, default=10, help="model steps per run (a tool-calling loop; default 10)")
    p.add_argument("--runs", type=int, default=300, help="measured runs of each variant (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="unmeasured runs of each variant first (default 30)")
    p.add_argument("--ledger", choices=["memory", "redis"], default="memory", help="ledger backend (default memory)")
    p.add_argument("--redis-url", default=None, help="Redis URL for --ledger redis (default redis://127.0.0.1:6379/0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    p.add_argument("--checkpointer", action="store_true",
                   help="compile both graphs with an in-memory checkpointer (effagent then also keeps the thread's "
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
