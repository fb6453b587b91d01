"""effagent.llm without a model server: response parsing, usage, retry classification against a fake HTTP
server on loopback, server token counting, and budget-forcing assembly with fake completion functions."""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from effagent import EndpointError, parse_policy
from effagent.integrations.tier_models import BudgetForcingChatModel, models_for
from effagent.llm import budget_forcing as bf
from effagent.llm import client
from effagent.llm.budget_forcing import budget_forced_complete, close_prefix
from effagent.llm.client import (
    Completion,
    EndpointRejected,
    EndpointUnavailable,
    MalformedResponse,
    acomplete,
    complete,
    parse_response,
    split_think,
)
from effagent.llm.tokens import ServerTokenCounter, TokenizeUnavailable, reasoning_counter_for, root_url
from effagent.policy import Tier
from effagent.request import FORCED_BUDGET_ARG as BUDGET_KWARG
from effagent.request import thinking_chunk_settings
from tests.fakes.completions import FakeCompletions
from tests.fakes.servers import FakeServer, fake_server


# ------------------------------------------------------------------------------------ a fake server
@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with fake_server() as server:
        yield server


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_BASE_S", 0.01)
    bf._MODE_CACHE.clear()


def chat_body(content: str | None = "4", *, reasoning: str | None = None, key: str = "reasoning_content",
              usage: dict[str, Any] | None = None, finish: str = "stop", tool_calls: list[Any] | None = None,
              logprobs: list[float] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[key] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp, "top_logprobs": []} for lp in logprobs]}
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion", "created": 1, "model": "smol",
                            "choices": [choice]}
    if usage is not None:
        body["usage"] = usage
    return body


def tier(base_url: str | None = None, retries: int = 0, **kw: Any) -> Tier:
    return Tier(model="hosted_vllm/smol-think", api_base=base_url, retries=retries, timeout_s=5.0, **kw)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_from_parser_fields(key: str) -> None:
    [c] = parse_response(chat_body("42", reasoning="6*7", key=key, usage={"prompt_tokens": 9, "completion_tokens": 5}))
    assert (c.content, c.reasoning, c.input_tokens, c.output_tokens) == ("42", "6*7", 9, 5)


def test_reasoning_from_provider_specific_fields() -> None:
    body = chat_body("42")
    body["choices"][0]["message"]["provider_specific_fields"] = {"reasoning": "hmm"}
    assert parse_response(body)[0].reasoning == "hmm"


@pytest.mark.parametrize(
    ("raw", "reasoning", "content"),
    [
        ("<think>\nadd them\n</think>\n\n42", "add them", "42"),
        ("add them</think>42", "add them", "42"),  # the template opened the block
        ("<think>still going", "still going", ""),  # never closed
        ("just 42", None, "just 42"),
    ],
)
def test_think_tags_without_a_parser(raw: str, reasoning: str | None, content: str) -> None:
    assert split_think(raw) == (reasoning, content)
    [c] = parse_response(chat_body(raw))
    assert (c.reasoning, c.content) == (reasoning, content)


def test_usage_missing_fields_count_zero_and_reasoning_none() -> None:
    [c] = parse_response(chat_body("hi"))  # no usage at all
    assert (c.input_tokens, c.output_tokens, c.reasoning_tokens) == (0, 0, None)
    [c] = parse_response(chat_body("hi", usage={"prompt_tokens": 3}))
    assert (c.input_tokens, c.output_tokens) == (3, 0)
    [c] = parse_response(chat_body("hi", usage={"prompt_tokens": 3, "completion_tokens": "x"}))
    assert c.output_tokens == 0


def test_reported_reasoning_tokens_kept_unless_zero_for_nonempty_reasoning() -> None:
    details = {"prompt_tokens": 5, "completion_tokens": 20, "completion_tokens_details": {"reasoning_tokens": 12}}
    assert parse_response(chat_body("a", reasoning="r", usage=details))[0].reasoning_tokens == 12
    details["completion_tokens_details"] = {"reasoning_tokens": 0}  # what vLLM sends: not a count
    assert parse_response(chat_body("a", reasoning="r", usage=details))[0].reasoning_tokens is None
    assert parse_response(chat_body("a", usage=details))[0].reasoning_tokens == 0  # no reasoning: 0 is right


