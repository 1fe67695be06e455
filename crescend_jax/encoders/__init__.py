"""Audio encoders: waveform -> frame-level features and pooled vectors (interface in `base`)."""

from __future__ import annotations

import ml_collections

from crescend_jax.encoders.base import Encoded, Encoder


def build_encoder(config: ml_collections.ConfigDict) -> Encoder:
    """Builds the encoder named by ``config.name`` ("features": librosa, no weights; "muq": MuQ, PyTorch)."""
    if config.name == "features":
        from crescend_jax.encoders.features import FeatureEncoder

        return FeatureEncoder.from_config(config)
    if config.name == "muq":
        from crescend_jax.encoders.muq import MuQEncoder

        return MuQEncoder.from_config(config)
    raise ValueError(f"unknown encoder {config.name!r}; set --config.encoder.name to 'features' or 'muq'")


__all__ = ["Encoded", "Encoder", "build_encoder"]
