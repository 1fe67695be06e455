"""ml_collections configs: Python files with ``get_config()``, overridden by ``--config.a.b=value``."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import ml_collections


class ConfigError(ValueError):
    """A config file or an override that cannot be applied."""


def _import_config_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_crescend_config_{path.stem}", path)
    if spec is None:  # no loader for the suffix, e.g. a .json or .md file
        raise ConfigError(f"config file {path} is not a Python file; pass one of configs/*.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """Imports ``path`` and returns ``get_config()`` (or ``get_config(arg)`` for ``file.py:arg``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass one of configs/*.py")
    module = _import_config_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config() function")
    config = module.get_config(arg) if arg is not None else module.get_config()
    config.lock()  # adding a field by override is a typo, not a feature
    return config


def config_beside(config_file: str | Path, name: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the config file ``name`` in the folder of ``config_file``, unlocked, for a config that
    extends another (``config_beside(__file__, "percepiano.py")``)."""
    path = Path(config_file).with_name(name)
    if not path.is_file():
        raise ConfigError(f"config file {config_file} extends {path}, which does not exist")
    return _import_config_module(path).get_config()


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, bool) and isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _known_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    names = []
    for name, value in config.items():
        full = f"{prefix}{name}"
        names.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            names.extend(_known_fields(value, full + "."))
    return names


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Sets ``config.<dotted>`` from its command-line text, keeping the field's type."""
    *parents, leaf = dotted.split(".")
    node = config
    for depth, part in enumerate(parents + [leaf]):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = difflib.get_close_matches(dotted, _known_fields(config), n=3)
            hint = f"; did you mean {', '.join('--config.' + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config field --config.{dotted}{hint}")
        if depth < len(parents):
            node = node[part]
    current = node[leaf]
    value = _parse_value(text, current)
    try:
        with node.unlocked():
            node[leaf] = value
    except TypeError as err:
        raise ConfigError(f"--config.{dotted}={text}: {err}") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file and applies ``--config.field=value`` overrides (a misspelled field is an error)."""
    path_str = str(path)
    arg = None
    if ":" in Path(path_str).name:
        path_str, arg = path_str.rsplit(":", 1)
    config = load_config_file(path_str, arg)
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(f"cannot read override {item!r}: write --config.field=value")
        dotted, text = item[len("--config."):].split("=", 1)
        apply_override(config, dotted, text)
    return config


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """A stable JSON rendering (used to check that a resumed run has the same config)."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2, default=str)
