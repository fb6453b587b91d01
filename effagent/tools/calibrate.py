"""``effagent calibrate``: the band boundary that reaches a target at the least cost on your own outcomes.

Outcomes are the JSON lines ``effagent difficulty learn`` reads (``{"id", "prompt", "cheap_correct",
"strong_correct", ...}``; extra keys such as ``label`` are kept). Each prompt is scored with the policy's own
estimator (``build_estimator(policy.difficulty, policy).score_prompts``; ``--estimator-model MODEL`` scores with a
model from ``difficulty learn`` instead and writes it into the new policy). A threshold ``t`` sends the steps
scoring ``>= t`` to the strong tier and the rest to the cheap tier:

- quality(t) = share of outcomes answered correctly (the cheap label below ``t``, the strong label at or above);
- strong share(t) = share of outcomes at or above ``t``;
- $ per 1,000 steps = 1,000 x the mean over outcomes of the tier's price x (prompt tokens, estimated as
  characters / 4, in; ``--output-tokens`` out, default ``DEFAULT_OUTPUT_TOKENS``).

The cheap tier is the tier of the lowest band, the strong tier the tier of the top band. ``--target-quality Q``
asks for quality >= Q x the strong tier's quality on the same outcomes (the "95 % of strong quality" of ``bench
replay``), ``--strong-share S`` for at most S of the steps on the strong tier. The target must hold at the
conservative end of a 95 % Wilson interval (a binomial proportion over the outcomes): the lower end of quality,
the upper end of the strong share; when no threshold gets there the command says how many outcomes at the same
rates it would need instead of printing a fitted guess.

Multi-band policies: the boundary between the last band of the cheap tier (counting up from the lowest band) and
the band above it moves to ``t``; every band from there up counts at the strong tier's quality and price in the
estimate. Boundaries on each side keep their values while they stay on their side of ``t``; a side where one
would cross ``t`` is rescaled proportionally instead (``[0, b] -> [0, t]`` below, ``[b, 1] -> [t, 1]`` above), so
every band keeps a share, the bands stay ordered and cover [0, 1], and each band keeps its tier and settings.

``--write OUT`` edits the policy's text (only the ``min``/``max`` values that change, and the ``difficulty``
section with ``--estimator-model``; comments and layout stay), validates the result with ``parse_policy`` and
writes it atomically. When OUT is the input file, the input is first copied to ``OUT.bak`` (refused when that
backup exists already).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from effagent.errors import EffagentError, PolicyError
from effagent.evaluation import wilson
from effagent.policy import Band, Policy, load_policy, parse_policy

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4
DECIMALS = 4


class CalibrateError(EffagentError):
    """Input calibrate cannot use; the message says which file or line and what to change."""


# ---------------------------------------------------------------- statistics


def outcomes_needed(p: float, bound: float, *, lower: bool, limit: int = 10_000_000) -> int | None:
    """The fewest outcomes at which a proportion observed at ``p`` has its Wilson lower end at least ``bound``
    (``lower``) or its upper end at most ``bound``; None when no number of outcomes gets there."""
    if (lower and p <= bound) or (not lower and p >= bound):
        return None

    def ok(n: int) -> bool:
        lo, hi = wilson(p * n, n)
        return lo >= bound - 1e-12 if lower else hi <= bound + 1e-12

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------- the search


@dataclass
class Choice:
    """One threshold and what it gives on the outcomes."""

    threshold: float
    strong_steps: int
    strong_share: float
    quality: float
    quality_interval: tuple[float, float]
    share_interval: tuple[float, float]
    relative_quality: float | None  # quality / strong quality on the same outcomes (None: strong never right)
    usd_per_1000: float


@dataclass
class Result:
    outcomes: int
    estimator: str
    cheap_tier: str
    strong_tier: str
    cheap_quality: float
    strong_quality: float
    target: str  # "quality" | "strong_share"
    target_value: float
    bound: float  # what the conservative end of the interval must reach
    output_tokens: int
    mean_input_tokens: float
    usd_all_cheap: float
    usd_all_strong: float
    supported: bool
    choice: Choice | None  # the supported choice (None when there is none)
    point_choice: Choice | None  # what the point estimates alone would pick (for the "too few" message)
    needed: int | None  # outcomes needed in all, at the same rates, when not supported (None: never)
    needed_for: Choice | None
    old_boundary: float
    bands: list[dict[str, Any]] = field(default_factory=list)  # the new bands, sorted by min
    middle_tiers: list[str] = field(default_factory=list)  # other tiers counted as the strong one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tiers(policy: Policy) -> tuple[list[Band], str, str, int]:
    """Sorted bands, cheap tier, strong tier and the index (in sorted order) of the first band above the cheap
    tier's bands."""
    bands = sorted((b for b in policy.bands if b.roles is None), key=lambda b: b.min)  # role bands stay
    cheap, strong = bands[0].tier, bands[-1].tier
    if cheap == strong:
        raise CalibrateError(f"the lowest band ({bands[0].name!r}) and the top band ({bands[-1].name!r}) both go to "
                             f"tier {cheap!r}: calibrate moves the boundary between a cheap and a strong tier; "
                             "route the top band to the strong tier first")
    j = next(i for i, b in enumerate(bands) if b.tier != cheap)
    return bands, cheap, strong, j


