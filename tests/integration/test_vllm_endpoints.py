"""Real vLLM endpoints: routing through create_agent + EfficiencyMiddleware with ChatLiteLLM tiers, the ledger
against the server's own usage, thinking budgets (server-side and budget forcing) measured with the server's
tokenizer, and fallback when a tier's endpoint is down.

Every request goes through a recording proxy on loopback (``RecordingProxy``), so the tests see exactly the
bodies vLLM received and answered, independently of litellm and of the ledger. Measured token counts go to
``effagent-out/vllm-endpoints.json`` and to the JUnit properties (``record_property``).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage

from effagent import InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.tier_models import BudgetForcingChatModel, models_for
from effagent.llm import complete, reasoning_counter_for
from effagent.policy import Tier
from effagent.request import FORCED_BUDGET_ARG as BUDGET_KWARG

pytestmark = pytest.mark.vllm

SEED = 7
OUT = Path(__file__).resolve().parents[2] / "effagent-out" / "vllm-endpoints.json"
EASY = "What is the capital of France?"
HARD = ("A tank holds 1200 litres. Pipe A fills it in 6 hours, pipe B in 9 hours and pipe C drains it in 12 hours. "
        "If all three open at 3pm with the tank 1/4 full, derive step by step when it is full, and prove the "
        "formula for the general case; analyze how the answer changes if pipe B fails after 2 hours.")
GSM8K = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May?")


class RecordingProxy:
    """Forwards every request to the vLLM server and records (path, request body, status, response body)."""

    def __init__(self, target_root: str) -> None:
        self.target = target_root.rstrip("/")
        self.exchanges: list[dict[str, Any]] = []
        self._client = httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0), trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                response = proxy._client.request(method, proxy.target + self.path, content=raw or None,
                                                 headers={"Content-Type": "application/json"})
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                proxy.exchanges.append({"path": self.path, "request": json.loads(raw) if raw else None,
                                        "status": response.status_code, "response": body})
                data = response.content
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def chats(self) -> list[dict[str, Any]]:
        return [e for e in self.exchanges if e["path"] == "/v1/chat/completions"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._client.close()


@pytest.fixture
def proxy(vllm_server: Any) -> Iterator[RecordingProxy]:
    p = RecordingProxy(vllm_server.root_url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    data: dict[str, Any] = {}
    yield data
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    OUT.write_text(json.dumps({**previous, **data}, indent=2) + "\n")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_tier_policy(base_url: str) -> Any:
    return parse_policy(f"""
tiers:
  small:
    model: hosted_vllm/smol
    api_base: "{base_url}"
    max_tokens: 12
    retries: 0
    timeout_s: 300
  large:
    model: hosted_vllm/smol-think
    api_base: "{base_url}"
    thinking: {{control: chat_template_kwargs, max_budget: 64}}
    max_tokens: 32
    retries: 0
    timeout_s: 300
bands:
  - {{name: easy, min: 0.0, max: 0.5, tier: small}}
  - {{name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 24}}
