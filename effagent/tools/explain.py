"""``effagent explain``: what a policy does to one prompt, without calling any model.

```
effagent explain --policy mixed-hosted "Prove that there are infinitely many primes."
effagent explain --policy my-policy.yaml --json --thread-spent 40000 - < prompt.txt
```

It prints the difficulty score and its signals, the band, the decision (tier, thinking, budget, max_tokens,
samples, reason), the exact keyword arguments the tier's ``litellm.completion`` call would get (the tier's
api key is never printed) and the HTTP request litellm would send for them (``wire``: method, URL, headers and
JSON body, built by litellm's own provider transformation and caught before it is sent; credentials masked).
A ``probe`` estimator calls a model, so it is left out of the score (and reported as not run) unless
``--allow-calls`` is given. An invalid policy gets the same ``PATH:LINE:COL`` problems as ``effagent validate``
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effagent.decide import decide
from effagent.ledger.base import LedgerState, Usage
from effagent.policy import DifficultyConfig, Policy, load_policy
from effagent.records import Difficulty, Step

#: keys of the request printed first, in this order; the rest follow as litellm takes them
_FIRST = ("model", "api_base", "max_tokens", "thinking", "reasoning_effort", "extra_body")
_SECRET = ("api_key",)


def _load(ref: str) -> Policy:
    from effagent import policies

    shipped = not Path(ref).exists() and ref in policies.names()
    return policies.load(ref) if shipped else load_policy(ref)


def _estimate(policy: Policy, step: Step, allow_calls: bool) -> tuple[Difficulty, list[str]]:
    """The step's difficulty, and the estimators left out (a probe calls a model: only with ``allow_calls``)."""
    from effagent.difficulty import build_estimator

    refs = list(policy.difficulty.estimators)
    skipped = [] if allow_calls else [r.name for r in refs if r.name == "probe"]
    kept = [r for r in refs if r.name not in skipped and r.weight > 0]
    if not kept:  # only a probe: no score without calling it
        return Difficulty(score=0.0, estimator="none"), skipped
    config = DifficultyConfig(estimators=kept)
    return build_estimator(config, policy).estimate(step), skipped


