"""Levers without a server: answer extraction, adaptive self-consistency, early exit, reasoning-loop cap."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effagent.errors import EffagentError
from effagent.levers import answers, consistency, early_exit, loopguard
from effagent.levers.consistency import Sample, SCConfig
from effagent.levers.early_exit import EarlyExitConfig, Generated
from effagent.policy import LoopGuard
from effagent.tools.serving.vllm_local import THINK_PREFIX
from tests.fakes.thinking import fake_thinker

# ------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(("text", "want"), [
    ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("The total is 1,234 dollars.", "1234"),
    ("so x = -4.0", "-4"),
    ("It costs $3.50 each, 7 in all", "7"),
    ("#### 1,000\nthen 5 more", "1000"),
    ("16-3 gives 13", "13"),
    ("no digits here", None),
])
def test_number_extractor(text, want):
    assert answers.number(text) == want


def test_boxed_choice_exact():
    assert answers.boxed(r"so \boxed{\frac{1}{2}} or rather \boxed{ 42 }") == "42"
    assert answers.boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert answers.boxed(r"answer: \boxed{7") == "7"  # a probe cut by max_tokens
    assert answers.boxed("42") is None
    assert answers.choice("The answer is (B).") == "B"
    assert answers.choice("Answer: d") == "D"
    assert answers.choice("I pick C.") == "C"
    assert answers.choice("no letter here at all") is None
    assert answers.exact('  "Paris."  ') == answers.exact("paris") == "paris"


def test_extractor_registry():
    assert answers.get_extractor("number") is answers.number
    assert set(answers.EXTRACTORS) == {"number", "boxed", "choice", "exact", "code"}
    assert answers.code("```python\ndef f(x):  # double\n    return 2 * x\n```") == answers.code("def f(x): return 2*x")
    mine = str.upper
    assert answers.get_extractor(mine) is mine
    with pytest.raises(EffagentError, match=r"unknown answer extractor 'roman'.*number, boxed, choice, exact, code"):
        answers.get_extractor("roman")


# ------------------------------------------------------------------------------- adaptive consistency


def beta_sf_half(a: int, b: int, steps: int = 20000) -> float:
    """P(X > 1/2) for X ~ Beta(a, b) by numerical integration (independent of the closed form)."""
    norm = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    h = 0.5 / steps
    return norm * h * sum(((0.5 + (i + 0.5) * h) ** (a - 1)) * ((0.5 - (i + 0.5) * h) ** (b - 1))
                          for i in range(steps))


@pytest.mark.parametrize(("v1", "v2"), [(1, 0), (3, 0), (4, 0), (4, 1), (6, 2), (5, 5), (9, 3)])
def test_beta_rule_matches_the_integral(v1, v2):
    assert consistency.beta_majority_prob(v1, v2) == pytest.approx(beta_sf_half(v1 + 1, v2 + 1), abs=1e-6)


def test_beta_closed_form_values():
    # sum_{j<=v1} C(n, j) / 2^n, n = v1 + v2 + 1
    assert consistency.beta_majority_prob(3, 0) == 15 / 16
    assert consistency.beta_majority_prob(4, 0) == 31 / 32
    assert consistency.beta_majority_prob(2, 2) == 0.5


def scripted(answers_: list[str], usage=(30, 7)):
    """A sampler that replays answers in order; records each request's (k, start)."""
    requests = []

    def sample(k, start):
        requests.append((k, start))
        return [Sample(f"so the answer is {a}", usage[0], usage[1]) for a in answers_[start:start + k]]

    return sample, requests


def test_beta_rule_stops_early_on_unanimous_samples():
    sample, requests = scripted(["12"] * 16)
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=16, batch=2, threshold=0.95))
    # 4 unanimous votes: P = 31/32 >= 0.95 (3 votes: 15/16 < 0.95)
    assert r.answer == "12" and r.used == 4 and r.stopped == "beta"
    assert requests == [(2, 0), (2, 2)]
    assert r.confidence == pytest.approx(31 / 32)
    assert "P('12' is the majority) = 0.969 >= 0.95" in r.reason
    assert r.output_tokens == 4 * 7 and len(r.samples) == 4  # every sample's usage is returned


