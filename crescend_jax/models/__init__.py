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


def approach_for(config) -> Approach:
    """The approach ``config`` trains: ``config.model.name``'s, behind a fine-tuned MuQ trunk when
    ``config.trunk.kind == "finetune"`` (`crescend_jax.models.trunk`)."""
    approach = get_approach(config.model.name)
    from crescend_jax.models import trunk  # noqa: PLC0415 - only a fine-tuned trunk needs the Flax MuQ port

    return trunk.Finetuned(approach) if trunk.is_finetuned(config) else approach


__all__ = ["APPROACHES", "Approach", "approach_for", "get_approach"]
