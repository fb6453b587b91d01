"""OpenTelemetry tracing through a real create_agent graph with fake tier models (no server)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from effagent import InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.observe import NullObserver
from effagent.telemetry import OTelObserver, observer_from_policy, split_model
from effagent.telemetry.exporters import (
    JsonlFileSpanExporter,
    build_span_exporter,
    metrics_path,
    otlp_protocol,
    read_spans,
)
from effagent.telemetry.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from effagent.tools.report import fmt_int, fmt_usd, load, register, summary
from tests.fakes import FakeTierModel, ai, call

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"

POLICY = f"""\
name: tracing-test
tiers:
  small:
    model: hosted_vllm/smol
    api_key: {SECRET}
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
    max_tokens: 300
  large:
    model: hosted_vllm/smol-think
    api_key: {SECRET}
    price: {{input_per_mtok: 10.0, output_per_mtok: 30.0}}
    thinking: {{control: chat_template_kwargs, max_budget: 2048}}
    max_tokens: 900
bands:
  - {{name: easy, min: 0.0, max: 0.5, tier: small}}
  - {{name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 512}}
budgets:
  run: {{tokens: RUN_TOKENS}}
fallback: {{order: [large, small]}}
baseline_tier: large
telemetry:
  exporter: EXPORTER
  path: PATH
  record_content: CONTENT
"""

EASY = "What is the capital of France?"
HARD = ("A tank holds 1200 litres. Pipe A fills it in 6 hours, pipe B in 9 hours and pipe C drains it in 12 hours. "
        "If all three open at 3pm with the tank 1/4 full, derive step by step when it is full, and prove the "
        "formula for the general case; analyze how the answer changes if pipe B fails after 2 hours.")


def make_policy(run_tokens=100000, exporter="none", path="traces.jsonl", content=False):
    text = (POLICY.replace("RUN_TOKENS", str(run_tokens)).replace("EXPORTER", exporter)
            .replace("PATH", str(path)).replace("CONTENT", "true" if content else "false"))
    return parse_policy(text, env={})


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return str(eval(expression, {"__builtins__": {}}))


def tool_then_answer(answer, usage):
    def respond(messages, kwargs):
        if isinstance(messages[-1], ToolMessage):
            return ai(answer, input_tokens=usage[0], output_tokens=usage[1], reasoning=usage[2])
        return ai("", tool_calls=[call("calculator", {"expression": "6*7"})], input_tokens=usage[0],
                  output_tokens=usage[1], reasoning=usage[2])
    return respond


def build(pol, observer, small=None, large=None):
    small = small or FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0)))
    large = large or FakeTierModel(tier="large", responder=tool_then_answer("42", (40, 30, 20)))
    mw = EfficiencyMiddleware(pol, models={"small": small, "large": large}, ledger=InMemoryLedger(),
                              observer=observer)
    return create_agent(mw.default_model, tools=[calculator], middleware=[mw]), mw


@pytest.fixture(autouse=True)
def _sdk_enabled(monkeypatch):
    """These tests need a working SDK even where the suite turns telemetry off with OTEL_SDK_DISABLED."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    return tp, mp, spans, reader


def attrs_of(span):
    return dict(span.attributes or {})


def by_kind(spans, kind):
    return [s for s in spans if (s.attributes or {}).get("effagent.span") == kind]


