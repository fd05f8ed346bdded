"""Which way imports go: every module of ``loom`` sits in a layer of docs/architecture.md,
imports only from its own layer or below, and no import cycle exists anywhere. Imports
under ``if TYPE_CHECKING:`` and inside functions count like any other: a cycle that only
type checkers or a late call follow is still a knot for the reader."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loom"
DOC = ROOT / "docs" / "architecture.md"

Graph = Mapping[str, set[str]]


def layers_from_doc(text: str) -> list[tuple[str, list[str]]]:
    """The ```layers block of docs/architecture.md: ``name: module ...`` lines, top first."""
    match = re.search(r"```layers\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError("docs/architecture.md has no ```layers block")
    layers = []
    for line in match.group(1).splitlines():
        if line.strip():
            name, _, modules = line.partition(":")
            layers.append((name.strip(), modules.split()))
    return layers


def modules_of(package: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The loom modules ``name`` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from loom.x import y`` imports the module loom.x.y when there is one,
                # else the name y of the module loom.x.
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    resolved = {_owner(target, known) for target in targets}
    return {module for module in resolved if module is not None and module != name}


def _owner(target: str, known: set[str]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = modules_of(package)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> tuple[int, str] | None:
    """(rank, layer name) by the longest listed prefix; rank 0 is the bottom layer."""
    best: tuple[int, int, str] | None = None
    for rank, (layer, prefixes) in enumerate(reversed(layers)):
        for prefix in prefixes:
            # The facade ``loom`` names only loom/__init__.py, not every module below it.
            fits = module == prefix or (prefix != "loom" and module.startswith(prefix + "."))
            if fits and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, layer)
    return None if best is None else (best[1], best[2])


def upward_imports(graph: Graph, layers: list[tuple[str, list[str]]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module, layers)
        if here is None:
            problems.append(f"{module} is in no layer of docs/architecture.md")
            continue
        for target in sorted(targets):
            there = layer_of(target, layers)
            if there is not None and there[0] > here[0]:
                problems.append(f"{module} ({here[1]}) imports {target} ({there[1]})")
    return problems


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


@pytest.fixture(scope="module")
def layers() -> list[tuple[str, list[str]]]:
    return layers_from_doc(DOC.read_text())


def test_no_import_cycle(graph: Graph) -> None:
    assert cycles(graph) == []


def test_imports_go_down_the_layers(graph: Graph, layers: list[tuple[str, list[str]]]) -> None:
    assert upward_imports(graph, layers) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A package with a type-only cycle and an in-function upward import is refused."""
    pkg = tmp_path / "loom"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loom.low.b import B\n"
    )
    (pkg / "low" / "b.py").write_text("from . import a\ndef f():\n    from loom import high\n")
    (pkg / "high.py").write_text("import loom.low.a\n")
    layers = [("top", ["loom.high"]), ("bottom", ["loom.low", "loom"])]
    graph = import_graph(pkg)
    assert graph["loom.low.b"] == {"loom.low.a", "loom.high"}
    assert cycles(graph) == [["loom.high", "loom.low.a", "loom.low.b"]]
    assert upward_imports(graph, layers) == ["loom.low.b (bottom) imports loom.high (top)"]
    assert upward_imports(graph, layers[1:]) == ["loom.high is in no layer of docs/architecture.md"]


def test_the_kernel_knows_no_backend(graph: Graph) -> None:
    """The kernel is handed its store, model and policies through ports: it imports no
    state backend, no broker, no vendor provider and no policy."""
    backends = ("loom.state", "loom.broker", "loom.policies", "loom.providers.anthropic",
                "loom.providers.openai", "loom.providers.test")  # fmt: skip
    reached = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("loom.runtime")
        for target in targets
        if target.startswith(backends)
    }
    assert reached == set()
