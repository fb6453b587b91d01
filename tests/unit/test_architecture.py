"""The layering rules, read off the source (every import counts: at module level, inside functions, under
``TYPE_CHECKING``, and module names given to ``importlib.import_module`` as strings):

- the packages and modules of ``effagent`` form no import cycle;
- the core never imports an agent framework, nor the adapters and tools built on it;
- a ``Decision`` is built only in ``effagent/decide.py``;
- no library module imports a tool module (:data:`LIBRARY`, :data:`TOOLS`);
- a lever never imports another lever (``levers/answers.py`` and ``levers/base.py`` are what levers share).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "effagent"
FRAMEWORKS = ("langchain", "langgraph", "langchain_core", "langchain_litellm")
# built on the frameworks: adapters, and the tools that run agents (benchmarks, the demo, the command line)
APPLICATION = {"integrations", "tools"}
# what an application builds on (a package name covers its modules) ...
LIBRARY = ("policy", "decide", "step", "request", "governor", "ledger", "levers", "difficulty", "telemetry",
           "integrations", "records", "errors", "checkin", "observe", "outcomes", "capabilities", "redact", "files",
           "llm")
# ... and the tools beside it, all under effagent/tools/: commands, benchmarks, the demo and its report,
# launchers, generated docs
TOOLS = ("tools",)
LEVER_SHARED = ("answers", "base")  # levers/ modules every lever may import


def _units() -> dict[str, Path]:
    """Every unit of the layering: a sub-package (``effagent.ledger``) or a top-level module (``effagent.decide``)."""
    out = {}
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            out[path.name] = path
        elif path.suffix == ".py" and path.name != "__init__.py":
            out[path.stem] = path
    return out


def _files(unit: Path) -> list[Path]:
    return sorted(unit.rglob("*.py")) if unit.is_dir() else [unit]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _loads_by_name(tree: ast.AST) -> bool:
    """Whether the module imports modules named by strings (``importlib.import_module`` / ``__import__``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                return True
    return False


def imported_names(path: Path) -> Iterator[tuple[str, int]]:
    """Every module name ``path`` imports (absolute), with its line: ``from a import b`` gives ``a`` and
    ``a.b`` (b may be a module); in a module that imports by name, every dotted string naming an effagent or
    framework module counts too."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    by_name = _loads_by_name(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source, node.lineno
            for alias in node.names:
                yield f"{source}.{alias.name}", node.lineno
        elif (by_name and isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.split(".")[0] in ("effagent", *FRAMEWORKS)
              and all(p.isidentifier() for p in node.value.split("."))):
            yield node.value, node.lineno


def _unit_of(name: str, units: dict[str, Path]) -> str | None:
    parts = name.split(".")
    if parts[0] != "effagent" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in units else None


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> unit it imports -> where (``file:line``)."""
    units = _units()
    graph: dict[str, dict[str, list[str]]] = {u: {} for u in units}
    for unit, root in units.items():
        for path in _files(root):
            for name, line in imported_names(path):
                target = _unit_of(name, units)
                if target is not None and target != unit:
                    graph[unit].setdefault(target, []).append(f"{path.relative_to(PACKAGE)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_effagents_packages_and_modules():
    graph = unit_graph()
    found = cycles(graph)
    detail = [{a: {b: graph[a][b][:2] for b in comp if b in graph[a]} for a in comp} for comp in found]
    assert not found, f"import cycles: {detail}"


def test_the_core_imports_no_framework_and_no_adapter():
    units = _units()
    offenders = []
    for unit, root in units.items():
        if unit in APPLICATION:
            continue
        for path in _files(root):
            for name, line in imported_names(path):
                top = name.split(".")[0]
                if top in FRAMEWORKS or _unit_of(name, units) in APPLICATION:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {name}")
    assert not offenders, offenders


def test_only_decide_builds_a_decision():
    builders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() == "decide.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            direct = (isinstance(f, ast.Name) and f.id == "Decision") or (
                isinstance(f, ast.Attribute) and f.attr == "Decision")
            via_pydantic = (isinstance(f, ast.Attribute) and f.attr in ("model_validate", "model_construct")
                            and isinstance(f.value, ast.Name) and f.value.id == "Decision")
            copied = isinstance(f, ast.Attribute) and f.attr == "model_copy" and "decision" in ast.unparse(f.value)
            if direct or via_pydantic or copied:
                builders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not builders, builders


def _is(module: str, names: tuple[str, ...]) -> bool:
    """Whether ``effagent.<...>`` module ``module`` is one of ``names`` or inside one of them."""
    rel = module.removeprefix("effagent.")
    return module.startswith("effagent.") and any(rel == n or rel.startswith(n + ".") for n in names)


def test_no_library_module_imports_a_tool():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if not _is(module, LIBRARY) or _is(module, TOOLS):
            continue
        for name, line in imported_names(path):
            if _is(name, TOOLS):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {name}")
    assert not offenders, offenders


def test_every_module_is_library_or_tool():
    """A new module is placed on purpose: in the library, among the tools, or with the shipped data."""
    known = (*LIBRARY, *TOOLS, "evaluation", "__main__", "policies", "data", "demo_data")
    stray = [m for m in map(_module_name, PACKAGE.rglob("*.py")) if m != "effagent" and not _is(m, known)]
    assert not stray, stray


def test_a_lever_never_imports_another_lever():
    levers = PACKAGE / "levers"
    names = {p.stem for p in levers.glob("*.py")} - {"__init__", *LEVER_SHARED}
    offenders = []
    for path in sorted(levers.glob("*.py")):
        if path.stem not in names:
            continue
        for name, line in imported_names(path):
            parts = name.split(".")
            if parts[:2] == ["effagent", "levers"] and len(parts) > 2 and parts[2] in names - {path.stem}:
                offenders.append(f"levers/{path.name}:{line}: {name}")
    assert not offenders, offenders


def test_the_rules_catch_what_they_guard(tmp_path):
    """The checks above see imports inside functions, relative imports and import_module strings."""
    src = tmp_path / "effagent" / "levers"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    mod = src / "x.py"
    mod.write_text("def f():\n    from ..bench import replay\n    import importlib\n"
                   "    importlib.import_module('langchain_core.messages')\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "effagent"
    try:
        names = [n for n, _ in imported_names(mod)]
    finally:
        PACKAGE = saved
    assert "effagent.bench" in names and "effagent.bench.replay" in names and "langchain_core.messages" in names
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]
    assert _is("effagent.tools.difficulty", TOOLS) and _is("effagent.tools.serving.vllm_local", TOOLS)
    assert _is("effagent.tools.bench.baselines.trained", TOOLS)  # the benchmark baselines are not the library's
    assert not _is("effagent.difficulty.rule", TOOLS) and _is("effagent.difficulty.rule", LIBRARY)
    assert not _is("effagent.tools.difficulty", LIBRARY)
    assert not _is("effagent.tools.policy_docs", LIBRARY)
