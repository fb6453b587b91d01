"""``effagent bench ledger``: does a shared budget on the Redis ledger hold as a cap under concurrency?

Many ``create_agent`` runs spend one budget at once, in two processes (each: half its runs on threads with
``agent.invoke``, half as asyncio tasks with ``await agent.ainvoke``), against a real Redis:

- scenario ``team``: ``--runs`` runs (default 400) sharing a team budget (``budgets.team.tokens``, the ledger's
  ``team: bench``), each run on its own thread id;
- scenario ``thread``: ``--thread-runs`` runs (default 200) sharing one thread budget (``budgets.thread.tokens``):
  every run has the same ``thread_id``.

Each scenario runs once per ``on_exhausted`` mode (finalize, error, interrupt), each row under its own key
prefix. ``interrupt`` needs a checkpointer: in the team scenario one ``InMemorySaver`` per process (a thread id
per run); in the thread scenario one ``InMemorySaver`` per run (the graph is compiled per run) with the shared
``thread_id``, since concurrent runs on one checkpointed thread would read each other's messages. The
ledger's thread scope is the same for all of them, which is what the budget counts. A paused run (an
``interrupt()`` waiting for a person) counts as ended: it spends nothing more.

The model is :class:`FakeBenchModel` (no server): it calls the tool for ``--steps`` - 1 steps, then answers,
and reports realistic usage: the input is litellm's token count of the messages and tool schemas it was sent,
the output 40 tokens but never more than the ``max_tokens`` it was called with. Each process counts the
calls it made.

Per row: the total recorded in Redis for the shared scope against the limit, the calls made (summed over
the processes) against the calls the ledger recorded, the final-answer calls, halted runs (their last
answer made without a model call), runs stopped by ``BudgetExceeded``, paused runs, wall time. A row holds
when recorded <= limit and made == recorded; the command exits 1 when any row does not (or a run failed with
another error).

Without ``--redis-url`` a throwaway ``redis-server`` is started on a free loopback port in a temp dir and
stopped after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from effagent.errors import ServiceStartError, ServiceUnreachableError

DEFAULT_OUT = "effagent-out/bench-ledger.json"
MODES = ("finalize", "error", "interrupt")
SCENARIOS = ("team", "thread")
PROCESSES = 2
OUTPUT_TOKENS = 40
MODEL = "fake/bench"
TEAM = "bench"
QUICK = {"runs": 40, "thread_runs": 20}
MAX_STEPS = 100
BARRIER_TIMEOUT_S = 120.0
MAX_RUNS = 100_000

SYSTEM_PROMPT = ("You are a support agent for an online shop. Look facts up with the lookup tool before you "
                 "answer; cite what you found; keep answers short and factual.")
TOOL_RESULT = ("Order {q}: shipped 2024-05-02 from the Rotterdam warehouse, carrier DHL, tracking "
               "JD0146000032{n:04d}, two parcels, signature required on delivery, estimated arrival in 3-5 "
               "working days, customer notified by e-mail.")

POLICY = """\
name: ledger-bench
tiers:
  small: {{model: {model}, price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}, max_tokens: 256}}
bands: [{{name: all, min: 0.0, max: 1.0, tier: small}}]
budgets:
  {scope}: {{tokens: {limit}}}
  on_exhausted: {mode}
ledger:
  backend: redis
  redis: {{url: "{url}", key_prefix: "{prefix}", {team}on_unavailable: fail_closed, journal: "{journal}"}}