def _round_between(lo: float, hi: float) -> float:
    """A short decimal t with lo < t <= hi (the midpoint, rounded as far as the order allows)."""
    mid = (lo + hi) / 2
    for d in (2, 3, DECIMALS, 6, 8, 10):
        t = round(mid, d)
        if lo < t <= hi and 0 < t < 1:
            return t
    return mid


def _candidates(scores: Sequence[float]) -> list[float]:
    """One threshold per way to split the sorted scores (at or below the lowest = all strong; above the highest =
    none), each strictly inside (0, 1) so the bands on both sides of it keep a share."""
    u = sorted(set(scores))
    out: set[float] = set()
    for lo, hi in zip([0.0, *u], [*u, (u[-1] + 1.0) / 2 if u else 1.0], strict=True):
        if lo < hi:
            t = _round_between(lo, hi)
            if lo < t <= hi and 0 < t < 1:
                out.add(t)
    return sorted(out)


def new_boundaries(policy: Policy, t: float) -> list[tuple[int, float, float]]:
    """(index in ``policy.bands``, new min, new max) for every band once the cheap/strong boundary is at ``t``."""
    bands, _, _, j = _tiers(policy)
    b = bands[j].min
    cuts = [band.max for band in bands[:-1]]  # cuts[k] is the boundary between sorted bands k and k + 1
    low, high = cuts[: j - 1], cuts[j:]
    if any(c >= t for c in low):
        low = [c * t / b for c in low]
    if any(c <= t for c in high):
        high = [t + (c - b) * (1 - t) / (1 - b) for c in high]
    new_cuts = [*low, t, *high]
    # rounded like t, as long as the order holds
    for d in (DECIMALS, 6, 8, 10, None):
        rounded = [c if d is None or c == t else round(c, d) for c in new_cuts]
        edges = [0.0, *rounded, 1.0]
        if all(a < c for a, c in zip(edges, edges[1:], strict=False)):
            break
    index = {id(band): i for i, band in enumerate(policy.bands)}
    return [(index[id(band)], edges[k], edges[k + 1]) for k, band in enumerate(bands)]


