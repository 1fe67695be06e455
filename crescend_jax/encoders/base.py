"""The encoder interface every feature extractor implements, and the set-up the encoders share: the digest of their
settings in their ``name`` (`settings_digest`) and the settings both symbolic encoders read (`set_symbolic_settings`,
`symbolic_digest`)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from typing import Any, Mapping, Protocol, Sequence

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


def settings_digest(settings: Mapping[str, Any]) -> str:
    """The first 8 hex digits of sha256(JSON of ``settings``, keys sorted): the hash of every setting in an encoder's
    ``name``, hence in its store's path. Equal settings give the same digest on every machine and in any key order."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def set_symbolic_settings(encoder: Any, *, chord_window_s: float, score_chord_tolerance_s: float,
                          min_score_ioi_s: float, pedal_threshold: int) -> None:
    """Checks and sets on ``encoder`` the settings both symbolic encoders (midi.py, aligned.py) read alike:
    ``chord_window_s`` (performance onsets within it of a chord's first onset join the chord), ``score_chord_
    tolerance_s`` (score onsets this close coincide), ``min_score_ioi_s`` (the shortest score interval a tempo is
    measured over), all seconds >= 0 stored as float, and ``pedal_threshold`` (the CC64 value 1..127 from which the
    sustain pedal counts as down) stored as int. Raises ValueError naming the setting out of range."""
    if chord_window_s < 0 or score_chord_tolerance_s < 0 or min_score_ioi_s < 0:
        raise ValueError(f"chord_window_s={chord_window_s}, score_chord_tolerance_s={score_chord_tolerance_s} "
                         f"and min_score_ioi_s={min_score_ioi_s} must be >= 0 seconds")
    if not 0 < pedal_threshold <= 127:
        raise ValueError(f"pedal_threshold={pedal_threshold} must be in 1..127")
    encoder.chord_window_s = float(chord_window_s)
    encoder.score_chord_tolerance_s = float(score_chord_tolerance_s)
    encoder.min_score_ioi_s = float(min_score_ioi_s)
    encoder.pedal_threshold = int(pedal_threshold)


SYMBOLIC_SETTINGS = ("chord_window_s", "score_chord_tolerance_s", "min_score_ioi_s", "pedal_threshold")


def symbolic_digest(encoder: Any, own: Sequence[str], version: int, feature_names: Sequence[str]) -> str:
    """`settings_digest` of a symbolic encoder: its attributes named in `SYMBOLIC_SETTINGS` (set by
    `set_symbolic_settings`) and in ``own`` (its other settings), plus its module's ``ENCODER_VERSION``
    (``version``), its feature names and the installed mido version (another mido may read a MIDI file otherwise)."""
    values: dict[str, Any] = {name: getattr(encoder, name) for name in (*SYMBOLIC_SETTINGS, *own)}
    values.update(version=version, features=feature_names, mido=importlib.metadata.version("mido"))
    return settings_digest(values)