telemetry: {{enabled: false, answer_metadata: summary}}
"""


# -- the fake model ------------------------------------------------------------------------------------
def _fake_model_class() -> type:
    """:class:`FakeBenchModel`, built on first use (LangChain is imported when the benchmark runs)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch anything at run time
    import litellm
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, convert_to_openai_messages
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import PrivateAttr

    class FakeBenchModel(BaseChatModel):
        """A fake chat model (no server): calls the tool for ``steps`` - 1 steps, then answers. Reports the
        usage a provider would: input = litellm's token count of the messages and tool schemas it was sent,
        output = ``output_tokens`` but never more than the ``max_tokens`` it was called with. Counts every
        call (thread-safe): ``calls``, ``calls_without_tools`` (final answers), ``input_tokens``,
        ``output_tokens``."""

        steps: int = 5
        output_tokens: int = OUTPUT_TOKENS
        _lock: Any = PrivateAttr(default_factory=threading.Lock)
        _counts: dict[str, int] = PrivateAttr(default_factory=lambda: {
            "calls": 0, "calls_without_tools": 0, "input_tokens": 0, "output_tokens": 0})

        @property
        def _llm_type(self) -> str:
            return "fake-bench"

        @property
        def counts(self) -> dict[str, int]:
            with self._lock:
                return dict(self._counts)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # create_agent binds tools on every call
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> Any:
            tools = kwargs.get("tools") or None
            prompt = convert_to_openai_messages(messages)
            inp = int(litellm.token_counter(model=MODEL, messages=prompt, tools=tools))
            cap = kwargs.get("max_tokens")
            out = self.output_tokens if cap is None else max(0, min(self.output_tokens, int(cap)))
            done = sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)
            with self._lock:
                c = self._counts
                c["calls"] += 1
                c["calls_without_tools"] += tools is None
                c["input_tokens"] += inp
                c["output_tokens"] += out
            usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
            if tools and done + 1 < self.steps:
                call = {"name": "lookup", "args": {"query": f"order {done + 1}"}, "id": f"call-{done}",
                        "type": "tool_call"}
                msg = AIMessage(content="", tool_calls=[call], usage_metadata=usage)  # type: ignore[arg-type]
            else:
                msg = AIMessage(content=f"All {done} orders are shipped and on their way.",
                                usage_metadata=usage)  # type: ignore[arg-type]
            msg.response_metadata = {"model_name": MODEL, "finish_reason": "stop"}
            return ChatResult(generations=[ChatGeneration(message=msg)])

    return FakeBenchModel


# -- one process of a row ---------------------------------------------------------------------------------
def _warm() -> None:
    """Pool initializer: import what a row needs, so the first row's wall time is not import time. Never
    raises (a pool respawns a worker whose initializer fails, forever): the row's task meets the error."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
        from langchain.agents import create_agent  # noqa: F401
        from langgraph.checkpoint.memory import InMemorySaver  # noqa: F401

        from effagent.integrations.langchain import EfficiencyMiddleware  # noqa: F401
        from effagent.ledger.redis import RedisLedger  # noqa: F401

        litellm.token_counter(model=MODEL, messages=[{"role": "user", "content": "warm up"}])
    except Exception:
        pass


def policy_text(spec: dict[str, Any]) -> str:
    scope = "team" if spec["scenario"] == "team" else "thread"
    return POLICY.format(model=MODEL, scope=scope, limit=spec["limit"], mode=spec["mode"], url=spec["url"],
                         prefix=spec["prefix"], team=f"team: {TEAM}, " if scope == "team" else "",
                         journal=spec["journal"])


def worker(spec: dict[str, Any], go: Any = None) -> str:
    """One process's share of a row: ``spec["runs"]`` runs at once, half on threads (``invoke``), half as
    asyncio tasks (``ainvoke``), after ``go`` (a barrier shared with the other process). Returns JSON."""
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from effagent.errors import BudgetExceeded
    from effagent.integrations.langchain import EfficiencyMiddleware
    from effagent.policy import parse_policy

    @tool
    def lookup(query: str) -> str:
        """Look up an order, a product or a policy in the shop's knowledge base."""
        return TOOL_RESULT.format(q=query, n=len(query))

    policy = parse_policy(policy_text(spec), source="<bench ledger>", env={})
    model = _fake_model_class()(steps=spec["steps"])
    mw = EfficiencyMiddleware(policy, models={"small": model})
    interrupt, shared_thread = spec["mode"] == "interrupt", spec["scenario"] == "thread"

    def graph() -> Any:
        saver = InMemorySaver() if interrupt else None
        return create_agent(model, tools=[lookup], system_prompt=SYSTEM_PROMPT, middleware=[mw], checkpointer=saver)

    shared = None if (interrupt and shared_thread) else graph()  # per run: its own checkpointer, same thread id
    tag = f"p{spec['proc']}"
    outcomes = {"completed": 0, "finalized": 0, "halted": 0, "errors": 0, "paused": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()
    limit = 4 * spec["steps"] + 20

    def inputs(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        thread = spec["thread_id"] if shared_thread else f"{spec['prefix']}-{tag}-{i}"
        msg = HumanMessage(f"Customer {tag}-{i} asks: where are my orders 1 to {spec['steps'] - 1}?")
        return {"messages": [msg]}, {"configurable": {"thread_id": thread}, "recursion_limit": limit}

    def outcome(out: Any, err: BaseException | None) -> None:
        if err is not None:
            key = "errors" if isinstance(err, BudgetExceeded) else "failed"
        elif out.get("__interrupt__"):
            key = "paused"
        else:
            last = next((m for m in reversed(out["messages"]) if isinstance(m, AIMessage)), None)
            action = ((last.response_metadata or {}).get("effagent") or {}).get("action") if last else None
            key = {"halt": "halted", "finalize": "finalized"}.get(str(action), "completed")
        with lock:
            outcomes[key] += 1
            if key == "failed" and len(failures) < 5:
                failures.append(f"{type(err).__name__}: {err}"[:400])

    def run_sync(i: int) -> None:
        try:
            out, err = (shared or graph()).invoke(*inputs(i)), None
        except Exception as e:
            out, err = None, e
        outcome(out, err)

    async def run_async(i: int) -> None:
        try:
            out, err = await (shared or graph()).ainvoke(*inputs(i)), None
        except Exception as e:
            out, err = None, e
        outcome(out, err)

    async def all_async(ids: range) -> None:
        await asyncio.gather(*(run_async(i) for i in ids))

    n_threads = spec["runs"] // 2
    if go is not None:
        go.wait()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, n_threads)) as pool:
        futures = [pool.submit(run_sync, i) for i in range(n_threads)]
        asyncio.run(all_async(range(n_threads, spec["runs"])))
        for f in futures:
            f.result()
    wall = time.perf_counter() - t0
    ledger = mw.ledger
    result = {"pid": os.getpid(), "runs": spec["runs"], "threads": n_threads, "tasks": spec["runs"] - n_threads,
              "wall_s": wall, **model.counts, **outcomes, "failures": failures,
              "degraded": bool(getattr(ledger, "degraded", False)),
              "journaled": int(ledger.journaled()) if hasattr(ledger, "journaled") else 0}
    close = getattr(ledger, "close", None)
    if close is not None:
        close()
    return json.dumps(result)


