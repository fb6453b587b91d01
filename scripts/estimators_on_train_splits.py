"""APGR of the prompt-only estimators on the train splits of the recorded sets (where the default rule's cues were
chosen; the evaluation splits are what `effagent bench replay` reports). Prints a Markdown table."""

from __future__ import annotations

import sys

import numpy as np

from effagent.data.recorded import load_sets
from effagent.evaluation import apgr
from effagent.tools.bench.baselines import get_scorer


def main(names: list[str]) -> int:
    sets = load_sets(split="train")
    print("| estimator | " + " | ".join(f"{s.domain} train ({len(s.rows)})" for s in sets) + " | mean |")
    print("|---" * (len(sets) + 2) + "|")
    for n in names or ["rule", "length", "heuristic"]:
        est = get_scorer(n)
        vals = [apgr(est.score_prompts(s.prompts), s.cheap, s.strong) for s in sets]
        print(f"| `{n}` | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
