"""The optimiser of a run: AdamW, optionally one per parameter group (optax ``multi_transform``).

``config.train.param_groups`` maps a group name to a section ``{pattern, learning_rate, weight_decay, frozen}``:
every parameter whose path (``"mlp/linears/0/kernel"``, ``"trunk/layers/3/attention/query/kernel"``) matches the
regular expression ``pattern`` (``re.search``; the first group that matches wins) gets that group's AdamW, or no
update when ``frozen``; the other parameters get ``train.learning_rate`` / ``train.weight_decay``. Empty (default):
one AdamW.

    --config.train.param_groups.trunk.pattern=^trunk/ (after adding the section in a config file)
"""

from __future__ import annotations

import re

import jax
import ml_collections
import optax
from flax import nnx

from crescend_jax.config import ConfigError

DEFAULT_GROUP = "default"


def param_group_config(pattern: str, learning_rate: float, weight_decay: float = 0.0,
                       frozen: bool = False) -> ml_collections.ConfigDict:
    """One ``train.param_groups`` entry."""
    return ml_collections.ConfigDict({"pattern": pattern, "learning_rate": learning_rate,
                                      "weight_decay": weight_decay, "frozen": frozen})


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def param_labels(params, groups: ml_collections.ConfigDict) -> object:
    """A pytree like ``params`` whose leaves are group names (`DEFAULT_GROUP` where no pattern matches)."""
    compiled = []
    for name, group in groups.items():
        try:
            compiled.append((name, re.compile(group.pattern)))
        except re.error as err:
            raise ConfigError(f"train.param_groups.{name}.pattern={group.pattern!r} is not a regular expression: "
                              f"{err}") from None

    def label(path, _):
        text = _path_name(path)
        return next((name for name, pattern in compiled if pattern.search(text)), DEFAULT_GROUP)

    return jax.tree_util.tree_map_with_path(label, params)


def build_optimizer(train: ml_collections.ConfigDict, params,
                    extra_groups: ml_collections.ConfigDict | None = None) -> optax.GradientTransformation:
    """AdamW(train.learning_rate, train.weight_decay), or a ``multi_transform`` over ``train.param_groups`` then
    ``extra_groups`` (the groups a model part adds, e.g. `crescend_jax.models.trunk.param_groups`; one that matches
    no parameter is dropped). ``params`` (the parameter pytree, shapes suffice) is needed to label the groups; a
    ``train.param_groups`` group that matches no parameter is a `ConfigError` (a misspelled pattern would otherwise
    silently train everything alike)."""
    default = optax.adamw(train.learning_rate, weight_decay=train.weight_decay)
    own = train.get("param_groups") or ml_collections.ConfigDict()
    extra = extra_groups or ml_collections.ConfigDict()
    clash = sorted(set(own) & set(extra))
    if clash:
        raise ConfigError(f"train.param_groups {clash}: these names are reserved for the model's own groups; "
                          "rename them")
    groups = {name: ml_collections.ConfigDict(section) for name, section in [*own.items(), *extra.items()]}
    if not groups:
        return default
    if isinstance(params, nnx.State):  # a whole model state: the optimiser sees its parameters only
        params = nnx.filter_state(params, nnx.Param)
    labels = param_labels(params, groups)
    used = set(jax.tree.leaves(labels))
    for name in [name for name in extra if name not in used]:
        del groups[name]
    unused = [name for name in groups if name not in used]
    if unused:
        raise ConfigError(f"train.param_groups {unused} match no parameter; parameter paths look like "
                          f"{_example_paths(params)}")
    transforms = {DEFAULT_GROUP: default}
    for name, group in groups.items():
        transforms[name] = (optax.set_to_zero() if group.get("frozen", False)
                            else optax.adamw(group.learning_rate, weight_decay=group.get("weight_decay", 0.0)))
    return optax.multi_transform(transforms, labels)


def _example_paths(params, count: int = 4) -> list[str]:
    paths = [_path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return paths[:count]
