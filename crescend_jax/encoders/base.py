"""The encoder interface every feature extractor implements."""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One segment's features.

    frames: float32 [layers, frames, dim] at ``Encoder.frame_rate`` frames per second.
    pooled: float32 [layers * dim], the per-layer time means concatenated layer-major.
    """

    frames: np.ndarray
    pooled: np.ndarray


class Encoder(Protocol):
    """Waveforms at ``sample_rate`` in, `Encoded` out. Implementations: features.py (librosa), muq.py."""

    name: str  # encoder *and settings* in store paths, e.g. "features-mel128-cqt88-<hash>", "muq-<ckpt>-l9-12-..."
    sample_rate: int  # Hz expected by `encode`
    frame_rate: float  # frames per second of `Encoded.frames`
    num_layers: int
    dim: int  # per-layer feature width; pooled width is num_layers * dim

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[Encoded]:
        """Encodes mono float32 waveforms (any lengths) at ``sample_rate``; one `Encoded` per input."""
        ...


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 ``audio`` [n] from ``source_rate`` to ``target_rate`` Hz (librosa, soxr_hq); the same array when
    the rates agree. Encoders take audio at their ``sample_rate`` only: foreign audio goes through here, never in as
    is."""
    audio = np.asarray(audio, np.float32)
    if source_rate == target_rate:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=source_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)
