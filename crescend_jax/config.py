"""ml_collections configs: Python files with ``get_config()``, overridden by ``--config.a.b=value``.

Loading and overriding go through ``ml_collections.config_flags`` (absl flags), as in big_vision and the flax
examples: ``--config=FILE[:ARG]`` plus typed ``--config.field=value`` overrides (the field's type is kept; a
misspelled field is an error with a suggestion; a tuple field given a bare string, ``--config.data.
test_compositions=X``, means the one-element tuple ``("X",)``; several: ``--config.data.test_compositions="('A','B')"``).
Every failure is a `ConfigError` with one readable line.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags


class ConfigError(ValueError):
    """A config file or an override that cannot be applied."""


def _import_config_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_crescend_config_{path.stem}", path)
    if spec is None:  # no loader for the suffix, e.g. a .json or .md file
        raise ConfigError(f"config file {path} is not a Python file; pass one of configs/*.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_beside(config_file: str | Path, name: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the config file ``name`` in the folder of ``config_file``, unlocked, for a config that
    extends another (``config_beside(__file__, "percepiano.py")``)."""
    path = Path(config_file).with_name(name)
    if not path.is_file():
        raise ConfigError(f"config file {config_file} extends {path}, which does not exist")
    return _import_config_module(path).get_config()


def known_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted field name of ``config`` (sections included)."""
    names = []
    for name, value in config.items():
        full = f"{prefix}{name}"
        names.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            names.extend(known_fields(value, full + "."))
    return names


def _check_override_syntax(overrides: Sequence[str]) -> None:
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(f"cannot read override {item!r}: write --config.field=value")


def _explain(err: Exception, overrides: Sequence[str], fields: list[str] | None) -> ConfigError:
    """One line for a config_flags / absl failure: the override and, for an unknown field, the closest fields."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    unknown_field = isinstance(err, (flags.UnrecognizedFlagError, KeyError)) or isinstance(
        err.__cause__ or err.__context__, KeyError) or "Did you mean" in str(err)
    if unknown_field:
        known = set(fields or [])
        names = [item[len("--config."):].split("=", 1)[0] for item in overrides]
        dotted = next((name for name in names if name not in known), names[0] if names else message)
        close = difflib.get_close_matches(dotted, fields or [], n=3)
        hint = f"; did you mean {', '.join('--config.' + c for c in close)}?" if close else ""
        return ConfigError(f"unknown config field --config.{dotted}{hint}")
    return ConfigError(message.replace("flag --config.", "--config."))


def parse_config_flags(argv: Sequence[str], *, config_file: str | None = None,
                       config: ml_collections.ConfigDict | None = None,
                       extra: dict[str, str | None] | None = None) -> tuple[ml_collections.ConfigDict | None,
                                                                          dict[str, Any], list[str]]:
    """Parses ``argv`` (no program name) with ml_collections config flags on a private absl ``FlagValues``.

    ``config_file``: the path given by ``--config`` (its ``--config.x=y`` overrides are in ``argv``);
    ``config``: a ConfigDict to override instead (e.g. a finished run's saved config); neither: no config.
    ``extra``: other string flags (name -> default). Returns (config, extra flag values, positional arguments).
    Raises `ConfigError` with one line for any mistake.
    """
    values = flags.FlagValues()
    argv = list(argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    _check_override_syntax(overrides)
    full_argv = ["crescend-jax", *argv]
    holder = None
    if config_file is not None:
        file_part = re.match(r"^(.*?\.py)(?::|$)", config_file)  # "file.py" or "file.py:arg" (arg may be a path)
        path = Path(file_part.group(1) if file_part else config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass one of configs/*.py")
        if path.suffix != ".py":
            raise ConfigError(f"config file {path} is not a Python file; pass one of configs/*.py")
    fields = None
    try:
        if config_file is not None:
            fields = known_fields(_import_config_module(path).get_config())
            holder = config_flags.DEFINE_config_file("config", None, "config file", flag_values=values,
                                                     lock_config=True, sys_argv=full_argv)
        elif config is not None:
            fields = known_fields(config)
            holder = config_flags.DEFINE_config_dict("config", config, "the run's config", flag_values=values,
                                                     lock_config=True, sys_argv=full_argv)
        holders = {name: flags.DEFINE_string(name, default, name, flag_values=values)
                   for name, default in (extra or {}).items()}
        positional = values(full_argv)[1:]
        parsed = holder.value if holder is not None else None
    except ConfigError:
        raise
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError, OSError, SyntaxError, ImportError) as err:
        raise _explain(err, overrides, fields) from None
    if parsed is None and config_file is not None:
        raise ConfigError(f"config file {config_file} has no get_config() returning a ConfigDict")
    return parsed, {name: holder.value for name, holder in holders.items()}, positional


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file (``file.py`` or ``file.py:arg``) and applies ``--config.field=value`` overrides."""
    config, _, positional = parse_config_flags([f"--config={path}", *overrides], config_file=str(path))
    if positional:
        raise ConfigError(f"cannot read {positional[0]!r}: write overrides as --config.field=value")
    return config


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """A stable JSON rendering (used to check that a resumed run has the same config)."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2, default=str)
