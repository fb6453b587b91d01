"""Secrets never leave the process, and ``record_content: false`` keeps content out of traces.

One policy reads three secrets from the environment (a URL password, a ``?key=`` query parameter and a tier's
api key under an innocent variable name). They go through every path that writes something out -- ``validate``
(valid and invalid policies), ``explain`` (text and JSON), an agent run whose endpoint error quotes all three,
the ledger's records, the file trace, an OTLP export to a local collector, the HTML report, ``budgets suggest``,
the exception the application gets, and every log record -- and each output is searched for each secret (and
its URL-quoted and JSON-escaped spellings).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from effagent import EffagentError, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.ledger import InMemoryLedger
from effagent.redact import Redactor, redact_shapes
from effagent.telemetry import OTelObserver
from effagent.telemetry.exporters import JsonlFileSpanExporter
from effagent.telemetry.otel import content_free
from effagent.tools.cli import main
from tests.fakes import FakeTierModel, ai, call

PW, KEY, TOKEN = "pw-Zq8rT5vLx2Qa", "kq-Hy7Wm3Nc9Rb", "tok-Ab3Cd4Ef5Gh6"
SECRETS = [PW, KEY, TOKEN]
ENV = {"EA_TEST_PW": PW, "EA_TEST_K": KEY, "EA_TEST_CRED": TOKEN}
URL = f"https://u:{PW}@127.0.0.1:9/v1?key={KEY}"

POLICY = """\
tiers:
  small:
    model: hosted_vllm/smol
    api_base: "https://u:${EA_TEST_PW}@127.0.0.1:9/v1?key=${EA_TEST_K}"
    api_key: "${EA_TEST_CRED}"
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
  large:
    model: hosted_vllm/large
    price: {input_per_mtok: 10.0, output_per_mtok: 30.0}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small}
fallback: {order: [small, large]}
telemetry: {exporter: file, path: TRACES, record_content: CONTENT}
"""


def leaks(text: str) -> list[str]:
    spellings = {s for v in SECRETS for s in (v, quote(v, safe=""), json.dumps(v)[1:-1])}
    return sorted(s for s in spellings if s in text)


def write_policy(tmp_path: Path, content: bool = True, extra: str = "") -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.replace("TRACES", str(tmp_path / "traces.jsonl"))
                 .replace("CONTENT", "true" if content else "false") + extra)
    return p


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return "TOOL-RESULT-MARKER " + query


def leaky_failure(messages, kwargs):
    """What an HTTP client error looks like when it quotes the request: the URL, the key and the prompt."""
    prompt = next((m.content for m in messages if isinstance(m, HumanMessage)), "")
    raise ConnectionError(f"POST {URL}/chat/completions failed (Authorization: Bearer {TOKEN}; api_key={TOKEN}; "
                          f"password {PW}; key {KEY}); request body: {prompt}")


def answering(messages, kwargs):
    if isinstance(messages[-1], ToolMessage):
        return ai("ANSWER-MARKER 42", input_tokens=20, output_tokens=5)
    return ai("", tool_calls=[call("lookup", {"query": "TOOL-ARGS-MARKER"})], input_tokens=20, output_tokens=5)


def run_agent(policy, observer, prompt: str, small=None, large=None):
    small = small or FakeTierModel(tier="small", responder=leaky_failure)
    large = large or FakeTierModel(tier="large", responder=answering)
    ledger = InMemoryLedger()
    mw = EfficiencyMiddleware(policy, models={"small": small, "large": large}, ledger=ledger, observer=observer)
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    result = agent.invoke({"messages": [HumanMessage(prompt)]})
    return result, mw, ledger


class _Collector:
    """A local OTLP/HTTP trace receiver: keeps every request body (protobuf bytes) it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_known_secret_leaves_through_no_output(tmp_path, env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    outputs: dict[str, str] = {}
    path = write_policy(tmp_path)

    # validate (valid), validate (invalid: a secret in a field that rejects it), explain (text and JSON)
    assert main(["validate", str(path)]) == 0
    outputs["validate"] = "".join(capsys.readouterr())
    bad = write_policy(tmp_path, extra="loop_guard: {max_steps: '${EA_TEST_K}'}\nname: ${EA_TEST_PW}x\n")
    assert main(["validate", str(bad)]) == 2
    outputs["validate (invalid)"] = "".join(capsys.readouterr())
    path = write_policy(tmp_path)
    for argv in (["explain", "--policy", str(path), "hi"], ["explain", "--json", "--policy", str(path), "hi"]):
        assert main(argv) == 0
        outputs[" ".join(argv[:2])] = "".join(capsys.readouterr())
    assert "api_base" in outputs["explain --json"] and "127.0.0.1:9" in outputs["explain --json"]

    # an agent run: the small tier's error quotes all three secrets, the large tier answers
    from effagent.policy import load_policy

    policy = load_policy(path)
    traces = tmp_path / "traces.jsonl"
    memory = InMemorySpanExporter()
    collector = _Collector()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tp = TracerProvider()
        for exporter in (JsonlFileSpanExporter(traces), memory, OTLPSpanExporter(endpoint=collector.url)):
            tp.add_span_processor(SimpleSpanProcessor(exporter))
        observer = OTelObserver(policy, tracer_provider=tp, meter_provider=MeterProvider())
        result, mw, ledger = run_agent(policy, observer, "What is the answer?")
        assert "ANSWER-MARKER" in result["messages"][-1].content
        # every tier failing: the application's exception
        with pytest.raises(EffagentError) as failed:
            run_agent(policy, observer, "again?", large=FakeTierModel(tier="large", responder=leaky_failure))
        outputs["exception"] = str(failed.value) + repr(failed.value.args)
        tp.force_flush()
        tp.shutdown()
    finally:
        collector.close()
    assert collector.bodies, "the collector received no OTLP request"
    outputs["otlp"] = b"".join(collector.bodies).decode("utf-8", "replace")
    outputs["trace file"] = traces.read_text()
    outputs["spans"] = repr([(dict(s.attributes or {}), s.status.description, s.events)
                             for s in memory.get_finished_spans()])
    failed_records = [r for r in ledger.records() if not r.ok]
    assert failed_records and "ConnectionError" in failed_records[0].error
    outputs["ledger"] = "\n".join(r.model_dump_json() for r in ledger.records())
    assert "ConnectionError" in outputs["trace file"] and "127.0.0.1:9" in outputs["trace file"]

    # the report and budgets suggest read the trace file
    assert main(["report", str(traces), "-o", str(tmp_path / "r.html")]) == 0
    outputs["report"] = (tmp_path / "r.html").read_text() + "".join(capsys.readouterr())
    assert "ConnectionError" in outputs["report"]
    assert main(["budgets", "suggest", str(traces)]) == 0
    outputs["budgets suggest"] = "".join(capsys.readouterr())
    outputs["logs"] = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)

    found = {name: leaks(text) for name, text in outputs.items()}
    assert not any(found.values()), found
    masked = ["validate", "validate (invalid)", "explain --policy", "explain --json", "exception", "otlp",
              "trace file", "spans", "ledger", "report"]
    assert [n for n in masked if "[REDACTED]" not in outputs[n]] == []  # the secrets were there, masked


