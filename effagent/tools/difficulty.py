"""``effagent difficulty score|learn``.

score: JSONL ``{"id": ..., "prompt": "..."}`` on stdin -> JSONL ``{"id": ..., "difficulty": float}``
on stdout, one line per input line, same order; higher = send to the stronger tier first. All input is
read and validated before anything is written: on a bad line nothing goes to stdout, stderr names the
line number, exit code 2. Blank lines are errors too (the output must match the input line for line).
``--model MODEL`` scores with a model from ``learn`` instead of a registry estimator; ``--estimator`` names the
library's ``rule`` or a benchmark baseline (``length``, ``heuristic``, ``trained``: see
:mod:`effagent.tools.bench.baselines`).

learn: JSONL ``{"id", "prompt", "cheap_correct": bool, "strong_correct": bool}`` on stdin (or ``--input FILE``,
repeatable) -> a model file at ``--out`` (written atomically; nothing is written on any error, exit code 2).
Extra keys are allowed, so a policy's ``learning.outcomes`` file is read as it is; where one step has both an
``"label": "agreement"`` line (shadow call) and an ``"label": "outcome"`` line (``record_outcome``), the outcome
is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from effagent.difficulty.combine import DEFAULT_ESTIMATOR
from effagent.errors import EffagentError
from effagent.files import json_value

if TYPE_CHECKING:
    from effagent.difficulty.learned import LabeledPrompt


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Any
    prompt: str


class ScoreResponse(BaseModel):
    id: Any
    difficulty: float


class InputError(EffagentError, ValueError):
    pass


def parse_requests(lines: list[str]) -> list[ScoreRequest]:
    out: list[ScoreRequest] = []
    for n, line in enumerate(lines, start=1):
        try:
            obj = json_value(line)
            json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate ("\ud800") cannot be written
        except json.JSONDecodeError as e:
            raise InputError(f"line {n}: not valid JSON ({e.msg})") from None
        except UnicodeEncodeError:
            raise InputError(f"line {n}: a string holds a lone UTF-16 surrogate (e.g. \\ud800), which is not "
                             "text; fix the line") from None
        except (RecursionError, ValueError) as e:
            raise InputError(f"line {n}: not usable JSON ({e})") from None
        if not isinstance(obj, dict):
            raise InputError(f"line {n}: expected a JSON object with 'id' and 'prompt'")
        try:
            out.append(ScoreRequest.model_validate(obj))
        except ValidationError as e:
            what = "; ".join(f"{'.'.join(map(str, er['loc'])) or 'line'}: {er['msg']}" for er in e.errors())
            raise InputError(f"line {n}: {what}") from None
    return out


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    return [ln.rstrip("\r") for ln in lines]


def score_stream(estimator_name: str, stdin: IO[str], stdout: IO[str], stderr: IO[str],
                 model: str | None = None) -> int:
    from effagent.difficulty.combine import get_estimator
    from effagent.tools.bench.baselines import get_scorer

    try:
        reqs = parse_requests(_lines(stdin.read()))
    except InputError as e:
        print(f"error: {e}", file=stderr)
        return 2
    try:
        est = get_estimator("learned", options={"path": model}) if model else get_scorer(estimator_name)
    except (KeyError, ImportError, ValueError) as e:
        what = f"model {model}" if model else f"estimator {estimator_name!r}"
        print(f"error: {what}: {e}", file=stderr)
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
    return score_stream(args.estimator, sys.stdin, sys.stdout, sys.stderr, model=args.model)


def read_outcomes(paths: Sequence[str]) -> list[LabeledPrompt]:
    """The outcomes in the JSONL files ``paths``, in order (a LearnError names the file, and the line, of a
    problem). Not merged: see :func:`effagent.difficulty.learned.merge_labels`."""
    from effagent.difficulty.learned import LearnError, parse_outcomes
    from effagent.files import InputFileError, read_text

    rows: list[LabeledPrompt] = []
    for name in paths:
        try:
            text = read_text(name, "outcomes file")
        except InputFileError as e:
            raise LearnError(str(e)) from None
        rows += parse_outcomes(_lines(text), source=name)
    return rows


def learn_stream(out: str, inputs: list[str] | None, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Read and validate every outcome, learn, then write the model file atomically (nothing on an error)."""
    import time

    from effagent.difficulty.learned import LearnError, learn, merge_labels, parse_outcomes, save_model
    from effagent.files import check_output

    try:
        check_output(out, "model file")  # a folder, a FIFO or a missing parent: refused before any work
        outcomes = read_outcomes(inputs) if inputs else parse_outcomes(_lines(stdin.read()))
        outcomes = merge_labels(outcomes)
        t0 = time.perf_counter()
        model = learn(outcomes)
        path = save_model(model, out)
    except LearnError as e:
        print(f"error: {e}", file=stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {out}: {e}", file=stderr)
        return 2
    cv = ", ".join(f"{k}: {v:.3f}" for k, v in model.cv_apgr.items()) or "not enough contrast in the labels"
    acc = f"cheap {model.cheap_accuracy:.3f}, strong {model.strong_accuracy:.3f}"
    print(f"wrote {path}: {model.rows} outcomes ({acc}), "
          f"weight on the learned part {model.shrink:.2f} (0 = the default rule), {time.perf_counter() - t0:.1f} s",
          file=stdout)
    print(f"cross-validated APGR by blend weight: {cv}", file=stdout)
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    return learn_stream(args.out, args.input, sys.stdin, sys.stdout, sys.stderr)


def register(subparsers: Any) -> None:
    """Add the ``difficulty`` group (``score``, ``learn``) to an argparse sub-parser collection."""
    p = subparsers.add_parser("difficulty", help="difficulty estimators: score prompts, learn from outcomes")
    sub = p.add_subparsers(dest="difficulty_command", required=True)

    s = sub.add_parser("score", help="JSONL {id, prompt} on stdin -> JSONL {id, difficulty} on stdout")
    s.add_argument(
        "--estimator",
        default=DEFAULT_ESTIMATOR,
        help=f"{DEFAULT_ESTIMATOR} (the default) or a benchmark baseline (length, heuristic, trained), or weights "
        "'rule:0.7,length:0.3'",
    )
    s.add_argument("--model", default=None, help="score with a model file from `effagent difficulty learn`")
    s.set_defaults(func=cmd_score)

    learn_p = sub.add_parser(
        "learn", help="JSONL {id, prompt, cheap_correct, strong_correct} on stdin -> a model file for score --model"
    )
    learn_p.add_argument("--out", required=True, help="model file to write (atomically)")
    learn_p.add_argument("--input", action="append", default=None,
                         help="read outcomes from this JSONL file instead of stdin (repeatable)")
    learn_p.set_defaults(func=cmd_learn)
