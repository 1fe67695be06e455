"""The house: data flows down one way. Walks every module's imports (absolute and relative, at module level or inside
functions) and fails on an import from a higher layer, and on any import circle among the top floor's modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crescend_jax"

# Lower number = lower floor. A module may import from its own floor or below, never from above.
LAYERS = {
    "errors": 0, "config": 0, "data": 0, "encoders": 0, "losses": 0, "runtime": 0,
    "models": 1,
    "train": 2, "evaluate": 2,
    "console": 3, "commands": 3, "demo": 3, "sweeps": 3, "cli": 3,
}
TOP = 3
# train and evaluate share a floor but must not lean on each other: held-out prediction belongs to the evaluation,
# and the trainer's checkpoint selection gets its metric from below (models.contract).
SIBLINGS_APART = {("train", "evaluate"), ("evaluate", "train")}


def _part(module: str) -> str:
    return module.split(".")[1] if module.startswith("crescend_jax.") else ""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """Whether the dotted ``crescend_jax....`` name is a module or package of the checkout."""
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _imports(path: Path, module: str = "") -> list[tuple[str, int]]:
    """(imported crescend_jax module, line) of every import in ``path``; ``from X import Y`` names X.Y when that is
    a module, else X. Relative imports are resolved against ``module`` (the dotted name of ``path``)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full.startswith("crescend_jax.") and _is_module(full) else base, node.lineno))
    return [(name, line) for name, line in found if name.startswith("crescend_jax.")]


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_package_part_has_a_layer_and_every_layer_exists():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"
    assert set(LAYERS) <= parts, f"LAYERS names parts that do not exist: {sorted(set(LAYERS) - parts)}"


def test_no_import_from_a_higher_layer():
    violations = []
    for module, path in _modules().items():
        own = _part(module)
        if own not in LAYERS:
            continue
        for name, line in _imports(path, module):
            other = _part(name)
            if other in LAYERS and (LAYERS[other] > LAYERS[own] or (own, other) in SIBLINGS_APART):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {name} ({other})")
    assert not violations, "imports from a higher layer:\n" + "\n".join(violations)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports) as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def top_floor_graph() -> dict[str, set[str]]:
    """The imports among the top floor's modules (a package's ``__init__`` counts as the package)."""
    modules = _modules()
    top = {name for name in modules if LAYERS.get(_part(name)) == TOP}
    return {name: {other for other, _ in _imports(modules[name], name) if other in top and other != name}
            for name in top}


def test_the_top_floor_has_no_import_circle():
    graph = top_floor_graph()
    assert {"crescend_jax.cli", "crescend_jax.demo", "crescend_jax.console"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle on the top floor: " + " -> ".join(cycle)
    importers = {name for name, imported in graph.items() if "crescend_jax.cli" in imported}
    assert not importers, f"cli is the one entry point; nothing imports it, but {sorted(importers)} do"


def test_the_walk_sees_planted_violations_and_circles(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("from crescend_jax.train.trainer import train\nimport crescend_jax.cli\n"
                       "def f():\n    from .run import run_sweep\n    from ..commands import train_command\n")
    names = [name for name, _ in _imports(planted, "crescend_jax.sweeps.main")]
    assert names == ["crescend_jax.train.trainer", "crescend_jax.cli", "crescend_jax.sweeps.run",
                     "crescend_jax.commands"]
    assert LAYERS[_part(names[0])] > LAYERS["models"]
    nested = tmp_path / "nested.py"
    nested.write_text("from . import language\nfrom .finished import finished\n")
    assert [n for n, _ in _imports(nested, "crescend_jax.sweeps.run")] == ["crescend_jax.sweeps.language",
                                                                            "crescend_jax.sweeps.finished"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
