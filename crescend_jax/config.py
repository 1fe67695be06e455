"""ml_collections configs: Python files with ``get_config()``, overridden by ``--config.a.b=value``.

Overriding goes through ``ml_collections.config_flags`` (absl flags), as in big_vision and the flax examples:
``--config=FILE[:ARG]`` plus typed ``--config.field=value`` overrides (the field's type is kept; a misspelled field is
an error with a suggestion; a tuple field given a bare string, ``--config.data.test_compositions=X``, means the
one-element tuple ``("X",)``; several: ``--config.data.test_compositions="('A','B')"``). The file itself is imported
here with ``importlib``'s ``exec_module`` (config_flags' own file flag still calls the deprecated ``load_module``) and
handed to ``config_flags.DEFINE_config_dict``. Every failure is a `ConfigError` with one readable line.
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


from crescend_jax.errors import ConfigError

__all__ = ["ConfigError", "config_beside", "config_to_json", "known_fields", "load_config", "parse_config_flags",
           "split_config_file"]


def _import_config_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_crescend_config_{path.stem}", path)
    if spec is None:  # no loader for the suffix, e.g. a .json or .md file
        raise ConfigError(f"config file {path} is not a Python file; pass one of configs/*.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _file_and_argument(config_file: str) -> tuple[Path, str | None]:
    """``"file.py"`` -> (file.py, None); ``"file.py:arg"`` -> (file.py, "arg") (the argument may be a path)."""
    match = re.match(r"^(.*?\.py)(?::(.*))?$", config_file)
    return (Path(match.group(1)), match.group(2)) if match else (Path(config_file), None)


def _config_of_file(config_file: str) -> ml_collections.ConfigDict:
    """``get_config()`` (or ``get_config(arg)`` for ``file.py:arg``) of a config file; a `ConfigError` otherwise."""
    path, argument = _file_and_argument(config_file)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass one of configs/*.py")
    if path.suffix != ".py":
        raise ConfigError(f"config file {path} is not a Python file; pass one of configs/*.py")
    module = _import_config_module(path)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config file {config_file} has no get_config() returning a ConfigDict")
    config = module.get_config() if argument is None else module.get_config(argument)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {config_file} has no get_config() returning a ConfigDict")
    return config


def split_config_file(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the value of ``--config=FILE`` or ``--config FILE``, ``argv`` without it); the ``--config.field=value``
    overrides stay in ``argv``."""
    argv, found, rest, index = list(argv), None, [], 0
    while index < len(argv):
        item = argv[index]
        if item.startswith("--config="):
            found = item.split("=", 1)[1]
        elif item == "--config":
            if index + 1 >= len(argv):
                raise ConfigError("--config needs a file: --config=FILE (e.g. configs/baseline.py)")
            found, index = argv[index + 1], index + 1
        else:
            rest.append(item)
        index += 1
    return found, rest


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

    ``config_file``: the path given by ``--config`` (``argv`` may still hold ``--config=FILE``: it is dropped; its
    ``--config.x=y`` overrides are in ``argv``); ``config``: a ConfigDict to override instead (e.g. a finished run's
    saved config); neither: no config. ``extra``: other string flags (name -> default). Returns (config, extra flag
    values, positional arguments). Raises `ConfigError` with one line for any mistake.
    """
    values = flags.FlagValues()
    argv = split_config_file(argv)[1] if config_file is not None else list(argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    _check_override_syntax(overrides)
    full_argv = ["crescend-jax", *argv]
    holder = None
    fields = None
    try:
        if config_file is not None:
            config = _config_of_file(config_file)
        if config is not None:
            fields = known_fields(config)
            holder = config_flags.DEFINE_config_dict("config", config, "the config", flag_values=values,
                                                     lock_config=True, sys_argv=full_argv)
        holders = {name: flags.DEFINE_string(name, default, name, flag_values=values)
                   for name, default in (extra or {}).items()}
        positional = values(full_argv)[1:]
        parsed = holder.value if holder is not None else None
    except ConfigError:
        raise
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError, OSError, SyntaxError, ImportError) as err:
        raise _explain(err, overrides, fields) from None
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
