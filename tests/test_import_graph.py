"""No circles between shoal's modules: read from the source (AST), not from what happens to be
imported at run time.

A module-level import (``TYPE_CHECKING`` blocks included: a type is a dependency too) must never
close a circle. A deferred import inside a function may, only where it is listed below with why:
a new one fails this test, and so does a listed one that is gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"

#: Circles closed only by imports inside functions, each on purpose.
DEFERRED_CIRCLES = {
    # The blob store loads the S3 store (and boto3) only when SHOAL_BLOBS_URL names a bucket,
    # and the S3 store its job files (kept beside the blobs) only when a job's are asked for.
    frozenset({"shoal.store.blobs", "shoal.store.s3blobs", "shoal.store.s3jobfiles"}),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (SRC / "shoal").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path], *, deferred: bool) -> set[str]:
    """The shoal modules ``name`` imports: at module level (and in its ``if`` blocks, which is
    where TYPE_CHECKING imports are), plus those inside functions when ``deferred``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        nodes.append(node)
        if deferred or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    targets: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    targets.add(full)
                elif base in known:
                    targets.add(base)
    targets.discard(name)
    return targets


def _circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            if children:
                child = children.pop()
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def _graph(*, deferred: bool) -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known, deferred=deferred) for name, path in known.items()}


def test_no_module_level_import_closes_a_circle() -> None:
    assert _circles(_graph(deferred=False)) == set()


def test_circles_through_deferred_imports_are_only_the_listed_ones() -> None:
    assert _circles(_graph(deferred=True)) == DEFERRED_CIRCLES


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset({"a", "b", "c"})}
    assert _circles({"a": {"b"}, "b": set()}) == set()


def test_the_runner_and_the_site_job_know_only_the_interface_they_are_given() -> None:
    graph = _graph(deferred=True)
    assert "shoal.scheduler.scheduler" not in graph["shoal.scheduler.runner"]
    assert "shoal.site.agent" not in graph["shoal.site.job"]


def _package(module: str) -> str:
    """``shoal.scheduler.runner`` -> ``shoal.scheduler``; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (SRC / "shoal" / parts[1]).is_dir() else module


def _package_graph(*, deferred: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in _graph(deferred=deferred).items():
        mine = _package(module)
        graph.setdefault(mine, set()).update(_package(t) for t in targets if _package(t) != mine)
    for targets in list(graph.values()):
        for target in targets:
            graph.setdefault(target, set())
    return graph


#: Circles between packages closed only by imports inside functions, each on purpose.
DEFERRED_PACKAGE_CIRCLES = {
    # A job's privacy block is checked where the job definition is read (wire.jobdef, at
    # submit and at the site), by the privacy package that owns its rules; privacy's own
    # modules use the wire's model files and messages.
    frozenset({"shoal.privacy", "shoal.wire"}),
    # The CLI starts the dashboard (a command of its own, loaded only when run), which draws a
    # finished job's curves with the plot command's reader; a recipe run from a job.py prints
    # its metrics with the CLI's one number formatter.
    frozenset({"shoal.cli", "shoal.dashboard", "shoal.recipes"}),
}


def test_no_module_level_import_makes_packages_depend_on_each_other() -> None:
    """The packages of docs/architecture.md's code map form no circle: the client API
    (shoal.fl) may use the workflows' code, never the other way round, and so on."""
    assert _circles(_package_graph(deferred=False)) == set()


def test_package_circles_through_deferred_imports_are_only_the_listed_ones() -> None:
    assert _circles(_package_graph(deferred=True)) == DEFERRED_PACKAGE_CIRCLES