# ---------------------------------------------------------------------------------------------------
def test_every_step_has_a_span_with_the_ledgers_tokens_nested_under_run_and_user_span(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy()
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    user_tracer = TracerProvider().get_tracer("app")  # the application's own provider, separate from ours
    with user_tracer.start_as_current_span("handle-request") as user_span:
        agent.invoke({"messages": [HumanMessage(EASY)]})
        agent.invoke({"messages": [HumanMessage(HARD)]})
    spans = exporter.get_finished_spans()
    runs, steps = by_kind(spans, "run"), by_kind(spans, "step")
    records = mw.ledger.records()
    assert len(runs) == 2 and len(steps) == len(records) == 4
    user_ctx = user_span.get_span_context()
    run_ids = {}
    for run in runs:
        a = attrs_of(run)
        assert a["gen_ai.operation.name"] == "invoke_agent" and a["openinference.span.kind"] == "AGENT"
        assert run.parent is not None and run.parent.span_id == user_ctx.span_id
        assert run.context.trace_id == user_ctx.trace_id
        run_ids[a["effagent.run_id"]] = run
        usage = mw.ledger.run_usage(a["effagent.run_id"])
        assert a["effagent.run.total_tokens"] == usage.total_tokens
        assert a["effagent.run.cost_usd"] == pytest.approx(usage.cost_usd)
        assert a["effagent.run.steps"] == 2
    for rec in records:
        [span] = [s for s in steps if attrs_of(s)["effagent.run_id"] == rec.run_id
                  and attrs_of(s)["effagent.step"] == rec.step]
        a = attrs_of(span)
        assert span.parent.span_id == run_ids[rec.run_id].context.span_id
        assert a["gen_ai.operation.name"] == "chat" and a["openinference.span.kind"] == "LLM"
        assert a["gen_ai.usage.input_tokens"] == a["llm.token_count.prompt"] == rec.usage.input_tokens
        assert a["gen_ai.usage.output_tokens"] == a["llm.token_count.completion"] == rec.usage.output_tokens
        assert a["gen_ai.usage.reasoning.output_tokens"] == rec.usage.reasoning_tokens
        assert a["llm.token_count.completion_details.reasoning"] == rec.usage.reasoning_tokens
        assert a["llm.token_count.total"] == rec.usage.total_tokens
        assert a["llm.cost.total"] == a["effagent.cost.usd"] == pytest.approx(rec.usage.cost_usd)
        assert a["llm.cost.prompt"] + a["llm.cost.completion"] == pytest.approx(rec.usage.cost_usd)
        assert a["gen_ai.provider.name"] == "vllm" and a["gen_ai.request.model"] == split_model(rec.model)[1]
        assert a["gen_ai.response.model"] == f"fake-{rec.tier}"
        assert a["effagent.tier"] == a["effagent.decision.tier"] == rec.tier
        assert a["effagent.decision.reason"] == rec.reason
        assert 0 <= a["effagent.difficulty.score"] <= 1 and any(k.startswith("effagent.difficulty.signals.")
                                                                for k in a)
        assert a["effagent.loop.capped"] is False and a["effagent.samples.used"] == 1
        assert "effagent.budget_left.run_tokens" in a
        if rec.tier == "large":
            assert a["effagent.thinking.enabled"] is True and a["effagent.thinking.budget"] == 512
            assert a["effagent.cost.saved_usd"] == pytest.approx(0.0)
        else:
            assert a["effagent.thinking.enabled"] is False and "effagent.thinking.budget" not in a
            base = (rec.usage.input_tokens * 10 + rec.usage.output_tokens * 30) / 1e6
            assert a["effagent.cost.baseline_usd"] == pytest.approx(base)
            assert a["effagent.cost.saved_usd"] == pytest.approx(base - rec.usage.cost_usd)


def test_metrics_follow_genai_semconv_and_match_the_ledger(otel):
    tp, mp, _, reader = otel
    pol = make_policy()
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    agent.invoke({"messages": [HumanMessage(EASY)]})
    agent.invoke({"messages": [HumanMessage(HARD)]})
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    tok = metrics["gen_ai.client.token.usage"]
    assert tok.unit == "{token}"
    sums = {"input": 0, "output": 0}
    for p in tok.data.data_points:
        assert tuple(p.explicit_bounds) == TOKEN_BUCKETS
        assert p.attributes["gen_ai.operation.name"] == "chat" and p.attributes["gen_ai.provider.name"] == "vllm"
        sums[p.attributes["gen_ai.token.type"]] += p.sum
    total = mw.ledger.total()
    assert sums == {"input": total.input_tokens, "output": total.output_tokens}
    dur = metrics["gen_ai.client.operation.duration"]
    assert dur.unit == "s" and all(tuple(p.explicit_bounds) == DURATION_BUCKETS for p in dur.data.data_points)
    assert sum(p.count for p in dur.data.data_points) == 4
    cost = sum(p.value for p in metrics["effagent.cost"].data.data_points)
    assert cost == pytest.approx(total.cost_usd)
    base = sum(p.value for p in metrics["effagent.cost.baseline"].data.data_points)
    saved = sum(p.value for p in metrics["effagent.cost.saved"].data.data_points)
    assert saved == pytest.approx(base - cost) and saved > 0  # the easy run went to the cheaper tier
    small = [r for r in mw.ledger.records() if r.tier == "small"]
    tokens_saved = sum(p.value for p in metrics["effagent.tokens.saved"].data.data_points)
    expected = sum(r.usage.total_tokens * (1 - r.usage.cost_usd / ((r.usage.input_tokens * 10
                                                                   + r.usage.output_tokens * 30) / 1e6))
                   for r in small)
    assert tokens_saved == pytest.approx(expected)


def _all_strings(spans):
    for s in spans:
        yield s.name
        for v in (s.attributes or {}).values():
            yield from (v if isinstance(v, tuple) else (v,))
        if s.status.description:
            yield s.status.description


def test_content_is_absent_by_default_and_no_api_key_anywhere(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy()
    agent, _ = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    agent.invoke({"messages": [HumanMessage(EASY)]})
    spans = exporter.get_finished_spans()
    keys = {k for s in spans for k in (s.attributes or {})}
    assert not keys & {"input.value", "output.value", "gen_ai.input.messages", "gen_ai.output.messages",
                       "llm.input_messages.0.message.content"}
    assert not any(EASY in str(v) or "Paris" in str(v) for v in _all_strings(spans))
    assert not any(SECRET in str(v) for v in _all_strings(spans))
    assert not any("api_key" in k for k in keys)


def test_content_is_recorded_when_the_policy_opts_in(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy(content=True)
    observer = OTelObserver(pol, tracer_provider=tp, meter_provider=mp)
    assert observer.record_content
    # the observer receives content from the governor only when the policy opts in; drive the hook directly too
    agent, mw = build(pol, observer)
    agent.invoke({"messages": [HumanMessage(EASY + f" (my key is {SECRET})")]})
    steps = by_kind(exporter.get_finished_spans(), "step")
    answered = [attrs_of(s) for s in steps if "output.value" in attrs_of(s)]
    assert answered, "content opted in but no step span carries it"
    last = answered[-1]
    assert EASY in last["input.value"] and last["output.value"] == "Paris"
    assert json.loads(last["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Paris"
    assert last["llm.input_messages.0.message.role"] == "user"
    assert not any(SECRET in str(v) for v in _all_strings(exporter.get_finished_spans()))  # scrubbed
    assert any("[REDACTED]" in a["input.value"] for a in answered)


def test_content_passed_without_opt_in_is_dropped(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy(content=False)
    obs = OTelObserver(pol, tracer_provider=tp, meter_provider=mp)
    from effagent.governor import Governor

    gov = Governor(pol, observer=obs)
    run = gov.start_run()
    from effagent.records import Message, Step

    d = gov.plan(Step(messages=[Message(role="user", content="hi")]), run)
    gov.account(run, None, d, tier=d.tier, input_tokens=3, output_tokens=2,
                content={"prompt": "hi there", "completion": "hello"})
    gov.end_step(run, d, gov.ledger.run_usage(run))
    gov.end_run(run)
    assert not any("hi there" in str(v) or "hello" == v for v in _all_strings(exporter.get_finished_spans()))


def test_fallback_and_loop_cap_are_traced(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy()
    dead = FakeTierModel(tier="large", fail_with=ConnectionError)
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp), large=dead)
    agent.invoke({"messages": [HumanMessage(HARD)]})
    spans = exporter.get_finished_spans()
    calls = by_kind(spans, "call")
    failed = [s for s in calls if not attrs_of(s)["effagent.call.ok"]]
    assert failed and all(s.status.status_code.name == "ERROR" for s in failed)
    assert attrs_of(failed[0])["error.type"] == "ConnectionError" and attrs_of(failed[0])["effagent.tier"] == "large"
    steps = {s.context.span_id: s for s in by_kind(spans, "step")}
    assert all(s.parent.span_id in steps for s in failed)  # failed attempts nest under their step
    served = [attrs_of(s) for s in steps.values()]
    assert all(a["effagent.decision.tier"] == "large" and a["effagent.tier"] == "small" for a in served)

    exporter.clear()
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "2+2"})],
                                                    input_tokens=50, output_tokens=10)])
    final = FakeTierModel(tier="small", script=[ai("4", input_tokens=5, output_tokens=1)])
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp), small=final, large=looper)
    agent.invoke({"messages": [HumanMessage(HARD)]}, {"recursion_limit": 50})
    spans = exporter.get_finished_spans()
    last = max(by_kind(spans, "step"), key=lambda s: attrs_of(s)["effagent.step"])
    a = attrs_of(last)
    assert a["effagent.loop.capped"] is True and "repeated" in a["effagent.loop.reason"]
    assert a["effagent.decision.action"] == "finalize" and a["effagent.kind"] == "finalize"
    [run] = by_kind(spans, "run")
    assert attrs_of(run)["effagent.run.loops_capped"] == 1 and attrs_of(run)["effagent.run.finalized"] == 1


