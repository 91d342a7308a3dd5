"""The package's shape, read from the source with `ast`: imports and who writes the catalog.

Every import counts, module-level or inside a function: a circle closed by a
lazy import is still a circle (the CLI once had one with the evaluation's).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "pipeline"
# `teaprint doctor` and `install-service` are commands: they look at every part, the server's rules included.
FRONT_ENDS = ("pipeline.cli", "pipeline.__main__", "pipeline.daemon", "pipeline.server", "pipeline.evaluation", "pipeline.training",
              "pipeline.ops.doctor", "pipeline.ops.install")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def sources() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=1)
def imports() -> dict[str, set[str]]:
    """Module -> the pipeline modules it imports (a name imported from a package counts as its submodule when it is one)."""
    known = set(sources())
    graph: dict[str, set[str]] = {}
    for name, tree in sources().items():
        package = name if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base not in known:
                    continue
                subs = {f"{base}.{a.name}" for a in node.names} & known
                edges.update(subs or {base})
                if len(subs) < len(node.names):
                    edges.add(base)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_import_graph_is_read_and_the_checks_can_fail() -> None:
    graph = imports()
    assert "pipeline.engine" in graph["pipeline.cli"] or "pipeline.engine" in reachable(graph, "pipeline.cli")
    assert "pipeline.catalog.record" in graph["pipeline.catalog.writer"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_pipeline() -> None:
    assert cycles(imports()) == []


def test_the_server_imports_nothing_from_the_daemon() -> None:
    graph = imports()
    for module in (m for m in graph if m.startswith("pipeline.server")):
        leaks = sorted(m for m in reachable(graph, module) if m.startswith("pipeline.daemon"))
        assert not leaks, f"{module} reaches {leaks}"


def test_lower_layers_never_import_a_front_end() -> None:
    graph = imports()
    for module, edges in graph.items():
        if module.startswith(FRONT_ENDS):
            continue
        upward = sorted(m for m in edges if m.startswith(FRONT_ENDS))
        assert not upward, f"{module} imports {upward}"


def test_only_the_catalog_writes_entries_and_only_the_engine_builds_them() -> None:
    """One writer: `commit` / `replace_all` are called inside `pipeline.catalog` only; `NewEntry(...)` is built in the engine only."""
    for name, tree in sources().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("commit", "replace_all"):
                assert name.startswith("pipeline.catalog"), f"{name}:{node.lineno} calls .{func.attr}() on the record"
            if isinstance(func, ast.Name) and func.id == "NewEntry":
                assert name == "pipeline.engine", f"{name}:{node.lineno} builds a NewEntry by hand"
