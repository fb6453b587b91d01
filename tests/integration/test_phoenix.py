"""effagent's traces in a real Phoenix: exported over OTLP/HTTP (the standard OTEL_* variables), read back
through Phoenix's own REST API, token counts and $ equal to the ledger's, nested run -> step under the
application's span; and Phoenix's own cost view, with effagent's tier prices registered as custom model
pricing through its GraphQL API."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from effagent.telemetry import OTelObserver, observer_from_policy, split_model
from effagent.tools.serving.phoenix_local import LocalPhoenix
from tests.integration.phoenix_fixture import Phoenix, phoenix_server  # noqa: F401
from tests.unit.test_telemetry import make_policy, run_scenario

pytestmark = pytest.mark.phoenix

CREATE_MODEL = """
mutation($input: CreateModelMutationInput!) {
  createModel(input: $input) { model { id name namePattern provider } }
}"""
SPAN_COST = """
query($id: ID!) {
  node(id: $id) { ... on Span { name costSummary {
    prompt { tokens cost } completion { tokens cost } total { tokens cost } } } }
}"""


def gql(client: httpx.Client, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def register_prices(client: httpx.Client, policy, suffix: str) -> list[dict[str, Any]]:
    """Our tier prices as Phoenix custom models, matched on the exact ``llm.model_name`` we send."""
    created = []
    for name, tier in policy.tiers.items():
        provider, model = split_model(tier.model)
        data = gql(client, CREATE_MODEL, {"input": {
            "name": f"effagent-{name}-{suffix}", "provider": provider, "namePattern": f"^{re.escape(model)}$",
            "costs": [
                {"tokenType": "input", "costPerMillionTokens": tier.price.input_per_mtok, "kind": "PROMPT"},
                {"tokenType": "output", "costPerMillionTokens": tier.price.output_per_mtok, "kind": "COMPLETION"},
            ]}})
        created.append(data["createModel"]["model"])
    return created


def test_phoenix_shows_every_step_with_the_ledgers_tokens_and_cost(phoenix_server: Phoenix, monkeypatch):  # noqa: F811
    px = phoenix_server
    project = f"effagent-test-{uuid.uuid4().hex[:8]}"
    pol = make_policy(exporter="otlp")
    pol = pol.model_copy(update={"telemetry": pol.telemetry.model_copy(update={"project": project})})
    client = httpx.Client(base_url=px.base_url, timeout=30)

    # Phoenix prices spans when it ingests them, from its model table: register ours first, and give its
    # model store (refreshed every 5 s) time to load them
    models = register_prices(client, pol, project[-8:])
    time.sleep(6.5)

    # the standard OTEL_* variables pick the endpoint and protocol; the policy says "otlp"
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", px.base_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # Phoenix takes OTLP traces, not metrics
    obs = observer_from_policy(pol)
    assert isinstance(obs, OTelObserver)
    app_tracer = obs.tracer_provider.get_tracer("my-app")  # the application's own span, same pipeline
    with app_tracer.start_as_current_span("handle-request") as user:
        mws = run_scenario(obs, pol)
    t_flush = time.perf_counter()
    obs.flush()
    records = [r for mw in mws for r in mw.ledger.records()]
    trace_id = format(user.get_span_context().trace_id, "032x")
    expected = 1 + 4 + len(records)  # app span + 4 runs + one span per ledger record (steps and failed attempts)

    spans: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = client.get(f"/v1/projects/{project}/spans", params={"trace_id": trace_id, "limit": 1000})
        if r.status_code == 200:
            spans = r.json()["data"]
            if len(spans) >= expected:
                break
        time.sleep(0.2)
    visible_s = time.perf_counter() - t_flush
    assert len(spans) == expected, f"Phoenix has {len(spans)} spans of trace {trace_id}, expected {expected}"

    by_id = {s["context"]["span_id"]: s for s in spans}
    [app] = [s for s in spans if s["name"] == "handle-request"]
    runs = {s["attributes"]["effagent.run_id"]: s for s in spans if s["attributes"].get("effagent.span") == "run"}
    steps = {(s["attributes"]["effagent.run_id"], s["attributes"]["effagent.step"]): s for s in spans
             if s["attributes"].get("effagent.span") == "step"}
    assert len(runs) == 4 and all(r["parent_id"] == app["context"]["span_id"] for r in runs.values())
    assert all(r["span_kind"] == "AGENT" for r in runs.values())

    rows = []
    for rec in records:
        if not rec.ok:
            continue
        s = steps[(rec.run_id, rec.step)]
        a = s["attributes"]
        assert s["span_kind"] == "LLM"
        assert s["parent_id"] == runs[rec.run_id]["context"]["span_id"]  # step nested under its run
        assert a["llm.token_count.prompt"] == a["gen_ai.usage.input_tokens"] == rec.usage.input_tokens
        assert a["llm.token_count.completion"] == a["gen_ai.usage.output_tokens"] == rec.usage.output_tokens
        assert a["llm.token_count.completion_details.reasoning"] == rec.usage.reasoning_tokens
        assert a["llm.token_count.total"] == rec.usage.total_tokens
        assert a["llm.cost.total"] == pytest.approx(rec.usage.cost_usd, rel=1e-9)
        assert a["effagent.cost.usd"] == pytest.approx(rec.usage.cost_usd, rel=1e-9)
        assert a["effagent.tier"] == rec.tier and a["llm.model_name"] == split_model(rec.model)[1]
        cost = gql(client, SPAN_COST, {"id": s["id"]})["node"]["costSummary"]
        rows.append((rec, cost))
    failed = [s for s in spans if s["attributes"].get("effagent.span") == "call"]
    assert len(failed) == sum(1 for r in records if not r.ok) and all(s["status_code"] == "ERROR" for s in failed)
    assert all(by_id[s["parent_id"]]["attributes"]["effagent.span"] == "step" for s in failed)

    # Phoenix's own cost view, computed from the prices registered above
    print(f"\nPhoenix: install {px.install_s if px.install_s is not None else '-'} s this session, started in "
          f"{px.startup_s:.1f} s, spans visible {visible_s:.2f} s after flush; custom models: "
          f"{[m['name'] + ' ' + m['namePattern'] for m in models]}")
    print(f"{'tier':6} {'in':>4} {'out':>4} {'reas':>4} {'ledger $':>12} {'phoenix $':>12} {'prompt $':>12} "
          f"{'compl. $':>12}")
    for rec, cost in rows:
        total = cost and cost["total"]["cost"]
        print(f"{rec.tier:6} {rec.usage.input_tokens:4} {rec.usage.output_tokens:4} {rec.usage.reasoning_tokens:4} "
              f"{rec.usage.cost_usd:12.8f} {total if total is not None else 'null':>12} "
              f"{cost and cost['prompt']['cost']!s:>12} {cost and cost['completion']['cost']!s:>12}")
    for rec, cost in rows:
        assert cost is not None and cost["total"]["cost"] is not None, "Phoenix computed no cost"
        assert cost["total"]["cost"] == pytest.approx(rec.usage.cost_usd, rel=1e-9)
        assert cost["prompt"]["tokens"] == rec.usage.input_tokens
        assert cost["completion"]["tokens"] == rec.usage.output_tokens

    # per-trace totals as Phoenix's traces view shows them
    r = client.get(f"/v1/projects/{project}/traces", params={"limit": 10})
    r.raise_for_status()
    [tr] = r.json()["data"]
    print("Phoenix traces view:", {k: v for k, v in tr.items() if "token" in k or "cost" in k})
    assert tr["token_count_total"] == sum(rec.usage.total_tokens for rec in records)


def test_phoenix_local_helper_is_idempotent():
    lp = LocalPhoenix()
    if not lp.provisioned():
        pytest.skip("Phoenix is not provisioned here")
    t = time.perf_counter()
    assert lp.provision() == 0.0 and time.perf_counter() - t < 30