def calibrate(policy: Policy, prompts: Sequence[str], cheap: Sequence[bool], strong: Sequence[bool], *,
              scores: Sequence[float], estimator: str = "", target_quality: float | None = None,
              strong_share: float | None = None, output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> Result:
    """Pick the threshold (see the module docstring). ``scores`` are the policy's estimator's scores of
    ``prompts``."""
    if (target_quality is None) == (strong_share is None):
        raise CalibrateError("give one target: --target-quality Q or --strong-share S")
    n = len(prompts)
    if n == 0:
        raise CalibrateError("no outcomes")
    bands, cheap_tier, strong_tier, j = _tiers(policy)
    pc, ps = policy.tier(cheap_tier).price, policy.tier(strong_tier).price
    tokens_in = [max(1, len(p) // CHARS_PER_TOKEN) for p in prompts]
    cost_c = [pc.cost(k, output_tokens) for k in tokens_in]
    cost_s = [ps.cost(k, output_tokens) for k in tokens_in]
    c = [bool(x) for x in cheap]
    g = [bool(x) for x in strong]
    q_cheap, q_strong = sum(c) / n, sum(g) / n
    s = np.asarray(scores, dtype=float)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    cum_c = np.concatenate([[0.0], np.cumsum(np.asarray(c, dtype=float)[order])])
    cum_g = np.concatenate([[0.0], np.cumsum(np.asarray(g, dtype=float)[order])])
    cum_uc = np.concatenate([[0.0], np.cumsum(np.asarray(cost_c)[order])])
    cum_us = np.concatenate([[0.0], np.cumsum(np.asarray(cost_s)[order])])

    def evaluate(t: float) -> Choice:
        i = int(np.searchsorted(s_sorted, t, side="left"))  # sorted rows i.. score >= t: the strong tier
        k = n - i
        correct = float(cum_c[i] + cum_g[n] - cum_g[i])
        usd = float(cum_uc[i] + cum_us[n] - cum_us[i])
        q = correct / n
        return Choice(threshold=t, strong_steps=k, strong_share=k / n, quality=q, quality_interval=wilson(correct, n),
                      share_interval=wilson(k, n), relative_quality=q / q_strong if q_strong else None,
                      usd_per_1000=1000 * usd / n)

    choices = [evaluate(t) for t in _candidates(scores)]
    if target_quality is not None:
        if not 0 < target_quality <= 1:
            raise CalibrateError(f"--target-quality {target_quality}: give a share of the strong tier's quality "
                                 "in (0, 1], e.g. 0.95")
        if q_strong == 0:
            raise CalibrateError("the strong tier is never correct on these outcomes: a quality target relative to "
                                 "it means nothing; check the strong_correct labels")
        bound = target_quality * q_strong
        target, value = "quality", target_quality
        ok = [ch for ch in choices if ch.quality_interval[0] >= bound - 1e-12]
        point = [ch for ch in choices if ch.quality >= bound - 1e-12]
        key = lambda ch: (ch.usd_per_1000, ch.strong_share, -ch.quality)  # noqa: E731
        need = [(outcomes_needed(ch.quality, bound, lower=True), ch) for ch in point]
    else:
        assert strong_share is not None
        if not 0 <= strong_share <= 1:
            raise CalibrateError(f"--strong-share {strong_share}: give a share of the steps in [0, 1], e.g. 0.3")
        bound = strong_share
        target, value = "strong_share", strong_share
        ok = [ch for ch in choices if ch.share_interval[1] <= bound + 1e-12]
        point = [ch for ch in choices if ch.strong_share <= bound + 1e-12]
        key = lambda ch: (-ch.quality, ch.usd_per_1000, ch.strong_share)  # noqa: E731
        need = [(outcomes_needed(ch.strong_share, bound, lower=False), ch) for ch in point]
    choice = min(ok, key=key) if ok else None
    point_choice = min(point, key=key) if point else None
    finite = [(m, ch) for m, ch in need if m is not None]
    needed, needed_for = (min(finite, key=lambda mc: (mc[0], key(mc[1]))) if finite else (None, None))
    middle = sorted({b.tier for b in bands[j:]} - {strong_tier})
    result = Result(
        outcomes=n, estimator=estimator, cheap_tier=cheap_tier, strong_tier=strong_tier, cheap_quality=q_cheap,
        strong_quality=q_strong, target=target, target_value=value, bound=bound, output_tokens=output_tokens,
        mean_input_tokens=sum(tokens_in) / n, usd_all_cheap=1000 * sum(cost_c) / n,
        usd_all_strong=1000 * sum(cost_s) / n, supported=choice is not None, choice=choice,
        point_choice=point_choice, needed=None if choice else needed, needed_for=None if choice else needed_for,
        old_boundary=bands[j].min, middle_tiers=middle)
    if choice is not None:
        result.bands = [{"name": policy.bands[i].name, "min": lo, "max": hi, "tier": policy.bands[i].tier}
                        for i, lo, hi in sorted(new_boundaries(policy, choice.threshold), key=lambda x: x[1])]
    return result


# ---------------------------------------------------------------- policy text


def _num(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else f"{float(x):.1f}"


def _mapping_get(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None


def _span_end(node: yaml.Node) -> int:
    """Where a node's own text ends (a block collection's last leaf, not the comments after it)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        return int(node.end_mark.index)
    kids: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            kids += [k, v]
    elif isinstance(node, yaml.SequenceNode):
        kids = list(node.value)
    return max((_span_end(k) for k in kids), default=int(node.end_mark.index))


def _compose(text: str, source: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:  # parse_policy has accepted it already; kept for direct callers
        raise CalibrateError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise CalibrateError(f"{source}:1:1: the policy must be a YAML mapping with tiers and bands")
    return root


def with_boundaries(text: str, policy: Policy, t: float, source: str = "<policy>") -> str:
    """The policy text with its bands' ``min``/``max`` values set for a cheap/strong boundary at ``t``; only the
    values that change are rewritten."""
    root = _compose(text, source)
    found = _mapping_get(root, "bands")
    if found is None or not isinstance(found[1], yaml.SequenceNode) or len(found[1].value) != len(policy.bands):
        raise CalibrateError(f"{source}: cannot find the bands list in the policy text")
    seq = found[1].value
    edits: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    for i, lo, hi in new_boundaries(policy, t):
        band = policy.bands[i]
        for key, old, new in (("min", band.min, lo), ("max", band.max, hi)):
            if old == new:
                continue
            kv = _mapping_get(seq[i], key)
            if kv is None:
                raise CalibrateError(f"{source}: band {band.name!r} has no {key!r} to change; write {key}: {old} "
                                     "in the band and run again")
            node = kv[1]
            if id(node) in seen or node.start_mark.index == node.end_mark.index:
                raise CalibrateError(f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: band "
                                     f"{band.name!r}: {key} is shared with another value (a YAML alias); write the "
                                     "number in place and run again")
            seen.add(id(node))
            edits.append((node.start_mark.index, node.end_mark.index, _num(new)))
    for start, end, new_text in sorted(edits, reverse=True):
        text = text[:start] + new_text + text[end:]
    return text


def with_learned_model(text: str, model: str, source: str = "<policy>") -> str:
    """The policy text with its difficulty section replaced by ``{estimators: [{name: learned, path: MODEL}]}``
    (added at the end when the policy has none)."""
    root = _compose(text, source)
    section = f"difficulty: {{estimators: [{{name: learned, path: {json.dumps(model)}}}]}}"
    found = _mapping_get(root, "difficulty")
    if found is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + section + "\n"
    k, v = found
    start, end = int(k.start_mark.index), _span_end(v)
    line_end = text.find("\n", end)
    rest = text[end: len(text) if line_end < 0 else line_end]
    if rest.strip().startswith("#"):  # the last line's comment described the section being replaced
        end += len(rest)
    return text[:start] + section + text[end:]


# ---------------------------------------------------------------- the command


def _read_outcomes(paths: Sequence[str]) -> list[Any]:
    from effagent.difficulty.learned import LearnError, merge_labels
    from effagent.tools.difficulty import read_outcomes

    try:
        return merge_labels(read_outcomes(paths))
    except LearnError as e:
        raise CalibrateError(str(e)) from None


def _estimator_label(policy: Policy, given: str | None = None) -> str:
    """The estimator the outcomes were scored with (``given``: the ``--estimator-model`` path as typed)."""
    refs = policy.difficulty.estimators
    if given is not None:
        return f"learned ({given})"
    return " + ".join(f"{r.name}{f' ({r.path})' if r.path else ''}{f' x{r.weight:g}' if len(refs) > 1 else ''}"
                      for r in refs)


def model_path_from(model: str, folder: Path) -> str:
    """``model`` (a path as typed: absolute, or relative to the working directory) as a policy file in ``folder``
    names it: absolute stays absolute, relative becomes relative to ``folder`` — :func:`effagent.policy.load_policy`
    reads a relative model path from the policy file's folder."""
    if Path(model).is_absolute():
        return model
    try:
        return Path(os.path.relpath(Path(model).resolve(), folder)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(Path(model).resolve())


def _fmt(ch: Choice, r: Result) -> list[str]:
    lo, hi = ch.quality_interval
    slo, shi = ch.share_interval
    rel = "-" if ch.relative_quality is None else f"{ch.relative_quality:.3f}"
    return [f"  strong share {ch.strong_share:.3f} ({ch.strong_steps} of {r.outcomes}; 95 % interval "
            f"{slo:.3f}-{shi:.3f})",
            f"  quality      {ch.quality:.3f} ({rel} of strong; 95 % interval {lo:.3f}-{hi:.3f})",
            f"  $ per 1,000 steps {ch.usd_per_1000:.4f} (all cheap {r.usd_all_cheap:.4f}, all strong "
            f"{r.usd_all_strong:.4f})"]


def report(r: Result, policy_name: str, outcomes_name: str) -> str:
    if r.target == "quality":
        goal = (f"quality >= {r.target_value:g} x strong = {r.bound:.3f} at the lower end of its 95 % Wilson "
                "interval")
    else:
        goal = f"strong share <= {r.target_value:g} at the upper end of its 95 % Wilson interval"
    lines = [f"calibrate {policy_name} on {outcomes_name}: {r.outcomes:,} outcomes, scored with {r.estimator}",
             f"cheap tier {r.cheap_tier} (alone: {r.cheap_quality:.3f} correct), strong tier {r.strong_tier} (alone: "
             f"{r.strong_quality:.3f}); per step {r.mean_input_tokens:.0f} input tokens on average (characters / "
             f"{CHARS_PER_TOKEN}) + {r.output_tokens} output tokens",
             f"target: {goal}"]
    if r.middle_tiers:
        lines.append(f"(bands above the boundary on {', '.join(r.middle_tiers)} are counted at {r.strong_tier}'s "
                     "quality and price)")
    if r.choice is not None:
        lines.append(f"boundary {r.cheap_tier} -> {r.strong_tier}: {r.old_boundary:g} -> {r.choice.threshold:g}")
        lines += _fmt(r.choice, r)
        lines.append("bands:")
        width = max(len(b["name"]) for b in r.bands)
        lines += [f"  {b['name']:<{width}} [{b['min']:g}, {b['max']:g}) {b['tier']}" for b in r.bands]
        return "\n".join(lines)
    lines.append(f"too few outcomes to support the target: with {r.outcomes:,} outcomes no boundary reaches it at the "
                 "conservative end of the interval.")
    if r.needed is not None and r.needed_for is not None:
        ch = r.needed_for
        lines.append(f"it needs about {r.needed - r.outcomes:,} more outcomes ({r.needed:,} in all) at the same rates: "
                     f"then the boundary {ch.threshold:g} (strong share {ch.strong_share:.3f}, quality "
                     f"{ch.quality:.3f}) would hold. Collect more (learning.shadow_share, record_outcome) or relax "
                     "the target.")
    else:
        lines.append("no number of outcomes at these rates would support it (the best boundary only just reaches "
                     "the target, or none does): relax the target.")
    if r.point_choice is not None:
        lines.append(f"(on the point estimates alone the boundary would be {r.point_choice.threshold:g}: not "
                     "printed as a result, the outcomes do not support it)")
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from effagent.difficulty import build_estimator
    from effagent.difficulty.learned import LearnError
    from effagent.files import InputFileError, check_output, read_text
    from effagent.policy import MAX_POLICY_BYTES

    src = Path(args.policy)
    try:
        text = read_text(src, "policy file", MAX_POLICY_BYTES)
    except InputFileError as e:
        raise PolicyError(str(src), [str(e)]) from None
    if args.write:
        check_output(args.write, "calibrated policy")  # a folder or a missing parent: refused before any work
    policy = parse_policy(text, source=str(src))
    scoring = load_policy(src)  # relative model paths read from the policy's folder, as every command reads them
    if args.estimator_model:
        given = args.estimator_model  # as typed: a relative path is from the working directory
        folder = (Path(args.write) if args.write else src).resolve().parent
        scoring = parse_policy(with_learned_model(text, str(Path(given).resolve()), str(src)),
                               source=f"{src} (with --estimator-model)")
        text = with_learned_model(text, model_path_from(given, folder), str(src))
        policy = parse_policy(text, source=f"{src} (with --estimator-model)")
    if args.output_tokens <= 0:
        raise CalibrateError(f"--output-tokens {args.output_tokens}: give a positive number of tokens")
    outcomes = _read_outcomes(args.outcomes)
    try:
        estimator = build_estimator(scoring.difficulty, scoring)
        prompts = [o.prompt for o in outcomes]
        scores = [min(1.0, max(0.0, float(s))) for s in estimator.score_prompts(prompts)]
    except (LearnError, KeyError, ValueError) as e:
        raise CalibrateError(f"{src}: the policy's estimator cannot score the outcomes: {e}") from None
    result = calibrate(policy, prompts, [o.cheap_correct for o in outcomes], [o.strong_correct for o in outcomes],
                       scores=scores, estimator=_estimator_label(policy, args.estimator_model),
                       target_quality=args.target_quality,
                       strong_share=args.strong_share, output_tokens=args.output_tokens)
    labelled = sorted({str(t) for o in outcomes if (t := getattr(o, "strong_tier", None)) is not None})
    if labelled and labelled != [result.strong_tier]:  # production lines name the tier that labelled them
        print(f"note: the outcomes were labelled against tier(s) {', '.join(labelled)}; the policy's top band goes to "
              f"{result.strong_tier}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(report(result, str(src), ", ".join(args.outcomes)))
    if result.choice is None:
        if args.write:
            print(f"effagent calibrate: {args.write} not written (the outcomes do not support the target)",
                  file=sys.stderr)
        return 1
    if args.write:
        note = sys.stderr if args.json else sys.stdout  # --json keeps stdout one JSON document
        out = Path(args.write)
        new_text = with_boundaries(text, policy, result.choice.threshold, str(src))
        new = parse_policy(new_text, source=str(out))  # raises PolicyError (exit 2) before anything is written
        want = sorted((b["min"], b["max"]) for b in result.bands)
        if sorted((b.min, b.max) for b in new.bands if b.roles is None) != want:
            raise CalibrateError(f"{out}: the edited bands do not read back as intended; nothing written")
        if out.exists() and out.resolve() == src.resolve():
            if new_text == src.read_text(encoding="utf-8"):
                print(f"{out} already has these boundaries; nothing written", file=note)
                return 0
            backup = out.with_name(out.name + ".bak")
            if backup.exists():
                raise CalibrateError(f"{backup} exists (a backup from an earlier run); move it away or --write to "
                                     "another file; nothing written")
            shutil.copy2(src, backup)
            print(f"kept the input as {backup}", file=note)
        from effagent.files import write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, new_text, "policy file")
        print(f"wrote {out} (validated)", file=note)
        moved = [r.path for r in policy.difficulty.estimators if r.path and not Path(r.path).is_absolute()]
        if moved and not args.estimator_model and out.resolve().parent != src.resolve().parent:
            print(f"note: {out} names model file(s) {', '.join(moved)} relative to its own folder "
                  f"({out.resolve().parent}); copy them there or make the paths absolute", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add ``calibrate`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "calibrate", help="the band boundary that reaches a quality or strong-share target at the least cost on "
        "your outcomes",
        description="The cheap/strong band boundary that reaches a quality or strong-share target at the least cost "
        "on your outcomes, at the conservative end of a 95 % Wilson interval; when the outcomes are too few, how many "
        "more it needs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 a boundary is supported (and written with --write); 1 too few outcomes to support the "
               "target (nothing written); 2 bad input (the file and line are named). See docs/calibration.md.")
    p.add_argument("--policy", required=True, help="policy YAML file")
    p.add_argument("--outcomes", required=True, action="append", metavar="FILE",
                   help="JSONL outcomes {id, prompt, cheap_correct, strong_correct, ...} as `difficulty learn` "
                   "reads them (repeatable)")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-quality", type=float, default=None, metavar="Q",
                      help="share of the strong tier's quality to reach, e.g. 0.95 (at the lower end of a 95 %% "
                      "Wilson interval)")
    goal.add_argument("--strong-share", type=float, default=None, metavar="S",
                      help="most share of steps on the strong tier, e.g. 0.3 (at the upper end of the interval)")
    p.add_argument("--output-tokens", type=int, default=DEFAULT_OUTPUT_TOKENS,
                   help=f"output tokens a step is priced with (default {DEFAULT_OUTPUT_TOKENS}); input tokens are "
                   "the prompt's characters / 4")
    p.add_argument("--estimator-model", default=None, metavar="MODEL",
                   help="score with this model from `difficulty learn` and write {name: learned, path: MODEL} as "
                   "the new policy's difficulty section")
    p.add_argument("--write", default=None, metavar="OUT",
                   help="write the calibrated policy here (validated, atomic; comments kept). OUT may be the input: "
                   "it is copied to OUT.bak first, and the run refuses when OUT.bak exists")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_calibrate)
