"""Expansion: a sweep config -> every point with its resolved training config, in run order (see
`crescend_jax.sweeps` for the order in which base, fixed fields, ``--all.*``, point fields, grid values and the
learning-rate rule apply)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

from crescend_jax.config import ConfigError, config_to_json, known_fields, load_config, parse_config_flags
from crescend_jax.sweeps.language import (POINT_KEYS, REFERENCE_PREFIX, SweepPoint, flatten_fields, set_field,
                                          sweep_field)
from crescend_jax.sweeps.learning_rate import lr_settings, scaled_learning_rate

_NAME = re.compile(r"^[A-Za-z0-9_.=+,-]+$")


def _grid_values(value: Any, field: str) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values:
        raise ConfigError(f"sweep grid field {field!r} has no values")
    return values


def _resolve_base(base: str, point_name: str) -> str:
    if not base:
        raise ConfigError(f"sweep point {point_name!r} has no base config: set config.base or the point's 'base'")
    path = Path(base).expanduser()
    if not path.is_file():
        raise ConfigError(f"sweep point {point_name!r}: base config {base} does not exist (relative paths are read "
                          "from the current directory)")
    return str(path.resolve())


def _override_field(item: str) -> str:
    return item[len("--config."):].split("=", 1)[0]


def _apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str],
                     name: str) -> ml_collections.ConfigDict:
    """``config`` with those ``--config.<field>=value`` overrides whose field it has, parsed like the command
    line's (types kept); `expand_sweep` refuses an override no point has."""
    fields = set(known_fields(config))
    overrides = [item for item in overrides if _override_field(item) in fields]
    if not overrides:
        return config
    try:
        config, _, _ = parse_config_flags(list(overrides), config=config)
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError: kept as is
        if isinstance(err, ConfigError):
            raise ConfigError(f"sweep point {name!r}: {str(err).replace('--config.', '--all.')}") from None
        raise ConfigError(f"sweep point {name!r}: cannot apply {' '.join(overrides)}: {err}") from None
    return config


def _raw_points(sweep: ml_collections.ConfigDict) -> list[tuple[dict[str, Any], bool]]:
    """(point dict, whether it was given) for each entry of ``sweep.points``, or one implicit point."""
    points = list(sweep.points or ())
    if not points:
        return [({"name": sweep.name or "point"}, False)]
    entries = []
    for entry in points:
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise ConfigError(f"every sweep point needs a 'name': got {entry!r}")
        unknown = sorted(set(entry) - set(POINT_KEYS))
        if unknown:
            raise ConfigError(f"sweep point {entry['name']!r} has unknown keys {unknown}; a point has {POINT_KEYS}")
        entries.append((dict(entry), True))
    return entries


def _toposort(points: dict[str, SweepPoint]) -> list[SweepPoint]:
    order: list[SweepPoint] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ConfigError(f"sweep points depend on each other in a cycle: {' -> '.join(chain + (name,))}")
        state[name] = "visiting"
        for dependency in points[name].depends:
            visit(dependency, chain + (name,))
        state[name] = "done"
        order.append(points[name])

    for name in points:
        visit(name, ())
    return order


