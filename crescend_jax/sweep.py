"""`crescend-jax sweep` and `crescend-jax analyze`: many training runs from one config, one table at the end.

    crescend-jax sweep --config=configs/sweeps/ablations.py --workdir=runs/ablations \\
        [--config.seeds="(0,)"] [--config.only="('approach_a','a-no_infonce')"] [--all.train.num_steps=300]
    crescend-jax analyze --workdir=runs/ablations          # or: --runs runs/baseline runs/approach_a [--out=DIR]

**A sweep config** is a Python file whose ``get_config()`` returns `default_sweep_config` filled in:

* ``base``: the training config file every point starts from (a point may name its own ``base``, which is how a
  point swaps the approach: ``model.name`` and its ``model`` section come from that file).
* ``points``: a tuple of dicts ``{"name", "base" (optional), "fields": {dotted field: value} (or nested dicts),
  "grid": {field: values} (optional, crossed with this point), "baseline" (optional: another point, "" = none)}``
  (`point` builds one). ``grid``: ``{field: values}`` crossed with every point (with no points, the grid alone
  names the points). A grid point is named ``<point>-<field>=<value>-...`` (the field's last component).
* ``fixed``: fields set on every point (nested dicts or dotted keys). ``seeds``: every point runs once per seed
  (``train.seed``). ``baseline``: the point every other one is compared with (trained first). ``only``: run just
  these points (and what they depend on). ``extract``: first extract every store the points read (a no-op when
  stored). ``notes``: lines printed and written above the table.
* Fields are any field of the training config, dotted (``model.loss.temperature``), checked like ``--config.*``
  overrides (a misspelled field is an error with a suggestion; types are kept). Two fields belong to the sweep:
  ``lr_scaling.rule`` ("none", "linear", "sqrt") and ``lr_scaling.reference_batch`` (default 64): the point's
  ``train.learning_rate`` is taken as the rate at the reference batch and scaled to its ``train.batch_size`` B:
  none: lr; linear: lr * B / B_ref; sqrt: lr * sqrt(B / B_ref) (the resolved rate is in the table and the
  point's config.json). A string value ``"@<point>"`` (e.g. ``model.init_from``) is that point's workdir for the
  same seed; the referenced point runs first (`train.warm_start` copies its parameters).
* Order of application: base config, ``fixed``, ``--all.<field>=value`` from the command line (on every point whose
  config has the field, e.g. ``--all.model.sampler.group_size=8`` leaves the baseline alone; a field no point has
  is an error), the point's fields, its grid values, the learning-rate rule. ``--config.<field>=value`` overrides
  the sweep config itself.

**Running.** Points run one after another, each seed of a point into ``<workdir>/<point>/seed_<s>``: train by
composition folds with ``train.resume=True`` (a killed point continues from its last checkpoint; finished folds are
skipped), then ``evaluate`` against the baseline point of the same seed (paired differences from its
``heldout.npz``). A run whose ``metrics.json`` is newer than every fold's ``done.json`` (and than the baseline's
``heldout.npz``, and holds the baseline comparison) is finished and skipped, so rerunning the same command resumes
an interrupted sweep. Points whose resolved configs are identical (e.g. every learning-rate rule at the reference
batch) are trained once and share their runs (``same_as`` in the table). A point that fails (bad data, a refused
warm start, a NaN loss) is reported and the sweep continues with the points that do not depend on it; the exit
code is then 1. A sweep config mistake is found before anything is trained (exit 2).

**Several devices or hosts.** Each point's training uses the whole device mesh, exactly as ``crescend-jax train``
does (data-parallel over every device of every process; on several hosts, start the same sweep command on every
host with the ``train.distributed`` settings or the CRESCEND_* environment, e.g. via ``--all.train.distributed.
...``). Points never run side by side on disjoint device subsets: the trainer builds its mesh from all devices, so a
point too small to fill the mesh simply runs with a small per-device batch. Nothing here has been measured on
several hosts; only process 0 writes the sweep's table.

**At the end** (also after a failure) the sweep writes into its workdir: ``results.json`` (everything), ``results.csv``
and ``results.md`` (one row per point, see `crescend_jax.evaluate.sweep_report`), ``runs.csv`` (one row per seed),
``plot_<field>.png`` (accuracy against each swept numeric field) and ``dimensions.md/.png/.json``
(`crescend_jax.evaluate.per_dimension`). **Seeds are pooled** by averaging each pair's outcome over the seeds
(`crescend_jax.evaluate.seed_pooling`): the table's accuracy is the mean over seeds of each seed's held-out pairwise
accuracy, its interval a bootstrap over same-music groups (stratified by composition) of those seed-averaged
outcomes, and the seed-to-seed standard deviation is a separate column; the paired differences to the baseline
(its seeds averaged the same way) and to the ridge reference are bootstraps of the seed-averaged outcomes with
shared replicate weights. ``runs.csv`` keeps each seed's own interval.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from crescend_jax.config import ConfigError, config_to_json, known_fields, load_config, parse_config_flags

SWEEP_SECTION = "lr_scaling"  # point fields under this prefix belong to the sweep, not the training config
LR_RULES = ("none", "linear", "sqrt")
# Fields the trainer reads with a default (``config.model.get("init_from", "")``): a point may set them even when
# the approach's config section lacks them.
OPTIONAL_FIELDS = {"model.init_from": ""}
POINT_KEYS = ("name", "base", "fields", "grid", "baseline")
DATA_SECTIONS = ("corpus", "data", "render", "encoder", "store")
SPLIT_FIELDS = ("num_folds", "test_compositions", "fold_seed", "split_level")  # data fields that do not pick a store
REFERENCE_PREFIX = "@"
SWEEP_FILE, RESULTS_FILE = "sweep.json", "results.json"
_NAME = re.compile(r"^[A-Za-z0-9_.=+,-]+$")


def default_sweep_config() -> ml_collections.ConfigDict:
    """The sweep config's fields (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = ""
    config.base = ""
    config.baseline = ""
    config.seeds = (0,)
    config.fixed = ml_collections.ConfigDict()
    config.grid = ml_collections.ConfigDict()
    config.points = ()
    config.only = ()
    config.extract = False
    config.lr_scaling = ml_collections.ConfigDict({"rule": "none", "reference_batch": 64})
    config.notes = ()
    return config


