"""`effagent demo`: an agent with tools runs a task set twice — plain (every step on the baseline tier with
thinking on where the tier has it, no budgets) and governed by a policy — and prints what effagent changed:
answers correct, tokens, $, time and calls per tier, task by task.

Both runs go through the same middleware and ledger, so their numbers are measured the same way; the
plain run's policy routes every step to ``baseline_tier`` (the most expensive tier when unset) with
unbounded thinking and no budgets or loop guard.

By default it runs on the two models of the local CPU test bed (:mod:`effagent.tools.serving.vllm_local`, one server
each, started for the demo and stopped after it): the shipped policy ``local-two-tier`` sends the steps its
difficulty rule scores easy to SmolLM2-135M and the rest to Qwen2.5-Coder-0.5B; the plain run sends every step
to Qwen. The shipped tasks are short facts the small model answers and tool tasks (calculator, lookups of facts
only the local encyclopedia holds) that need the stronger model's tool calls.

Its inputs ship with the package, so it runs from a plain ``pip install``: the tasks and the lookup tool's
corpus in ``effagent/demo_data/``, the policy ``local-two-tier`` from :mod:`effagent.policies`; ``--tasks``,
``--corpus`` and ``--policy`` (a shipped name or a file) replace them. tqdm (progress bars) and matplotlib
(the report's charts, the replay plot) are used when installed (the ``report`` extra); without them the
demo still prints its tables and says what it left out.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import operator
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from effagent import policies
from effagent.errors import PolicyError, ServiceUnreachableError
from effagent.ledger.memory import InMemoryLedger
from effagent.policy import Band, Budgets, LoopGuard, Policy, load_policy

DEFAULT_POLICY = "local-two-tier"  # a shipped policy (effagent/policies/local-two-tier.yaml)
DEFAULT_CONCURRENCY = 4  # tasks in flight at once: each CPU vLLM server batches them
DATA_FOLDER = "demo_data"  # inside the package
TASKS_NAME = "tasks.jsonl"
CORPUS_NAME = "corpus.json"
AGENT_TASKS_NAME = "agent_tasks.jsonl"  # 60 multi-step tool tasks (2-3 calls, errors to recover from): --tasks
AGENT_CORPUS_NAME = "agent_corpus.json"  # ... and their encyclopedia: --corpus
SYSTEM = ("You are a helpful assistant. Use the calculator for arithmetic and the lookup tool for facts when "
          "needed. Answer briefly and put the final answer last.")

# -- tools -----------------------------------------------------------------------------------------------
_OPS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos,
    ast.FloorDiv: operator.floordiv,
}


def safe_eval(expression: str) -> float:
    """Arithmetic only: numbers, + - * / // % ** and parentheses."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            if isinstance(node.op, ast.Pow) and abs(ev(node.right)) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")
    return ev(ast.parse(expression.replace(",", ""), mode="eval"))


def make_tools(corpus: dict[str, str]) -> list[Any]:
    from langchain_core.tools import tool

    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as '17 * 23' or '(16 - 3 - 4) * 2'."""
        try:
            value = safe_eval(expression)
        except Exception as e:  # the model sees the error and can retry
            return f"error: {e}; write the expression with numbers and + - * / ** ( ) only"
        return str(int(value)) if float(value).is_integer() else f"{value:.6g}"

    @tool
    def lookup(query: str) -> str:
        """Look up a fact in the local encyclopedia; the query is a few keywords."""
        words = set(re.findall(r"[a-z0-9]+", query.lower()))
        scored = sorted(((len(words & set(re.findall(r"[a-z0-9]+", (k + " " + v).lower()))), v)
                         for k, v in corpus.items()), reverse=True)
        return scored[0][1] if scored and scored[0][0] > 0 else "error: nothing found; try other keywords"

    return [calculator, lookup]


# -- tasks and scoring ------------------------------------------------------------------------------------
class Task(BaseModel):
    id: str
    question: str
    answer: str
    kind: str = ""  # what the task needs (the shipped ones: fact, calculator, lookup); shown in the task list


def shipped(name: str) -> Traversable:
    """A file of the demo's shipped inputs (``effagent/demo_data/NAME``), readable from any install."""
    return resources.files("effagent") / DATA_FOLDER / name


def _read(path: str | None, default: str) -> tuple[str, str]:
    """(text, where) of a user's file, or of the shipped default when ``path`` is None."""
    if path is None:
        return shipped(default).read_text(encoding="utf-8"), f"effagent/{DATA_FOLDER}/{default}"
    return Path(path).read_text(encoding="utf-8"), path


