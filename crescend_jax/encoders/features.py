"""`FeatureEncoder`: a weight-free librosa encoder (log-mel + log-CQT) implementing `crescend_jax.encoders.Encoder`.

Per frame (hop 960 at 24 kHz = 25 frames/s, like MuQ) the base feature is

    z_t = (concat(dB(mel_t), dB(cqt_t)) - db_center) / db_scale        float32 [dim = n_mels + cqt_bins]

with dB(p) = 10 log10(max(p, 1e-10)) on an absolute scale (no per-item reference, so loudness survives).
Layers, each [frames, dim], selected by ``layers``:

    "level":     z_t                                          timbre, loudness, register, pedal resonance
    "flux":      max(z_t - z_{t-1}, 0), 0 at t = 0            onset / articulation activity
    "deviation": |z_t - mean_t z|                             dynamic range and contrast within the segment

``pooled`` is the per-layer time mean, so e.g. pooled "flux" is the mean onset strength per frame.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import librosa
import ml_collections
import numpy as np

from crescend_jax.encoders.base import Encoded, settings_digest

# Bumped by hand when this module's output changes: part of every store's identity (a new version, a new store).
ENCODER_VERSION = 1
LAYERS = ("level", "flux", "deviation")
_AMIN = 1e-10  # power floor: -100 dB


def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder.features``: librosa feature settings (``name="features"``)."""
    config = ml_collections.ConfigDict()
    config.name = "features"
    config.sample_rate = 24000
    config.hop_length = 960  # 25 frames/s at 24 kHz
    config.n_fft = 2048
    config.n_mels = 128
    config.mel_fmin = 27.5  # A0, the lowest piano key
    config.cqt_bins = 88  # one bin per piano key, A0..C8
    config.cqt_bins_per_octave = 12
    config.cqt_fmin = 27.5
    # Measured over 30 PercePiano segments rendered with FluidR3 at gain 0.5: dB mean -43.7, std 23.9.
    config.db_center = -45.0
    config.db_scale = 25.0
    config.layers = LAYERS
    return config