fallback: {{order: [large, small]}}
""", env={})


def agent_for(pol: Any) -> tuple[Any, EfficiencyMiddleware]:
    models = models_for(pol, temperature=0.0, model_kwargs={"seed": SEED})
    mw = EfficiencyMiddleware(pol, models=models, ledger=InMemoryLedger(), reasoning_counter=reasoning_counter_for(pol))
    return create_agent(mw.default_model, tools=[], middleware=[mw]), mw


def last_ai(out: dict[str, Any]) -> AIMessage:
    return next(m for m in reversed(out["messages"]) if isinstance(m, AIMessage))


def test_easy_and_hard_steps_reach_different_tiers_with_thinking_settings(vllm_server, proxy, report,
                                                                          record_property):
    """(a) routing + thinking controls as the server received and produced them; (b) ledger == server usage."""
    pol = two_tier_policy(proxy.base_url)
    agent, mw = agent_for(pol)

    easy = last_ai(agent.invoke({"messages": [HumanMessage(EASY)]}))
    hard = last_ai(agent.invoke({"messages": [HumanMessage(HARD)]}))
    assert easy.response_metadata["effagent"]["tier"] == "small"
    assert hard.response_metadata["effagent"]["tier"] == "large"

    chats = proxy.chats()
    assert len(chats) == 2 and all(c["status"] == 200 for c in chats)
    easy_x, hard_x = chats
    # what vLLM received
    assert easy_x["request"]["model"] == "smol" and easy_x["request"]["max_tokens"] == 12
    assert "chat_template_kwargs" not in easy_x["request"] and "thinking_token_budget" not in easy_x["request"]
    assert hard_x["request"]["model"] == "smol-think"
    assert hard_x["request"]["chat_template_kwargs"] == {"enable_thinking": True}
    assert hard_x["request"]["thinking_token_budget"] == 24 and hard_x["request"]["max_tokens"] == 32
    assert all(c["request"]["temperature"] == 0.0 and c["request"]["seed"] == SEED for c in chats)
    # what vLLM produced
    easy_msg, hard_msg = (c["response"]["choices"][0]["message"] for c in chats)
    assert not easy_msg.get("reasoning") and easy_msg["content"]
    assert hard_msg["reasoning"], hard_msg
    assert hard.additional_kwargs.get("reasoning_content") == hard_msg["reasoning"]

    # (b) every ledger record equals the server's usage for that call
    records = mw.ledger.records()
    assert [r.tier for r in records] == ["small", "large"] and all(r.ok for r in records)
    server = [(c["response"]["usage"]["prompt_tokens"], c["response"]["usage"]["completion_tokens"]) for c in chats]
    ledger = [(r.usage.input_tokens, r.usage.output_tokens) for r in records]
    assert ledger == server
    # reasoning tokens: vLLM reports 0, the ledger counts the text with the server's tokenizer
    assert hard_x["response"]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    hard_reasoning = vllm_server.tokenize(hard_msg["reasoning"], "smol-think")
    assert records[1].usage.reasoning_tokens == hard_reasoning > 0
    assert records[0].usage.reasoning_tokens == 0

    result = {"server_usage": server, "ledger_usage": ledger, "hard_reasoning_tokens": hard_reasoning,
              "hard_request": {k: hard_x["request"][k] for k in ("model", "max_tokens", "chat_template_kwargs",
                                                                  "thinking_token_budget")}}
    report["routing"] = result
    record_property("routing", json.dumps(result))


def test_thinking_budget_bounds_the_reasoning(vllm_server, proxy, report, record_property):
    """(c) budget N keeps the reasoning within N tokens (server tokenizer); the unbounded call is longer."""
    n, max_tokens = 16, 48
    messages = [{"role": "user", "content": GSM8K}]
    server_tier = Tier(model="hosted_vllm/smol-think", api_base=proxy.base_url, retries=0, timeout_s=300,
                       thinking={"control": "chat_template_kwargs", "budget_param": "thinking_token_budget"})
    forcing_tier = server_tier.model_copy(update={"thinking": server_tier.thinking.model_copy(
        update={"budget_param": "budget_forcing"})})
    think = {"chat_template_kwargs": {"enable_thinking": True}}

    def count(text: str | None) -> int:
        return vllm_server.tokenize(text or "", "smol-think") if text else 0

    [unbounded] = complete(server_tier, messages, seed=SEED,
                           settings={"max_tokens": max_tokens, "temperature": 0.0, "extra_body": think})
    [server_side] = complete(server_tier, messages, seed=SEED, settings={
        "max_tokens": max_tokens, "temperature": 0.0, "extra_body": {**think, "thinking_token_budget": n}})
    # budget forcing through the LangChain wrapper, with the kwargs the governor would pass
    forced = BudgetForcingChatModel(inner_tier=forcing_tier, temperature=0.0, seed=SEED).invoke(
        [HumanMessage(GSM8K)], max_tokens=max_tokens, extra_body=think, **{BUDGET_KWARG: n})

    measured = {
        "budget": n,
        "max_tokens": max_tokens,
        "unbounded_reasoning_tokens": count(unbounded.reasoning),
        "unbounded_output_tokens": unbounded.output_tokens,
        "thinking_token_budget_reasoning_tokens": count(server_side.reasoning),
        "thinking_token_budget_output_tokens": server_side.output_tokens,
        "budget_forcing_reasoning_tokens": count(forced.additional_kwargs.get("reasoning_content")),
        "budget_forcing_output_tokens": forced.usage_metadata["output_tokens"],
        "budget_forcing_calls": forced.response_metadata["effagent_budget_forcing"]["calls"],
        "budget_forcing_continuation": forced.response_metadata["effagent_budget_forcing"]["continuation"],
        "budget_forcing_answer": forced.content,
        "thinking_token_budget_answer": server_side.content,
    }
    report["budget"] = measured
    record_property("budget", json.dumps(measured))
    print(json.dumps(measured, indent=2))

    assert measured["unbounded_reasoning_tokens"] > n + 1
    # server-side budget: the reasoning stops within N (+1 for the closing marker) and the answer follows
    assert 0 < measured["thinking_token_budget_reasoning_tokens"] <= n + 1
    assert server_side.content
    # budget forcing: two calls, the first capped at N, usage summed, the answer continues the message
    meta = forced.response_metadata["effagent_budget_forcing"]
    assert meta["forced"] and len(meta["calls"]) == 2 and meta["calls"][0]["output_tokens"] <= n
    assert 0 < measured["budget_forcing_reasoning_tokens"] <= n + 1
    assert forced.usage_metadata["output_tokens"] == sum(c["output_tokens"] for c in meta["calls"])
    assert forced.usage_metadata["input_tokens"] == sum(c["input_tokens"] for c in meta["calls"])
    assert measured["unbounded_reasoning_tokens"] > measured["budget_forcing_reasoning_tokens"]
    # what the server received for the forced answer: the closed thinking block, continued
    continuation = [e for e in proxy.exchanges if e["path"] in ("/v1/completions", "/v1/chat/completions")][-1]
    assert continuation["status"] == 200 and continuation["request"]["max_tokens"] == max_tokens - n


def test_first_tier_down_falls_back_to_the_next(vllm_server, proxy, report, record_property):
    """(d) the first tier's endpoint is a closed loopback port: the run ends on the next tier, failure in ledger."""
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    pol = parse_policy(f"""
tiers:
  down: {{model: hosted_vllm/smol, api_base: "{dead}", max_tokens: 8, retries: 0, timeout_s: 10}}
  up: {{model: hosted_vllm/smol, api_base: "{proxy.base_url}", max_tokens: 8, retries: 0, timeout_s: 300}}
bands: [{{name: all, min: 0.0, max: 1.0, tier: down}}]
fallback: {{order: [down, up]}}
""", env={})
    agent, mw = agent_for(pol)
    answer = last_ai(agent.invoke({"messages": [HumanMessage(EASY)]}))
    assert answer.response_metadata["effagent"]["tier"] == "up" and answer.content
    records = mw.ledger.records()
    assert [(r.tier, r.ok) for r in records] == [("down", False), ("up", True)]
    assert records[0].error and "down" in records[0].error and records[0].usage.total_tokens == 0
    usage = proxy.chats()[0]["response"]["usage"]
    assert (records[1].usage.input_tokens, records[1].usage.output_tokens) == (usage["prompt_tokens"],
                                                                               usage["completion_tokens"])
    report["fallback"] = {"failed": records[0].error, "answered_by": "up"}
    record_property("fallback", records[0].error)


