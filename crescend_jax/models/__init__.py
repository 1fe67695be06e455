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


__all__ = ["APPROACHES", "Approach", "get_approach"]
