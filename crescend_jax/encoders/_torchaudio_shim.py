"""The two torchaudio transforms MuQ's front end uses, in plain torch, for machines without torchaudio.

Why: ``muq`` imports ``torchaudio`` at module level (``muq/modules/features.py``, and the MuLan files), but the
registry's torchaudio wheel is a CUDA build that does not import beside the CPU torch wheel. MuQ itself only needs
``MelSpectrogram(sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128)`` followed by ``AmplitudeToDB()``;
these are re-implemented here with torchaudio's defaults (periodic Hann window, ``center=True`` with reflect
padding, power 2, HTK mel scale without filter normalisation; dB = 10 log10(max(x, 1e-10))) so the numbers match.
`install_as_torchaudio` registers this module as ``torchaudio`` only while ``muq`` is imported, and only after the
real ``import torchaudio`` failed (see `crescend_jax.encoders.muq.import_muq`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from typing import Iterator

import torch
from torch import nn


def hz_to_mel_htk(freq: float) -> float:
    """HTK mel scale: m = 2595 log10(1 + f / 700)."""
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz_htk(mels: torch.Tensor) -> torch.Tensor:
    """Inverse HTK mel scale: f = 700 (10^(m / 2595) - 1)."""
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK mel filters, unnormalised, as torchaudio's ``melscale_fbanks(norm=None, mel_scale="htk")``.

    Filter j rises linearly from f_j to f_{j+1} and falls to f_{j+2}, where f = mel_to_hz(linspace(mel(f_min),
    mel(f_max), n_mels + 2)); bins at linspace(0, sample_rate // 2, n_freqs). Returns float32 [n_freqs, n_mels].
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2)
    freq_points = mel_to_hz_htk(mel_points)
    freq_gaps = freq_points[1:] - freq_points[:-1]  # [n_mels + 1]
    slopes = freq_points.unsqueeze(0) - all_freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    rising = -slopes[:, :-2] / freq_gaps[:-1]
    falling = slopes[:, 2:] / freq_gaps[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class Spectrogram(nn.Module):
    """Power spectrogram |STFT|^2 of [..., time] -> [..., n_fft // 2 + 1, frames] (torchaudio's defaults)."""

    def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None,
                 power: float = 2.0, center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.power = power
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer("window", torch.hann_window(self.win_length))  # periodic, as torchaudio

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        flat = waveform.reshape(-1, shape[-1])
        spec = torch.stft(flat, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=self.center, pad_mode=self.pad_mode, normalized=False,
                          onesided=True, return_complex=True)
        spec = spec.abs().pow(self.power)
        return spec.reshape(shape[:-1] + spec.shape[-2:])


class MelSpectrogram(nn.Module):
    """Mel power spectrogram [..., time] -> [..., n_mels, frames]: Spectrogram then HTK mel filters."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None,
                 n_mels: int = 128) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(n_fft=n_fft, win_length=win_length, hop_length=hop_length)
        f_max = float(sample_rate // 2) if f_max is None else f_max
        self.register_buffer("fb", melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(waveform)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class AmplitudeToDB(nn.Module):
    """Power to decibels: 10 log10(max(x, amin)) - 10 log10(max(amin, ref)) (torchaudio's defaults, no top_db)."""

    def __init__(self, stype: str = "power", top_db: float | None = None) -> None:
        super().__init__()
        if stype != "power" or top_db is not None:
            raise NotImplementedError("the torchaudio shim implements AmplitudeToDB(stype='power', top_db=None) "
                                      "only (what MuQ uses); install torchaudio for other settings")
        self.amin = 1e-10
        self.db_offset = 10.0 * math.log10(max(self.amin, 1.0))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power, min=self.amin)) - self.db_offset


class _NeedsTorchaudio(nn.Module):
    """MuQ-MuLan's training-time spec augmentations: imported by ``muq`` but never used by MuQ feature extraction."""

    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError(f"{type(self).__name__} needs the real torchaudio (only MuQ-MuLan training "
                                  "uses it); crescend-jax's torchaudio shim covers MuQ feature extraction only")


class TimeStretch(_NeedsTorchaudio):
    pass


class FrequencyMasking(_NeedsTorchaudio):
    pass


class TimeMasking(_NeedsTorchaudio):
    pass


@contextlib.contextmanager
def install_as_torchaudio() -> Iterator[None]:
    """Registers this module as ``torchaudio`` / ``torchaudio.transforms`` in ``sys.modules`` inside the block."""
    transforms = types.ModuleType("torchaudio.transforms")
    for cls in (Spectrogram, MelSpectrogram, AmplitudeToDB, TimeStretch, FrequencyMasking, TimeMasking):
        setattr(transforms, cls.__name__, cls)
    package = types.ModuleType("torchaudio")
    package.transforms = transforms
    package.__crescend_shim__ = True
    saved = {name: sys.modules.get(name) for name in ("torchaudio", "torchaudio.transforms")}
    sys.modules["torchaudio"], sys.modules["torchaudio.transforms"] = package, transforms
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
