"""The sweep language: what a sweep config holds (`default_sweep_config`, `point`), one expanded point
(`SweepPoint`), setting a dotted field with its type kept, and where each point's runs live (see `crescend_jax.sweeps`
for the whole language)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

from crescend_jax.config import ConfigError, known_fields

SWEEP_SECTION = "lr_scaling"  # point fields under this prefix belong to the sweep, not the training config
# Fields the trainer reads with a default (``config.model.get("init_from", "")``): a point may set them even when
# the approach's config section lacks them.
OPTIONAL_FIELDS = {"model.init_from": ""}
POINT_KEYS = ("name", "base", "fields", "grid", "baseline")
DATA_SECTIONS = ("corpus", "data", "render", "encoder", "store")
SPLIT_FIELDS = ("num_folds", "test_compositions", "fold_seed", "split_level")  # data fields that do not pick a store
REFERENCE_PREFIX = "@"


def default_sweep_config() -> ml_collections.ConfigDict:
    """The sweep config's fields (see `crescend_jax.sweeps`)."""
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
    config.table_only = False
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


def sweep_field(name: str) -> bool:
    """Whether the dotted ``name`` belongs to the sweep (``lr_scaling.*``), not to the training config."""
    return name == SWEEP_SECTION or name.startswith(SWEEP_SECTION + ".")


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any, where: str) -> None:
    """Sets ``config.<dotted> = value`` keeping the field's type; an unknown field is a `ConfigError` naming the
    closest known fields (fields of `OPTIONAL_FIELDS` may be added)."""
    import difflib

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


def seed_workdir(root: str | Path, item: SweepPoint, seed: int) -> Path:
    """``<root>/<point whose runs it shares, or itself>/seed_<seed>``."""
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


def data_key(config: ml_collections.ConfigDict) -> str:
    """The store a config reads (its data sections without the split fields), as a JSON string."""
    sections = {name: config.get(name) for name in DATA_SECTIONS}
    sections = json.loads(json.dumps({k: (v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v)
                                      for k, v in sections.items()}, default=str))
    if isinstance(sections.get("data"), dict):
        for field in SPLIT_FIELDS:
            sections["data"].pop(field, None)
    return json.dumps(sections, sort_keys=True)


def value_of(config: ml_collections.ConfigDict, dotted: str) -> Any:
    """``config.<dotted>``, None when the config has no such field."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def encoder_label(config: ml_collections.ConfigDict) -> str:
    """"features", "midi", or "features+midi" for a fusion; ", group-relative" added when the inputs are
    (``data.group_relative``): the same stores, other inputs, so their rows and ridge references stay apart;
    ", sequence trunk" when the model reads them beat by beat (``trunk.kind="sequence"``)."""
    fuse = tuple(config.store.get("fuse", ()) or ()) if "store" in config else ()
    label = "+".join(fuse) if fuse else (str(config.encoder.name) if "encoder" in config else "?")
    relative = "data" in config and bool(config.data.get("group_relative", False))
    sequence = "trunk" in config and config.trunk.get("kind", "frozen") == "sequence"
    return label + (", group-relative" if relative else "") + (", sequence trunk" if sequence else "")


