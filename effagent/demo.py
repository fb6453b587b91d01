"""`effagent demo`: an agent with tools runs a small task set twice — plain (every step on the baseline tier
with thinking on, no budgets) and governed by a policy — and prints what effagent changed.

Both runs go through the same middleware and ledger, so their numbers are measured the same way; the
plain run's policy routes every step to ``baseline_tier`` (the most expensive tier when unset) with
unbounded thinking and no budgets or loop guard.

Its inputs ship with the package, so it runs from a plain ``pip install``: the tasks and the lookup tool's
corpus in ``effagent/demo_data/``, the policy ``balanced`` from :mod:`effagent.policies`; ``--tasks``,
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
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from effagent import policies
from effagent.errors import PolicyError, ServiceUnreachableError
from effagent.ledger.memory import InMemoryLedger
from effagent.policy import Band, Budgets, LoopGuard, Policy, load_policy

DEFAULT_POLICY = "balanced"  # a shipped policy (effagent/policies/balanced.yaml)
DATA_FOLDER = "demo_data"  # inside the package
TASKS_NAME = "tasks.jsonl"
CORPUS_NAME = "corpus.json"
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
            return f"error: {e}"
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
        "telemetry": policy.telemetry.model_copy(update={"enabled": False}),  # the report shows the governed run
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
    loops_capped: int
    budget_finals: int
    failed_calls: int
    correct: int
    seconds: float


def run_tasks(label: str, policy: Policy, tasks: list[Task], *, models: dict[str, Any], tools: list[Any],
              prices: Policy, observer: Any = None, reasoning_counter: Any = None,
              progress: bool = True) -> tuple[RunRow, list[dict[str, Any]]]:
    from langchain.agents import create_agent

    from effagent.integrations.langchain import EfficiencyMiddleware

    ledger = InMemoryLedger()
    mw = EfficiencyMiddleware(policy, models=models, ledger=ledger, observer=observer,
                              reasoning_counter=reasoning_counter)
    agent = create_agent(mw.default_model, tools=tools, middleware=[mw], system_prompt=SYSTEM)
    answers: list[dict[str, Any]] = []
    started = time.perf_counter()
    for task in _progress(tasks, label, progress):
        try:
            out = agent.invoke({"messages": [{"role": "user", "content": task.question}]},
                               {"recursion_limit": 16})
            reply = str(out["messages"][-1].content or "")
            error = None
        except Exception as e:  # a task that fails is reported, the demo goes on
            reply, error = "", f"{type(e).__name__}: {str(e)[:160]}"
        answers.append({"id": task.id, "reply": reply[-300:], "gold": task.answer,
                        "correct": is_correct(reply, task.answer), "error": error})
    records = ledger.records()
    ok = [r for r in records if r.ok]
    # $ at the governed policy's prices for both runs, so the two are comparable
    cost = sum(prices.tiers[r.tier].price.cost(r.usage.input_tokens, r.usage.output_tokens)
               for r in ok if r.tier in prices.tiers)
    row = RunRow(
        label=label, tasks=len(tasks), steps=len(ok),
        input_tokens=sum(r.usage.input_tokens for r in ok), output_tokens=sum(r.usage.output_tokens for r in ok),
        reasoning_tokens=sum(r.usage.reasoning_tokens for r in ok), cost_usd=cost,
        calls_per_tier=dict(Counter(r.tier for r in ok)),
        loops_capped=sum(1 for r in records if r.kind == "finalize" and "loop capped" in r.reason),
        budget_finals=sum(1 for r in records if r.kind == "finalize" and "budget exhausted" in r.reason),
        failed_calls=sum(1 for r in records if not r.ok),
        correct=sum(1 for a in answers if a["correct"]), seconds=time.perf_counter() - started,
    )
    return row, answers


def _progress(tasks: list[Task], label: str, enabled: bool) -> Iterable[Task]:
    """A tqdm bar on stderr when tqdm is installed (the ``report`` extra), else one line per task."""
    if not enabled:
        return tasks
    if importlib.util.find_spec("tqdm") is not None:
        from tqdm import tqdm

        return tqdm(tasks, desc=f"{label:>9}", unit="task", file=sys.stderr)

    def lines() -> Iterator[Task]:
        for i, task in enumerate(tasks, 1):
            print(f"{label:>9}: task {i}/{len(tasks)} ({task.id})", file=sys.stderr, flush=True)
            yield task
    return lines()


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


# -- server ----------------------------------------------------------------------------------------------
@contextmanager
def vllm_endpoint(url: str | None) -> Iterator[str]:
    """The vLLM base URL: the given one, or a local CPU server with the bundled model (started, then stopped)."""
    from effagent.serving.vllm_local import LocalVLLM, normalize_base_url, probe

    if url:
        url = normalize_base_url(url)
        if probe(url) is None:
            raise ServiceUnreachableError(f"no vLLM server answers at {url}/models: start it, or drop --vllm-url "
                                          "(and unset EFFAGENT_VLLM_URL) to use the local CPU server")
        yield url
        return
    with LocalVLLM(names=["smol", "smol-think"]) as srv:
        yield srv.base_url


def cmd_demo(args: argparse.Namespace) -> int:
    from effagent.serving._signals import signals_interrupt

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    load_demo_policy(args.policy, {**os.environ, "EFFAGENT_VLLM_URL": "http://127.0.0.1:8000/v1"})  # fail early
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(args.tasks, args.limit)
    tools = make_tools(load_corpus(args.corpus))
    print(f"effagent demo: {len(tasks)} tasks, policy {args.policy}", file=sys.stderr)
    # SIGTERM/SIGHUP end the demo like Ctrl-C, so the local vLLM server it started is stopped too
    with signals_interrupt(), vllm_endpoint(args.vllm_url or os.environ.get("EFFAGENT_VLLM_URL")) as base_url:
        env = {**os.environ, "EFFAGENT_VLLM_URL": base_url}
        policy = load_demo_policy(args.policy, env=env)
        trace_path = out_dir / "traces.jsonl"
        policy = policy.model_copy(update={"telemetry": policy.telemetry.model_copy(update={"path": str(trace_path)})})
        plain = baseline_policy(policy)
        from effagent.integrations.chat_models import models_for as tier_models

        models = tier_models(policy)
        counter = _reasoning_counter(policy)
        observer = _observer(policy)
        rows, answers = [], {}
        for label, pol, obs in (("plain", plain, None), ("effagent", policy, observer)):
            row, ans = run_tasks(label, pol, tasks, models=models, tools=tools, prices=policy, observer=obs,
                                 reasoning_counter=counter, progress=not args.no_progress)
            rows.append(row)
            answers[label] = ans
    print(render_table(rows))
    p, e = rows
    if p.input_tokens + p.output_tokens:
        saved = 1 - (e.input_tokens + e.output_tokens) / (p.input_tokens + p.output_tokens)
        print(f"effagent vs plain: {saved:.0%} fewer tokens, "
              f"{(1 - e.cost_usd / p.cost_usd) if p.cost_usd else 0:.0%} fewer $; "
              f"correct: {e.correct}/{e.tasks} vs {p.correct}/{p.tasks} "
              "(the bundled 135M model tests the mechanics, not answer quality)")
    result = {"rows": [r.model_dump() for r in rows], "answers": answers, "policy": str(args.policy)}
    _replay_table(args, result)
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2))
    _report(trace_path, out_dir)
    print(f"wrote {out_dir / 'demo.json'}")
    return 0


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
        from effagent.bench import replay

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


def _report(trace_path: Path, out_dir: Path) -> None:
    from effagent.report import CHARTS_MISSING, has_matplotlib, write_report

    if trace_path.exists():
        print(f"wrote {write_report(trace_path, out_dir / 'report.html', title='effagent demo')}")
        if not has_matplotlib():
            print(f"(report: {CHARTS_MISSING})")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run an example agent plain and governed on a small task set, and compare",
        description="Runs an example LangGraph agent (calculator + local lookup tools) on a small task set "
                    "twice — plain, then governed by a policy — against a vLLM server (the local CPU server "
                    "with the bundled model unless --vllm-url / EFFAGENT_VLLM_URL is given), prints a table of "
                    "tokens, $, calls per tier, loops capped and answers correct, the replay-benchmark quality "
                    "table, and writes an HTML report of the traces.")
    p.add_argument("--policy", default=DEFAULT_POLICY, metavar="NAME|PATH",
                   help=f"a shipped policy ({', '.join(policies.names())}) or a policy YAML file "
                        "(default: %(default)s)")
    p.add_argument("--tasks", default=None, metavar="PATH",
                   help=f"JSONL of {{id, question, answer}} (default: the shipped effagent/{DATA_FOLDER}/{TASKS_NAME})")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help=f"JSON {{key: fact}} for the lookup tool (default: the shipped "
                        f"effagent/{DATA_FOLDER}/{CORPUS_NAME})")
    p.add_argument("--limit", type=int, default=None, help="run only the first N tasks")
    p.add_argument("--vllm-url", default=None, help="use this vLLM server (e.g. http://gpu-host:8000/v1)")
    p.add_argument("--out", default="effagent-out/demo", help="output folder (default: %(default)s)")
    p.add_argument("--skip-replay", action="store_true", help="do not run the replay benchmark table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