def expand_sweep(sweep: ml_collections.ConfigDict, all_overrides: Sequence[str] = (), *,
                 validate: bool = True) -> list[SweepPoint]:
    """Every point of ``sweep`` with its resolved training config, in run order (each point after what it depends
    on, otherwise in the declared order). ``all_overrides``: ``--config.<field>=value`` strings applied to every
    point (the command line's ``--all.<field>=value``). ``validate``: also run each approach's config checks.
    Raises `ConfigError` for any mistake (nothing has run)."""
    fixed = flatten_fields(sweep.get("fixed"))
    global_grid = {k: _grid_values(v, k) for k, v in flatten_fields(sweep.get("grid")).items()}
    seeds = tuple(sweep.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"sweep seeds={seeds!r} must be distinct integers, at least one")
    bases: dict[str, ml_collections.ConfigDict] = {}
    points: dict[str, SweepPoint] = {}
    for entry, given in _raw_points(sweep):
        grid = {**global_grid, **{k: _grid_values(v, k) for k, v in flatten_fields(entry.get("grid")).items()}}
        own = flatten_fields(entry.get("fields"))
        labels = {field: field.rsplit(".", 1)[-1] for field in grid}
        labels = {f: (l if list(labels.values()).count(l) == 1 else f) for f, l in labels.items()}
        for combo in itertools.product(*grid.values()) if grid else [()]:
            chosen = dict(zip(grid, combo))
            label = "-".join(f"{labels[f]}={_label(v)}" for f, v in chosen.items())
            name = entry["name"] if not label else (f"{entry['name']}-{label}" if given else label)
            if not _NAME.match(name):
                raise ConfigError(f"sweep point name {name!r} may hold only letters, digits and _ . = + , -")
            if name in points:
                raise ConfigError(f"two sweep points are named {name!r}")
            base = _resolve_base(entry.get("base") or sweep.base, name)
            if base not in bases:
                bases[base] = load_config(base)
            config = ml_collections.ConfigDict(bases[base].to_dict())  # a deep copy per point
            config.lock()
            fields = {**own, **chosen}
            every = {**fixed, **fields}
            train_fields = {k: v for k, v in every.items() if not sweep_field(k)}
            for field, value in fixed.items():
                if not sweep_field(field):
                    set_field(config, field, value, f"sweep point {name!r} (fixed)")
            if all_overrides:
                config = _apply_overrides(config, all_overrides, name)
            for field, value in fields.items():
                if not sweep_field(field):
                    set_field(config, field, value, f"sweep point {name!r}")
            lr = lr_settings(sweep, {k: v for k, v in every.items() if sweep_field(k)}, f"sweep point {name!r}")
            given_rate = float(config.train.learning_rate)
            try:
                config.train.learning_rate = scaled_learning_rate(given_rate, int(config.train.batch_size),
                                                                  lr["rule"], int(lr["reference_batch"]))
            except ConfigError as err:
                raise ConfigError(f"sweep point {name!r}: {err}") from None
            references = {f: v[len(REFERENCE_PREFIX):] for f, v in train_fields.items()
                          if isinstance(v, str) and v.startswith(REFERENCE_PREFIX)}
            baseline = entry.get("baseline", None)
            baseline = (sweep.baseline or None) if baseline is None else (baseline or None)
            points[name] = SweepPoint(
                name=name, base=base, fields=fields, baseline=None if baseline == name else baseline, config=config,
                references=references, depends=(), learning_rate={**lr, "given": given_rate,
                                                                  "resolved": float(config.train.learning_rate)})
    for override in all_overrides:
        dotted = _override_field(override)
        if not any(dotted in known_fields(item.config) for item in points.values()):
            import difflib

            fields = sorted({f for item in points.values() for f in known_fields(item.config)})
            close = difflib.get_close_matches(dotted, fields, n=3)
            hint = f"; did you mean {', '.join('--all.' + c for c in close)}?" if close else ""
            raise ConfigError(f"no sweep point has the config field --all.{dotted}{hint}")
    for item in points.values():
        wanted = ([item.baseline] if item.baseline else []) + list(item.references.values())
        for other in wanted:
            if other not in points:
                close = ", ".join(sorted(points)[:8])
                raise ConfigError(f"sweep point {item.name!r} refers to point {other!r}, which the sweep does not "
                                  f"have (points: {close}{', ...' if len(points) > 8 else ''})")
            if other == item.name:
                raise ConfigError(f"sweep point {item.name!r} refers to itself")
        item.depends = tuple(dict.fromkeys(wanted))
    only = tuple(sweep.get("only", ()) or ())
    if isinstance(only, str):
        only = (only,)
    if only:
        unknown = [n for n in only if n not in points]
        if unknown:
            raise ConfigError(f"config.only names points the sweep does not have: {unknown}")
        keep: set[str] = set()
        pending = list(only)
        while pending:
            name = pending.pop()
            if name not in keep:
                keep.add(name)
                pending.extend(points[name].depends)
        points = {n: p for n, p in points.items() if n in keep}
    ordered = _toposort(points)
    seen: dict[str, str] = {}
    for item in ordered:
        identity = config_to_json(item.config) + json.dumps([item.baseline, item.references], sort_keys=True)
        item.same_as = seen.setdefault(identity, item.name)
        item.same_as = None if item.same_as == item.name else item.same_as
    if validate:
        _validate(ordered)
    return ordered


def _label(value: Any) -> str:
    from crescend_jax.evaluate.sweep_report import format_value

    return format_value(value).replace("/", "_").replace(" ", "")


def _validate(points: Sequence[SweepPoint]) -> None:
    """Each approach's own config checks (`trainer.check_config`) behind the point's trunk (`models.approach_for`:
    a sequence or fine-tuned trunk adds its own), with the point named."""
    from crescend_jax.models import approach_for
    from crescend_jax.train.trainer import check_config

    for item in points:
        try:
            check_config(approach_for(item.config), item.config)
        except ConfigError as err:
            raise ConfigError(f"sweep point {item.name!r}: {err}") from None


