"""The benchmark baselines (length, heuristic, trained): the trained model file loads offline, scores are sane, they
combine with the library's estimators by name; the cascade verifier's signals and prior; the library's registry."""

from __future__ import annotations

import json
import math
import socket

import pytest

from effagent.difficulty.base import Estimator, Step
from effagent.difficulty.combine import WeightedEstimator, available_estimators, get_estimator
from effagent.levers.cascade import CascadeVerifier, arithmetic_check, is_truncated
from effagent.tools.bench.baselines import BASELINES, available, get_scorer
from effagent.tools.bench.baselines.length import LengthEstimator
from effagent.tools.bench.baselines.trained import ARTIFACT_PATH, TrainedEstimator, load_artifact


def test_artifact_is_small_plain_json() -> None:
    assert ARTIFACT_PATH.exists()
    assert ARTIFACT_PATH.stat().st_size < 5_000_000
    json.loads(ARTIFACT_PATH.read_text(encoding="utf-8"))  # plain JSON, no pickle
    art = load_artifact()
    assert len(art.terms) == len(art.idf) == len(art.term_weights)
    assert art.meta["trained_on"] == "llmrouter_train.json"


def test_artifact_loads_and_scores_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a: object, **k: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    est = TrainedEstimator()
    assert isinstance(est, Estimator)
    scores = est.score_prompts(["What is the capital of France?", "Solve x^2 - 5x + 6 = 0.", ""])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    d = est.estimate(Step.from_prompt("Write a python function that reverses a linked list."))
    assert 0.0 <= d.score <= 1.0 and d.estimator == "trained" and "predicted_gain" in d.signals
    assert est.estimate(Step.from_prompt("abc")).score == pytest.approx(est.score_prompts(["abc"])[0])


def test_the_library_builds_three_estimators_and_names_the_baselines_it_dropped() -> None:
    assert available_estimators() == ["rule", "learned", "probe"]
    assert available() == ["rule", "learned", "probe", "length", "heuristic", "trained"]
    with pytest.raises(KeyError, match="unknown estimator 'verifier'"):
        get_estimator("verifier")
    for name in BASELINES:
        with pytest.raises(KeyError, match=f"{name}.*benchmark baseline.*effagent difficulty learn"):
            get_estimator(name)
        assert isinstance(get_scorer(name), Estimator)


def test_weighted_combination_of_baselines_and_library_estimators() -> None:
    prompts = ["short", "a much longer prompt " * 30]
    w = get_scorer("trained:1,length:3")
    assert isinstance(w, WeightedEstimator)
    t, ln = get_scorer("trained").score_prompts(prompts), LengthEstimator().score_prompts(prompts)
    expected = [0.25 * a + 0.75 * b for a, b in zip(t, ln, strict=True)]
    assert w.score_prompts(prompts) == pytest.approx(expected)
    assert w.estimate(Step.from_prompt(prompts[1])).score == pytest.approx(expected[1])
    mixed = get_scorer("rule:0.5,heuristic:0.5").estimate(Step.from_prompt(prompts[0]))
    assert {"rule.score", "heuristic.score"} <= set(mixed.signals)
    with pytest.raises(ValueError):
        WeightedEstimator({"trained": 0.0})
    with pytest.raises(KeyError, match="benchmark baseline"):
        get_estimator("rule:0.5,length:0.5")  # the library's registry alone does not build a baseline


def test_heuristic_baseline() -> None:
    s = get_scorer("heuristic").score_prompts(["hello", "prove the theorem step by step"])
    assert all(0.0 <= x <= 1.0 for x in s)


