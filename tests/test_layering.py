"""Imports point down the layers of docs/architecture.md; pure math never imports plotting."""

import ast
from pathlib import Path

import loclab

SRC = Path(loclab.__file__).parent
# rank of each top-level module/package; a module may import only from ranks <= its own
RANKS = {
    "ops": 0, "metrics": 1, "data": 2, "models": 3, "losses": 4, "config": 4, "engine": 5, "analysis": 6,
    "evaluation": 7, "viz": 8, "report": 9, "predict": 9, "study": 10, "bench": 10, "cli": 11,
    "__init__": 0, "__main__": 12,
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
