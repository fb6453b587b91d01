"""``effagent difficulty score|train``.

score: JSONL ``{"id": ..., "prompt": "..."}`` on stdin -> JSONL ``{"id": ..., "difficulty": float}``
on stdout, one line per input line, same order; higher = send to the stronger tier first. All input is
read and validated before anything is written: on a bad line nothing goes to stdout, stderr names the
line number, exit code 2. Blank lines are errors too (the output must match the input line for line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from effagent.difficulty.combine import DEFAULT_ESTIMATOR


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Any
    prompt: str


class ScoreResponse(BaseModel):
    id: Any
    difficulty: float


class InputError(ValueError):
    pass


def parse_requests(lines: list[str]) -> list[ScoreRequest]:
    out: list[ScoreRequest] = []
    for n, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"line {n}: expected a JSON object with 'id' and 'prompt'")
        try:
            out.append(ScoreRequest.model_validate(obj))
        except ValidationError as e:
            what = "; ".join(f"{'.'.join(map(str, er['loc'])) or 'line'}: {er['msg']}" for er in e.errors())
            raise InputError(f"line {n}: {what}") from None
    return out


def score_stream(estimator_name: str, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    from effagent.difficulty.combine import get_estimator

    text = stdin.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    lines = [ln.rstrip("\r") for ln in lines]
    try:
        reqs = parse_requests(lines)
    except InputError as e:
        print(f"error: {e}", file=stderr)
        return 2
    try:
        est = get_estimator(estimator_name)
    except (KeyError, ImportError, ValueError) as e:
        print(f"error: estimator {estimator_name!r}: {e}", file=stderr)
        return 2
    scores = est.score_prompts([r.prompt for r in reqs])
    out = "".join(
        ScoreResponse(id=r.id, difficulty=min(1.0, max(0.0, float(s)))).model_dump_json() + "\n"
        for r, s in zip(reqs, scores, strict=True)
    )
    stdout.write(out)
    stdout.flush()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    return score_stream(args.estimator, sys.stdin, sys.stdout, sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from effagent.difficulty.trained import ARTIFACT_PATH, TrainConfig, data_dir, save_artifact, train

    path = Path(args.train) if args.train else data_dir() / "routing" / "llmrouter_train.json"
    if not path.exists():
        print(f"error: training data {path} not found (set EFFAGENT_DATA_DIR or --train)", file=sys.stderr)
        return 2
    cfg = TrainConfig(alpha=args.alpha, max_terms=args.max_terms, folds=args.folds)
    art, metrics = train(path, cfg, cross_validate=args.folds > 1)
    out = save_artifact(art, Path(args.out) if args.out else ARTIFACT_PATH)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(f"held-out metrics ({args.folds}-fold CV on {path.name}):")
    for k, v in metrics.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) and not v.is_integer() else f"  {k}: {v:g}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``difficulty`` group (``score``, ``train``) to an argparse sub-parser collection."""
    p = subparsers.add_parser("difficulty", help="difficulty estimators: score prompts, train the model")
    sub = p.add_subparsers(dest="difficulty_command", required=True)

    s = sub.add_parser("score", help="JSONL {id, prompt} on stdin -> JSONL {id, difficulty} on stdout")
    s.add_argument(
        "--estimator",
        default=DEFAULT_ESTIMATOR,
        help="registry name (trained, length, heuristic) or weights 'trained:0.7,length:0.3'",
    )
    s.set_defaults(func=cmd_score)

    t = sub.add_parser("train", help="fit the trained estimator on llmrouter_train.json, write the artifact")
    t.add_argument("--train", default=None, help="train JSON (default: <data>/routing/llmrouter_train.json)")
    t.add_argument("--out", default=None, help="artifact path (default: the package artifact)")
    t.add_argument("--alpha", type=float, default=3.0, help="ridge regularisation")
    t.add_argument("--max-terms", type=int, default=20000, help="vocabulary size")
    t.add_argument("--folds", type=int, default=5, help="CV folds for the printed metrics (1 = none)")
    t.set_defaults(func=cmd_train)
