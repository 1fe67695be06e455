"""Encoders: waveform (or, for symbolic encoders, MIDI) -> frame-level features and pooled vectors.

Audio encoders implement `Encoder` (``base``); symbolic encoders implement `SymbolicEncoder` and read the corpus's
MIDI files directly, so extraction renders nothing for them and writes one store per (corpus, encoder) under the
render id ``SYMBOLIC_RENDER``. ``config.encoder`` holds one sub-section per encoder and ``name`` picks one, so a
config switches encoder (and store) with one field: ``--config.encoder.name=muq`` (or ``midi``, ``aligned``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import ml_collections

from crescend_jax.encoders.base import Encoded, Encoder
from crescend_jax.errors import ConfigError

SYMBOLIC_ENCODERS = ("midi", "aligned")  # encoder names that read MIDI instead of audio
SYMBOLIC_RENDER = "symbolic"  # the render id (store sub-directory) of a symbolic encoder's one store


class SymbolicEncoder(Protocol):
    """MIDI files in, `Encoded` out (no audio). Implementations: midi.py (one vector per segment), aligned.py (one
    frame per score position).

    An encoder that also sets ``reads_windows = True`` gets ``encode_midi(midi_paths, score_paths, windows)``, where
    ``windows[i]`` is the segment's `crescend_jax.data.segments.Window` (ASAP: the cut and its annotated beats) or None.
    """

    symbolic: bool  # True: extraction passes MIDI paths to `encode_midi` and never renders
    name: str  # encoder, settings and code version, e.g. "midi-v1-f32-<hash>"
    frame_rate: float  # frames per second of `Encoded.frames` (0: one frame per segment)
    num_layers: int
    dim: int

    def encode_midi(self, midi_paths: Sequence[Path], score_paths: Sequence[Path | None] | None = None
                    ) -> list[Encoded]:
        """One `Encoded` per performance MIDI; ``score_paths[i]`` is its score MIDI or None."""
        ...


def is_symbolic(config: ml_collections.ConfigDict) -> bool:
    """Whether the encoder ``config.name`` picks (``config`` is a ``config.encoder`` section) reads MIDI, not audio."""
    return config.name in SYMBOLIC_ENCODERS


def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder``: ``name`` ("features": librosa, no weights; "muq": MuQ, PyTorch; "midi": symbolic
    performance features of the MIDI itself; "aligned": symbolic features per score position, frames aligned across
    performances) + each encoder's settings."""
    from crescend_jax.encoders import aligned, features, midi, muq

    config = ml_collections.ConfigDict()
    config.name = "features"
    config.features = features.default_encoder_config()
    config.muq = muq.default_encoder_config()
    config.midi = midi.default_encoder_config()
    config.aligned = aligned.default_encoder_config()
    return config


def active_encoder_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The settings of the encoder ``config.name`` names (what identifies its store)."""
    if config.name not in config:
        known = [name for name, value in config.items() if isinstance(value, ml_collections.ConfigDict)]
        raise ConfigError(f"config.encoder.name is {config.name!r} but config.encoder has no such section; "
                         f"known encoders: {known}")
    return config[config.name]


def build_encoder(config: ml_collections.ConfigDict) -> Encoder | SymbolicEncoder:
    """Builds the encoder that ``config.name`` picks from ``config`` (a ``config.encoder`` section)."""
    settings = active_encoder_config(config)
    if config.name == "features":
        from crescend_jax.encoders.features import FeatureEncoder

        return FeatureEncoder.from_config(settings)
    if config.name == "muq":
        from crescend_jax.encoders.muq import MuQEncoder

        return MuQEncoder.from_config(settings)
    if config.name == "midi":
        from crescend_jax.encoders.midi import MidiEncoder

        return MidiEncoder.from_config(settings)
    if config.name == "aligned":
        from crescend_jax.encoders.aligned import AlignedEncoder

        return AlignedEncoder.from_config(settings)
    raise ValueError(f"unknown encoder {config.name!r}; set --config.encoder.name to 'features', 'muq', 'midi' or "
                     f"'aligned'")


__all__ = ["SYMBOLIC_ENCODERS", "SYMBOLIC_RENDER", "Encoded", "Encoder", "SymbolicEncoder", "active_encoder_config",
           "build_encoder", "default_encoder_config", "is_symbolic"]