def test_beta_rule_keeps_sampling_on_split_votes():
    sample, _ = scripted(["1", "2"] * 8)
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=16, batch=2, threshold=0.95))
    assert r.used == 16 and r.stopped == "max_samples"
    assert r.counts == {"1": 8, "2": 8} and r.answer == "1"  # tie: the first seen
    # the closed form says why: 8 vs 8 is a coin flip
    assert r.confidence == pytest.approx(consistency.beta_majority_prob(8, 8)) == pytest.approx(0.5)


def test_beta_rule_mixed_votes_need_more_samples_than_unanimous():
    seq = ["7", "7", "7", "3", "7", "7", "7", "7", "7", "7"]
    sample, _ = scripted(seq)
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=10, batch=1, threshold=0.95))
    # after n samples the leader has v1, runner-up v2; the first n with P >= 0.95 is where it must stop
    for n in range(1, 11):
        v1 = seq[:n].count("7")
        v2 = seq[:n].count("3")
        if n >= 2 and consistency.beta_majority_prob(v1, v2) >= 0.95:
            break
    assert r.used == n == 7 and r.answer == "7"


def test_unextractable_samples_do_not_vote():
    sample, _ = scripted(["", "", "5", "5", "5", "5"])
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=6, batch=2), extractor=lambda t: t.split()[-1]
                                         if t.split()[-1].isdigit() else None)
    assert r.counts == {"5": 4} and r.used == 6 and r.answer == "5"


def test_esc_window():
    assert consistency.window_agrees(["1", "2", "2", "2"], 3)
    assert not consistency.window_agrees(["2", "2", "1"], 3)
    assert not consistency.window_agrees([None, None, None], 3)
    assert not consistency.window_agrees(["2", "2"], 3)
    # window only (no Beta rule): batch = window, as in ESC
    sample, requests = scripted(["4", "9", "4", "4", "4", "4", "4", "4"])
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=8, batch=2, window=2, threshold=None))
    assert r.stopped == "window" and r.used == 4 and requests == [(2, 0), (2, 2)]
    assert "last 2 samples all answered '4'" in r.reason and r.confidence is None


def test_dirichlet_rule_is_seeded_and_sensible():
    a = consistency.dirichlet_majority_prob([5], draws=4000, seed=1)
    assert a == consistency.dirichlet_majority_prob([5], draws=4000, seed=1)
    assert a > 0.9 and consistency.dirichlet_majority_prob([3, 3], seed=1) < 0.6
    sample, _ = scripted(["8"] * 16)
    r = consistency.adaptive_consistency(sample, SCConfig(method="dirichlet", threshold=0.95, batch=1))
    assert r.stopped == "dirichlet" and 2 <= r.used < 16


def test_chosen_sample_carries_the_payload():
    def sample(k, start):
        texts = ["1", "2", "2", "2", "2", "2"][start:start + k]
        return [Sample(t, payload={"i": start + i}) for i, t in enumerate(texts)]

    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=6, batch=3, threshold=0.9))
    assert r.answer == "2" and r.chosen is not None and r.chosen.payload == {"i": 1}


# ------------------------------------------------------------------------------------------ early exit


def test_early_exit_stops_after_k_agreeing_probes_and_counts_probe_tokens():
    think, probe, log = fake_thinker(["12", "10", "\\boxed{42}", "42.", "42", "42"])
    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=32, agree=3, max_thinking=1024),
                              extractor="number")
    # probes: 12, 10, 42, 42, 42 -> three in a row after the 5th chunk
    assert r.exited == "probes_agree" and r.exited_early and r.extracted == "42"
    assert log["think"] == 5 and log["probe"] == 5 and r.thinking_tokens == 5 * 32
    probe_in, probe_out = r.probe_tokens
    assert probe_out == 5 * 4 and probe_in == sum(60 + len("step. " * 32 * i) for i in range(1, 6))
    kinds = [c.kind for c in r.calls]
    assert kinds.count("probe") == 5 and kinds.count("model") == 5  # no answer call: the agreed probe is it
    assert r.output_tokens == 5 * 32 + 5 * 4
    assert "3 consecutive probes answered '42' after 160 thinking tokens" in r.reason


