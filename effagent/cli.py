"""The ``effagent`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from effagent.errors import EffagentError, PolicyError

# modules that add their own sub-commands: (module, function, parent group or None)
_REGISTRARS: list[tuple[str, str, str | None]] = [
    ("effagent.demo", "register", None),
    ("effagent.difficulty.commands", "register", None),
    ("effagent.bench.replay", "register", "bench"),
    ("effagent.bench.levers", "register", "bench"),
    ("effagent.bench.overhead", "register", "bench"),
    ("effagent.serving.vllm_local", "register", "local-vllm"),
    ("effagent.telemetry.report", "register", None),
]


def _cmd_validate(args: argparse.Namespace) -> int:
    from effagent.policy import load_policy

    ok = True
    for path in args.paths:
        try:
            policy = load_policy(path)
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
    from effagent.policy_docs import render

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
    p.add_argument("paths", nargs="+", metavar="PATH", help="policy YAML file(s)")
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
    for module, func, parent in _REGISTRARS:
        getattr(importlib.import_module(module), func)(groups[parent] if parent else sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolicyError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    except EffagentError as e:
        print(f"effagent: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("effagent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