async def test_async_agent_is_traced_the_same(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy()
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    tracer = tp.get_tracer("app")
    with tracer.start_as_current_span("async-request") as user:
        await asyncio.gather(agent.ainvoke({"messages": [HumanMessage(EASY)]}),
                             agent.ainvoke({"messages": [HumanMessage(HARD)]}))
    spans = exporter.get_finished_spans()
    runs = by_kind(spans, "run")
    assert len(runs) == 2 and all(r.parent.span_id == user.get_span_context().span_id for r in runs)
    run_span = {attrs_of(r)["effagent.run_id"]: r.context.span_id for r in runs}
    steps = by_kind(spans, "step")
    assert len(steps) == 4
    assert all(s.parent.span_id == run_span[attrs_of(s)["effagent.run_id"]] for s in steps)
    assert sum(attrs_of(s)["gen_ai.usage.input_tokens"] for s in steps) == mw.ledger.total().input_tokens


def test_threads_share_one_observer_safely(otel):
    tp, mp, exporter, _ = otel
    pol = make_policy()
    agent, mw = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    tracer = tp.get_tracer("app")
    errors = []

    def work(i):
        try:
            with tracer.start_as_current_span(f"req-{i}"):
                agent.invoke({"messages": [HumanMessage(EASY if i % 2 else HARD)]})
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spans = exporter.get_finished_spans()
    users = {s.context.span_id: s for s in spans if s.name.startswith("req-")}
    runs = by_kind(spans, "run")
    assert len(runs) == 8 and all(r.parent.span_id in users for r in runs)
    assert len({r.parent.span_id for r in runs}) == 8  # each run under its own request
    assert len(by_kind(spans, "step")) == 16 == len(mw.ledger.records())


def test_hooks_never_raise(otel, caplog):
    tp, mp, _, _ = otel

    class Broken:
        def get_tracer(self, *a, **k):
            raise RuntimeError("tracer is broken")

    obs = OTelObserver(make_policy(), tracer_provider=tp, meter_provider=mp)
    obs._tracer = Broken()  # every span start now fails
    pol = make_policy()
    agent, mw = build(pol, obs)
    out = agent.invoke({"messages": [HumanMessage(EASY)]})
    assert out["messages"][-1].content == "Paris"
    # hooks called out of order / with unknown ids are tolerated too
    obs2 = OTelObserver(pol, tracer_provider=tp, meter_provider=mp)
    obs2.on_run_end("nope", mw.ledger.total())
    obs2.on_step_end("nope", None, None)  # type: ignore[arg-type]


def test_observer_from_policy(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert isinstance(observer_from_policy(make_policy(exporter="none")), NullObserver)
    pol = make_policy(exporter="file", path=tmp_path / "t.jsonl")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert isinstance(observer_from_policy(pol), NullObserver)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    disabled = pol.model_copy(update={"telemetry": pol.telemetry.model_copy(update={"enabled": False})})
    assert isinstance(observer_from_policy(disabled), NullObserver)
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    obs = observer_from_policy(pol)
    assert isinstance(obs, OTelObserver) and obs.flush_on_run_end
    assert trace.get_tracer_provider() is before  # a private provider: the global one is left alone
    assert observer_from_policy(pol).tracer_provider is obs.tracer_provider  # one provider per file


def test_an_applications_own_provider_is_used(monkeypatch, tmp_path):
    from opentelemetry import metrics, trace

    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    app_spans = InMemorySpanExporter()
    app_tp = TracerProvider()
    app_tp.add_span_processor(SimpleSpanProcessor(app_spans))
    app_mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: app_tp)  # as if the app had set them globally
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: app_mp)
    path = tmp_path / "never-written.jsonl"
    pol = make_policy(exporter="file", path=path)
    obs = observer_from_policy(pol)
    assert isinstance(obs, OTelObserver) and obs.tracer_provider is app_tp and obs.meter_provider is app_mp
    assert not obs.flush_on_run_end
    agent, mw = build(pol, obs)
    agent.invoke({"messages": [HumanMessage(EASY)]})
    assert len(by_kind(app_spans.get_finished_spans(), "step")) == 2
    assert not path.exists() and not metrics_path(path).exists()