def test_record_content_false_keeps_content_out_of_every_span(tmp_path, env):
    policy = parse_policy(write_policy(tmp_path, content=False).read_text(), env=ENV)
    memory = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(SimpleSpanProcessor(JsonlFileSpanExporter(tmp_path / "t.jsonl")))
    observer = OTelObserver(policy, tracer_provider=tp, meter_provider=MeterProvider())
    result, mw, ledger = run_agent(policy, observer, "PROMPT-MARKER what is it?")
    run_id = result["messages"][-1].response_metadata["effagent"]["run_id"]
    assert mw.record_outcome(run_id, False, feedback="FEEDBACK-MARKER wrong")
    spans = memory.get_finished_spans()
    assert any(s.status.description for s in spans)  # the failed call still says what failed
    text = repr([(dict(s.attributes or {}), s.status.description, s.events) for s in spans])
    text += (tmp_path / "t.jsonl").read_text()
    text += "\n".join(r.model_dump_json() for r in ledger.records())
    for marker in ("PROMPT-MARKER", "TOOL-RESULT-MARKER", "TOOL-ARGS-MARKER", "ANSWER-MARKER", "FEEDBACK-MARKER"):
        assert marker not in text, marker
    assert "ConnectionError" in text and "message not recorded" in text


def test_content_free_reasons_keep_what_happened_without_the_text():
    loop = "tool call search({'q': 'my secret plan'}) repeated 3 times (limit 2)"
    assert content_free(loop) == "tool call search(...) repeated 3 times (limit 2)"
    why = "reasoning re-verified itself 5 times (limit 3), e.g. 'Wait, the patient said X'; answer now"
    assert "patient" not in content_free(why) and "5 times" in content_free(why)


@pytest.mark.parametrize("text,hidden", [
    ("https://alice:s3cr3tpw@host/v1", ["alice", "s3cr3tpw"]),
    ("redis://:hunter22@redis:6379/0", ["hunter22"]),
    ("https://h/v1?key=AIzaXYZ123&alt=sse", ["AIzaXYZ123"]),
    ("https://h/x?sig=abc123def&access_token=qqq999&page=2", ["abc123def", "qqq999"]),
    ("Authorization: Bearer abcdefgh12345678", ["abcdefgh12345678"]),
    ("api_key=sk-abcdefghijkl", ["sk-abcdefghijkl"]),
])
def test_secret_shapes_are_masked_wherever_they_appear(text, hidden):
    out = redact_shapes(text)
    assert not any(h in out for h in hidden), out
    assert "[REDACTED]" in out


def test_env_values_are_secrets_except_model_names_paths_urls_and_numbers():
    policy = parse_policy("""\
tiers: {s: {model: "${M}", api_base: "${URL}", extra_body: {user: "${ID}", n: "${N}"}, price: {input_per_mtok: 1,
  output_per_mtok: 1}}}
bands: [{name: a, tier: s}]
telemetry: {enabled: false, path: "${DIR}/t.jsonl"}
""", env={"M": "hosted_vllm/Qwen3-8B", "URL": "http://gpu-host:8000/v1", "ID": "customer-4711", "N": "12345",
          "DIR": "/srv/traces"})
    masked = policy.redact("hosted_vllm/Qwen3-8B http://gpu-host:8000/v1 customer-4711 12345 /srv/traces")
    assert masked == "hosted_vllm/Qwen3-8B http://gpu-host:8000/v1 [REDACTED] 12345 /srv/traces"
    assert Redactor(["abc"])("abc") == "abc"  # too short to mask by value (masked by shape only)