def test_hedged_probes_do_not_count():
    think, probe, _ = fake_thinker(["7", "Wait, maybe 7?", "7", "7"])
    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=10, agree=2))
    assert [p.hedged for p in r.probes] == [False, True, False, False]
    assert r.thinking_tokens == 40 and r.extracted == "7"
    assert early_exit.is_hedged("Hmm, 7") and not early_exit.is_hedged("Thus 7") and not early_exit.is_hedged("7")


def test_early_exit_falls_back_to_the_models_own_end_and_the_cap():
    think, probe, log = fake_thinker(["1", "2", "3"], finish_after=3)
    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=8, agree=2))
    assert r.exited == "finished" and r.answer == "The answer is 9." and log["probe"] == 2

    think, probe, log = fake_thinker([str(i) for i in range(100)])
    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=30, agree=2, max_thinking=100))
    assert r.exited == "max_thinking" and r.thinking_tokens == 100 and log["asked"] == [30, 30, 30, 10]
    assert r.calls[-1].kind == "probe"  # no answer callable: one last probe answers


def test_early_exit_answer_callable_and_stop_check():
    think, probe, _ = fake_thinker(["5", "5"])
    seen = []

    def answer(reasoning, early):
        seen.append(early)
        return Generated("Final: 5", 100, 6)

    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=4, agree=2), answer=answer)
    assert seen == [True] and r.answer == "Final: 5" and r.calls[-1].role == "answer"

    think, probe, _ = fake_thinker(["1", "2", "3", "4"], chunk_text="Wait, let me double-check. ")
    r = early_exit.early_exit(think, probe, EarlyExitConfig(chunk=1, agree=2),
                              stop_check=loopguard.reasoning_stop_check(LoopGuard(max_reasoning_verifications=2)))
    assert r.exited == "stop_check" and "re-verified itself 3 times (limit 2)" in r.reason


# -------------------------------------------------------------------------------- reasoning-loop cap

LOOPY = ("First, 3 + 5 = 8. Wait, let me double-check: 3 + 5 is 8. Hmm, yes, 8.\n"
         "Let me verify again. 3 plus 5 equals 8. Wait, is that right? Actually, yes. "
         "But wait, maybe it is 9? Let me re-check. The answer is 8.")


def test_scan_counts_verification_sentences():
    scan = loopguard.scan_verifications(LOOPY)
    assert scan.count == 7
    assert scan.samples[0].startswith("Wait, let me double-check")
    assert loopguard.scan_verifications("3 + 5 = 8. So the answer is 8.").count == 0
    # a cue in the middle of a long sentence is not a verification round
    assert loopguard.scan_verifications("The total, which we will verify later in the next part, is 8.").count == 0


def test_reasoning_cap_has_a_reason_and_cuts_before_the_extra_round():
    assert loopguard.check_reasoning(LOOPY, 7) is None
    why = loopguard.check_reasoning(LOOPY, 3)
    assert why == ("reasoning re-verified itself 7 times (limit 3), e.g. 'Wait, is that right?'; "
                   "capped at the 4th verification")
    capped = loopguard.cap_reasoning(LOOPY, 3)
    assert capped.cut and capped.reason == why and capped.verifications == 7
    assert capped.text.endswith("3 plus 5 equals 8.") and "is that right" not in capped.text
    assert loopguard.scan_verifications(capped.text).count == 3
    same = loopguard.cap_reasoning("plain reasoning", 1)
    assert not same.cut and same.reason is None and same.text == "plain reasoning"


def test_reasoning_stop_check_respects_enabled():
    assert loopguard.reasoning_stop_check(LoopGuard(enabled=False), 1)(LOOPY) is None
    assert "limit 3" in loopguard.reasoning_stop_check(LoopGuard(max_reasoning_verifications=3))(LOOPY)


def test_scripted_sampler_helper_is_deterministic():
    sample, _ = scripted(list(itertools.repeat("3", 4)))
    assert [s.text for s in sample(2, 2)] == ["so the answer is 3"] * 2


