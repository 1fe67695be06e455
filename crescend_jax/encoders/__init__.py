"""Audio encoders: waveform -> frame-level features and pooled vectors (interface in `base`).

``config.encoder`` holds one sub-section per encoder and ``name`` picks one, so a config switches encoder (and
store) with one field: ``--config.encoder.name=muq``.
"""

from __future__ import annotations

import ml_collections

from crescend_jax.encoders.base import Encoded, Encoder


def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder``: ``name`` ("features": librosa, no weights; "muq": MuQ, PyTorch) + each encoder's settings."""
    from crescend_jax.encoders import features, muq

    config = ml_collections.ConfigDict()
    config.name = "features"
    config.features = features.default_encoder_config()
    config.muq = muq.default_encoder_config()
    return config


def active_encoder_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The settings of the encoder ``config.name`` names (what identifies its store)."""
    if config.name not in config:
        known = [name for name, value in config.items() if isinstance(value, ml_collections.ConfigDict)]
        raise ValueError(f"config.encoder.name is {config.name!r} but config.encoder has no such section; "
                         f"known encoders: {known}")
    return config[config.name]


def build_encoder(config: ml_collections.ConfigDict) -> Encoder:
    """Builds the encoder that ``config.name`` picks from ``config`` (a ``config.encoder`` section)."""
    settings = active_encoder_config(config)
    if config.name == "features":
        from crescend_jax.encoders.features import FeatureEncoder

        return FeatureEncoder.from_config(settings)
    if config.name == "muq":
        from crescend_jax.encoders.muq import MuQEncoder

        return MuQEncoder.from_config(settings)
    raise ValueError(f"unknown encoder {config.name!r}; set --config.encoder.name to 'features' or 'muq'")


__all__ = ["Encoded", "Encoder", "active_encoder_config", "build_encoder", "default_encoder_config"]