def test_early_exit_in_an_agent_step_costs_less_than_unbounded_thinking(vllm_server, proxy, report, record_property):
    """A band with early_exit: chunked thinking + probes continue one partial turn on the real server; every
    chunk and probe is a ledger record equal to the server's usage; fewer output tokens than thinking to
    max_tokens on the same prompt."""
    from effagent.tools.serving.vllm_local import THINK_PREFIX

    def policy(extra: str) -> Any:
        return parse_policy(f"""
tiers:
  think:
    model: hosted_vllm/smol-think
    api_base: "{proxy.base_url}"
    thinking: {{control: chat_template_kwargs, think_prefix: {json.dumps(THINK_PREFIX)}}}
    max_tokens: 256
    retries: 0
    timeout_s: 300
    extra_body: {{temperature: 0, seed: {SEED}}}
bands:
  - {{name: all, min: 0, max: 1, tier: think, thinking: true{extra}}}
""", env={})

    unbounded_agent, unbounded_mw = agent_for(policy(""))
    last_ai(unbounded_agent.invoke({"messages": [HumanMessage(GSM8K)]}))
    unbounded = unbounded_mw.ledger.total()
    n_before = len(proxy.exchanges)

    agent, mw = agent_for(policy(", early_exit: {chunk: 16, agree: 2, probe_tokens: 8}"))
    answer = last_ai(agent.invoke({"messages": [HumanMessage(GSM8K)]}))
    ee = answer.response_metadata["effagent"]["early_exit"]
    assert answer.content.strip(), ee
    calls = [e for e in proxy.exchanges[n_before:] if e["path"] in ("/v1/chat/completions", "/v1/completions")]
    answered = [e for e in calls if e["status"] == 200]
    # thinking chunks and probes continue the open thinking turn on the chat endpoint; a written answer after
    # the closed thinking goes to /v1/completions where this chat template drops closed thinking (a 400 first)
    chats = [e for e in answered if e["path"] == "/v1/chat/completions"]
    assert chats and all(e["request"]["continue_final_message"] is True for e in chats)
    assert all(e["request"]["messages"][-1]["content"].startswith(THINK_PREFIX) for e in chats)
    assert all(e["status"] == 400 and e["path"] == "/v1/chat/completions" for e in calls if e not in answered)
    records = mw.ledger.records()
    server = [(e["response"]["usage"]["prompt_tokens"], e["response"]["usage"]["completion_tokens"])
              for e in answered]
    assert [(r.usage.input_tokens, r.usage.output_tokens) for r in records] == server
    kinds = [r.kind for r in records]
    assert kinds.count("probe") == ee["probes"] > 0
    total = mw.ledger.total()
    assert total.output_tokens < unbounded.output_tokens, (ee, total, unbounded)

    result = {"exited": ee["exited"], "reason": ee["reason"], "calls": len(records), "probes": ee["probes"],
              "output_tokens": total.output_tokens, "unbounded_output_tokens": unbounded.output_tokens,
              "input_tokens": total.input_tokens, "unbounded_input_tokens": unbounded.input_tokens}
    report["early_exit_agent"] = result
    record_property("early_exit_agent", json.dumps(result))
