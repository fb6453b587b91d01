"""``effagent budgets suggest`` on what real (fake-model) runs wrote: a trace file and a ledger export."""

from __future__ import annotations

import json

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.tools.cli import main
from tests.fakes import FakeTierModel, ai

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small}
telemetry: {exporter: file, path: PATH}
"""


def run_agents(tmp_path, monkeypatch):
    """Ten runs in five threads; run i answers with 100 * (i + 1) input and 10 * (i + 1) output tokens."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")  # the tests' default is off
    traces = tmp_path / "traces.jsonl"
    policy = parse_policy(POLICY.replace("PATH", str(traces)), env={})
    script = [ai("ok", input_tokens=100 * (i + 1), output_tokens=10 * (i + 1)) for i in range(10)]
    model = FakeTierModel(tier="small", script=script)
    mw = EfficiencyMiddleware(policy, models={"small": model})
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    for i in range(10):
        agent.invoke({"messages": [HumanMessage(f"question {i}")]}, {"configurable": {"thread_id": f"t{i // 2}"}})
    mw.governor.observer.close()  # flush the trace file
    return traces, mw


def test_suggested_budgets_let_the_asked_share_of_runs_finish(tmp_path, capsys, monkeypatch):
    traces, mw = run_agents(tmp_path, monkeypatch)
    assert main(["budgets", "suggest", str(traces), "--quantile", "0.8", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    budgets = {b["scope"]: b for b in json.loads((tmp_path / "b.json").read_text())["budgets"]}
    run_totals = sorted(110 * (i + 1) for i in range(10))
    assert budgets["run"]["tokens"] == run_totals[7] and budgets["run"]["finish_share"] == 0.8
    assert budgets["run"]["largest"] == 1100 and budgets["run"]["count"] == 10
    assert budgets["thread"]["count"] == 5 and budgets["thread"]["tokens"] == 110 * (7 + 8)  # threads t0..t4
    assert budgets["step"]["tokens"] == 80
    assert "budgets.run.{tokens,usd}" in out and "80%" in out


def test_a_ledger_export_gives_the_same_budgets(tmp_path, capsys, monkeypatch):
    traces, mw = run_agents(tmp_path, monkeypatch)
    export = tmp_path / "ledger.jsonl"
    export.write_text("".join(r.model_dump_json() + "\n" for r in mw.ledger.records()))
    main(["budgets", "suggest", str(traces), "--json", str(tmp_path / "a.json")])
    main(["budgets", "suggest", str(export), "--json", str(tmp_path / "b.json")])
    a = json.loads((tmp_path / "a.json").read_text())["budgets"]
    b = json.loads((tmp_path / "b.json").read_text())["budgets"]
    assert [(x["scope"], x["tokens"], x["count"]) for x in a] == [(x["scope"], x["tokens"], x["count"]) for x in b]


def test_bad_input_names_the_line_and_what_to_give(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"run_id": "r", "usage": {"input_tokens": 1}}\nnot json\n')
    assert main(["budgets", "suggest", str(bad)]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    assert main(["budgets", "suggest", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["budgets", "suggest", str(bad), "--quantile", "1.5"]) == 2
