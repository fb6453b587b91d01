"""One retry rule on every path: ``retries: N`` is N retries after the first request, 5xx and 429 are retried
(waiting ``Retry-After`` up to ``max_retry_after_s``), other 4xx are not. Counted on a fake OpenAI-compatible
HTTP server on loopback, through ``complete`` (the client path) and through a ``create_agent`` agent with
EfficiencyMiddleware and the tiers' default chat models (the agent path)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import EndpointError, InMemoryLedger, parse_policy
from effagent.errors import EndpointRejected, EndpointUnavailable
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.llm import client
from effagent.llm.client import acomplete, complete, retry_after_s
from effagent.policy import Tier
from tests.fakes.servers import FakeServer, fake_server

CHAT = "/v1/chat/completions"
BOOM = (500, {"error": {"message": "boom"}})
SLOW_DOWN = (429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})


def ok(content: str = "ok") -> tuple[int, dict[str, Any]]:
    return 200, {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with fake_server() as srv:
        yield srv


@pytest.fixture
def backup() -> Iterator[FakeServer]:
    with fake_server() as srv:
        yield srv


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_BASE_S", 0.01)  # the backoff without Retry-After; Retry-After is real


def gap(server: FakeServer) -> float:
    """Seconds between the first two requests the server received."""
    return server.times[1] - server.times[0]


# ---------------------------------------------------------------------------------------------- client path
def tier(server: FakeServer, retries: int, **kw: Any) -> Tier:
    return Tier(model="hosted_vllm/m", api_base=server.base_url, retries=retries, timeout_s=5.0, **kw)


def ask(t: Tier) -> str:
    return complete(t, [{"role": "user", "content": "hi"}], settings={"max_tokens": 5})[0].content


def test_client_500_then_200_with_one_retry_is_two_requests(server: FakeServer) -> None:
    server.script[CHAT] = [BOOM, ok()]
    assert ask(tier(server, retries=1)) == "ok"
    assert len(server.requests) == 2


def test_client_429_waits_for_retry_after_then_succeeds(server: FakeServer) -> None:
    server.script[CHAT] = [SLOW_DOWN, ok()]
    assert ask(tier(server, retries=1)) == "ok"
    assert len(server.requests) == 2 and gap(server) >= 0.9


async def test_client_async_429_waits_for_retry_after_too(server: FakeServer) -> None:
    server.script[CHAT] = [SLOW_DOWN, ok()]
    [c] = await acomplete(tier(server, retries=1), [{"role": "user", "content": "hi"}], settings={"max_tokens": 5})
    assert c.content == "ok" and len(server.requests) == 2 and gap(server) >= 0.9


def test_client_without_retries_is_one_request(server: FakeServer) -> None:
    server.script[CHAT] = [BOOM, ok()]
    with pytest.raises(EndpointUnavailable) as info:
        ask(tier(server, retries=0))
    assert len(server.requests) == 1 and info.value.tries == 1


def test_client_400_is_not_retried(server: FakeServer) -> None:
    server.script[CHAT] = [(400, {"error": {"message": "bad request"}}), ok()]
    with pytest.raises(EndpointRejected) as info:
        ask(tier(server, retries=3))
    assert len(server.requests) == 1 and info.value.status == 400


def test_client_retry_after_over_the_cap_is_not_waited_for(server: FakeServer) -> None:
    server.script[CHAT] = [(429, {"error": {"message": "come back later"}}, {"Retry-After": "120"}), ok()]
    started = time.monotonic()
    with pytest.raises(EndpointUnavailable) as info:
        ask(tier(server, retries=3, max_retry_after_s=2.0))
    assert time.monotonic() - started < 2.0 and len(server.requests) == 1
    assert info.value.status == 429 and "max_retry_after_s" in str(info.value)


def test_client_429_retries_are_spent_after_n(server: FakeServer) -> None:
    server.script[CHAT] = [(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})]
    with pytest.raises(EndpointUnavailable) as info:
        ask(tier(server, retries=2))
    assert len(server.requests) == 3 and info.value.tries == 3


class _Headers(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("rate limited")
        self.litellm_response_headers = headers


def test_retry_after_is_read_as_seconds_an_http_date_or_milliseconds() -> None:
    assert retry_after_s(_Headers({"Retry-After": "1"})) == 1.0
    assert retry_after_s(_Headers({"retry-after-ms": "1500"})) == 1.5
    in_5s = retry_after_s(_Headers({"retry-after": formatdate(time.time() + 5, usegmt=True)}))
    assert in_5s is not None and 3.0 <= in_5s <= 5.0
    assert retry_after_s(_Headers({"retry-after": "soon"})) is None
    assert retry_after_s(_Headers({})) is None and retry_after_s(ValueError("x")) is None


def test_budget_forcing_model_is_not_retried_twice(server: FakeServer) -> None:
    """A tier on client-side budget forcing calls ``complete`` (which retries); the agent path adds no more."""
    server.script[CHAT] = [BOOM]
    pol = agent_policy(f"""\
  only:
    model: hosted_vllm/m
    api_base: {server.base_url}
    retries: 1
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
    thinking: {{control: chat_template_kwargs, budget_param: budget_forcing}}
