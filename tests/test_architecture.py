"""The shape of the package: who imports whom (issue "One shape for the monitor").

Every module of ``ibmonitor`` is parsed with :mod:`ast` (nothing is imported)
and every import statement counts, those inside functions and under
``if TYPE_CHECKING:`` included:

- the module import graph has no cycle;
- no module imports a private name (``_name``, not ``__dunder__``) of another
  module, except from a private module (one whose own file name starts with
  ``_``: ``ibmonitor/_validation.py``, ``ibmonitor/estimators/_common.py``);
- the run store imports neither the analysis functions, the monitor, plotting,
  the report nor TensorBoard.

Edges: ``import ibmonitor.x.y`` is an edge to module ``ibmonitor.x.y``;
``from ibmonitor.x import name`` to ``ibmonitor.x.name`` when that is a
module, else to ``ibmonitor.x``. A package ``__init__`` importing its own
submodules is normal and not an edge; a submodule importing a sibling with
``from . import sibling`` is an edge to the sibling, not to the package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ibmonitor"
ROOT = "ibmonitor"

#: Modules this refactor is responsible for; their checks must pass now.
OWNED = ("ibmonitor.storage", "ibmonitor.analysis", "ibmonitor.cli")
#: What the run store may not reach, directly or through other modules.
NOT_FROM_STORE = (
    "ibmonitor.analysis",
    "ibmonitor.monitor",
    "ibmonitor.plotting",
    "ibmonitor.report",
    "ibmonitor.tensorboard",
    "ibmonitor.estimation",
)


@dataclass(frozen=True)
class Import:
    """One imported thing: the module it resolves to, and the name if any."""

    source: str  # the importing module
    target: str  # the module imported (or imported from)
    name: Optional[str]  # ``from target import name`` (None for ``import``)
    line: int

    def where(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else self.target
        return f"{self.source} (line {self.line}): {what}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


FILES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES: Set[str] = set(FILES)


def is_private_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf.startswith("_") and not (leaf.startswith("__") and leaf.endswith("__"))


def is_private_name(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def known_module(dotted: str) -> Optional[str]:
    """The longest prefix of ``dotted`` that is a module of the package."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def resolve_from(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <level dots><node.module> import ...``."""
    if not node.level:
        return node.module or ""
    package = module if is_package(FILES[module]) else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str) -> List[Import]:
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"), str(FILES[module]))
    found: List[Import] = []
    for node in ast.walk(tree):  # every import, at any depth
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = known_module(alias.name)
                if target is not None:
                    found.append(Import(module, target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(module, node)
            if base != ROOT and not base.startswith(ROOT + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    found.append(Import(module, sub, None, node.lineno))
                else:
                    target = known_module(base) or base
                    found.append(Import(module, target, alias.name, node.lineno))
    return found


IMPORTS: Dict[str, List[Import]] = {}
#: Modules that do not parse (another change in progress): reported by a test.
UNPARSED: Dict[str, str] = {}
for _module in sorted(MODULES):
    try:
        IMPORTS[_module] = imports_of(_module)
    except SyntaxError as _err:
        IMPORTS[_module] = []
        UNPARSED[_module] = f"{_err.msg} (line {_err.lineno})"


def counts_as_edge(imp: Import) -> bool:
    if imp.target == imp.source:
        return False
    # A package __init__ importing its own submodules (re-exports).
    return not (
        is_package(FILES[imp.source]) and imp.target.startswith(imp.source + ".")
    )


def graph() -> Dict[str, Dict[str, Import]]:
    edges: Dict[str, Dict[str, Import]] = {m: {} for m in MODULES}
    for module, found in IMPORTS.items():
        for imp in found:
            if counts_as_edge(imp):
                edges[module].setdefault(imp.target, imp)
    return edges


def strongly_connected(edges: Dict[str, Dict[str, Import]]) -> List[List[str]]:
    """Tarjan's algorithm (iterative); return components of more than one module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    out: List[List[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: List[Tuple[str, List[str]]] = [(start, sorted(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, {}))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def cycle_in(component: List[str], edges: Dict[str, Dict[str, Import]]) -> List[str]:
    """One cycle through the component's first module (breadth-first, shortest)."""
    members = set(component)
    start = component[0]
    parents: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return component  # pragma: no cover - a component always has a cycle


def describe_cycles(components: List[List[str]], edges) -> str:
    lines = []
    for component in components:
        cycle = cycle_in(component, edges)
        lines.append(f"import cycle among {component}:")
        for a, b in zip(cycle, cycle[1:]):
            lines.append(f"    {edges[a][b].where()}")
    return "\n".join(lines)


def reachable(start: str, edges: Dict[str, Dict[str, Import]]) -> Dict[str, str]:
    """Modules reachable from ``start``, each with the chain that reaches it."""
    chains = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt not in chains:
                    chains[nxt] = f"{chains[node]} -> {nxt}"
                    following.append(nxt)
        frontier = following
    return chains


def owned(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in OWNED)


# -- the checker checks what it should -------------------------------------------------


def test_the_parser_sees_imports_inside_functions_and_relative_ones():
    found = {(i.target, i.name) for i in IMPORTS["ibmonitor.cli"]}
    # cli imports these inside _dispatch only.
    assert ("ibmonitor.analysis", "summary_table") in found
    assert ("ibmonitor.storage", "load_run") in found
    writer = {(i.target, i.name) for i in IMPORTS["ibmonitor.storage.writer"]}
    assert ("ibmonitor.storage.files", "CsvTable") in writer
    assert ("ibmonitor", "__version__") in writer  # ``from .. import``
    assert "ibmonitor.storage.writer" in MODULES and "ibmonitor" in MODULES


def test_cycles_and_private_imports_are_found_in_made_up_modules():
    edges = {
        "a": {"b": Import("a", "b", None, 1)},
        "b": {"c": Import("b", "c", None, 2)},
        "c": {"a": Import("c", "a", "_x", 3), "d": Import("c", "d", None, 4)},
        "d": {},
    }
    components = strongly_connected(edges)
    assert components == [["a", "b", "c"]]
    message = describe_cycles(components, edges)
    assert "c (line 3): from a import _x" in message
    assert cycle_in(components[0], edges) == ["a", "b", "c", "a"]
    assert is_private_module("ibmonitor.estimators._common")
    assert not is_private_module("ibmonitor.__main__")
    assert is_private_name("_flat") and not is_private_name("__version__")


def test_every_module_parses():
    assert not UNPARSED, f"modules that do not parse: {UNPARSED}"


# -- (a) no import cycle ---------------------------------------------------------------


def test_the_module_import_graph_has_no_cycle():
    edges = graph()
    components = strongly_connected(edges)
    assert not components, "\n" + describe_cycles(components, edges)


@pytest.mark.parametrize("module", OWNED)
def test_the_store_analysis_and_cli_are_in_no_cycle(module):
    edges = graph()
    components = [c for c in strongly_connected(edges) if any(owned(m) for m in c)]
    assert not components, "\n" + describe_cycles(components, edges)


def test_the_store_reaches_neither_analysis_monitor_nor_plotting():
    edges = graph()
    bad = []
    for module in sorted(MODULES):
        if not owned(module) or not module.startswith("ibmonitor.storage"):
            continue
        for target, chain in reachable(module, edges).items():
            if any(target == n or target.startswith(n + ".") for n in NOT_FROM_STORE):
                bad.append(chain)
    assert not bad, "the run store imports what it may not:\n    " + "\n    ".join(bad)


# -- (b) no private names of other modules ---------------------------------------------


def private_imports(found: List[Import]) -> List[Import]:
    return [
        imp
        for imp in found
        if imp.name is not None
        and is_private_name(imp.name)
        and imp.target != imp.source
        and not is_private_module(imp.target)
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_private_name_of_another(module):
    bad = private_imports(IMPORTS[module])
    assert not bad, (
        f"{module} imports private names of other modules (make them public, "
        "or move them to a private module such as ibmonitor/_validation.py):\n    "
        + "\n    ".join(imp.where() for imp in bad)
    )


def test_private_imports_from_private_modules_are_allowed():
    allowed = Import("ibmonitor.analysis", "ibmonitor._validation", "_check", 1)
    dunder = Import("ibmonitor.storage.writer", "ibmonitor", "__version__", 1)
    forbidden = Import("ibmonitor.analysis", "ibmonitor.storage", "_wide", 1)
    sibling = Import("ibmonitor.measures.pac_bayes", "ibmonitor.measures.sharpness",
                     "_flat", 1)  # fmt: skip
    assert private_imports([allowed, dunder, forbidden, sibling]) == [
        forbidden,
        sibling,
    ]


# -- everything imports ----------------------------------------------------------------


def test_the_main_modules_import_in_a_fresh_interpreter():
    code = (
        "import ibmonitor, ibmonitor.storage, ibmonitor.analysis, "
        "ibmonitor.plotting, ibmonitor.report, ibmonitor.monitor, "
        "ibmonitor.measures, ibmonitor.tensorboard.writer"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