def test_verifier_signals() -> None:
    assert arithmetic_check("3 * 4 = 12 and 5 + 5 = 11") == (2, 1)
    assert arithmetic_check("<<80000+50000=130000>>") == (1, 0)
    assert is_truncated("The value is 80,000 + 50,000 = $<<80000+50000=130000>>130,00")
    assert not is_truncated("So the answer is 18.\n#### 18")
    v = CascadeVerifier(prior_estimator=None)
    good = "She has 16 - 3 = 13 eggs, then 13 - 4 = 9, and sells them for 9 * 2 = 18.\n#### 18"
    bad = "She has 16 - 3 = 12 eggs, then 12 - 4 = 8, however I assume she sells 8 * 2 = 17 and the"
    sg, sb = v.score_answers(["q", "q"], [good, bad])
    assert 0.0 <= sg < sb <= 1.0
    r = v.verify("q", good, samples=["#### 18", "#### 20"])
    assert r.signals.disagreement == pytest.approx(0.5)


def test_the_verifiers_prior_is_the_rule_built_once_per_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    import effagent.difficulty.combine as combine

    built: list[str] = []
    real = combine.get_estimator

    def counting(name: str, *args: object, **kwargs: object) -> object:
        built.append(name)
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(combine, "get_estimator", counting)
    v = CascadeVerifier()
    for _ in range(3):
        v.verify("What is 2 + 2?", "2 + 2 = 4.\n#### 4")
    v.score_answers(["q", "r"], ["#### 1", "#### 2"])
    assert built == ["rule"]
    assert v.verify("What is 2 + 2?", "#### 4").signals.prior == pytest.approx(get_estimator("rule").score_prompts(
        ["What is 2 + 2?"])[0])
    assert CascadeVerifier(prior_estimator=None).verify("q", "#### 1").signals.prior == 0.5


def test_trained_beats_random_in_domain_on_the_shipped_held_out_pair() -> None:
    from effagent.data.recorded import load_sets
    from effagent.evaluation import apgr

    (rs,) = load_sets(domains=["llmrouter"], split="eval")  # ships with the package: no shared data needed
    s = TrainedEstimator().score_prompts(rs.prompts)
    assert apgr(s, rs.cheap, rs.strong) > 0.5


def test_word_problem_detector_and_dense_features() -> None:
    from effagent.tools.bench.baselines.trained import DENSE_FEATURES, dense_features, looks_like_word_problem

    wp = "Tom has 12 apples and buys 3 more bags with 6 apples each. How many apples does he have now?"
    assert looks_like_word_problem(wp)
    assert not looks_like_word_problem("What is the capital of France?")
    assert not looks_like_word_problem("def f(x):\n    return 2 * x  # how many times is 3 used in 4 lines?")
    assert not looks_like_word_problem(r"Compute $\frac{3}{4} + 2$ and find how many 5s there are.")
    for p in (wp, "", "x" * 5000, "1e999 99999999999999999999999999"):
        f = dense_features(p)
        assert len(f) == len(DENSE_FEATURES) and all(math.isfinite(v) for v in f)


def test_flattened_trees_match_sklearn() -> None:
    pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    from effagent.tools.bench.baselines.trained import _flatten_trees, _Trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = x[:, 0] * x[:, 1] + np.sin(x[:, 2])
    hgb = HistGradientBoostingRegressor(max_iter=30, max_depth=3, early_stopping=False).fit(x, y)
    flat = _flatten_trees(hgb)
    x_new = rng.normal(size=(50, 5))
    assert np.allclose(_Trees(flat).predict(x_new, chunk=7), hgb.predict(x_new))


def test_batch_and_single_scores_agree() -> None:
    est = TrainedEstimator()
    prompts = ["Tom has 12 apples and buys 3 more. How many apples does he have?", "Who wrote Hamlet?", ""]
    batch = est.score_prompts(prompts)
    assert batch == pytest.approx([est.estimate(Step.from_prompt(p)).score for p in prompts])
    art = load_artifact()
    assert art.version == 2 and len(art.dense_names) * 2 + 1 == len(art.dense_weights)
    assert art.trees.roots and art.meta["metrics"]["cv_apgr_mean_over_pairs"] > 0.6
