"""The levers against the real local vLLM server (tiny CPU model: mechanics, not answer quality)."""

from __future__ import annotations

import pytest

from effagent.levers import consistency, early_exit
from effagent.tools.bench.levers import CONTINUE, Chat, early_exit_callables, thinking_body

pytestmark = pytest.mark.vllm

# unbounded thinking on this prompt runs to max_tokens on the local model (greedy, seed 0)
LONG = ("Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 in repairs.  "
        "This increased the value of the house by 150%.  How much profit did he make?")
EASY = "What is 10 + 10? Answer with just the number."


@pytest.fixture(scope="module")
def chat(vllm_server) -> Chat:
    think = next((n for n in vllm_server.names if "think" in n), vllm_server.names[0])
    return Chat(vllm_server.base_url, vllm_server.names[0], think)


def test_early_exit_answers_with_fewer_output_tokens_than_unbounded_thinking(chat):
    [full] = chat.call([{"role": "user", "content": LONG}], model=chat.think, max_tokens=256, seed=0,
                       extra=thinking_body())
    think, probe = early_exit_callables(chat, LONG, seed=0, probe_tokens=8)
    r = early_exit.early_exit(think, probe, early_exit.EarlyExitConfig(chunk=16, agree=2, max_thinking=256))
    assert r.answer.strip() and r.extracted is not None  # an answer came out
    probe_in, probe_out = r.probe_tokens
    assert probe_out > 0 and probe_in > 0  # probe cost is reported for the ledger
    assert r.output_tokens == sum(c.output_tokens for c in r.calls)
    assert r.output_tokens < full.output_tokens, (r.reason, r.output_tokens, full.output_tokens)
    assert CONTINUE["continue_final_message"] is True


def test_adaptive_consistency_stops_before_max_samples_on_an_easy_prompt(chat):
    msgs = [{"role": "user", "content": EASY}]
    requests = []

    def draw(k, start):
        requests.append((k, start))
        outs = chat.call(msgs, max_tokens=12, temperature=0.3, seed=start, n=k)
        return [consistency.Sample(o.content, o.input_tokens, o.output_tokens) for o in outs]

    cfg = consistency.SCConfig(max_samples=12, batch=2, threshold=0.95)
    r = consistency.adaptive_consistency(draw, cfg)
    assert r.stopped == "beta" and r.used < cfg.max_samples, r.reason
    assert r.answer == "20"
    assert sum(s.output_tokens for s in r.samples) > 0 and len(requests) == -(-r.used // 2)
    # the same seeds replay the same samples: the run is reproducible
    again = consistency.adaptive_consistency(draw, cfg)
    assert [s.text for s in again.samples] == [s.text for s in r.samples]


def test_thinking_budget_bounds_the_thinking(chat):
    msgs = [{"role": "user", "content": LONG}]
    [full] = chat.call(msgs, model=chat.think, max_tokens=256, seed=0, extra=thinking_body())
    [cut] = chat.call(msgs, model=chat.think, max_tokens=64, seed=0, extra=thinking_body(24))
    thought = chat.tokenize(cut.reasoning)
    assert 0 < thought <= 24 + 2  # the server closes the thinking at the budget
    assert chat.tokenize(full.reasoning) > thought
    assert cut.output_tokens < full.output_tokens