def test_n_choices_split_usage_exactly() -> None:
    body = chat_body("a", logprobs=[-0.1, -0.2], usage={"prompt_tokens": 10, "completion_tokens": 5})
    second = json.loads(json.dumps(body["choices"][0]))
    second["logprobs"]["content"] = [{"token": "y", "logprob": -1.0}] * 3
    body["choices"].append(second)
    cs = parse_response(body)
    assert [c.input_tokens for c in cs] == [10, 0]
    assert [c.output_tokens for c in cs] == [2, 3]
    assert cs[0].logprobs == [-0.1, -0.2]
    body["choices"][1]["logprobs"] = None  # no per-choice counts: shares still sum to the server's total
    assert sum(c.output_tokens for c in parse_response(body)) == 5


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{"index": 0}]}, {"choices": "x"}])
def test_malformed_bodies(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        parse_response(body)


# ------------------------------------------------------------------------------- calls and retries
def test_complete_sends_settings_at_top_level(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [(200, chat_body("4", reasoning="2+2", usage={
        "prompt_tokens": 7, "completion_tokens": 3}, logprobs=[-0.5, -0.1, 0.0]))]
    settings = {"max_tokens": 30, "extra_body": {"chat_template_kwargs": {"enable_thinking": True},
                                                 "thinking_token_budget": 16}}
    [c] = complete(tier(fake.base_url), [{"role": "user", "content": "2+2?"}], settings=settings, logprobs=0, seed=3)
    assert (c.content, c.reasoning, c.input_tokens, c.output_tokens) == ("4", "2+2", 7, 3)
    assert c.logprobs == [-0.5, -0.1, 0.0]
    _, sent = fake.requests[0]
    assert sent["model"] == "smol-think" and sent["max_tokens"] == 30 and sent["seed"] == 3
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["thinking_token_budget"] == 16
    assert sent["logprobs"] is True


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_a_500_then_succeeds(fake: FakeServer, status: int) -> None:
    fake.script["/v1/chat/completions"] = [(status, {"error": {"message": "boom"}}), (200, chat_body("ok"))]
    [c] = complete(tier(fake.base_url, retries=1), [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert c.content == "ok" and fake.paths() == ["/v1/chat/completions"] * 2


def test_a_500_without_retries_left_raises_unavailable(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [(503, {"error": {"message": "overloaded"}})]
    with pytest.raises(EndpointUnavailable) as info:
        complete(tier(fake.base_url, retries=2), [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert len(fake.requests) == 3 and info.value.tries == 3
    assert isinstance(info.value, EndpointError) and "smol-think" in str(info.value)


def test_malformed_body_is_retried(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [(200, "this is not json"), (200, chat_body("ok"))]
    [c] = complete(tier(fake.base_url, retries=1), [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert c.content == "ok" and len(fake.requests) == 2


def test_body_without_choices_is_retried_then_fails(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [(200, {"object": "chat.completion", "choices": []})]
    with pytest.raises(EndpointUnavailable):
        complete(tier(fake.base_url, retries=1), [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_4xx_is_not_retried(fake: FakeServer, status: int) -> None:
    fake.script["/v1/chat/completions"] = [(status, {"error": {"message": "bad request", "code": status}})]
    with pytest.raises(EndpointRejected) as info:
        complete(tier(fake.base_url, retries=3), [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert len(fake.requests) == 1 and info.value.status == status


def test_connection_refused_is_unavailable() -> None:
    t = tier(f"http://127.0.0.1:{closed_port()}/v1", retries=1)
    with pytest.raises(EndpointUnavailable) as info:
        complete(t, [{"role": "user", "content": "x"}], settings={"max_tokens": 5})
    assert info.value.tries == 2


async def test_acomplete_retries_too(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [(502, {"error": {"message": "gateway"}}), (200, chat_body("ok"))]
    [c] = await acomplete(tier(fake.base_url, retries=1), [{"role": "user", "content": "x"}],
                          settings={"max_tokens": 5})
    assert c.content == "ok" and len(fake.requests) == 2


# ---------------------------------------------------------------------------------- token counting
def tokenize_answer(body: dict[str, Any]) -> dict[str, Any]:
    if "messages" in body:
        tokens = list(range(100, 100 + 3 * len(body["messages"])))
    else:
        tokens = list(range(len(body["prompt"].split())))
    return {"count": len(tokens), "tokens": tokens, "max_model_len": 2048}


def test_server_token_counter_counts_and_caches(fake: FakeServer) -> None:
    fake.script["/tokenize"] = [(200, tokenize_answer)]
    for url in (fake.base_url, fake.base_url.removesuffix("/v1"), fake.base_url + "/"):
        assert root_url(url) == f"http://127.0.0.1:{fake.port}"
    counter = ServerTokenCounter(fake.base_url)
    assert counter.count("one two three", "smol") == 3
    assert counter.count("one two three", "smol") == 3
    assert counter.count("") == 0
    assert len(fake.requests) == 1
    assert fake.requests[0][1] == {"prompt": "one two three", "add_special_tokens": False, "model": "smol"}


def test_server_without_tokenize_is_a_clear_error(fake: FakeServer) -> None:
    with pytest.raises(TokenizeUnavailable, match="no /tokenize endpoint"):
        ServerTokenCounter(fake.base_url).count("x", "smol")


def test_reasoning_counter_for_policy(fake: FakeServer) -> None:
    fake.script["/tokenize"] = [(200, tokenize_answer)]
    pol = parse_policy(f"""
tiers:
  local: {{model: hosted_vllm/smol-think, api_base: "{fake.base_url}"}}
  hosted: {{model: openai/gpt-4o-mini}}
bands: [{{name: all, min: 0, max: 1, tier: local}}]
""", env={})
    count = reasoning_counter_for(pol)
    assert count("local", "a b c d") == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert count("hosted", "a b") == 0
        assert count("hosted", "a b c") == 0
    assert len(caught) == 1 and "hosted" in str(caught[0].message)


# ---------------------------------------------------------------------------------- budget forcing
THINK_TIER = Tier(model="hosted_vllm/smol-think", api_base="http://127.0.0.1:9/v1", max_tokens=200,
                  thinking={"control": "chat_template_kwargs", "budget_param": "budget_forcing"})
GOV_SETTINGS = {"max_tokens": 100, "temperature": 0.0,
                "extra_body": {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 99}}


def test_thinking_chunk_settings() -> None:
    s = thinking_chunk_settings(THINK_TIER, GOV_SETTINGS, 16)
    assert s["max_tokens"] == 16 and s["temperature"] == 0.0
    assert s["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}}


def test_no_forcing_when_the_model_stops_within_the_budget() -> None:
    first = Completion(content="42", reasoning="6*7", input_tokens=30, output_tokens=10, finish_reason="stop")
    fn = FakeCompletions(first)
    out = budget_forced_complete(THINK_TIER, [{"role": "user", "content": "q"}], budget=16, settings=GOV_SETTINGS,
                                 complete_fn=fn)
    assert not out.forced and out.content == "42" and len(fn.calls) == 1 and out.output_tokens == 10


def test_forcing_closes_the_thinking_and_sums_usage() -> None:
    first = Completion(content="", reasoning="\nlet me add", input_tokens=30, output_tokens=16, finish_reason="length")
    seen: dict[str, Any] = {}

    def cont(tier: Tier, messages: list[dict[str, Any]], prefix: str, *, settings: dict[str, Any],
             max_tokens: int, seed: int | None = None) -> Completion:
        seen.update(prefix=prefix, max_tokens=max_tokens)
        return Completion(content="42", input_tokens=47, output_tokens=3, finish_reason="stop")

    out = budget_forced_complete(THINK_TIER, [{"role": "user", "content": "q"}], budget=16, settings=GOV_SETTINGS,
                                 complete_fn=FakeCompletions(first), continue_fn=cont)
    assert seen == {"prefix": "\nlet me add\n</think>\n\n", "max_tokens": 84}
    assert out.forced and out.content == "42" and out.reasoning == "\nlet me add"
    assert (out.input_tokens, out.output_tokens) == (77, 19)  # both calls' prompts counted
    assert [c.output_tokens for c in out.calls] == [16, 3]


def test_prefix_keeps_an_answer_cut_by_the_budget() -> None:
    c = Completion(content="\nThe ans", reasoning="r", finish_reason="length")
    assert close_prefix(c) == "r</think>\nThe ans"


def test_chat_continuation_request_shape() -> None:
    first = Completion(content="", reasoning="r", input_tokens=30, output_tokens=16, finish_reason="length")
    second = Completion(content="", reasoning="42", input_tokens=40, output_tokens=2, finish_reason="stop")
    fn = FakeCompletions(first, second)
    out = budget_forced_complete(THINK_TIER, [{"role": "user", "content": "q"}], budget=16,
                                 settings={**GOV_SETTINGS, "tools": [{"type": "function"}]}, mode="chat",
                                 complete_fn=fn)
    msgs, settings = fn.calls[1]
    assert msgs[-1] == {"role": "assistant", "content": "<think>\nr\n</think>\n\n"}
    assert settings["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}
    assert settings["tools"] == [{"type": "function"}] and settings["max_tokens"] == 84
    assert out.content == "42" and out.continuation == "chat"  # a parser that filed the answer as reasoning


def test_auto_mode_falls_back_to_completions_after_a_400(fake: FakeServer) -> None:
    fake.script["/v1/chat/completions"] = [
        (200, chat_body(None, reasoning="\nthinking", key="reasoning",
                        usage={"prompt_tokens": 20, "completion_tokens": 8}, finish="length")),
        (400, {"error": {"message": "continue_final_message is set but the final message does not appear"}}),
    ]
    fake.script["/tokenize"] = [(200, tokenize_answer)]
    fake.script["/v1/completions"] = [(200, {"model": "smol", "choices": [
        {"index": 0, "text": " 42", "finish_reason": "stop"}], "usage": {"prompt_tokens": 25, "completion_tokens": 2}})]
    t = tier(fake.base_url, thinking={"control": "chat_template_kwargs", "budget_param": "budget_forcing"})
    out = budget_forced_complete(t, [{"role": "user", "content": "q"}], budget=8, seed=1,
                                 settings={"max_tokens": 40, "temperature": 0.0,
                                           "extra_body": {"chat_template_kwargs": {"enable_thinking": True}}})
    assert out.continuation == "completions" and out.content == " 42"
    assert (out.input_tokens, out.output_tokens) == (45, 10)
    render = next(b for p, b in fake.requests if p == "/tokenize" and "messages" in b)
    assert render["chat_template_kwargs"] == {"enable_thinking": True} and render["add_generation_prompt"] is True
    prefix = next(b for p, b in fake.requests if p == "/tokenize" and "prompt" in b)
    assert prefix["prompt"] == "\nthinking\n</think>\n\n"
    sent = next(b for p, b in fake.requests if p == "/v1/completions")
    assert sent["prompt"] == [100, 101, 102, 0, 1] and sent["max_tokens"] == 32 and sent["seed"] == 1
    assert "chat_template_kwargs" not in sent and sent["temperature"] == 0.0
    assert bf._MODE_CACHE[(t.api_base, t.model)] == "completions"


# ------------------------------------------------------------------------- the LangChain wrapper
@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return expression


def test_wrapper_forces_and_passes_tools(fake: FakeServer) -> None:
    tool_call = {"id": "t1", "type": "function",
                 "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}
    fake.script["/v1/chat/completions"] = [
        (200, chat_body(None, reasoning="hmm", usage={"prompt_tokens": 20, "completion_tokens": 8}, finish="length")),
        (200, chat_body("", tool_calls=[tool_call], usage={"prompt_tokens": 30, "completion_tokens": 5})),
    ]
    t = tier(fake.base_url, thinking={"control": "chat_template_kwargs", "budget_param": "budget_forcing"})
    model = BudgetForcingChatModel(inner_tier=t, temperature=0.0, seed=7).bind_tools([calculator])
    msg = model.invoke([HumanMessage("6*7?")], max_tokens=40, **{BUDGET_KWARG: 8},
                       extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert msg.tool_calls[0]["name"] == "calculator" and msg.tool_calls[0]["args"] == {"expression": "6*7"}
    assert msg.additional_kwargs["reasoning_content"] == "hmm"
    assert msg.usage_metadata["input_tokens"] == 50 and msg.usage_metadata["output_tokens"] == 13
    first, second = (b for _, b in fake.requests)
    assert first["max_tokens"] == 8 and first["tools"][0]["function"]["name"] == "calculator"
    assert first["seed"] == 7 and first["temperature"] == 0.0 and BUDGET_KWARG not in first
    assert second["continue_final_message"] is True and second["tools"][0]["function"]["name"] == "calculator"
    assert second["max_tokens"] == 32
    assert msg.response_metadata["effagent_budget_forcing"]["forced"] is True


def test_wrapper_without_thinking_is_one_plain_call(fake: FakeServer) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 2}
    fake.script["/v1/chat/completions"] = [(200, chat_body("Paris", usage=usage))]
    t = tier(fake.base_url, thinking={"control": "chat_template_kwargs", "budget_param": "budget_forcing"})
    msg = BudgetForcingChatModel(inner_tier=t).invoke(
        "capital of France?", max_tokens=20, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert msg.content == "Paris" and len(fake.requests) == 1
    assert fake.requests[0][1]["chat_template_kwargs"] == {"enable_thinking": False}


def test_models_for_picks_the_wrapper_for_budget_forcing_tiers() -> None:
    pol = parse_policy("""
tiers:
  small: {model: hosted_vllm/smol, api_base: "http://127.0.0.1:9/v1"}
  think:
    model: hosted_vllm/smol-think
    api_base: "http://127.0.0.1:9/v1"
    thinking: {control: chat_template_kwargs, budget_param: budget_forcing}
bands: [{name: all, min: 0, max: 1, tier: small}]
""", env={})
    models = models_for(pol, temperature=0.0, model_kwargs={"seed": 3})
    assert type(models["small"]).__name__ == "ChatLiteLLM"
    assert isinstance(models["think"], BudgetForcingChatModel) and models["think"].seed == 3


def test_completions_continuation_without_a_reachable_tokenizer_is_retried_then_unavailable():
    import socket

    from effagent.llm.budget_forcing import continue_completions

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tier = Tier(model="hosted_vllm/x", api_base=f"http://127.0.0.1:{port}/v1", retries=1, timeout_s=2)
    with pytest.raises(EndpointUnavailable, match="rendering the prompt") as err:
        continue_completions(tier, [{"role": "user", "content": "q"}], "so far", settings={}, max_tokens=4)
    assert err.value.tries == 2