""")
    with pytest.raises(EndpointError):
        run_agent(pol)
    assert len(server.requests) == 2


# ----------------------------------------------------------------------------------------------- agent path
def agent_policy(tiers: str, first: str = "only") -> Any:
    text = f"""\
tiers:
{tiers}bands:
  - {{name: all, min: 0.0, max: 1.0, tier: {first}}}
"""
    return parse_policy(text, env={})


def one_tier(server: FakeServer, retries: int, provider: str = "openai", extra: str = "") -> Any:
    return agent_policy(f"""\
  only:
    model: {provider}/m
    api_base: {server.base_url}
    api_key: fake-key
    retries: {retries}
    timeout_s: 10
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
{extra}""")


def build_agent(pol: Any) -> Any:
    mw = EfficiencyMiddleware(pol, ledger=InMemoryLedger())  # default models: a ChatLiteLLM per tier
    return create_agent(mw.default_model, tools=[], middleware=[mw])


def run_agent(pol: Any) -> str:
    out = build_agent(pol).invoke({"messages": [HumanMessage("hi")]})
    return str(out["messages"][-1].content)


@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
def test_agent_500_then_200_with_one_retry_is_two_requests(server: FakeServer, provider: str) -> None:
    server.script[CHAT] = [BOOM, ok("from the retry")]
    assert run_agent(one_tier(server, retries=1, provider=provider)) == "from the retry"
    assert len(server.requests) == 2


def test_agent_429_waits_for_retry_after_then_succeeds(server: FakeServer) -> None:
    server.script[CHAT] = [SLOW_DOWN, ok("after the wait")]
    assert run_agent(one_tier(server, retries=1)) == "after the wait"
    assert len(server.requests) == 2 and gap(server) >= 0.9


async def test_async_agent_429_waits_for_retry_after_then_succeeds(server: FakeServer) -> None:
    server.script[CHAT] = [SLOW_DOWN, ok("after the wait")]
    out = await build_agent(one_tier(server, retries=1, provider="hosted_vllm")).ainvoke(
        {"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "after the wait"
    assert len(server.requests) == 2 and gap(server) >= 0.9


def test_agent_without_retries_is_one_request_then_the_fallback_tier(server: FakeServer,
                                                                      backup: FakeServer) -> None:
    server.script[CHAT] = [BOOM, ok("never asked")]
    backup.script[CHAT] = [ok("from the fallback")]
    pol = agent_policy(f"""\
  first:
    model: openai/m
    api_base: {server.base_url}
    api_key: fake-key
    retries: 0
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  second:
    model: hosted_vllm/m
    api_base: {backup.base_url}
    retries: 0
    price: {{input_per_mtok: 2.0, output_per_mtok: 4.0}}
""", first="first")
    assert run_agent(pol) == "from the fallback"
    assert len(server.requests) == 1 and len(backup.requests) == 1


def test_agent_400_is_not_retried(server: FakeServer) -> None:
    server.script[CHAT] = [(400, {"error": {"message": "bad request"}}), ok()]
    with pytest.raises(EndpointError):
        run_agent(one_tier(server, retries=3))
    assert len(server.requests) == 1


def test_agent_retry_after_over_the_cap_is_not_waited_for(server: FakeServer) -> None:
    server.script[CHAT] = [(429, {"error": {"message": "come back later"}}, {"Retry-After": "120"}), ok()]
    started = time.monotonic()
    with pytest.raises(EndpointError):
        run_agent(one_tier(server, retries=3, extra="    max_retry_after_s: 2\n"))
    assert time.monotonic() - started < 2.0 and len(server.requests) == 1
