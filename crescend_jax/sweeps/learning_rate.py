"""Learning-rate rules of a sweep: a point's ``train.learning_rate`` is the rate at ``lr_scaling.reference_batch``,
scaled to its ``train.batch_size`` B by ``lr_scaling.rule``: none: lr; linear: lr * B / B_ref; sqrt:
lr * sqrt(B / B_ref)."""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from crescend_jax.config import ConfigError
from crescend_jax.sweeps.language import SWEEP_SECTION

LR_RULES = ("none", "linear", "sqrt")


def lr_settings(sweep: ml_collections.ConfigDict, fields: dict[str, Any], where: str) -> dict[str, Any]:
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
    none: lr; linear: lr * B / B_ref; sqrt: lr * sqrt(B / B_ref). A batch size below 1 is a `ConfigError`."""
    if batch_size < 1:
        raise ConfigError(f"train.batch_size={batch_size} must be >= 1")
    ratio = batch_size / reference_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]
    return float(learning_rate) * factor