APPROACH_FILES = {"baseline": "baseline.py", "approach_a": "approach_a.py", "approach_b": "approach_b.py",
                  "approach_c": "approach_c.py"}


def existing_approaches(configs_dir: str | Path) -> dict[str, Path]:
    """label -> config file of each approach of `APPROACH_FILES` whose file exists in ``configs_dir`` (a sweep
    includes an approach once its config is written)."""
    folder = Path(configs_dir)
    return {label: folder / name for label, name in APPROACH_FILES.items() if (folder / name).is_file()}


def point(name: str, *, base: str | Path | None = None, fields: Mapping[str, Any] | None = None,
          grid: Mapping[str, Sequence[Any]] | None = None, baseline: str | None = None) -> dict[str, Any]:
    """One entry of ``config.points`` (plain dict: it may hold dotted keys)."""
    entry: dict[str, Any] = {"name": name}
    if base is not None:
        entry["base"] = str(base)
    if fields:
        entry["fields"] = dict(fields)
    if grid:
        entry["grid"] = {k: tuple(v) for k, v in grid.items()}
    if baseline is not None:
        entry["baseline"] = baseline
    return entry


@dataclasses.dataclass
class SweepPoint:
    """One expanded point. ``fields``: its own fields (point + grid, dotted, sweep fields included);
    ``config``: the resolved training config (no seed, ``@`` references unresolved); ``references``: dotted field ->
    referenced point; ``depends``: points that must run first (baseline, references); ``same_as``: an earlier point
    with the identical resolved config, whose runs it shares; ``learning_rate``: the resolved rate and its rule."""

    name: str
    base: str
    fields: dict[str, Any]
    baseline: str | None
    config: ml_collections.ConfigDict
    references: dict[str, str]
    depends: tuple[str, ...]
    learning_rate: dict[str, Any]
    same_as: str | None = None

    @property
    def runs_as(self) -> str:
        """The point whose workdirs hold this point's runs."""
        return self.same_as or self.name


# ----------------------------------------------------------------------------------------------------- expansion