# -- a row: two processes, then the ledger's books -------------------------------------------------------
def _row(pool: Any, manager: Any, url: str, scenario: str, mode: str, runs: int, steps: int, limit: int,
         tmp: str, timeout_s: float) -> dict[str, Any]:
    from effagent.ledger.redis import RedisLedger

    tag = uuid.uuid4().hex[:8]
    prefix = f"effagent-bench-ledger-{tag}-{scenario}-{mode}"
    thread_id = f"bench-thread-{tag}"
    share = [runs // PROCESSES + (1 if p < runs % PROCESSES else 0) for p in range(PROCESSES)]
    go = manager.Barrier(PROCESSES, timeout=min(timeout_s, BARRIER_TIMEOUT_S))  # a process that failed to start
    specs = [{"scenario": scenario, "mode": mode, "limit": limit, "url": url, "prefix": prefix, "steps": steps,
              "runs": n, "proc": p, "thread_id": thread_id, "journal": str(Path(tmp) / f"journal-{prefix}.jsonl")}
             for p, n in enumerate(share)]
    t0 = time.perf_counter()
    pending = [pool.apply_async(worker, (s, go)) for s in specs]
    procs = [json.loads(p.get(timeout=timeout_s)) for p in pending]
    wall = time.perf_counter() - t0
    books = RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed",
                        journal=Path(tmp) / f"journal-reader-{prefix}.jsonl")
    try:
        usage = books.scope_usage("team", TEAM) if scenario == "team" else books.thread_usage(thread_id)
        held = books.reserved("team", TEAM) if scenario == "team" else books.reserved("thread", thread_id)
        by_kind: dict[str, dict[str, int]] = {}
        for rec in books.records():
            k = by_kind.setdefault(rec.kind, {"records": 0, "calls": 0, "tokens": 0})
            k["records"] += 1
            k["calls"] += rec.usage.calls
            k["tokens"] += rec.usage.total_tokens
    finally:
        books.close()

    def total(key: str) -> int:
        return sum(int(p[key]) for p in procs)

    made, recorded = total("calls"), int(usage.calls)
    made_tokens = total("input_tokens") + total("output_tokens")
    row = {
        "scenario": scenario, "mode": mode, "limit": limit, "runs": runs, "steps": steps, "processes": len(procs),
        "key_prefix": prefix, "scope": ("team", TEAM) if scenario == "team" else ("thread", thread_id),
        "recorded_tokens": int(usage.total_tokens), "recorded_usd": usage.cost_usd,
        "calls_made": made, "calls_recorded": recorded, "tokens_made": made_tokens,
        "finalize_calls": total("calls_without_tools"), "completed": total("completed"),
        "finalized": total("finalized"), "halted": total("halted"), "errors": total("errors"),
        "paused": total("paused"), "failed": total("failed"),
        "failures": [f for p in procs for f in p["failures"]],
        "held_after": list(held), "records_by_kind": by_kind,
        "degraded": any(p["degraded"] for p in procs), "journaled": total("journaled"),
        "wall_s": max(p["wall_s"] for p in procs), "wall_with_setup_s": wall, "per_process": procs,
    }
    row["within_limit"] = row["recorded_tokens"] <= limit
    row["calls_match"] = made == recorded
    row["holds"] = row["within_limit"] and row["calls_match"]
    return row


