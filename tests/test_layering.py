"""The house: data flows down one way. Walks every module's imports and fails on an import from a higher layer."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crescend_jax"

# Lower number = lower floor. A module may import from its own floor or below, never from above.
LAYERS = {
    "config": 0, "data": 0, "encoders": 0, "losses": 0, "runtime": 0,
    "models": 1,
    "train": 2, "evaluate": 2,
    "cli": 3, "demo": 3, "sweep": 3, "experiments": 3,
}
# train and evaluate share a floor but must not lean on each other: held-out prediction belongs to the evaluation,
# and the trainer's checkpoint selection gets its metric from below (models.contract).
SIBLINGS_APART = {("train", "evaluate"), ("evaluate", "train")}


def _part(module: str) -> str:
    return module.split(".")[1] if module.startswith("crescend_jax.") else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if node.module == "crescend_jax"]
    return [(name, line) for name, line in found if name.startswith("crescend_jax.")]


def test_every_package_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or p.is_dir())}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_import_from_a_higher_layer():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "crescend_jax." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _part(module)
        if own not in LAYERS:
            continue
        for name, line in _imports(path):
            other = _part(name)
            if other in LAYERS and (LAYERS[other] > LAYERS[own] or (own, other) in SIBLINGS_APART):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {name} ({other})")
    assert not violations, "imports from a higher layer:\n" + "\n".join(violations)


def test_the_walk_sees_a_planted_violation(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("from crescend_jax.train.trainer import train\nimport crescend_jax.cli\n")
    names = [name for name, _ in _imports(planted)]
    assert names == ["crescend_jax.train.trainer", "crescend_jax.cli"]
    assert LAYERS[_part(names[0])] > LAYERS["models"]