def flatten_fields(mapping: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"loss": {"margin": 0}}} or {"model.loss.margin": 0} -> {"model.loss.margin": 0}."""
    items = mapping.items() if mapping is not None else ()
    flat: dict[str, Any] = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            if not len(value):
                raise ConfigError(f"sweep field {name!r} is an empty section; give it fields or drop it")
            flat.update(flatten_fields(value, name + "."))
        else:
            flat[name] = value
    return flat


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


def _sweep_field(name: str) -> bool:
    return name == SWEEP_SECTION or name.startswith(SWEEP_SECTION + ".")


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any, where: str) -> None:
    """Sets ``config.<dotted> = value`` keeping the field's type; an unknown field is a `ConfigError` naming the
    closest known fields (fields of `OPTIONAL_FIELDS` may be added)."""
    import difflib  # noqa: PLC0415

    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            node = None
            break
        node = node[part]
    leaf = parts[-1]
    if node is None or leaf not in node:
        if node is not None and dotted in OPTIONAL_FIELDS:
            with node.unlocked():
                node[leaf] = type(OPTIONAL_FIELDS[dotted])(OPTIONAL_FIELDS[dotted])
        else:
            close = difflib.get_close_matches(dotted, known_fields(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{where}: unknown config field {dotted!r}{hint}")
    current = node[leaf]
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(current, tuple) and isinstance(value, str):
        value = (value,)
    try:
        node[leaf] = value
    except (TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"{where}: cannot set {dotted}={value!r} (the field holds {current!r}): {err}") from None


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


def _lr_settings(sweep: ml_collections.ConfigDict, fields: dict[str, Any], where: str) -> dict[str, Any]:
    settings = dict(sweep.lr_scaling.to_dict()) if "lr_scaling" in sweep else {"rule": "none", "reference_batch": 64}
    for name, value in fields.items():
        key = name[len(SWEEP_SECTION) + 1:]
        if key not in settings:
            raise ConfigError(f"{where}: unknown sweep field {name!r}; the sweep's own fields are "
                              f"{', '.join(SWEEP_SECTION + '.' + k for k in settings)}")
        settings[key] = value
    if settings["rule"] not in LR_RULES:
        raise ConfigError(f"{where}: lr_scaling.rule={settings['rule']!r} must be one of {LR_RULES}")
    if not settings["reference_batch"] or settings["reference_batch"] < 1:
        raise ConfigError(f"{where}: lr_scaling.reference_batch={settings['reference_batch']!r} must be >= 1")
    return settings


def scaled_learning_rate(learning_rate: float, batch_size: int, rule: str, reference_batch: int) -> float:
    """The learning rate at ``batch_size`` under ``rule`` given ``learning_rate`` at ``reference_batch``:
    none: lr; linear: lr * B / B_ref; sqrt: lr * sqrt(B / B_ref)."""
    ratio = batch_size / reference_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]
    return float(learning_rate) * factor


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
            train_fields = {k: v for k, v in every.items() if not _sweep_field(k)}
            for field, value in fixed.items():
                if not _sweep_field(field):
                    set_field(config, field, value, f"sweep point {name!r} (fixed)")
            if all_overrides:
                config = _apply_overrides(config, all_overrides, name)
            for field, value in fields.items():
                if not _sweep_field(field):
                    set_field(config, field, value, f"sweep point {name!r}")
            lr = _lr_settings(sweep, {k: v for k, v in every.items() if _sweep_field(k)}, f"sweep point {name!r}")
            given_rate = float(config.train.learning_rate)
            config.train.learning_rate = scaled_learning_rate(given_rate, int(config.train.batch_size), lr["rule"],
                                                              int(lr["reference_batch"]))
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
            import difflib  # noqa: PLC0415

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
    from crescend_jax.evaluate.sweep_report import format_value  # noqa: PLC0415

    return format_value(value).replace("/", "_").replace(" ", "")


def _validate(points: Sequence[SweepPoint]) -> None:
    """Each approach's own config checks (`trainer.check_config`), with the point named."""
    from crescend_jax.models import get_approach  # noqa: PLC0415
    from crescend_jax.train.trainer import check_config  # noqa: PLC0415

    for item in points:
        try:
            check_config(get_approach(item.config.model.name), item.config)
        except ConfigError as err:
            raise ConfigError(f"sweep point {item.name!r}: {err}") from None


# ----------------------------------------------------------------------------------------------------- running


def seed_workdir(root: str | Path, item: SweepPoint, seed: int) -> Path:
    return Path(root) / item.runs_as / f"seed_{seed}"