def load_tasks(path: str | Path | None = None, limit: int | None = None) -> list[Task]:
    """JSONL of ``{id, question, answer}`` from ``path``, or the shipped tasks."""
    text, _ = _read(None if path is None else str(path), TASKS_NAME)
    tasks = [Task.model_validate_json(line) for line in text.splitlines() if line.strip()]
    return tasks[:limit] if limit else tasks


def load_corpus(path: str | Path | None = None) -> dict[str, str]:
    """JSON ``{key: fact}`` for the lookup tool from ``path``, or the shipped corpus."""
    text, _ = _read(None if path is None else str(path), CORPUS_NAME)
    corpus = json.loads(text)
    if not isinstance(corpus, dict):
        raise ValueError("the corpus must be a JSON object {key: fact}")
    return {str(k): str(v) for k, v in corpus.items()}


def load_demo_policy(spec: str, env: dict[str, str]) -> Policy:
    """``spec`` is a policy file, or the name of a shipped policy (``balanced``, ``frugal``, ...)."""
    if Path(spec).is_file() or spec.endswith((".yaml", ".yml")) or "/" in spec:
        return load_policy(spec, env=env)
    if spec in policies.names():
        return policies.load(spec, env=env)
    raise PolicyError(spec, [f"{spec}: neither a policy file nor a shipped policy; shipped: "
                             f"{', '.join(policies.names())}"])


def is_correct(reply: str, gold: str) -> bool:
    """Numbers compare numerically (the last number of the reply); text by normalised containment."""
    if re.fullmatch(r"-?[\d.,]+", gold.strip()):
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", reply)
        return bool(nums) and abs(float(nums[-1].replace(",", "")) - float(gold.replace(",", ""))) < 1e-6
    def norm(s: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", s.lower()))
    return norm(gold) in norm(reply)


# -- the two runs ----------------------------------------------------------------------------------------
def baseline_policy(policy: Policy) -> Policy:
    """The plain run: every step on the baseline tier, thinking on when it can, no budgets, no loop guard."""
    name = policy.baseline_tier or max(policy.tiers, key=lambda n: policy.tiers[n].price.output_per_mtok)
    tier = policy.tiers[name]
    band = Band(name="all", min=0.0, max=1.0, tier=name, thinking=tier.thinking.supported)
    return policy.model_copy(update={
        "name": "plain", "bands": [band], "budgets": Budgets(), "loop_guard": LoopGuard(enabled=False),
    })


class RunRow(BaseModel):
    label: str
    tasks: int
    steps: int
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    calls_per_tier: dict[str, int]
    cache_read_tokens: int = 0
    loops_capped: int
    budget_finals: int
    failed_calls: int
    correct: int
    seconds: float


def run_tasks(label: str, policy: Policy, tasks: list[Task], *, models: dict[str, Any], tools: list[Any],
              prices: Policy, observer: Any = None, reasoning_counter: Any = None,
              progress: bool = True, concurrency: int = 1) -> tuple[RunRow, list[dict[str, Any]]]:
    """Each task is one agent invocation (its own run and thread); ``concurrency`` of them in flight at once."""
    from langchain.agents import create_agent

    from effagent.integrations.langchain import EfficiencyMiddleware

    ledger = InMemoryLedger()
    mw = EfficiencyMiddleware(policy, models=models, ledger=ledger, observer=observer,
                              reasoning_counter=reasoning_counter)
    agent = create_agent(mw.default_model, tools=tools, middleware=[mw], system_prompt=SYSTEM)

    def one(task: Task) -> dict[str, Any]:
        tiers: list[str] = []
        roles: list[str] = []
        try:
            out = agent.invoke({"messages": [{"role": "user", "content": task.question}]},
                               {"recursion_limit": 16, "configurable": {"thread_id": f"{label}-{task.id}"}})
            reply = str(out["messages"][-1].content or "")
            metas = [m.response_metadata["effagent"] for m in out["messages"]  # the model steps' decisions (a
                     if m.type == "ai" and "effagent" in m.response_metadata]  # tool call the guard stopped: not one)
            tiers = [str(meta.get("tier") or meta.get("action") or "?") for meta in metas]
            roles = [str(meta.get("role") or "?") for meta in metas]
            error = None
        except Exception as e:  # a task that fails is reported, the demo goes on
            reply, error = "", f"{type(e).__name__}: {str(e)[:160]}"
        return {"id": task.id, "kind": task.kind, "reply": reply[-300:], "gold": task.answer,
                "correct": is_correct(reply, task.answer), "tiers": tiers, "roles": roles, "error": error}

    started = time.perf_counter()
    done: dict[str, dict[str, Any]] = {}
    tick = _progress(len(tasks), label, progress)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(one, task): task for task in tasks}
        for future in as_completed(futures):
            done[futures[future].id] = future.result()
            tick(futures[future])
    tick(None)
    answers = [done[t.id] for t in tasks]
    records = ledger.records()
    ok = [r for r in records if r.ok]
    # $ at the governed policy's prices for both runs, so the two are comparable; cache reads the server
    # reported are billed at the tier's cache-read rate (the ledger's pricing, effagent.telemetry.pricing)
    from effagent.telemetry.pricing import call_cost

    cost = sum(call_cost(prices.tiers[r.tier], r.usage.input_tokens, r.usage.output_tokens,
                         cache_read_tokens=r.usage.cache_read_tokens,
                         cache_write_tokens=r.usage.cache_write_tokens).total_usd
               for r in ok if r.tier in prices.tiers)
    row = RunRow(
        label=label, tasks=len(tasks), steps=len(ok),
        input_tokens=sum(r.usage.input_tokens for r in ok), output_tokens=sum(r.usage.output_tokens for r in ok),
        reasoning_tokens=sum(r.usage.reasoning_tokens for r in ok), cost_usd=cost,
        calls_per_tier=dict(Counter(r.tier for r in ok)),
        cache_read_tokens=sum(r.usage.cache_read_tokens for r in ok),
        loops_capped=sum(1 for r in records if r.kind == "finalize" and "loop capped" in r.reason),
        budget_finals=sum(1 for r in records if r.kind == "finalize" and "budget exhausted" in r.reason),
        failed_calls=sum(1 for r in records if not r.ok),
        correct=sum(1 for a in answers if a["correct"]), seconds=time.perf_counter() - started,
    )
    return row, answers


