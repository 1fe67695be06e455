"""One file per approach; each exposes an `Approach` (the contract: crescend_jax.models.contract)."""

from __future__ import annotations

import importlib

from crescend_jax.config import ConfigError
from crescend_jax.models.contract import Approach

# name -> (module, class); imported only when asked for, so one approach's dependencies never burden another.
APPROACHES: dict[str, tuple[str, str]] = {
    "baseline": ("crescend_jax.models.baseline", "PointwiseBaseline"),
    "contrastive": ("crescend_jax.models.contrastive", "ContrastiveRanking"),
    "siamese": ("crescend_jax.models.siamese", "Siamese"),
    "disentangled": ("crescend_jax.models.disentangled", "Disentangled"),
}


def get_approach(name: str) -> Approach:
    """The `Approach` registered as ``name`` (set by ``config.model.name``)."""
    if name not in APPROACHES:
        raise ConfigError(f"unknown approach {name!r}; set --config.model.name to one of {sorted(APPROACHES)}")
    module, cls = APPROACHES[name]
    return getattr(importlib.import_module(module), cls)()


# config.trunk.kind -> (module, class) of the `Approach` that wraps the approach behind that trunk ("frozen": none).
TRUNKS: dict[str, tuple[str, str]] = {
    "finetune": ("crescend_jax.models.trunk", "Finetuned"),
    "sequence": ("crescend_jax.models.sequence_trunk", "Sequenced"),
}


def approach_for(config) -> Approach:
    """The approach ``config`` trains: ``config.model.name``'s, wrapped by the trunk of ``config.trunk.kind`` when
    it is not "frozen" (`TRUNKS`: a fine-tuned MuQ trunk, `crescend_jax.models.trunk`, or the sequence trunk,
    `crescend_jax.models.sequence_trunk`)."""
    approach = get_approach(config.model.name)
    from crescend_jax.models import trunk  # noqa: PLC0415 - only a trunk needs the Flax MuQ port

    kind = trunk.trunk_kind(config)
    if kind not in TRUNKS:
        return approach
    module, cls = TRUNKS[kind]
    return getattr(importlib.import_module(module), cls)(approach)


__all__ = ["APPROACHES", "TRUNKS", "Approach", "approach_for", "get_approach"]