# -- the Redis server -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_redis(timeout_s: float = 10.0) -> Iterator[str]:
    """A ``redis-server`` on a free loopback port with its data in a temp dir (no snapshots, no AOF), stopped
    when the block ends. Yields its URL."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceStartError(
            "`effagent bench ledger` needs a Redis server: redis-server is not on PATH. Install it (e.g. "
            "`apt-get install -y redis-server`) or point the benchmark at a running one with --redis-url URL.")
    with tempfile.TemporaryDirectory(prefix="effagent-bench-redis-") as tmp:
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--daemonize", "no",
             "--protected-mode", "yes", "--save", "", "--appendonly", "no", "--logfile", "redis.log",
             "--maxclients", "4000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    log = Path(tmp) / "redis.log"
                    tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
                    raise ServiceStartError(f"redis-server exited with {proc.returncode} while starting: {tail}")
                try:
                    if client.ping():
                        break
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"redis-server on port {port} did not answer PING in {timeout_s:.0f}s")
                time.sleep(0.02)
            client.close()
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


# -- the benchmark ------------------------------------------------------------------------------------------
def measure(redis_url: str | None = None, runs: int = 400, thread_runs: int = 200, steps: int = 5,
            limit: int = 15_000, modes: tuple[str, ...] = MODES, scenarios: tuple[str, ...] = SCENARIOS,
            progress: bool = True, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run every (scenario, mode) row; returns the JSON-able result."""
    import multiprocessing as mp

    from effagent.ledger.redis import safe_url

    if runs < PROCESSES or thread_runs < PROCESSES or steps < 1 or limit < 1:
        raise ValueError(f"runs and thread runs must be >= {PROCESSES}, steps and limit >= 1")
    with (throwaway_redis() if redis_url is None else _given(redis_url)) as url, \
            tempfile.TemporaryDirectory(prefix="effagent-bench-ledger-") as tmp:
        ctx = mp.get_context("spawn")
        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        with ctx.Manager() as manager, ctx.Pool(PROCESSES, initializer=_warm) as pool:
            for scenario in scenarios:
                for mode in modes:
                    n = runs if scenario == "team" else thread_runs
                    row = _row(pool, manager, url, scenario, mode, n, steps, limit, tmp, timeout_s)
                    rows.append(row)
                    if progress:
                        print(f"[{len(rows)}/{len(scenarios) * len(modes)}] {scenario} {mode}: recorded "
                              f"{row['recorded_tokens']:,}/{limit:,} tokens, calls {row['calls_made']} made "
                              f"{row['calls_recorded']} recorded, {row['wall_s']:.1f}s -> "
                              f"{'holds' if row['holds'] else 'BROKEN'}", file=sys.stderr, flush=True)
        total_s = time.perf_counter() - t0
    return {
        "benchmark": "ledger", "redis": "throwaway redis-server" if redis_url is None else safe_url(redis_url),
        "runs": runs, "thread_runs": thread_runs, "steps": steps, "limit_tokens": limit, "processes": PROCESSES,
        "model": {"name": "FakeBenchModel", "output_tokens": OUTPUT_TOKENS,
                  "input_tokens": "litellm.token_counter(messages, tools)"},
        "python": sys.version.split()[0], "total_s": total_s, "rows": rows,
        "holds": all(r["holds"] for r in rows), "failed_runs": sum(r["failed"] for r in rows),
    }


@contextmanager
def _given(url: str) -> Iterator[str]:
    """A Redis server the user named: it must answer PING."""
    import redis

    from effagent.ledger.redis import safe_url

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except (redis.exceptions.RedisError, ValueError) as err:
        raise ServiceUnreachableError(f"--redis-url {safe_url(url)} does not answer PING ({type(err).__name__}: "
                                      f"{safe_url(str(err))}); leave --redis-url out to start a throwaway "
                                      "redis-server") from err
    yield url