def _progress(total: int, label: str, enabled: bool) -> Callable[[Task | None], None]:
    """A callback per finished task (None: the run is over): a tqdm bar on stderr when tqdm is installed (the
    ``report`` extra), else one line per task."""
    if not enabled:
        return lambda _task: None
    if importlib.util.find_spec("tqdm") is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"{label:>9}", unit="task", file=sys.stderr)
        lock = threading.Lock()

        def tick(task: Task | None) -> None:
            with lock:
                bar.close() if task is None else bar.update(1)
        return tick
    count = [0]

    def line(task: Task | None) -> None:
        if task is not None:
            count[0] += 1
            print(f"{label:>9}: task {count[0]}/{total} done ({task.id})", file=sys.stderr, flush=True)
    return line


TABLE_TITLE = "effagent demo: the same tasks, plain vs governed"
COLUMNS = ("run", "steps", "input tok", "output tok", "reasoning tok", "$", "calls per tier",
           "loops capped", "budget finals", "failed calls", "correct", "time")


def render_table(rows: list[RunRow]) -> str:
    """The comparison as plain text (text columns left-aligned, numbers right-aligned)."""
    cells = [list(COLUMNS)]
    for r in rows:
        cells.append([r.label, str(r.steps), str(r.input_tokens), str(r.output_tokens), str(r.reasoning_tokens),
                      f"{r.cost_usd:.6f}", ", ".join(f"{k}={v}" for k, v in sorted(r.calls_per_tier.items())),
                      str(r.loops_capped), str(r.budget_finals), str(r.failed_calls), f"{r.correct}/{r.tasks}",
                      f"{r.seconds:.0f}s"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    left = {0, 6}

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
    return "\n".join([TABLE_TITLE, line(cells[0]), *(line(r) for r in cells[1:])]) + "\n"


def render_roles(answers: dict[str, list[dict[str, Any]]]) -> str:
    """Model steps per step role (first step of the task, after tool results, a restatement of a short tool
    result, after a tool error, a retry, a final answer without tools) and per tier, for each run."""
    labels = list(answers)
    counts = {label: Counter((r, t) for a in answers[label] for r, t in zip(a.get("roles") or [], a.get("tiers") or [],
                                                                             strict=False)) for label in labels}
    roles = sorted({r for c in counts.values() for r, _ in c})
    tiers = sorted({t for c in counts.values() for _, t in c})
    if not roles:
        return ""
    cells = [["role", *(f"{label}: {t}" for label in labels for t in tiers)]]
    for role in roles:
        cells.append([role, *(str(counts[label][(role, t)]) for label in labels for t in tiers)])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    return "model steps per role and tier:\n" + "\n".join(lines) + "\n"


def render_tasks(tasks: list[Task], answers: dict[str, list[dict[str, Any]]]) -> str:
    """One line per task: what it needs, and per run whether the answer was right and which tiers served it."""
    labels = list(answers)
    by_id = {label: {a["id"]: a for a in answers[label]} for label in labels}
    cells = [["task", "kind", "answer", *labels]]
    for t in tasks:
        row = [t.id, t.kind or "-", t.answer]
        for label in labels:
            a = by_id[label].get(t.id, {})
            mark = "ok " if a.get("correct") else ("ERR" if a.get("error") else "-- ")
            row.append(f"{mark} {'+'.join(a.get('tiers') or []) or '-'}")
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "per task (ok = correct; the tiers that answered each model step, in order):\n" + "\n".join(lines) + "\n"


def _less(share: float, fewer: str, more: str) -> str:
    """``0.19`` -> "19% fewer ...", ``-0.05`` -> "5% more ..." (a saving that went the other way says so)."""
    return f"{share:.0%} {fewer}" if share >= 0 else f"{-share:.0%} {more}"


def paired_comparison(answers: dict[str, list[dict[str, Any]]], plain: str = "plain",
                      governed: str = "effagent") -> dict[str, Any]:
    """How the governed run's correct answers compare with the plain run's on the same tasks: the discordant
    pairs (right in one run only) and an exact two-sided McNemar (sign) test on them, plus a Wilson 95 %
    interval on each run's accuracy."""
    from effagent.evaluation import mcnemar_p, wilson

    p = {a["id"]: bool(a["correct"]) for a in answers[plain]}
    g = {a["id"]: bool(a["correct"]) for a in answers[governed]}
    only_plain = sum(1 for k in p if p[k] and not g.get(k, False))
    only_governed = sum(1 for k in p if g.get(k, False) and not p[k])
    return {"tasks": len(p), "plain_correct": sum(p.values()), "governed_correct": sum(g.values()),
            "only_plain": only_plain, "only_governed": only_governed,
            "mcnemar_p": round(mcnemar_p(only_plain, only_governed), 4),
            "plain_ci95": [round(x, 3) for x in wilson(sum(p.values()), len(p))],
            "governed_ci95": [round(x, 3) for x in wilson(sum(g.values()), len(g))]}


# -- server ----------------------------------------------------------------------------------------------
def _local_models_used(policy: Policy) -> list[Any]:
    """The local test bed's models whose served names the policy's tiers call (``hosted_vllm/<name>``)."""
    from effagent.tools.serving.vllm_local import MODELS

    used = {t.model.removeprefix("hosted_vllm/") for t in policy.tiers.values() if t.model.startswith("hosted_vllm/")}
    return [m for m in MODELS.values() if used & set(m.names)]


@contextmanager
def vllm_endpoints(policy: Policy, urls: dict[str, str | None]) -> Iterator[dict[str, str]]:
    """``{url variable: base URL}`` for each local model the policy uses: the given URL (``urls`` by model key),
    else a local CPU server started for the demo (both at once; stopped when the block ends)."""
    from effagent.tools.serving.vllm_local import LocalVLLM, normalize_base_url, prepare, probe

    found: dict[str, str] = {}
    to_start = []
    for spec in _local_models_used(policy):
        url = urls.get(spec.key)
        if url:
            url = normalize_base_url(url)
            if probe(url) is None:
                raise ServiceUnreachableError(f"no vLLM server answers at {url}/models: start it, or drop the URL "
                                              f"(and unset {spec.url_env}) to use the local CPU server")
            found[spec.url_env] = url
        else:
            to_start.append(spec)
    with ExitStack() as stack:
        for spec in to_start:  # provisioning and conversion one after the other (they share a lock and the CPU)
            prepare(model=spec)
        servers = [stack.enter_context(_StartedLater(LocalVLLM(names=list(spec.names), model=spec)))
                   for spec in to_start]
        errors: list[BaseException] = []

        def start(srv: Any) -> None:
            try:
                srv.start()
            except BaseException as e:  # reported below, after the other server had its chance
                errors.append(e)
        threads = [threading.Thread(target=start, args=(srv,), daemon=True) for srv in servers]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # a join with a timeout keeps Ctrl-C/SIGTERM deliverable to this thread
                t.join(0.5)
        if errors:
            raise errors[0]
        for spec, srv in zip(to_start, servers, strict=True):
            found[spec.url_env] = srv.base_url
        yield found


class _StartedLater:
    """Stops a LocalVLLM when the ``with`` block ends, whether or not its start finished."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv

    def __enter__(self) -> Any:
        return self.srv

    def __exit__(self, *exc: object) -> None:
        self.srv.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from effagent.tools.serving._signals import signals_interrupt

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    placeholder = {**os.environ, "EFFAGENT_VLLM_URL": "http://127.0.0.1:8000/v1",
                   "EFFAGENT_VLLM_STRONG_URL": "http://127.0.0.1:8001/v1"}
    first = load_demo_policy(args.policy, placeholder)  # fail early
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(args.tasks, args.limit)
    tools = make_tools(load_corpus(args.corpus))
    print(f"effagent demo: {len(tasks)} tasks, policy {args.policy}", file=sys.stderr)
    urls = {"smol": args.vllm_url or os.environ.get("EFFAGENT_VLLM_URL"),
            "qwen": args.strong_url or os.environ.get("EFFAGENT_VLLM_STRONG_URL")}
    traces = {"plain": out_dir / "traces-plain.jsonl", "effagent": out_dir / "traces.jsonl"}
    for path in traces.values():  # the report must show this run's spans only
        with contextlib.suppress(OSError):
            path.unlink()
    # SIGTERM/SIGHUP end the demo like Ctrl-C, so the local vLLM servers it started are stopped too
    with signals_interrupt(), vllm_endpoints(first, urls) as found:
        env = {**os.environ, **found}
        policy = load_demo_policy(args.policy, env=env)
        policy = _with_traces(policy, traces["effagent"])
        plain = _with_traces(baseline_policy(policy), traces["plain"])
        from effagent.integrations.tier_models import models_for as tier_models

        models = tier_models(policy, temperature=0)
        counter = _reasoning_counter(policy)
        rows, answers = [], {}
        for label, pol in (("plain", plain), ("effagent", policy)):
            row, ans = run_tasks(label, pol, tasks, models=models, tools=tools, prices=policy,
                                 observer=_observer(pol), reasoning_counter=counter,
                                 progress=not args.no_progress, concurrency=args.concurrency)
            rows.append(row)
            answers[label] = ans
    print(render_table(rows))
    print(render_roles(answers))
    print(render_tasks(tasks, answers))
    p, e = rows
    paired = paired_comparison(answers)
    if p.input_tokens + p.output_tokens:
        saved = 1 - (e.input_tokens + e.output_tokens) / (p.input_tokens + p.output_tokens)
        print(f"effagent vs plain: {_less(saved, 'fewer tokens', 'more tokens')}, "
              f"{_less((1 - e.cost_usd / p.cost_usd) if p.cost_usd else 0, 'fewer $', 'more $')}, "
              f"{_less((1 - e.seconds / p.seconds) if p.seconds else 0, 'less time', 'more time')}; "
              f"correct: {e.correct}/{e.tasks} "
              f"vs {p.correct}/{p.tasks} (right in the plain run only: {paired['only_plain']}, in the governed run "
              f"only: {paired['only_governed']}; exact McNemar p = {paired['mcnemar_p']:.2f})")
    result = {"rows": [r.model_dump() for r in rows], "answers": answers, "paired": paired,
              "policy": str(args.policy), "tasks": [t.model_dump() for t in tasks]}
    _replay_table(args, result)
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2))
    _report(traces, out_dir, result)
    print(f"wrote {out_dir / 'demo.json'}")
    return 0


def _with_traces(policy: Policy, path: Path) -> Policy:
    return policy.model_copy(update={"telemetry": policy.telemetry.model_copy(update={"path": str(path)})})


def _reasoning_counter(policy: Policy) -> Any:
    from effagent.llm.tokens import reasoning_counter_for

    return reasoning_counter_for(policy)


def _observer(policy: Policy) -> Any:
    from effagent.telemetry import observer_from_policy

    return observer_from_policy(policy)


def _replay_table(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The replay benchmark's tables; when it cannot run (recorded data not found, a missing extra), one line
    says why and the demo goes on: the comparison above is the demo's main result."""
    if args.skip_replay:
        return
    print("\nrouting quality on recorded outcomes (effagent bench replay --quick; the full tables: "
          "effagent bench replay):", flush=True)
    out = Path(args.out) / "bench"
    with contextlib.suppress(OSError):
        (out / "replay.json").unlink()  # a result from an earlier run must not pass for this one's
    errors = io.StringIO()
    rc: int | None = None
    reason = ""
    try:
        from effagent.tools.bench import replay

        parser = argparse.ArgumentParser(prog="effagent bench")
        sub = parser.add_subparsers()
        replay.register(sub)
        # the per-domain tables only, when the benchmark offers that (the full run takes minutes more)
        quick = any("--quick" in a.option_strings for a in sub.choices["replay"]._actions)
        rargs = parser.parse_args(["replay", "--out", str(out), "--no-progress", *(["--quick"] if quick else [])])
        with contextlib.redirect_stderr(errors):
            rc = int(rargs.func(rargs) or 0)
    except ModuleNotFoundError as e:
        reason = f"it needs the Python package {e.name!r} (pip install 'effagent[bench]')"
    except (Exception, SystemExit) as e:  # the replay is optional here: never let it end the demo
        reason = f"{type(e).__name__}: {e}"
    if (out / "replay.json").is_file():
        result["replay"] = json.loads((out / "replay.json").read_text())
    if rc == 0 or (reason and "replay" in result):
        if reason:
            print(f"(replay plot left out: {reason})")
        return
    said = [ln.strip() for ln in errors.getvalue().splitlines() if ln.strip()]
    reason = reason or (said[-1].removeprefix("error: ") if said else f"exit code {rc}")
    print(f"routing-quality table skipped: {reason}. The demo goes on; `effagent bench replay --help` says "
          "where the recorded outcomes are read from.")


def _report(traces: dict[str, Path], out_dir: Path, result: dict[str, Any]) -> None:
    """Both runs side by side on one page, with the comparison and the task list above them."""
    from effagent.tools.report import CHARTS_MISSING, has_matplotlib, write_comparison

    runs = [(label, path) for label, path in traces.items() if path.exists()]
    if runs:
        page = write_comparison(runs, out_dir / "report.html", title="effagent demo: plain vs governed", demo=result)
        print(f"wrote {page}")
        if not has_matplotlib():
            print(f"(report: {CHARTS_MISSING})")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run an example agent plain and governed on a small task set, and compare",
        description="Runs an example LangGraph agent (calculator + local lookup tools) on a small task set "
                    "twice — plain (every step on the strongest tier), then governed by a policy — against vLLM "
                    "servers (the two local CPU servers, SmolLM2-135M and Qwen2.5-Coder-0.5B, unless --vllm-url / "
                    "--strong-url are given), prints a table of tokens, $, time, calls per tier, loops capped and "
                    "answers correct, the task list, the replay-benchmark quality table, and writes an HTML report "
                    "of both runs side by side.")
    p.add_argument("--policy", default=DEFAULT_POLICY, metavar="NAME|PATH",
                   help=f"a shipped policy ({', '.join(policies.names())}) or a policy YAML file "
                        "(default: %(default)s)")
    p.add_argument("--tasks", default=None, metavar="PATH",
                   help=f"JSONL of {{id, question, answer}} (default: the shipped effagent/{DATA_FOLDER}/{TASKS_NAME})")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help=f"JSON {{key: fact}} for the lookup tool (default: the shipped "
                        f"effagent/{DATA_FOLDER}/{CORPUS_NAME})")
    p.add_argument("--limit", type=int, default=None, help="run only the first N tasks")
    p.add_argument("--vllm-url", default=None, help="use this vLLM server for the tiers on EFFAGENT_VLLM_URL "
                   "(the small model's names; e.g. http://gpu-host:8000/v1) instead of starting the local one")
    p.add_argument("--strong-url", default=None, help="use this vLLM server for the tiers on "
                   "EFFAGENT_VLLM_STRONG_URL (served name qwen) instead of starting the local one")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help="tasks in flight at once (default: %(default)s)")
    p.add_argument("--out", default="effagent-out/demo", help="output folder (default: %(default)s)")
    p.add_argument("--skip-replay", action="store_true", help="do not run the replay benchmark table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
