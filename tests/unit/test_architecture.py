"""The layering rule: the core never imports an agent framework or the integrations."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "effagent"
FORBIDDEN = ("langchain", "langgraph", "langchain_core", "langchain_litellm", "effagent.integrations", "integrations")
COMPOSITION_ROOT = {"cli.py"}  # loads sub-commands lazily by module name
ADAPTERS = {"integrations", "demo.py"}  # the framework adapters and the demo agent built on them


def test_core_imports_no_framework():
    offenders = []
    for path in CORE.rglob("*.py"):
        if path.name in COMPOSITION_ROOT and path.parent == CORE:
            continue
        if path.relative_to(CORE).parts[0] in ADAPTERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE)}: {n}" for n in names
                          if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert not offenders, offenders


def test_only_decide_chooses_a_tier():
    """No module but decide.py builds a Decision."""
    builders = [p.relative_to(CORE) for p in CORE.rglob("*.py")
                if "Decision(" in p.read_text() and p.name != "decide.py"]
    assert not builders, builders
