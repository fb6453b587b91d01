"""Benchmark baselines: difficulty estimators the library does not ship, kept to compare its estimators against
(``effagent bench replay``, ``effagent difficulty score --estimator``).

- ``length``: a longer prompt scores harder (:mod:`.length`);
- ``heuristic``: prompt words, numbers and operators plus the run's signals, the policies' default before
  ``rule`` (:mod:`.heuristic`);
- ``trained``: a model fit on LLMRouter's train questions; in-domain only, below a random order on 3 of the 5
  recorded domains (:mod:`.trained`, its model file under ``artifacts/``; ``effagent bench train-baseline``
  refits it).

A policy names only the library's estimators (``rule``, ``learned``, ``probe``); :func:`get_scorer` builds those
and the baselines alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effagent.difficulty.base import Estimator
from effagent.difficulty.combine import WeightedEstimator, available_estimators, get_estimator, parse_weights

if TYPE_CHECKING:
    from effagent.policy import Policy


def _length() -> Estimator:
    from .length import LengthEstimator

    return LengthEstimator()


def _heuristic() -> Estimator:
    from .heuristic import HeuristicEstimator

    return HeuristicEstimator()


def _trained() -> Estimator:
    from .trained import TrainedEstimator

    return TrainedEstimator()


BASELINES: dict[str, Callable[[], Estimator]] = {"length": _length, "heuristic": _heuristic, "trained": _trained}


def available() -> list[str]:
    """The names :func:`get_scorer` knows: the library's estimators, then the baselines."""
    return [*available_estimators(), *BASELINES]


def build(name: str, policy: Policy | None = None, options: Mapping[str, Any] | None = None) -> Estimator:
    """A baseline or a library estimator, by name."""
    if name in BASELINES:
        return BASELINES[name]()
    return get_estimator(name, policy, options)


def get_scorer(name: str) -> Estimator:
    """A library estimator or a baseline by name; ``"a:0.7,b:0.3"`` builds their weighted mean."""
    if ":" in name or "," in name:
        return WeightedEstimator(parse_weights(name), build=build)
    return build(name)


def cmd_train(args: argparse.Namespace) -> int:
    """Refit the ``trained`` baseline on ``llmrouter_train.json`` and write its model file."""
    from effagent.data import DataNotFoundError, require

    from .trained import ARTIFACT_PATH, TrainConfig, save_artifact, train

    try:
        path = Path(args.train) if args.train else require("routing/llmrouter_train.json", args.data_dir)
    except DataNotFoundError as e:
        print(f"error: {e} (or pass --train FILE)", file=sys.stderr)
        return 2
    if not path.exists():
        print(f"error: training data {path} not found", file=sys.stderr)
        return 2
    cfg = TrainConfig(alpha=args.alpha, max_terms=args.max_terms, folds=args.folds)
    art, metrics = train(path, cfg, cross_validate=args.folds > 1)
    out = save_artifact(art, Path(args.out) if args.out else ARTIFACT_PATH)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(f"held-out metrics ({args.folds}-fold CV on {path.name}):")
    for k, v in metrics.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) and not v.is_integer() else f"  {k}: {v:g}")
    return 0


def register(bench_subparsers: Any) -> None:
    """Add ``train-baseline`` to the ``bench`` sub-command group."""
    t = bench_subparsers.add_parser("train-baseline",
                                    help="refit the `trained` baseline on llmrouter_train.json (needs [bench])")
    t.add_argument("--train", default=None, help="train JSON (default: <data dir>/routing/llmrouter_train.json)")
    t.add_argument("--data-dir", default=None, help="raw data folder (default: $EFFAGENT_DATA_DIR)")
    t.add_argument("--out", default=None, help="model file to write (default: the baseline's shipped one)")
    t.add_argument("--alpha", type=float, default=3.0, help="ridge regularisation")
    t.add_argument("--max-terms", type=int, default=20000, help="vocabulary size")
    t.add_argument("--folds", type=int, default=5, help="CV folds for the printed metrics (1 = none)")
    t.set_defaults(func=cmd_train)