def test_exporter_factory_honours_otel_env(monkeypatch, tmp_path):
    """OTLP/HTTP goes to OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces with OTEL_EXPORTER_OTLP_HEADERS (a real
    loopback HTTP receiver checks it); OTEL_EXPORTER_OTLP_PROTOCOL=grpc picks the gRPC exporter."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    seen = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.path, self.headers.get("x-team"), self.headers.get("Content-Type"), len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
            monkeypatch.delenv(var, raising=False)
        assert otlp_protocol() == "http/protobuf"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=effagent")
        exp = build_span_exporter("otlp")
        assert isinstance(exp, Http)
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(exp))
        pol = make_policy()
        agent, _ = build(pol, OTelObserver(pol, tracer_provider=tp, meter_provider=MeterProvider()))
        agent.invoke({"messages": [HumanMessage(EASY)]})
        tp.shutdown()
        assert seen and all(p == "/v1/traces" and team == "effagent" and ctype == "application/x-protobuf"
                            for p, team, ctype, _ in seen)
    finally:
        server.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    exp = build_span_exporter("otlp")
    assert isinstance(exp, Grpc)
    exp.shutdown()
    assert build_span_exporter("none") is None
    assert isinstance(build_span_exporter("file", tmp_path / "x.jsonl"), JsonlFileSpanExporter)
    assert metrics_path("out/traces.jsonl") == Path("out/traces.metrics.jsonl")


def run_scenario(observer, pol):
    """Easy, hard, fallback and loop-capped runs: what a report should show."""
    agent, mw = build(pol, observer)
    agent.invoke({"messages": [HumanMessage(EASY)]}, {"configurable": {"thread_id": "t-1"}})
    agent.invoke({"messages": [HumanMessage(HARD)]})
    dead = FakeTierModel(tier="large", fail_with=ConnectionError)
    agent2, mw2 = build(pol, observer, large=dead)
    agent2.invoke({"messages": [HumanMessage(HARD)]})
    looper = FakeTierModel(tier="large", script=[ai("", tool_calls=[call("calculator", {"expression": "2+2"})],
                                                    input_tokens=50, output_tokens=10, reasoning=4)])
    final = FakeTierModel(tier="small", script=[ai("4", input_tokens=5, output_tokens=1)])
    agent3, mw3 = build(pol, observer, small=final, large=looper)
    agent3.invoke({"messages": [HumanMessage(HARD)]}, {"recursion_limit": 50})
    return [mw, mw2, mw3]


def test_file_exporter_round_trip_and_report(tmp_path, capsys):
    path = tmp_path / "out" / "traces.jsonl"
    pol = make_policy(exporter="file", path=path)
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(JsonlFileSpanExporter(path)))
    mws = run_scenario(OTelObserver(pol, tracer_provider=tp, meter_provider=MeterProvider()), pol)
    records = [r for mw in mws for r in mw.ledger.records()]
    spans = read_spans(path)
    lines = path.read_text().splitlines()
    assert all("resourceSpans" in json.loads(line) for line in lines)  # OTLP JSON, one request per line
    assert SECRET not in path.read_text()
    steps = [s for s in spans if s["attributes"].get("effagent.span") == "step"]
    ok = [r for r in records if r.ok]
    assert len(steps) == len(ok)
    ids = {s["span_id"] for s in spans}
    assert all(len(s["trace_id"]) == 32 and len(s["span_id"]) == 16 for s in spans)
    assert all(s["parent_span_id"] in ids for s in steps)
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in steps) == sum(r.usage.input_tokens for r in ok)

    data = load(path)
    s = summary(data)
    total_tokens = sum(r.usage.total_tokens for r in ok)
    total_cost = sum(r.usage.cost_usd for r in ok)
    assert s["tokens"] == total_tokens and s["cost"] == pytest.approx(total_cost)
    assert s["loops_capped"] == 1 and s["failed_calls"] == sum(1 for r in records if not r.ok) > 0
    assert s["runs"] == 4

    import argparse

    parser = argparse.ArgumentParser(prog="effagent")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "report.html"
    args = parser.parse_args(["report", str(path), "-o", str(out)])
    assert args.func(args) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert fmt_int(total_tokens) in page and fmt_usd(total_cost) in page and fmt_usd(s["saved"]) in page
    assert "loop capped" in page and "finalize" in page and "ConnectionError" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # self-contained
    assert f"wrote {out}" in capsys.readouterr().out


def test_report_without_file_is_a_clear_error(tmp_path):
    from effagent.errors import EffagentError
    from effagent.tools.report import write_report

    with pytest.raises(EffagentError, match="no such trace file"):
        write_report(tmp_path / "missing.jsonl")


def test_observer_from_policy_file_exporter_writes_at_run_end(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    path = tmp_path / "traces.jsonl"
    pol = make_policy(exporter="file", path=path)
    obs = observer_from_policy(pol)
    agent, mw = build(pol, obs)
    agent.invoke({"messages": [HumanMessage(EASY)]})
    steps = [s for s in read_spans(path) if s["attributes"].get("effagent.span") == "step"]
    assert len(steps) == 2
    assert all(s["resource"]["service.name"] == "effagent" for s in steps)
    assert steps[0]["resource"]["openinference.project.name"] == "effagent"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_langgraph_node_is_traced_the_same(otel, mode):
    """The LangGraph integration (EfficiencyNode in a hand-built StateGraph) gives the same span tree."""
    from langgraph.graph import START, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from effagent.integrations.langgraph import EfficiencyGraphState, EfficiencyNode

    tp, mp, exporter, _ = otel
    pol = make_policy()
    small = FakeTierModel(tier="small", responder=tool_then_answer("Paris", (12, 3, 0)))
    large = FakeTierModel(tier="large", responder=tool_then_answer("42", (40, 30, 20)))
    node = EfficiencyNode(pol, models={"small": small, "large": large}, tools=[calculator],
                          ledger=InMemoryLedger(), observer=OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    g = StateGraph(EfficiencyGraphState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode([calculator]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    graph = g.compile()
    with tp.get_tracer("app").start_as_current_span("request") as user:
        for q in (EASY, HARD):
            if mode == "sync":
                graph.invoke({"messages": [HumanMessage(q)]})
            else:
                asyncio.run(graph.ainvoke({"messages": [HumanMessage(q)]}))
    spans = exporter.get_finished_spans()
    runs, steps = by_kind(spans, "run"), by_kind(spans, "step")
    assert len(runs) == 2 and all(r.parent.span_id == user.get_span_context().span_id for r in runs)
    run_span = {attrs_of(r)["effagent.run_id"]: r.context.span_id for r in runs}
    records = node.ledger.records()
    assert len(steps) == len(records) == 4
    for rec in records:
        [s] = [s for s in steps if attrs_of(s)["effagent.run_id"] == rec.run_id
               and attrs_of(s)["effagent.step"] == rec.step]
        assert s.parent.span_id == run_span[rec.run_id]
        assert attrs_of(s)["gen_ai.usage.input_tokens"] == rec.usage.input_tokens
        assert attrs_of(s)["gen_ai.usage.output_tokens"] == rec.usage.output_tokens
        assert attrs_of(s)["llm.cost.total"] == pytest.approx(rec.usage.cost_usd)
    assert all(attrs_of(r)["effagent.run.total_tokens"] == node.ledger.run_usage(attrs_of(r)["effagent.run_id"])
               .total_tokens for r in runs)


def test_probe_and_sample_calls_get_child_spans(otel):
    from effagent.governor import Governor
    from effagent.records import Message, Step

    tp, mp, exporter, _ = otel
    pol = make_policy()
    gov = Governor(pol, observer=OTelObserver(pol, tracer_provider=tp, meter_provider=mp))
    run = gov.start_run("thread-9")
    d = gov.plan(Step(messages=[Message(role="user", content=HARD)]), run)
    gov.account(run, None, d, tier="small", input_tokens=7, output_tokens=1, kind="probe")
    main = gov.account(run, None, d, tier=d.tier, input_tokens=40, output_tokens=30, reasoning_tokens=20)
    gov.account(run, None, d, tier=d.tier, input_tokens=40, output_tokens=25, kind="sample")
    gov.end_step(run, d, main.usage)
    gov.end_run(run)
    spans = exporter.get_finished_spans()
    [step], [r] = by_kind(spans, "step"), by_kind(spans, "run")
    calls = {attrs_of(s)["effagent.kind"]: s for s in by_kind(spans, "call")}
    assert set(calls) == {"probe", "sample"} and all(s.parent.span_id == step.context.span_id
                                                      for s in calls.values())
    assert attrs_of(calls["probe"])["gen_ai.usage.input_tokens"] == 7 and attrs_of(calls["probe"])[
        "effagent.tier"] == "small"
    assert attrs_of(step)["gen_ai.usage.output_tokens"] == 30 and attrs_of(step)["effagent.samples.used"] == 2
    assert attrs_of(r)["gen_ai.conversation.id"] == "thread-9" and attrs_of(r)["effagent.run.calls"] == 3