def run_config(item: SweepPoint, seed: int, root: str | Path,
               points: Mapping[str, SweepPoint]) -> ml_collections.ConfigDict:
    """The training config of ``item`` for ``seed``: train.seed set, resume on, ``@`` references resolved to the
    referenced point's workdir of the same seed (absolute)."""
    config = ml_collections.ConfigDict(item.config.to_dict())
    config.train.seed = int(seed)
    config.train.resume = True
    for field, other in item.references.items():
        set_field(config, field, str(seed_workdir(root, points[other], seed).resolve()), f"sweep point {item.name!r}")
    return config


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def same_config(workdir: str | Path, config: ml_collections.ConfigDict) -> bool:
    """Whether ``workdir``'s config.json is ``config`` (up to the fields a resumed run may change)."""
    from crescend_jax.train.trainer import RESUME_IGNORED_FIELDS, saved_config_fields  # noqa: PLC0415

    path = Path(workdir) / "config.json"
    try:
        saved = saved_config_fields(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return False
    now = saved_config_fields(json.loads(config_to_json(config)))
    return all(saved.get(n) == now.get(n) for n in set(saved) | set(now) if not n.startswith(RESUME_IGNORED_FIELDS))


def finished(workdir: str | Path, baseline: str | Path | None = None,
             config: ml_collections.ConfigDict | None = None) -> bool:
    """Whether ``workdir`` holds an up-to-date evaluation: metrics.json newer than every fold's done.json (every
    fold of folds.json done) and, with a ``baseline`` workdir, holding the comparison with that workdir and newer than
    the baseline's heldout.npz; with ``config``, also trained with that config (a changed sweep point is not finished:
    its rerun reaches the trainer, which refuses to resume a workdir made by another config)."""
    from crescend_jax.data import fingerprint as fingerprint_lib  # noqa: PLC0415
    from crescend_jax.evaluate.comparison import HELDOUT_FILE  # noqa: PLC0415

    workdir = Path(workdir)
    metrics = workdir / "metrics.json"
    if not metrics.is_file():
        return False
    if config is not None and not same_config(workdir, config):
        return False
    _, folds = fingerprint_lib.read_record(workdir)
    if not folds:
        return False
    done = [workdir / f"fold_{entry['fold']}" / "done.json" for entry in folds]
    if not all(path.is_file() for path in done):
        return False
    written = _mtime(metrics)
    if any(_mtime(path) > written for path in done):
        return False
    if baseline is not None:
        saved = Path(baseline) / HELDOUT_FILE
        if not saved.is_file() or _mtime(saved) > written:
            return False
        try:  # compared with this very baseline (a sweep whose point changed its baseline evaluates again)
            versus = json.loads(metrics.read_text()).get("versus_baseline") or {}
        except json.JSONDecodeError:
            return False
        if versus.get("baseline") != str(Path(baseline).resolve()):
            return False
    return True


def _run_errors() -> tuple[type[BaseException], ...]:
    """What makes one point fail (reported; the sweep goes on); a simulated kill (`TrainingStopped`) is not one."""
    from crescend_jax.data.fingerprint import FingerprintMismatch  # noqa: PLC0415
    from crescend_jax.data.splits import SplitError  # noqa: PLC0415
    from crescend_jax.data.store import StoreError  # noqa: PLC0415
    from crescend_jax.evaluate.predict import EvaluationError  # noqa: PLC0415
    from crescend_jax.train.trainer import TrainingError  # noqa: PLC0415

    return ConfigError, TrainingError, SplitError, StoreError, EvaluationError, FingerprintMismatch, ValueError


def run_point(item: SweepPoint, seed: int, root: str | Path, points: Mapping[str, SweepPoint]) -> str:
    """Trains (resuming) and evaluates one point for one seed unless it is finished; returns "skipped" or "ran"."""
    from crescend_jax.evaluate.run import evaluate_workdir  # noqa: PLC0415
    from crescend_jax.train import trainer  # noqa: PLC0415

    workdir = seed_workdir(root, item, seed)
    baseline = seed_workdir(root, points[item.baseline], seed) if item.baseline else None
    config = run_config(item, seed, root, points)
    if finished(workdir, baseline, config):
        return "skipped"
    trainer.train(config, workdir)
    evaluate_workdir(str(workdir), baseline=None if baseline is None else str(baseline))
    return "ran"


def _data_key(config: ml_collections.ConfigDict) -> str:
    sections = {name: config.get(name) for name in DATA_SECTIONS}
    sections = json.loads(json.dumps({k: (v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v)
                                      for k, v in sections.items()}, default=str))
    if isinstance(sections.get("data"), dict):
        for field in SPLIT_FIELDS:
            sections["data"].pop(field, None)
    return json.dumps(sections, sort_keys=True)


def extract_stores(points: Sequence[SweepPoint]) -> int:
    """Runs `crescend_jax.data.extract.run_extract` once for every store the points read (each encoder of a fusion);
    returns the worst exit code (a store with failed items still trains on the rest: reported, not fatal)."""
    from crescend_jax.data.extract import run_extract  # noqa: PLC0415

    seen: set[str] = set()
    worst = 0
    for item in points:
        names = tuple(item.config.store.get("fuse", ()) or ()) or (item.config.encoder.name,)
        for name in names:
            config = ml_collections.ConfigDict(item.config.to_dict())
            config.encoder.name = name
            config.store.fuse = ()
            key = _data_key(config)
            if key in seen:
                continue
            seen.add(key)
            print(f"[sweep] extract encoder {name!r} for point {item.name}", flush=True)
            worst = max(worst, run_extract(config))
    return worst


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str | Path, all_overrides: Sequence[str] = (), *,
              command: str = "") -> int:
    """Runs every unfinished point of ``sweep`` into ``workdir`` and writes the table; returns an exit code (0 all
    finished, 1 some point failed, 2 a sweep config mistake). `TrainingStopped` and KeyboardInterrupt propagate
    (a killed sweep): rerun the same command to resume."""
    from crescend_jax.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: PLC0415

    try:
        points = expand_sweep(sweep, all_overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    by_name = {item.name: item for item in points}
    seeds = tuple(int(s) for s in sweep.seeds)
    _write_plan(root, sweep, points, all_overrides, command)
    for note in sweep.get("notes", ()) or ():
        print(f"[sweep] note: {note}")
    print(f"[sweep] {len(points)} points x {len(seeds)} seeds into {root}", flush=True)
    if sweep.get("extract", False) and extract_stores(points) >= 2:
        print("error: extraction failed; see the messages above", file=sys.stderr)
        return EXIT_FAILED
    from crescend_jax.train.trainer import TrainingStopped as stopped  # noqa: PLC0415

    failures: dict[str, str] = {}
    errors = _run_errors()
    for index, item in enumerate(points, 1):
        if item.same_as:
            print(f"[sweep {index}/{len(points)}] {item.name}: same config as {item.same_as} (shares its runs)")
            if item.same_as in failures:
                failures[item.name] = f"same as failed point {item.same_as}"
            continue
        blocked = [d for d in item.depends if d in failures]
        if blocked:
            failures[item.name] = f"not run: it depends on failed point(s) {', '.join(blocked)}"
            print(f"[sweep {index}/{len(points)}] {item.name}: {failures[item.name]}", file=sys.stderr)
            continue
        for seed in seeds:
            print(f"[sweep {index}/{len(points)}] {item.name} seed {seed} -> {seed_workdir(root, item, seed)}",
                  flush=True)
            try:
                status = run_point(item, seed, root, by_name)
            except errors as err:
                if isinstance(err, stopped):  # a simulated kill: the sweep stops here, a rerun resumes it
                    raise
                failures[item.name] = f"seed {seed}: {err}"
                print(f"error: sweep point {item.name} seed {seed}: {err}", file=sys.stderr)
                break
            if status == "skipped":
                print("  finished earlier: skipped")
    write_results(sweep, points, root, failures, command)
    print(f"[sweep] table: {root / 'results.md'}")
    if failures:
        print(f"[sweep] {len(failures)} point(s) failed: {', '.join(failures)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _write_plan(root: Path, sweep: ml_collections.ConfigDict, points: Sequence[SweepPoint],
                all_overrides: Sequence[str], command: str) -> None:
    import jax  # noqa: PLC0415

    if jax.process_index() != 0:
        return
    plan = {"command": command, "sweep": sweep.to_dict(), "all_overrides": list(all_overrides),
            "points": [{"name": p.name, "base": p.base, "fields": p.fields, "baseline": p.baseline,
                        "depends": list(p.depends), "same_as": p.same_as, "learning_rate": p.learning_rate}
                       for p in points]}
    (root / SWEEP_FILE).write_text(json.dumps(plan, indent=1, default=str))


# ----------------------------------------------------------------------------------------------------- results


def _value(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def encoder_label(config: ml_collections.ConfigDict) -> str:
    """"features", "midi", or "features+midi" for a fusion."""
    fuse = tuple(config.store.get("fuse", ()) or ()) if "store" in config else ()
    if fuse:
        return "+".join(fuse)
    return str(config.encoder.name) if "encoder" in config else "?"


class _Tables:
    """Held-out tables and ridge references, loaded once per data and folds."""

    def __init__(self):
        self.sources: dict[str, Any] = {}
        self.references: dict[tuple[str, str], Any] = {}

    def source(self, config: ml_collections.ConfigDict):
        key = _data_key(config)
        if key not in self.sources:
            from crescend_jax.data import store  # noqa: PLC0415

            self.sources[key] = store.load_table(config)
        return self.sources[key]

    def heldout(self, config: ml_collections.ConfigDict, workdir: Path):
        """The rows of the source table that ``workdir``'s heldout.npz holds (in table order)."""
        from crescend_jax.evaluate.comparison import HELDOUT_FILE  # noqa: PLC0415

        table = self.source(config)
        saved = np.load(workdir / HELDOUT_FILE)
        wanted = set(np.char.add(np.char.add(saved["keys"].astype(str), "|"), saved["renders"].astype(str)).tolist())
        ids = np.char.add(np.char.add(table.keys.astype(str), "|"), table.renders.astype(str))
        return table.subset(np.flatnonzero(np.isin(ids, list(wanted))))

    def reference(self, config: ml_collections.ConfigDict, workdir: Path, heldout):
        from crescend_jax.data import fingerprint as fingerprint_lib  # noqa: PLC0415
        from crescend_jax.evaluate.reference import reference_predictions  # noqa: PLC0415

        _, folds = fingerprint_lib.read_record(workdir)
        key = (_data_key(config), json.dumps(folds, sort_keys=True))
        if key not in self.references:
            self.references[key] = reference_predictions(self.source(config), folds, heldout)[0]
        return self.references[key]


def _metric(metrics: dict, path: str) -> Any:
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _seed_row(seed: int, workdir: Path, metrics: dict) -> dict[str, Any]:
    return {"seed": seed, "workdir": str(workdir),
            "accuracy": _metric(metrics, "pooled.pairwise_accuracy.mean"),
            "low": _metric(metrics, "interval.mean.low"), "high": _metric(metrics, "interval.mean.high"),
            "fraction": _metric(metrics, "fraction_of_ceiling.pairwise_accuracy.mean"),
            "tau": _metric(metrics, "pooled.kendall_tau_b.mean"),
            "fold_std": _metric(metrics, "fold_std.pairwise_accuracy.mean"),
            "reference": _metric(metrics, "reference.pairwise_accuracy.mean"),
            "vs_baseline": _metric(metrics, "versus_baseline.mean.estimate"),
            "vs_baseline_low": _metric(metrics, "versus_baseline.mean.low"),
            "vs_baseline_high": _metric(metrics, "versus_baseline.mean.high"),
            "vs_reference": _metric(metrics, "reference.difference.mean.estimate"),
            "vs_reference_low": _metric(metrics, "reference.difference.mean.low"),
            "vs_reference_high": _metric(metrics, "reference.difference.mean.high")}


def pooled_metrics(item: SweepPoint, runs: list[tuple[int, Path, dict]], baseline_runs: list[Path],
                   tables: _Tables) -> dict[str, Any]:
    """The seed-pooled, metrics-like dict of one point (see `crescend_jax.evaluate.seed_pooling`)."""
    from crescend_jax.data.dimensions import DIMENSIONS  # noqa: PLC0415
    from crescend_jax.evaluate import ceiling as ceiling_lib  # noqa: PLC0415
    from crescend_jax.evaluate import seed_pooling  # noqa: PLC0415
    from crescend_jax.evaluate.comparison import load_heldout  # noqa: PLC0415
    from crescend_jax.evaluate.run import eval_settings  # noqa: PLC0415
    from crescend_jax.evaluate.summary import to_json  # noqa: PLC0415

    settings = eval_settings(item.config)
    boot = {"seed": int(settings.bootstrap_seed), "num_replicates": int(settings.bootstrap_replicates)}
    heldout = tables.heldout(item.config, runs[0][1])
    predictions = [load_heldout(workdir, heldout) for _, workdir, _ in runs]
    interval = seed_pooling.pooled_interval(predictions, heldout, **boot)
    first = runs[0][2]
    ceiling = np.array([np.nan if v is None else v for v in first["ceiling"]["per_dimension"]], np.float64)
    accuracy = np.asarray(interval["per_dimension"]["estimate"], np.float64)
    defined = np.isfinite(accuracy) & np.isfinite(ceiling)
    mean_ceiling = float(np.mean(ceiling[defined])) if defined.any() else float("nan")
    scale = lambda value: float(ceiling_lib.fraction_of_ceiling(np.array([value]), np.array([mean_ceiling]))[0])

    def mean_of(path: str) -> float | None:
        values = [_metric(metrics, path) for _, _, metrics in runs]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    result: dict[str, Any] = {
        "dimensions": list(DIMENSIONS),
        "seeds": [seed for seed, _, _ in runs],
        "pooled": {"pairwise_accuracy": {"mean": interval["mean"]["estimate"], "per_dimension": accuracy},
                   "kendall_tau_b": {"mean": mean_of("pooled.kendall_tau_b.mean")}},
        "kendall_tau_b": {"mean": mean_of("pooled.kendall_tau_b.mean")},
        "interval": interval,
        "seed_std": {"pairwise_accuracy": seed_pooling.seed_spread(
            [_metric(m, "pooled.pairwise_accuracy.mean") for _, _, m in runs])},
        "ceiling": {"per_dimension": ceiling, "mean": mean_ceiling},
        "fraction_of_ceiling": {"pairwise_accuracy": {
            "per_dimension": ceiling_lib.fraction_of_ceiling(accuracy, ceiling),
            "mean": scale(interval["mean"]["estimate"]), "low": scale(interval["mean"]["low"]),
            "high": scale(interval["mean"]["high"])}},
        # the spread over folds (mean over seeds); undefined for a single fold, where metrics.json says 0
        "fold_std": {"pairwise_accuracy": {"mean": mean_of("fold_std.pairwise_accuracy.mean")
                                           if len(first.get("folds", [])) >= 2 else None}},
    }
    if settings.reference and "reference" in first:
        # one reference per seed: each fits the rows its seed's network fitted (its own validation compositions)
        references = [tables.reference(item.config, workdir, heldout) for _, workdir, _ in runs]
        reference_interval = seed_pooling.pooled_interval(references, heldout, **boot)
        result["reference"] = {"pairwise_accuracy": {"mean": reference_interval["mean"]["estimate"],
                                                     "per_dimension": reference_interval["per_dimension"]["estimate"]},
                               "interval": reference_interval,
                               "difference": seed_pooling.pooled_difference(predictions, references, heldout,
                                                                            **boot)}
    if item.baseline and baseline_runs:
        base = [load_heldout(workdir, heldout) for workdir in baseline_runs]
        result["versus_baseline"] = seed_pooling.pooled_difference(predictions, base, heldout, **boot)
        result["baseline_name"] = item.baseline
    return to_json(result)


def swept_fields(points: Sequence[SweepPoint]) -> list[str]:
    """Dotted fields any point sets itself (its own fields and grid values), in first-seen order; the
    ``@`` references (workdirs) left out."""
    fields: dict[str, None] = {}
    for item in points:
        for name in item.fields:
            if name not in item.references:
                fields.setdefault(name, None)
    return list(fields)


def write_results(sweep: ml_collections.ConfigDict, points: Sequence[SweepPoint], root: str | Path,
                  failures: Mapping[str, str] | None = None, command: str = "") -> dict[str, Any]:
    """Collects every point's finished seeds into results.json, the tables, plots and the per-dimension analysis;
    returns the results dict. A point whose pooling fails keeps its per-seed rows and says why."""
    import jax  # noqa: PLC0415

    from crescend_jax.evaluate import per_dimension, sweep_report  # noqa: PLC0415

    root = Path(root)
    failures = dict(failures or {})
    by_name = {item.name: item for item in points}
    seeds = tuple(int(s) for s in sweep.seeds)
    swept = swept_fields(points)
    tables = _Tables()
    results: dict[str, Any] = {"name": sweep.get("name") or root.name, "command": command, "seeds": list(seeds),
                               "swept": swept, "notes": list(sweep.get("notes", ()) or ()), "points": {}}
    for item in points:
        runs = []
        for seed in seeds:
            workdir = seed_workdir(root, item, seed)
            baseline = seed_workdir(root, by_name[item.baseline], seed) if item.baseline else None
            if finished(workdir, baseline, run_config(item, seed, root, by_name)):
                runs.append((seed, workdir, json.loads((workdir / "metrics.json").read_text())))
        baseline_runs = []
        if item.baseline:
            other = by_name[item.baseline]
            baseline_runs = [seed_workdir(root, other, s) for s in seeds
                             if finished(seed_workdir(root, other, s), None, run_config(other, s, root, by_name))]
        values = {f: (item.learning_rate.get(f[len(SWEEP_SECTION) + 1:]) if _sweep_field(f)
                      else _value(item.config, f)) for f in swept}
        entry: dict[str, Any] = {
            "approach": str(item.config.model.name), "encoder": encoder_label(item.config), "base": item.base,
            "values": values, "baseline": item.baseline, "same_as": item.same_as,
            "learning_rate": item.learning_rate["resolved"], "error": failures.get(item.name),
            "status": "done" if len(runs) == len(seeds) else (f"{len(runs)}/{len(seeds)} seeds"
                                                              if runs else "failed" if item.name in failures
                                                              else "not run"),
            "per_seed": [_seed_row(seed, workdir, metrics) for seed, workdir, metrics in runs], "pooled": None}
        if runs:
            try:
                entry["pooled"] = pooled_metrics(item, runs, baseline_runs, tables)
            except _run_errors() as err:
                entry["error"] = f"pooling seeds failed: {err}"
        results["points"][item.name] = entry
    if jax.process_index() != 0:
        return results
    from crescend_jax.evaluate.summary import to_json  # noqa: PLC0415

    (root / RESULTS_FILE).write_text(json.dumps(to_json(results), indent=1, default=str))
    sweep_report.plot_fields(results, root)
    preamble = _preamble(results, points, sweep)
    sweep_report.write_tables(results, root, preamble)
    pooled = {name: p["pooled"] for name, p in results["points"].items() if p.get("pooled")}
    if pooled:
        per_dimension.write_analysis(per_dimension.analyze_dimensions(pooled), root, title=results["name"])
    return results


def _preamble(results: Mapping[str, Any], points: Sequence[SweepPoint], sweep: ml_collections.ConfigDict) -> str:
    encoders = sorted({encoder_label(p.config) for p in points})
    lines = [f"# Sweep {results['name']}", ""]
    if results.get("command"):
        lines += [f"Regenerate: `{results['command']}`", ""]
    lines += [f"{len(points)} points x seeds {list(results['seeds'])}; encoder(s): {', '.join(encoders)}; "
              f"baseline point: {sweep.get('baseline') or '(per point)'}. Accuracy: mean over seeds of the held-out "
              "pairwise accuracy (within same-music groups, compositions never seen in training), 95% interval from "
              "a bootstrap over same-music groups stratified by composition of the seed-averaged pair outcomes; "
              "'seed sd': standard deviation over seeds; 'fold sd': spread over folds (mean over seeds); Δ columns: "
              "paired bootstrap differences (* = interval excludes 0). Per-dimension analysis: "
              "[dimensions.md](dimensions.md).", ""]
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines) + ("\n\n" if results.get("notes") else "\n")


# ----------------------------------------------------------------------------------------------------- commands


def sweep_main(argv: Sequence[str]) -> int:
    """``crescend-jax sweep --config=SWEEP.py --workdir=DIR [--config.x=y ...] [--all.field=value ...]``."""
    from crescend_jax.cli import EXIT_USAGE, _flag_value  # noqa: PLC0415

    argv = list(argv)
    every = [a for a in argv if a.startswith("--all.")]
    rest = [a for a in argv if not a.startswith("--all.")]
    try:
        bad = [a for a in every if "=" not in a]
        if bad:
            raise ConfigError(f"cannot read {bad[0]!r}: write --all.field=value")
        config_file = _flag_value(rest, "config")
        if config_file is None:
            raise ConfigError("sweep needs --config=FILE (e.g. configs/sweeps/ablations.py)")
        sweep, values, positional = parse_config_flags(rest, config_file=config_file, extra={"workdir": None})
        if positional:
            raise ConfigError(f"unexpected argument {positional[0]!r}; see `crescend-jax sweep --help`")
        if not values.get("workdir"):
            raise ConfigError("sweep needs --workdir=DIR")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not sweep.get("name"):
        with sweep.unlocked():
            sweep.name = Path(config_file).stem
    overrides = ["--config." + a[len("--all."):] for a in every]
    command = " ".join(["crescend-jax", "sweep", *(shlex.quote(a) for a in argv)])
    return run_sweep(sweep, values["workdir"], overrides, command=command)


def analyze_main(argv: Sequence[str]) -> int:
    """``crescend-jax analyze --workdir=SWEEPDIR`` or ``--runs DIR1 DIR2 ... [--out=DIR]``: the per-dimension table
    and figure (`crescend_jax.evaluate.per_dimension`)."""
    from crescend_jax.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: PLC0415
    from crescend_jax.evaluate import per_dimension  # noqa: PLC0415

    workdir, out, runs = None, None, []
    items = list(argv)
    index = 0
    try:
        while index < len(items):
            item = items[index]
            name, _, value = item.partition("=")
            if name in ("--workdir", "--out"):
                if not value:
                    index += 1
                    if index >= len(items):
                        raise ConfigError(f"{name} needs a directory")
                    value = items[index]
                workdir, out = (value, out) if name == "--workdir" else (workdir, value)
            elif name == "--runs":
                runs.extend(v for v in value.split(",") if v)
                while index + 1 < len(items) and not items[index + 1].startswith("--"):
                    index += 1
                    runs.append(items[index])
            else:
                raise ConfigError(f"unexpected argument {item!r}; analyze takes --workdir=SWEEPDIR or --runs DIR ... "
                                  "[--out=DIR]")
            index += 1
        if bool(workdir) == bool(runs):
            raise ConfigError("analyze needs either --workdir=SWEEPDIR or --runs DIR1 DIR2 ...")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        loaded = per_dimension.load_sweep(workdir) if workdir else per_dimension.load_runs(runs)
        analysis = per_dimension.analyze_dimensions(loaded)
    except (ValueError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    target = Path(out or workdir or Path(runs[0]).parent)
    paths = per_dimension.write_analysis(analysis, target, title=Path(workdir).name if workdir else "")
    gains = analysis.real_gain.sum(axis=1)
    for name, count, compared in zip(analysis.names, gains, analysis.compared):
        print(f"{name}: " + (f"{int(count)} of 19 dimensions really above the baseline" if compared
                             else "no baseline comparison"))
    print(f"table: {paths['markdown']}\nfigure: {paths['figure']}")
    return EXIT_OK