def test_continuation_callables_send_the_partial_turn():
    from types import SimpleNamespace

    sent = []

    def call(messages, k):
        sent.append((messages, k))
        if early_exit.PROBE_CUE in messages[-1]["content"]:
            return SimpleNamespace(content="", reasoning="8", input_tokens=70, output_tokens=2, finish_reason="stop")
        if len(sent) == 1:
            return SimpleNamespace(content=None, reasoning=" 3 + 5", input_tokens=60, output_tokens=k,
                                   finish_reason="length")
        return SimpleNamespace(content="It is 8.", reasoning=" = 8.", input_tokens=65, output_tokens=5,
                               finish_reason="stop")

    think, probe = early_exit.continuation_callables(call, [{"role": "user", "content": "3+5?"}], probe_tokens=6,
                                                   think_prefix=THINK_PREFIX)
    c = think("", 4)
    assert (c.text, c.finished, c.output_tokens) == (" 3 + 5", False, 4)
    assert sent[0] == ([{"role": "user", "content": "3+5?"},
                        {"role": "assistant", "content": THINK_PREFIX}], 4)
    p = probe(c.text)
    assert p.text == "8" and sent[-1][1] == 6
    assert sent[-1][0][-1]["content"] == THINK_PREFIX + " 3 + 5\n" + early_exit.PROBE_CUE
    c2 = think(c.text, 4)
    assert c2.finished and c2.answer == "It is 8."


def test_decided_rule_stops_when_the_remaining_samples_cannot_change_the_majority():
    # 5 vs 1 after 6 of 8 samples: the runner-up can reach 3 at most
    sample, requests = scripted(["5", "5", "5", "6", "5", "5", "6", "6"])
    r = consistency.adaptive_consistency(sample, SCConfig(max_samples=8, batch=2, threshold=0.95))
    assert r.stopped == "decided" and r.used == 6 and r.answer == "5"
    assert "only 2 more sample(s) are allowed" in r.reason
    off = consistency.adaptive_consistency(scripted(["5", "5", "5", "6", "5", "5", "6", "6"])[0],
                                           SCConfig(max_samples=8, batch=2, threshold=0.95, decided=False))
    assert off.used == 8 and off.answer == "5"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=12), st.integers(1, 4))
def test_decided_rule_never_changes_the_fixed_n_answer(answers, batch):
    texts = [f"so the answer is {a}" if a else "no idea" for a in answers]

    def sample(k, start):
        return [Sample(t) for t in texts[start:start + k]]

    cfg = SCConfig(max_samples=len(texts), batch=batch, threshold=None, min_samples=1)
    adaptive = consistency.adaptive_consistency(sample, cfg)
    fixed = consistency.fixed_consistency([Sample(t) for t in texts])
    assert adaptive.answer == fixed.answer


def test_blocked_calls_counts_the_answers_calls_with_the_turns_and_names_only_those_over_the_limit():
    from effagent.records import Message, Step, ToolCall, summarize

    look = ToolCall(name="lookup", args={"q": "booking 42"})
    other = ToolCall(name="lookup", args={"q": "booking 43"})
    earlier = [Message(role="user", content="book it"), Message(role="assistant", tool_calls=[look]),
               Message(role="tool", content="error"), Message(role="user", content="try again")]
    turn = [Message(role="assistant", tool_calls=[look]), Message(role="tool", content="error"),
            Message(role="assistant", tool_calls=[look]), Message(role="tool", content="error")]
    guard = LoopGuard(max_repeated_tool_calls=2)
    whys = loopguard.blocked_calls(Step(messages=earlier + turn), [look, other], guard)
    assert whys[1] is None  # new arguments: progress
    assert whys[0] is not None and "already called 2 times in this turn" in whys[0]
    # the earlier turn's call does not count in scope turn, but does in scope thread
    assert loopguard.blocked_calls(Step(messages=earlier + turn[:2]), [look], guard) == [None]
    by_thread = LoopGuard(max_repeated_tool_calls=2, scope="thread")
    thread = loopguard.blocked_calls(Step(messages=earlier + turn[:2]), [look], by_thread)
    assert thread[0] is not None and "in this conversation" in thread[0]
    # the same call twice in one answer counts twice
    assert loopguard.blocked_calls(Step(messages=earlier + turn[:2]), [look, look], guard)[0] is not None
    # the history's most repeated call bounds the count: far from the limit, nothing is read
    bounded = Step(messages=earlier + turn, known_stats=summarize(earlier + turn)._replace(max_call_repeats=0))
    assert loopguard.blocked_calls(bounded, [look], guard) == [None]
    assert loopguard.blocked_calls(Step(messages=earlier + turn), [look], LoopGuard(enabled=False)) == [None]
