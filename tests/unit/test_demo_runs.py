"""The demo's two runs, task list, paired comparison and side-by-side report, with fake tier models (the real
servers' run is tests/integration/test_examples.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage

from effagent import policies
from effagent.tools import demo
from effagent.tools.report import write_comparison
from effagent.tools.serving import vllm_local as vl
from tests.fakes import FakeTierModel, ai, call

TASKS = [
    demo.Task(id="capital", kind="fact", question="What is the capital of France?", answer="Paris"),
    demo.Task(id="mul", kind="calculator", question="Use the calculator tool to multiply 4821 by 377, then tell "
              "me the product.", answer="1817517"),
]


def _strong(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
    """Calls the calculator for the tool task, restates its result; answers facts directly."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return ai(f"The product is {last.content}.")
    if "calculator" in str(last.content):
        return ai("", tool_calls=[call("calculator", {"expression": "4821 * 377"})])
    return ai("Paris.")


def _small(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
    if isinstance(messages[-1], ToolMessage):  # restates a tool result
        return ai(f"The product is {messages[-1].content}.")
    return ai("The capital of France is Paris." if "France" in str(messages[-1].content) else "I do not know.")


def _runs(tmp_path: Path) -> tuple[list[demo.RunRow], dict[str, list[dict[str, Any]]], dict[str, Path]]:
    policy = policies.load("local-two-tier", env={})
    traces = {"plain": tmp_path / "traces-plain.jsonl", "effagent": tmp_path / "traces.jsonl"}
    governed = demo._with_traces(policy, traces["effagent"])
    plain = demo._with_traces(demo.baseline_policy(policy), traces["plain"])
    models = {"large": FakeTierModel(responder=_strong), "small": FakeTierModel(responder=_small)}
    tools = demo.make_tools(demo.load_corpus())
    rows, answers = [], {}
    for label, pol in (("plain", plain), ("effagent", governed)):
        row, ans = demo.run_tasks(label, pol, TASKS, models=models, tools=tools, prices=policy,
                                  observer=demo._observer(pol), progress=False, concurrency=2)
        rows.append(row)
        answers[label] = ans
    return rows, answers, traces


def test_plain_run_uses_the_strong_tier_only_and_the_governed_run_routes_per_step(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    rows, answers, traces = _runs(tmp_path)
    plain, governed = rows
    assert plain.calls_per_tier == {"large": 3} and plain.correct == 2
    assert governed.calls_per_tier == {"large": 1, "small": 2} and governed.correct == 2
    assert governed.cost_usd < plain.cost_usd  # the fact went to the cheaper tier
    by_id = {a["id"]: a for a in answers["effagent"]}
    # the tool call on Qwen; the restatement after the tool's result is read as one (its role) and goes to SmolLM2
    assert by_id["capital"]["tiers"] == ["small"] and by_id["mul"]["tiers"] == ["large", "small"]
    assert by_id["mul"]["roles"] == ["first", "restate"]
    assert [a["id"] for a in answers["plain"]] == ["capital", "mul"]  # task order, whatever finished first
    table = demo.render_tasks(TASKS, answers)
    assert "capital  fact" in table and "ok  small" in table and "ok  large+small" in table
    roles = demo.render_roles(answers)
    assert "restate" in roles and "effagent: small" in roles

    result = {"rows": [r.model_dump() for r in rows], "answers": answers, "paired": demo.paired_comparison(answers),
              "tasks": [t.model_dump() for t in TASKS]}
    page = write_comparison(list(traces.items()), tmp_path / "report.html", demo=result).read_text()
    assert page.count("<h2 class=col>") == 2 and ">plain</h2>" in page and ">effagent</h2>" in page
    assert "Plain vs governed" in page and "<code>mul</code>" in page and "2/2" in page
    assert page.count("Decision timeline") == 2  # each run's own report, side by side
    assert page.count("<h2>Per role</h2>") == 2 and "restate" in page  # the spans carry effagent.step.role
    spans = [json.loads(line) for line in traces["effagent"].read_text().splitlines()]
    assert "restate" in json.dumps(spans)


def test_paired_comparison_counts_discordant_tasks_and_gives_an_exact_p_value():
    def answers(flags: str) -> list[dict[str, Any]]:
        return [{"id": str(i), "correct": f == "1"} for i, f in enumerate(flags)]

    got = demo.paired_comparison({"plain": answers("1111100000"), "effagent": answers("1101100100")})
    assert (got["plain_correct"], got["governed_correct"]) == (5, 5)
    assert (got["only_plain"], got["only_governed"]) == (1, 1) and got["mcnemar_p"] == 1.0
    got = demo.paired_comparison({"plain": answers("1111"), "effagent": answers("1000")})
    assert (got["only_plain"], got["only_governed"]) == (3, 0) and got["mcnemar_p"] == 0.25  # 2 * (1/2)**3
    lo, hi = got["plain_ci95"]
    assert 0.45 < lo < 0.55 and hi == 1.0  # Wilson interval of 4/4


def test_the_demo_starts_the_local_models_its_policy_calls():
    assert demo._local_models_used(policies.load("local-two-tier", env={})) == [vl.SMOL, vl.QWEN]
    assert demo._local_models_used(policies.load("balanced", env={})) == [vl.SMOL]
    assert demo.DEFAULT_POLICY == "local-two-tier"


def test_shipped_tasks_are_at_least_twenty_of_each_kind_and_the_corpus_answers_every_lookup():
    tasks = demo.load_tasks()
    kinds = {t.kind for t in tasks}
    assert len(tasks) >= 20 and kinds == {"fact", "calculator", "lookup"}
    lookup = demo.make_tools(demo.load_corpus())[1]
    for t in tasks:
        if t.kind == "lookup":  # the subject of "Look up X in the local encyclopedia" finds the fact
            subject = t.question.removeprefix("Look up ").split(" in the local encyclopedia")[0]
            assert t.answer.lower() in lookup.invoke({"query": subject}).lower(), t.id
    json.dumps([t.model_dump() for t in tasks])


def test_the_multi_step_task_set_has_sixty_tasks_its_corpus_answers_and_errors_to_recover_from():
    tasks = demo.load_tasks(demo.shipped(demo.AGENT_TASKS_NAME))
    assert len(tasks) >= 60 and {t.kind for t in tasks} == {"lookup+calc", "2 lookups+calc", "calc error+calc"}
    calculator, lookup = demo.make_tools(demo.load_corpus(demo.shipped(demo.AGENT_CORPUS_NAME)))
    for t in tasks:
        if "lookup" in t.kind:  # each "Look up the X" finds X's fact (and its number) in the corpus
            for subject in re.findall(r"the ([A-Z][\w-]*(?: [A-Z][\w-]*)*)", t.question):
                assert re.search(r"\d", lookup.invoke({"query": subject})), (t.id, subject)
        else:  # the expression the task gives first is an error to recover from
            first = t.question.split("'")[1]
            assert calculator.invoke({"expression": first}).startswith("error:"), t.id


def test_a_tool_call_the_loop_guard_stops_is_not_listed_as_a_model_step():
    """The task list names the tier of each model step; the stand-in answer for a stopped repeat is not one."""
    def repeats(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
        stopped = any(isinstance(m, ToolMessage) and m.status == "error" for m in messages)
        return ai("The product is 1817517.") if stopped else ai(
            "", tool_calls=[call("calculator", {"expression": "4821 * 377"})])

    policy = policies.load("local-two-tier", env={})
    models = {"large": FakeTierModel(responder=repeats), "small": FakeTierModel(responder=repeats)}
    _, answers = demo.run_tasks("effagent", policy, TASKS[1:], models=models,
                                tools=demo.make_tools(demo.load_corpus()), prices=policy, progress=False)
    (answer,) = answers
    assert answer["correct"] and answer["error"] is None
    assert answer["tiers"] and set(answer["tiers"]) <= {"large", "small"}  # no "?" for the stopped call
    assert len(answer["tiers"]) == len(answer["roles"]) and "?" not in answer["roles"]