def explain(policy: Policy, prompt: str, *, thread_spent: int = 0, allow_calls: bool = False) -> dict[str, Any]:
    """What ``policy`` does with ``prompt`` as the first step of a run: ``{"difficulty", "band", "decision",
    "request", "wire"}`` (``request``: the keyword arguments of the tier's litellm call, without its api key;
    ``wire``: the HTTP request litellm would send for them, see :func:`effagent.llm.wire.wire_request`)."""
    from effagent.llm.client import request_kwargs
    from effagent.request import encode

    step = Step.from_prompt(prompt)
    difficulty, skipped = _estimate(policy, step, allow_calls)
    state = LedgerState(thread=Usage(input_tokens=max(0, thread_spent)))
    stats = step.stats()
    input_tokens = max(1, (stats.chars + max(0, stats.count - 1)) // 4)
    decision = decide(policy, difficulty, state, step=0, input_tokens=input_tokens)
    tier = policy.tier(decision.tier)
    req = encode(decision, decision.tier, tier)
    kwargs = request_kwargs(tier, [{"role": "user", "content": prompt}], req.settings, 1, None, None)
    wire = _wire(kwargs)
    for key in _SECRET:
        kwargs.pop(key, None)
    ordered = {k: kwargs.pop(k) for k in _FIRST if k in kwargs}
    ordered.update(kwargs)
    band = policy.band_named(decision.band)
    return policy.redactor.data({  # secrets (api_base userinfo, key query parameters, ${VAR} values) masked
        "difficulty": {
            "score": round(difficulty.score, 4), "estimator": difficulty.estimator,
            "signals": {k: round(v, 4) for k, v in difficulty.signals.items()},
            "not_run": {name: "calls a model; pass --allow-calls" for name in skipped},
        },
        "band": None if band is None else {"name": band.name, "min": band.min, "max": band.max},
        "decision": {
            "action": decision.action, "tier": decision.tier, "model": decision.model, "thinking": req.thinking,
            "thinking_budget": req.thinking_budget, "effort": req.effort, "max_tokens": req.max_tokens,
            "samples": decision.samples,
            "enforcement": req.enforcement, "reason": decision.reason, "notes": list(req.notes),
            "decided": {"thinking": decision.thinking, "thinking_budget": decision.thinking_budget,
                        "max_tokens": decision.max_tokens},
            "fallback": decision.fallback,
            "price": {**tier.price.model_dump(exclude_none=True), "source": tier.price_source},
        },
        "request": ordered,
        "wire": wire,
    })


def _wire(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The HTTP request for ``kwargs``, caught before it is sent. Without an API key (none in the tier, none in
    the environment) litellm refuses to build some requests: a placeholder key then stands in (masked anyway)."""
    from effagent.llm.wire import wire_request

    out = wire_request(kwargs)
    if "error" in out and "api_key" not in kwargs and "key" in out["error"].lower():
        out = wire_request({**kwargs, "api_key": "effagent-explain-placeholder"})
        out["note"] = "no API key is set: a placeholder stood in (masked)"
    return out


def _price_text(p: dict[str, Any]) -> str:
    """``$3 in / $15 out per Mtok, cache read $0.3, cache write $3.75, above 200000 tokens $6 in / $22.5 out``."""
    text = f"${p['input_per_mtok']:g} in / ${p['output_per_mtok']:g} out per Mtok"
    for key, name in (("cache_read_per_mtok", "cache read"), ("cache_write_per_mtok", "cache write")):
        if key in p:
            text += f", {name} ${p[key]:g}"
    if "long_context_above" in p:
        long_in = p.get("long_context_input_per_mtok", p["input_per_mtok"])
        long_out = p.get("long_context_output_per_mtok", p["output_per_mtok"])
        text += f", above {p['long_context_above']} tokens ${long_in:g} in / ${long_out:g} out"
    return f"{text} ({p['source']})"


def render_text(out: dict[str, Any]) -> str:
    d, diff, band = out["decision"], out["difficulty"], out["band"]
    lines = [f"difficulty {diff['score']:.3f} (estimator {diff['estimator']})"]
    for name, why in diff["not_run"].items():
        lines.append(f"  {name}: not run ({why})")
    for key, value in sorted(diff["signals"].items()):
        lines.append(f"  {key} = {value:g}")
    lines.append(f"band {band['name']} [{band['min']}, {band['max']})" if band else "band: none (finalize)")
    think = (f"thinking on, budget {d['thinking_budget'] if d['thinking_budget'] is not None else 'unbounded'}"
             f" ({d['enforcement'] or 'no budget'})" if d["thinking"] else "thinking off")
    if d.get("effort"):
        think += f", effort {d['effort']}"
    lines.append(f"decision: {d['action']} on tier {d['tier']} ({d['model']}), {think}, max_tokens "
                 f"{d['max_tokens']}, samples {d['samples']}")
    lines.append(f"  reason: {d['reason']}")
    for note in d["notes"]:
        lines.append(f"  note: {note}")
    lines.append(f"  price: {_price_text(d['price'])}")
    lines.append("request (litellm.completion keyword arguments; api key not shown):")
    req = {k: v for k, v in out["request"].items() if k != "messages"}
    lines += ["  " + line for line in json.dumps(req, indent=2, default=str).splitlines()]
    lines.append(f"  + messages: {len(out['request'].get('messages', []))} message(s)")
    wire = out.get("wire") or {}
    if "error" in wire:
        lines.append(f"wire: litellm refuses the call before sending: {wire['error']}")
    elif wire:
        lines.append(f"wire (the HTTP request litellm would send; credentials masked): {wire['method']} {wire['url']}")
        lines += ["  " + line for line in json.dumps({"headers": wire["headers"], "body": wire["body"]}, indent=2,
                                                    default=str).splitlines()]
        if wire.get("note"):
            lines.append(f"  note: {wire['note']}")
    return "\n".join(lines) + "\n"


def _stdin_text() -> str:
    """stdin as strict UTF-8 (an EffagentError naming LINE:COL of a byte that is not)."""
    from effagent.files import decode_utf8

    buf = getattr(sys.stdin, "buffer", None)
    return decode_utf8(buf.read(), "<stdin>") if buf is not None else sys.stdin.read()


def _cmd_explain(args: argparse.Namespace) -> int:
    policy = _load(args.policy)  # a PolicyError reaches the CLI: PATH:LINE:COL problems, exit 2
    prompt = _stdin_text() if args.prompt in (None, "-") else args.prompt
    if "\x00" in prompt or any("\ud800" <= c <= "\udfff" for c in prompt):
        print("effagent explain: the prompt is not text (NUL bytes or bytes that are not UTF-8)", file=sys.stderr)
        return 2
    if not prompt.strip():
        print("effagent explain: give a prompt (an argument, or - to read it from stdin)", file=sys.stderr)
        return 2
    out = explain(policy, prompt, thread_spent=args.thread_spent, allow_calls=args.allow_calls)
    if args.json:
        print(json.dumps(out, default=str))
    else:
        sys.stdout.write(render_text(out))
    return 0


def register(subparsers: Any) -> None:
    """Add ``effagent explain`` to the CLI's sub-commands."""
    p = subparsers.add_parser(
        "explain", help="show what a policy does to one prompt (difficulty, band, decision, request); no model call",
        description="Estimate a prompt's difficulty, decide the step as the policy says and print the decision "
                    "and the exact keyword arguments of the tier's litellm call, without calling any model.")
    p.add_argument("prompt", nargs="?", default=None, metavar="PROMPT", help="the prompt, or - (default) for stdin")
    p.add_argument("--policy", required=True, metavar="PATH", help="a policy file, or a shipped policy's name")
    p.add_argument("--json", action="store_true", help='print one object {"difficulty", "band", "decision", '
                   '"request", "wire"}')
    p.add_argument("--thread-spent", type=int, default=0, metavar="TOKENS",
                   help="tokens the thread has already spent (the thread budget's remainder shapes the decision)")
    p.add_argument("--allow-calls", action="store_true", help="run a probe estimator (it calls the probe tier)")
    p.set_defaults(func=_cmd_explain)