class FeatureEncoder:
    """Log-mel + log-CQT frames and their temporal statistics; see the module docstring for the formulas.

    ``name`` is ``features-mel<n_mels>-cqt<cqt_bins>-<hash of every setting and the librosa version>``.

    ``encode`` returns frames float32 [len(layers), 1 + floor(n_samples / hop_length), n_mels + cqt_bins]
    (centred frames, zero padding at the edges) and pooled float32 [len(layers) * dim].
    """

    def __init__(self, *, sample_rate: int = 24000, hop_length: int = 960, n_fft: int = 2048, n_mels: int = 128,
                 mel_fmin: float = 27.5, cqt_bins: int = 88, cqt_bins_per_octave: int = 12, cqt_fmin: float = 27.5,
                 db_center: float = -45.0, db_scale: float = 25.0, layers: Sequence[str] = LAYERS):
        unknown = [name for name in layers if name not in LAYERS]
        if unknown or not layers:
            raise ValueError(f"feature encoder layers {tuple(layers)}: choose a non-empty subset of {LAYERS}")
        top = cqt_fmin * 2 ** ((cqt_bins - 1) / cqt_bins_per_octave)
        if top >= sample_rate / 2:
            raise ValueError(f"CQT top bin {top:.0f} Hz is above Nyquist ({sample_rate / 2:.0f} Hz); "
                             f"lower cqt_bins or cqt_fmin")
        if db_scale <= 0:
            raise ValueError(f"db_scale={db_scale} must be > 0")
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.n_fft = int(n_fft)
        self.n_mels = int(n_mels)
        self.mel_fmin = float(mel_fmin)
        self.cqt_bins = int(cqt_bins)
        self.cqt_bins_per_octave = int(cqt_bins_per_octave)
        self.cqt_fmin = float(cqt_fmin)
        self.db_center = float(db_center)
        self.db_scale = float(db_scale)
        self.layers = tuple(layers)
        self.frame_rate = self.sample_rate / self.hop_length
        self.num_layers = len(self.layers)
        self.dim = self.n_mels + self.cqt_bins
        self._mel_basis = librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels,
                                              fmin=self.mel_fmin).astype(np.float32)  # [n_mels, n_fft // 2 + 1]
        settings = {k: getattr(self, k) for k in ("sample_rate", "hop_length", "n_fft", "n_mels", "mel_fmin",
                                                  "cqt_bins", "cqt_bins_per_octave", "cqt_fmin", "db_center",
                                                  "db_scale", "layers")}
        settings["librosa"] = librosa.__version__  # another librosa may compute other features
        self.name = f"features-mel{self.n_mels}-cqt{self.cqt_bins}-{settings_digest(settings)}"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "FeatureEncoder":
        """From `default_encoder_config`'s fields (``name`` must be "features")."""
        if config.name != "features":
            raise ValueError(f"FeatureEncoder.from_config got encoder name {config.name!r}, expected 'features'")
        return cls(sample_rate=config.sample_rate, hop_length=config.hop_length, n_fft=config.n_fft,
                   n_mels=config.n_mels, mel_fmin=config.mel_fmin, cqt_bins=config.cqt_bins,
                   cqt_bins_per_octave=config.cqt_bins_per_octave, cqt_fmin=config.cqt_fmin,
                   db_center=config.db_center, db_scale=config.db_scale, layers=tuple(config.layers))

    def base_features(self, audio: np.ndarray) -> np.ndarray:
        """z: float32 [1 + floor(n / hop_length), n_mels + cqt_bins], standardised dB (mel first, then CQT)."""
        frames = 1 + len(audio) // self.hop_length
        with warnings.catch_warnings():  # short inputs: librosa warns that its FFT is longer than the signal
            warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal")
            stft = librosa.stft(audio, n_fft=self.n_fft, hop_length=self.hop_length, pad_mode="constant")
            cqt = librosa.cqt(audio, sr=self.sample_rate, hop_length=self.hop_length, fmin=self.cqt_fmin,
                              n_bins=self.cqt_bins, bins_per_octave=self.cqt_bins_per_octave, pad_mode="constant")
        mel = self._mel_basis @ (np.abs(stft) ** 2)  # [n_mels, frames]
        power = np.concatenate([mel[:, :frames], np.abs(cqt[:, :frames]) ** 2], axis=0).T  # [frames, dim]
        db = 10.0 * np.log10(np.maximum(power, _AMIN))
        return ((db - self.db_center) / self.db_scale).astype(np.float32)

    def _layer(self, name: str, z: np.ndarray) -> np.ndarray:
        if name == "level":
            return z
        if name == "flux":
            return np.maximum(np.diff(z, axis=0, prepend=z[:1]), 0.0)
        return np.abs(z - z.mean(axis=0, keepdims=True))  # "deviation"

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[Encoded]:
        """Encodes mono float waveforms (any lengths >= 1 sample) at ``sample_rate``; one `Encoded` per input.

        Audio at another rate must go through `crescend_jax.encoders.base.resample` first: the encoder cannot
        detect a wrong rate.
        """
        encoded = []
        for index, waveform in enumerate(waveforms):
            audio = np.asarray(waveform, dtype=np.float32)
            if audio.ndim != 1 or audio.size == 0:
                raise ValueError(f"waveform {index}: expected mono audio of shape [n > 0], got {audio.shape}; "
                                 f"average stereo channels first")
            if not np.all(np.isfinite(audio)):
                raise ValueError(f"waveform {index}: contains NaN or infinite samples")
            z = self.base_features(audio)
            frames = np.stack([self._layer(name, z) for name in self.layers]).astype(np.float32)
            encoded.append(Encoded(frames=frames, pooled=frames.mean(axis=1).reshape(-1)))
        return encoded
