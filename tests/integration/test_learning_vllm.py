"""Routing that learns, on the real local vLLM server: an agreement-cascade band in a create_agent agent, and one
step of the learning loop (a shadowed step writes its label, `difficulty learn` reads it). Cheap and strong are
the same small model here: the mechanics count (calls, usage, labels), not the answers."""

from __future__ import annotations

import json

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.tools.cli import main

pytestmark = pytest.mark.vllm

POLICY = """
tiers:
  cheap: {model: hosted_vllm/smol, api_base: "URL", price: {input_per_mtok: 0.05, output_per_mtok: 0.1},
          max_tokens: 24}
  strong: {model: hosted_vllm/smol, api_base: "URL", price: {input_per_mtok: 0.5, output_per_mtok: 1.0},
           max_tokens: 24}
bands:
  - {name: cheap, min: 0.0, max: 0.99, tier: cheap, BAND}
  - {name: strong, min: 0.99, max: 1.0, tier: strong}
EXTRA
"""
QUESTION = "What is the capital of France? Answer with one word."


def build(vllm_server, band: str, extra: str = ""):
    text = POLICY.replace("URL", vllm_server.base_url).replace("BAND", band).replace("EXTRA", extra)
    mw = EfficiencyMiddleware(parse_policy(text, env={}))
    return create_agent(mw.default_model, tools=[], middleware=[mw]), mw


def test_an_agreement_cascade_band_votes_on_the_server_and_accounts_every_call(vllm_server):
    graph, mw = build(vllm_server, "agreement: {to: strong, samples: 3, threshold: 1.0, temperature: 1.0}")
    last = graph.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1]
    meta = last.response_metadata["effagent"]["agreement"]
    assert len(meta["votes"]) == 3 and 0 < meta["agreed"] <= 1.0
    recs = mw.ledger.records()
    assert [r.kind for r in recs[:3]] == ["sample"] * 3
    assert all(r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in recs)  # the server's own usage
    if meta["escalated"]:  # the votes disagreed: the strong tier answered
        assert len(recs) == 4 and recs[-1].tier == "strong" and recs[-1].kind == "model"
    else:
        assert len(recs) == 3
    assert mw.ledger.total().calls == len(recs)


def test_a_shadowed_step_writes_a_label_that_learn_reads(vllm_server, tmp_path, capsys):
    out = tmp_path / "outcomes.jsonl"
    graph, mw = build(vllm_server, "thinking: false", f"learning: {{shadow_share: 1.0, outcomes: {out}}}")
    last = graph.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1]
    assert last.response_metadata["effagent"]["shadow"]["tier"] == "strong"
    assert [r.kind for r in mw.ledger.records()] == ["model", "shadow"]
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["prompt"] == QUESTION and isinstance(line["cheap_correct"], bool) and line["label"] == "agreement"
    # the label file is `difficulty learn` input as it is (a model of one row leans on the default)
    model = tmp_path / "model.json"
    import io
    import sys

    stdin = sys.stdin
    sys.stdin = io.StringIO(out.read_text())
    try:
        code = main(["difficulty", "learn", "--out", str(model)])
    finally:
        sys.stdin = stdin
    assert code == 0 and model.exists()
