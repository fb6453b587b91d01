"""Loading a policy file: bounded YAML (size, aliases, nesting, node count), duplicate keys and non-finite
numbers refused, ``${VAR}`` read, and every problem reported as ``PATH:LINE:COL: field.path: what to change``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from effagent.errors import PolicyError
from effagent.policy.checks import CrossCheckError
from effagent.policy.environment import string_secrets, walk_env
from effagent.policy.schema import Policy
from effagent.redact import Redactor

#: the most a policy file may hold or make the YAML loader do; a policy is a few kilobytes
MAX_POLICY_BYTES = 64 * 1024
MAX_ALIASES = 100  # alias uses (*name) in one file
MAX_NODES = 5_000  # YAML nodes once every alias is expanded (what the loader builds)
MAX_DEPTH = 64  # nesting of mappings and lists


def _locate(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], yaml.Node]:
    """Map each field path to its YAML node (for LINE:COL in errors)."""
    out: dict[tuple[Any, ...], yaml.Node] = {path: node}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = v
            out[(path + (key,), "key")] = k  # type: ignore[index]
            out.update(_locate(v, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_locate(v, path + (i,)))
    return out



def _fmt_loc(loc: tuple[Any, ...]) -> str:
    """``tiers.small.model``; a key with a line break or another unprintable character is quoted (``'\\r'``), so
    that a problem stays on its one line."""
    return ".".join(repr(p) if isinstance(p, str) and not p.isprintable() else str(p) for p in loc) or "(top level)"


def _position(nodes: dict[tuple[Any, ...], yaml.Node], loc: tuple[Any, ...], key: bool = False) -> str:
    for n in range(len(loc), -1, -1):
        node = nodes.get((loc[:n], "key")) if key and n == len(loc) else None  # type: ignore[call-overload]
        node = node or nodes.get(loc[:n])
        if node is not None:
            return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    return "1:1"


def _hint(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (see `effagent policy schema`)"
    if kind == "missing":
        return "required; add it"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg += f" (got {err.get('input')!r})"
    return msg


class _Refused(Exception):
    """The YAML asks the loader for more than a policy may (aliases, nesting, size): where and why."""

    def __init__(self, mark: Any, message: str) -> None:
        self.mark = mark
        self.message = message
        super().__init__(message)


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, bounded: at most MAX_ALIASES alias uses and MAX_DEPTH levels of nesting while
    composing (what the expanded tree may hold is checked by :func:`_check_tree` before anything is built)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(self.peek_event().start_mark, f"more than {MAX_NODES:,} values; is it a policy?")
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(self.peek_event().start_mark, f"more than {MAX_ALIASES} aliases (*name); write the "
                               "values out")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep; flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_tree(root: yaml.Node, loader: _PolicyLoader) -> list[tuple[Any, str]]:
    """Problems of a composed policy before it is built: duplicate keys and non-finite numbers (as (mark,
    message) pairs); raises :class:`_Refused` for an alias that refers to its own mapping or list, or aliases
    that expand the tree past MAX_NODES nodes (a "billion laughs" file). Each distinct node is visited once."""
    import math

    sizes: dict[int, int] = {}
    active: set[int] = set()
    problems: list[tuple[Any, str]] = []

    def visit(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(node.start_mark, "an alias refers to the mapping or list it is in (&x ... *x inside "
                           "it); write the value out")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    first = seen.setdefault((k.tag, k.value), k)
                    if first is not k:
                        problems.append((k.start_mark, f"duplicate key {k.value!r} (first at line "
                                         f"{first.start_mark.line + 1}, column {first.start_mark.column + 1}); "
                                         "keep one (YAML would silently keep the last)"))
                total += visit(k) + visit(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                total += visit(v)
        elif node.tag == _FLOAT_TAG:
            try:
                finite = math.isfinite(loader.construct_yaml_float(node))
            except (ValueError, OverflowError):
                finite = False
            if not finite:
                problems.append((node.start_mark, f"{node.value!r} is not a finite number; write a number (leave a "
                                 "limit out for none)"))
        active.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise _Refused(node.start_mark, f"aliases expand the policy to more than {MAX_NODES:,} values (an "
                           "alias bomb?); write the values out")
        return total

    visit(root)
    return problems


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """How deep ``[`` / ``{`` nest in the text (quotes ignored: an over-estimate). PyYAML's scanner looks ahead
    over every open flow bracket at each one (quadratic), so a deep file is refused before it is scanned."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        pos = f"{mark.line + 1}:{mark.column + 1}"
    elif isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        pos = f"{line}:{e.position - (text.rfind(chr(10), 0, e.position) + 1) + 1}"
        return f"{pos}: not valid YAML: character {chr(e.character)!r} is not allowed in a policy file"
    else:
        pos = "1:1"
    return f"{pos}: not valid YAML: {getattr(e, 'problem', None) or e}"


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The policy text's node tree and the data built from it, refused with PATH:LINE:COL when it is too big,
    not YAML, asks for too much (aliases, nesting), or has duplicate keys or non-finite numbers."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(source, [f"{source}:1:1: {size:,} bytes, more than a policy may have "
                                   f"({MAX_POLICY_BYTES:,}); is it the right file?"])
    depth = _flow_depth(text)
    if depth > MAX_DEPTH:
        raise PolicyError(source, [f"{source}:1:1: brackets nested {depth} levels deep (more than {MAX_DEPTH}); "
                                   "flatten it"])
    try:
        loader = _PolicyLoader(text)
    except yaml.YAMLError as e:
        raise PolicyError(source, [f"{source}:{_yaml_problem(e, text)}"]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        problems = _check_tree(root, loader)
        if problems:
            raise PolicyError(source, [f"{source}:{m.line + 1}:{m.column + 1}: {msg}" for m, msg in problems])
        return root, loader.construct_document(root)
    except _Refused as e:
        raise PolicyError(source, [f"{source}:{e.mark.line + 1}:{e.mark.column + 1}: {e.message}"]) from None
    except yaml.YAMLError as e:
        raise PolicyError(source, [f"{source}:{_yaml_problem(e, text)}"]) from None
    finally:
        loader.dispose()


def parse_policy(text: str, source: str = "<policy>", env: dict[str, str] | None = None) -> Policy:
    """Validate policy YAML text. Raises PolicyError with ``source:LINE:COL`` lines."""
    try:
        return _parse_policy(text, source, dict(os.environ) if env is None else env)
    except RecursionError:
        raise PolicyError(source, [f"{source}:1:1: the policy nests too deeply or an alias refers to itself "
                                   "(&x ... *x inside it); flatten it"]) from None


def _parse_policy(text: str, source: str, env: dict[str, str]) -> Policy:
    root, data = _compose(text, source)
    if not isinstance(data, dict) or root is None:
        raise PolicyError(source, [f"{source}:1:1: the policy must be a YAML mapping with tiers and bands"])
    nodes = _locate(root)
    env_errs: list[tuple[tuple[Any, ...], str]] = []
    secrets: set[str] = set()
    data = walk_env(data, env, (), env_errs, secrets)
    redact = Redactor(secrets | string_secrets(data))
    if env_errs:
        raise PolicyError(source, [f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}" for loc, m in env_errs])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        problems: list[str] = []
        for err in e.errors(include_url=False):
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, CrossCheckError):
                for loc, m in ctx_err.problems:
                    problems.append(redact(f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}"))
                continue
            loc = tuple(err["loc"])
            key = err["type"] == "extra_forbidden"
            problems.append(redact(f"{source}:{_position(nodes, loc, key)}: {_fmt_loc(loc)}: {_hint(err)}"))
        raise PolicyError(source, problems) from None
    policy._env_secrets = frozenset(secrets)
    file_problems = _file_problems(policy)
    if file_problems:
        raise PolicyError(source, [redact(f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}")
                                   for loc, m in file_problems])
    return policy


def _file_problems(policy: Policy) -> list[tuple[tuple[Any, ...], str]]:
    """Files the policy appends to that could not be written, or would block (a FIFO, a directory, a device):
    the trace file (file exporter) and the outcomes file."""
    from effagent.files import writable_problem

    out: list[tuple[tuple[Any, ...], str]] = []
    tel = policy.telemetry
    if tel.enabled and tel.exporter == "file":
        p = Path(tel.path)  # and the metrics file beside it (effagent.telemetry.exporters.metrics_path)
        for path in (tel.path, str(p.with_name(p.stem + ".metrics" + (p.suffix or ".jsonl")))):
            why = writable_problem(path)
            if why:
                out.append((("telemetry", "path"), f"{why}; give a regular file's path (or exporter: none)"))
                break
    if policy.learning.outcomes:
        why = writable_problem(policy.learning.outcomes)
        if why:
            out.append((("learning", "outcomes"), f"{why}; give a regular file's path"))
    return out


def load_policy(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Policy:
    """Read and validate a policy file. A relative model ``path`` of a ``learned`` estimator is read from the
    policy file's folder (where ``effagent calibrate --write`` puts the policy next to its model)."""
    from effagent.files import InputFileError, read_text

    p = Path(path)
    try:
        text = read_text(p, "policy file", MAX_POLICY_BYTES)
    except InputFileError as e:
        msg = str(e)  # "PATH: what" or "PATH:LINE:COL: what"
        rest = msg[len(str(p)) + 1:] if msg.startswith(f"{p}:") else " " + msg
        if not re.match(r"\d+:\d+: ", rest):
            rest = "1:1:" + rest
        raise PolicyError(str(p), [f"{p}:{rest}"]) from None
    policy = parse_policy(text, source=str(p), env=env)
    refs = policy.difficulty.estimators
    if not any(r.path and not Path(r.path).is_absolute() for r in refs):
        return policy
    here = p.resolve().parent
    refs = [r.model_copy(update={"path": str(here / r.path)}) if r.path and not Path(r.path).is_absolute() else r
            for r in refs]
    return policy.model_copy(update={"difficulty": policy.difficulty.model_copy(update={"estimators": refs})})


def policy_json_schema() -> str:
    return json.dumps(Policy.model_json_schema(), indent=2)