def render(result: dict[str, Any]) -> str:
    lines = [f"effagent ledger caps: Redis ledger ({result['redis']}), {result['processes']} processes "
             f"(half the runs on threads with invoke, half as asyncio tasks with ainvoke), up to "
             f"{result['steps']} steps a run, fake model (input = litellm token count, output "
             f"{result['model']['output_tokens']} tokens)",
             f"team: {result['runs']} runs sharing a team budget; thread: {result['thread_runs']} runs sharing "
             f"one thread's budget"]
    head = (f"{'scenario':9s} {'mode':9s} {'limit':>7s} {'recorded':>8s} {'made':>5s} {'rec.':>5s} {'final':>5s} "
            f"{'halted':>6s} {'errors':>6s} {'paused':>6s} {'wall s':>6s}  holds (<= limit, made == recorded)")
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        holds = (f"{'yes' if r['holds'] else 'NO':3s} ({'yes' if r['within_limit'] else 'NO'}, "
                 f"{'yes' if r['calls_match'] else 'NO'})")
        lines.append(f"{r['scenario']:9s} {r['mode']:9s} {r['limit']:7,d} {r['recorded_tokens']:8,d} "
                     f"{r['calls_made']:5d} {r['calls_recorded']:5d} {r['finalize_calls']:5d} {r['halted']:6d} "
                     f"{r['errors']:6d} {r['paused']:6d} {r['wall_s']:6.1f}  {holds}")
    for r in result["rows"]:
        if r["failed"]:
            lines.append(f"{r['scenario']} {r['mode']}: {r['failed']} runs failed: {'; '.join(r['failures'][:3])}")
    lines.append("made: model calls the fake model answered; rec.: calls in the ledger's scope total; final: "
                 "final-answer calls (no tools); halted: runs ended without a model call")
    ok = result["holds"] and not result["failed_runs"]
    lines.append(f"every row holds: {'yes' if ok else 'NO'} (total {result['total_s']:.0f}s)")
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    runs, thread_runs = args.runs, args.thread_runs
    if args.quick:
        runs = QUICK["runs"] if runs is None else runs
        thread_runs = QUICK["thread_runs"] if thread_runs is None else thread_runs
    result = measure(redis_url=args.redis_url, runs=400 if runs is None else runs,
                     thread_runs=200 if thread_runs is None else thread_runs, steps=args.steps, limit=args.limit,
                     modes=tuple(args.mode or MODES), progress=not args.no_progress)
    print(render(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["holds"] and not result["failed_runs"] else 1


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{n} is not in [{low}, {high}]")
        return n

    return parse


def register(bench_subparsers: Any) -> None:
    """Add ``ledger`` to ``effagent bench``."""
    p = bench_subparsers.add_parser(
        "ledger", help="shared budgets on the Redis ledger under concurrency: recorded total <= limit and "
                       "calls made == calls recorded, per on_exhausted mode",
        description="Many create_agent runs (fake model, realistic usage) spend one shared budget at once in two "
                    "processes (half the runs on threads with invoke, half as asyncio tasks with ainvoke) on "
                    "a real Redis ledger. Scenario 'team': --runs runs sharing budgets.team.tokens; scenario "
                    "'thread': --thread-runs runs with the same thread_id sharing budgets.thread.tokens. One "
                    "row per scenario and on_exhausted mode (finalize, error, interrupt). A row holds when the "
                    "total recorded in Redis is <= the limit and every model call made is recorded. Prints a "
                    "table, writes JSON, exits 1 when a row does not hold.")
    p.add_argument("--redis-url", default=None,
                   help="a Redis server to use (default: start a throwaway redis-server on a free loopback port "
                        "and stop it after; needs redis-server on PATH)")
    p.add_argument("--runs", type=_count(PROCESSES, MAX_RUNS), default=None,
                   help="runs sharing the team budget (default 400; --quick 40)")
    p.add_argument("--thread-runs", type=_count(PROCESSES, MAX_RUNS), default=None,
                   help="runs sharing one thread's budget (default 200; --quick 20)")
    p.add_argument("--steps", type=_count(1, MAX_STEPS), default=5,
                   help="model steps of a run that is not capped (default 5)")
    p.add_argument("--limit", type=_count(1, 10**12), default=15_000,
                   help="the shared token budget (default 15000)")
    p.add_argument("--mode", action="append", choices=MODES,
                   help="on_exhausted mode(s) to run (repeatable; default all three)")
    p.add_argument("--quick", action="store_true", help="a smaller variant for CI: 40 team runs, 20 thread runs")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress line per row")
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="effagent bench")
    register(parser.add_subparsers(dest="bench_command", required=True))
    args = parser.parse_args(["ledger", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
