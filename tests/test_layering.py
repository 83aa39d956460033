"""Imports point down the layers of docs/architecture.md, no two modules import each other (not even lazily),
and pure math never imports plotting."""

import ast
import textwrap
from pathlib import Path

import loclab

SRC = Path(loclab.__file__).parent
# rank of each top-level module/package; a module may import only from ranks <= its own
RANKS = {
    "ops": 0, "metrics": 1, "data": 2, "models": 3, "losses": 4, "config": 4, "recipes": 4, "engine": 5, "analysis": 6,
    "export": 6,
    "evaluation": 7, "viz": 8, "report": 9, "predict": 9, "study": 10, "bench": 10, "cli": 11, "cli_parser": 11,
    "__init__": 0, "__main__": 12, "errors": 0, "atomic": 0,
}
NO_MATPLOTLIB = ("ops", "metrics", "data", "models", "losses", "engine", "analysis", "evaluation", "bench")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _layer(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_every_module_has_a_layer():
    assert {_layer(p) for p in SRC.rglob("*.py")} <= set(RANKS)


def test_imports_point_down():
    violations = []
    for path in SRC.rglob("*.py"):
        mine = RANKS[_layer(path)]
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "loclab" and len(parts) > 1 and RANKS[parts[1]] > mine:
                violations.append(f"{path.relative_to(SRC)} imports {module}")
    assert violations == []


def test_pure_layers_never_import_matplotlib():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _layer(p) in NO_MATPLOTLIB
                 and any(m.split(".")[0] == "matplotlib" for m in _imports(p))]
    assert offenders == []


# ------------------------------------------------------------------------------------------------- import cycles
#
# The graph has one node per module (``pkg/__init__.py`` is the node ``pkg``) and an edge for every import
# statement anywhere in a module, inside functions too (a lazy import still closes a cycle, it only hides it
# until run time), and for ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
# ``from a.b import c`` points to the module ``a.b.c`` when there is one, else to ``a.b``. Importing ``a.b.c``
# also runs ``a/__init__.py`` and ``a/b/__init__.py``; those implicit edges are left out, as every package whose
# ``__init__`` re-exports its submodules would otherwise be a cycle. Imports under ``if TYPE_CHECKING:`` never
# run and are left out too.


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _imported_names(path: Path, module: str, is_package: bool):
    """Dotted names ``path`` imports: statements at any depth and literal ``import_module`` calls."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base_parts = package_parts[: len(package_parts) - node.level + 1] if node.level else []
            base = ".".join(base_parts + ([node.module] if node.module else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            target = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(target, str):
                anchor = next((k.value.value for k in node.keywords if k.arg == "package"
                               and isinstance(k.value, ast.Constant)), None)
                if target.startswith(".") and anchor:
                    level = len(target) - len(target.lstrip("."))
                    anchor_parts = anchor.split(".")
                    target = ".".join(anchor_parts[: len(anchor_parts) - level + 1] + [target.lstrip(".")])
                yield target


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every ``.py`` file under ``root`` (the package dir)."""
    paths = {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets = set()
        for name in _imported_names(path, module, path.name == "__init__.py"):
            parts = name.split(".")
            # the longest prefix that is a module of the package: "pkg.a.func" -> "pkg.a"
            found = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in paths), None)
            if found is not None and found != module:
                targets.add(found)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles ``[a, b, ..., a]``: in every strongly connected component of more than one module (Tarjan), the
    shortest cycle through each member, each listed once and starting at its smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles: list[list[str]] = []
    for component in components:
        for member in component:  # the shortest cycle through each member, each cycle listed once
            cycle = _cycle_through(graph, set(component), member)
            first = cycle.index(min(cycle[:-1]))
            rotated = cycle[first:-1] + cycle[:first] + [cycle[first]]
            if rotated not in cycles:
                cycles.append(rotated)
    return cycles


def _cycle_through(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside ``component`` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if succ not in came_from:
                    came_from[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{start} is on no cycle of {sorted(component)}")


def _dynamic_imports(path: Path) -> list[int]:
    """Lines of ``import_module(...)`` / ``__import__(...)`` calls whose module name is not a string literal."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and not (
                    node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                lines.append(node.lineno)
    return lines


def test_imports_are_static():
    """A module name computed at run time would hide its edge from the cycle check below."""
    offenders = [f"{p.relative_to(SRC)}:{line}" for p in sorted(SRC.rglob("*.py")) for line in _dynamic_imports(p)]
    assert offenders == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph(SRC, "loclab"))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_check_finds_a_planted_cycle(tmp_path):
    """The check itself fails on a package with cycles: a lazy one, an import_module one, a relative one."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import helper\n",
        "b.py": "def helper():\n    from pkg import a  # lazy: still a cycle\n    return a\n",
        "c.py": "import importlib\n\ndef load():\n    return importlib.import_module('pkg.sub.d')\n",
        "sub/__init__.py": "from .d import thing\n",
        "sub/d.py": "from ..c import load\nthing = 1\n",
        "e.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import f\n",
        "f.py": "import pkg.e\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.d"} and graph["pkg.sub.d"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.sub.d", "pkg.c"]]


def test_cycle_check_lists_every_cycle_of_a_tangle():
    graph = {"m.run": {"m.trials"}, "m.trials": {"m.run", "m.ray"}, "m.ray": {"m.trials"}, "m.leaf": set()}
    assert find_cycles(graph) == [["m.ray", "m.trials", "m.ray"], ["m.run", "m.trials", "m.run"]]
