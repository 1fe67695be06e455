"""MuQ embeddings (PyTorch): 24 kHz mono audio -> hidden states of chosen layers, pooled over time.

MuQ (``OpenMuQ/MuQ-large-msd-iter``): mel front end (128 HTK mels, hop 240) -> 2-D conv subsampling (x4) ->
12 conformer layers of width 1024, 25 frames per second. ``hidden_states[0]`` is the front end's output and
``hidden_states[i]`` the output of conformer layer i (the last one layer-normalised, as MuQ returns it).

Batching is exact: each item's mel spectrogram is computed on its own samples, the batch is right-padded, and
every convolution whose window could reach the padding (the subsampling convs and each conformer layer's depthwise
conv) sees zeros there, exactly as an unpadded item sees its own zero padding; attention masks the padded keys.
Padded and unpadded items therefore give the same features up to float rounding (tests/test_muq.py checks it).

Segments longer than ``window_seconds`` are cut into windows that overlap by ``window_overlap_seconds`` and start
on frame boundaries; each output frame is taken from the window where it lies furthest from a cut, so every kept
frame has at least half the overlap of real context on each side.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from crescend_jax.encoders.base import Encoded, resample

# Bumped by hand when this module's output changes: part of every store's identity (a new version, a new store).
ENCODER_VERSION = 1
MUQ_SAMPLE_RATE = 24_000
MIN_SAMPLES = 2048  # the centred STFT (n_fft 2048) reflect-pads 1024 samples on each side
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Parameters the feature path never reads (training targets, codebook logits, an unused positional conv, BN
# step counters): a checkpoint may lack them or carry extra ones without changing any feature.
UNUSED_KEY_PATTERNS = (r"^model\.quantizer_", r"^model\.rvq\.", r"^model\.linear\.", r"^model\.recon_proj\.",
                       r"^model\.cls_token$", r"^model\.conformer\.pos_conv_embed\.", r"num_batches_tracked$")


class CheckpointError(ValueError):
    """A MuQ checkpoint that cannot be found or does not match its config."""


def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder.muq``: MuQ settings; a config switches to MuQ with ``--config.encoder.name=muq``."""
    config = ml_collections.ConfigDict()
    config.name = "muq"
    config.checkpoint = "OpenMuQ/MuQ-large-msd-iter"  # HF repo id (found in the local HF cache) or a local dir
    config.layers = (9, 10, 11, 12)  # hidden_states indices: 0 = front end, i = conformer layer i
    config.window_seconds = 30.0  # longer segments are encoded in overlapping windows
    config.window_overlap_seconds = 5.0  # half of it is context discarded on each side of a cut
    config.batch_size = 8  # windows per forward pass
    config.device = "auto"  # "auto" (cuda when torch sees one), "cpu", "cuda", "cuda:1", ...
    # K > 0: also return the frames entering conformer layer K (hidden_states[K-1]) as `MuQEncoded.input_frames`,
    # what fine-tuning layers K..depth starts from (muq_flax.MuQLayers); K is part of the encoder's name. 0 = off.
    config.store_input_layer = 0
    return config


def import_muq() -> tuple[type, type]:
    """Returns ``(MuQ, MuQConfig)``, importing only muq's MuQ part.

    ``muq/__init__.py`` also imports MuQ-MuLan, whose ``x_clip`` dependency needs torchvision; neither torchvision
    nor torchaudio has a wheel that imports beside the CPU torch here, so the package is registered without running
    its ``__init__`` and, when ``import torchaudio`` fails, `_torchaudio_shim` stands in for it during the import.
    """
    if "muq.muq" not in sys.modules:
        import contextlib

        # transformers probes for torchaudio when it is first imported: let it see the real state, not the shim.
        import transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer  # noqa: F401

        try:
            import torchaudio  # noqa: F401

            shim = contextlib.nullcontext()
        except (ImportError, OSError):
            from crescend_jax.encoders._torchaudio_shim import install_as_torchaudio

            shim = install_as_torchaudio()
        if "muq" not in sys.modules:
            spec = importlib.util.find_spec("muq")
            if spec is None:
                raise ImportError("MuQ is not installed: run `make setup` (pip install --no-deps muq==0.1.0)")
            sys.modules["muq"] = importlib.util.module_from_spec(spec)
        with shim:
            importlib.import_module("muq.muq")
    module = sys.modules["muq.muq"]
    return module.MuQ, module.MuQConfig


def muq_config_dict(encoder_dim: int = 1024, depth: int = 12, heads: int = 16, ffn_dim: int = 4096,
                    conv_dim: int = 512, conv_kernel: int = 31, codebook_size: int = 4096) -> dict[str, Any]:
    """``MuQConfig`` fields (JSON-able) with MuQ-large's published hyperparameters as defaults.

    For models built offline (random weights, e.g. tests and the benchmark); ``stat`` holds MuQ's mel statistics.
    """
    w2v2 = dict(hidden_size=encoder_dim, num_attention_heads=heads, intermediate_size=ffn_dim, hidden_act="swish",
                conv_depthwise_kernel_size=conv_kernel, position_embeddings_type="rotary",
                rotary_embedding_base=10000, max_source_positions=5000, layer_norm_eps=1e-5, hidden_dropout=0.1,
                attention_dropout=0.1, activation_dropout=0.1, conformer_conv_dropout=0.1, layerdrop=0.0,
                num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_activation="gelu")
    return dict(label_rate=25, num_codebooks=1, codebook_dim=16, codebook_size=codebook_size,
                features=["melspec_2048"], hop_length=240, n_mels=128, conv_dim=conv_dim, encoder_dim=encoder_dim,
                encoder_depth=depth, stat={"melspec_2048_mean": 6.768444971712967,
                                           "melspec_2048_std": 18.417922652295623}, w2v2_config=w2v2)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local directory holding ``config.json`` and weights: ``checkpoint`` itself or its HF-cache snapshot."""
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        if path.exists() or str(checkpoint).count("/") != 1 or str(checkpoint).startswith((".", "/", "~")):
            raise CheckpointError(f"MuQ checkpoint {checkpoint}: no such directory; pass a directory with "
                                  f"config.json and {WEIGHT_FILES[0]}, or a Hugging Face repo id")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(str(checkpoint), local_files_only=True))
        except LocalEntryNotFoundError:
            raise CheckpointError(
                f"MuQ checkpoint {checkpoint!r} is not in the local Hugging Face cache; download it where there is "
                f"internet (`huggingface-cli download {checkpoint}`, copy ~/.cache/huggingface or set HF_HOME) "
                f"or set --config.encoder.muq.checkpoint=<local directory>") from None
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        found = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointError(f"MuQ checkpoint directory {path} lacks {', '.join(missing)} (it has {found}); "
                              f"save one with MuQ.save_pretrained(dir) or point encoder.muq.checkpoint at a full copy")
    return path


def _weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    return {key: tuple(value.shape) for key, value in state.items()}


def check_weights_match(model_shapes: dict[str, tuple[int, ...]], file_shapes: dict[str, tuple[int, ...]],
                        where: Path) -> None:
    """Raises `CheckpointError` listing missing, unexpected and mis-shaped feature-path parameters."""
    used = lambda key: not any(re.search(pattern, key) for pattern in UNUSED_KEY_PATTERNS)
    missing = sorted(k for k in model_shapes.keys() - file_shapes.keys() if used(k))
    unexpected = sorted(k for k in file_shapes.keys() - model_shapes.keys() if used(k))
    reshaped = sorted(f"{k} {file_shapes[k]} vs {model_shapes[k]}" for k in model_shapes.keys() & file_shapes.keys()
                      if used(k) and file_shapes[k] != model_shapes[k])
    problems = [f"{len(items)} {what} (e.g. {'; '.join(items[:4])})"
                for what, items in (("missing", missing), ("unexpected", unexpected),
                                    ("shape mismatches: file vs config", reshaped)) if items]
    if problems:
        raise CheckpointError(f"MuQ weights in {where} do not match its config.json: {', '.join(problems)}; "
                              f"the weights were saved from a different model config, re-save them together")


def load_muq(checkpoint: str | Path, device: str = "cpu") -> Any:
    """Loads ``MuQ.from_pretrained`` from a directory or the HF cache and checks that the weights fit the config.

    ``from_pretrained`` loads with ``strict=False`` (silent on missing or unexpected keys) and fails on a shape
    mismatch with torch's message: both cases become a `CheckpointError` naming the keys.
    """
    MuQ, MuQConfig = import_muq()
    path = resolve_checkpoint(checkpoint)
    config = json.loads((path / "config.json").read_text())
    try:
        muq_config = MuQConfig(**config)
    except TypeError as err:
        raise CheckpointError(f"{path / 'config.json'} is not a MuQ config ({err}); expected MuQConfig fields "
                              f"with `stat` and `w2v2_config` filled") from None
    weights = next(path / name for name in WEIGHT_FILES if (path / name).is_file())
    file_shapes = _weight_shapes(weights)
    try:
        model = MuQ.from_pretrained(str(path), map_location=device)
    except RuntimeError:  # torch's size-mismatch error: rebuild the model alone to name the keys
        skeleton = MuQ(muq_config)
        check_weights_match({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, file_shapes, path)
        raise
    check_weights_match({k: tuple(v.shape) for k, v in model.state_dict().items()}, file_shapes, path)
    return model.to(device).eval()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _short_checkpoint_name(checkpoint: str | Path) -> str:
    stem = Path(str(checkpoint).rstrip("/")).name
    return re.sub(r"[^a-z0-9.]+", "-", stem.lower()).strip("-") or "checkpoint"


def _layers_name(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"l{layers[0]}-{layers[-1]}"
    return "l" + ".".join(map(str, layers))


@dataclasses.dataclass(frozen=True)
class MuQEncoded(Encoded):
    """`Encoded` plus ``input_frames``: float32 [T, dim], ``hidden_states[K-1]`` when ``store_input_layer`` is K."""

    input_frames: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Window:
    """One forward pass: samples [start, stop) of waveform ``item``; its frames [keep_start, keep_stop) (local
    indices) go to the item's frames from ``offset`` on."""

    item: int
    start: int
    stop: int
    keep_start: int
    keep_stop: int
    offset: int


class MuQEncoder:
    """`Encoder` over a MuQ model: frames [layers, T, dim] at 25 fps and pooled per-layer time means."""

    sample_rate = MUQ_SAMPLE_RATE

    def __init__(self, model: Any, *, checkpoint_name: str, layers: Sequence[int] = (9, 10, 11, 12),
                 window_seconds: float = 30.0, window_overlap_seconds: float = 5.0, batch_size: int = 8,
                 device: str = "cpu", store_input_layer: int = 0) -> None:
        self.model = model.eval()
        inner = model.model
        self.samples_per_frame = inner.hop_length * inner.n_fold
        self.frame_rate = self.sample_rate / self.samples_per_frame
        depth = len(inner.conformer.layers)
        self.layers = tuple(int(layer) for layer in layers)
        if not self.layers or any(not 0 <= layer <= depth for layer in self.layers):
            raise ValueError(f"encoder.muq.layers={layers}: MuQ hidden states are 0 (front end) .. {depth}")
        self.num_layers = len(self.layers)
        self.store_input_layer = int(store_input_layer)
        if not 0 <= self.store_input_layer <= depth:
            raise ValueError(f"encoder.muq.store_input_layer={store_input_layer}: 0 (off) or a conformer layer "
                             f"K in 1..{depth} whose input hidden_states[K-1] is returned")
        # hidden states each forward selects: the pooled layers, then (if on) the input of layer K
        self._selected = self.layers + ((self.store_input_layer - 1,) if self.store_input_layer else ())
        self.dim = inner.conformer.config.hidden_size
        window = round(window_seconds * self.frame_rate)
        overlap = 2 * round(window_overlap_seconds * self.frame_rate / 2)
        if window < 1 or not 0 <= overlap < window:
            raise ValueError(f"encoder.muq.window_seconds={window_seconds}, window_overlap_seconds="
                             f"{window_overlap_seconds}: need 0 <= overlap < window and a window of >= 1 frame")
        self.window_frames, self.overlap_frames = window, overlap
        if batch_size < 1:
            raise ValueError(f"encoder.muq.batch_size={batch_size} must be >= 1")
        self.batch_size = batch_size
        self.device = device
        self.name = (f"muq-{checkpoint_name}-{_layers_name(self.layers)}"
                     f"-w{window_seconds:g}s-o{overlap / self.frame_rate:g}s")
        if self.store_input_layer:
            self.name += f"-in{self.store_input_layer}"
        self._valid_lengths: list | None = None  # per stage of the front end, then the conformer: int64 [B]
        self._install_padding_hooks()

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "MuQEncoder":
        """Builds from the ``config.encoder.muq`` section (see `default_encoder_config`)."""
        device = _resolve_device(config.device)
        return cls(load_muq(config.checkpoint, device), checkpoint_name=_short_checkpoint_name(config.checkpoint),
                   layers=config.layers, window_seconds=config.window_seconds,
                   window_overlap_seconds=config.window_overlap_seconds, batch_size=config.batch_size, device=device,
                   store_input_layer=config.get("store_input_layer", 0))

    # --- exact padding -------------------------------------------------------------------------------------------
    def _install_padding_hooks(self) -> None:
        """Zeros the padded time steps at the input of every conv that could read them (see the module docstring)."""
        inner = self.model.model

        def zero_padding(stage: int):
            def hook(module, args):
                if self._valid_lengths is None:
                    return None
                (x,) = args
                import torch

                steps = torch.arange(x.shape[-1], device=x.device)
                valid = steps < self._valid_lengths[stage].to(x.device)[:, None]  # [B, T]
                valid = valid.reshape(valid.shape[:1] + (1,) * (x.dim() - 2) + valid.shape[1:])
                return (x.masked_fill(~valid, 0.0),)

            return hook

        self._time_strides = []
        for stage, block in enumerate(inner.conv.conv):
            block.conv1.register_forward_pre_hook(zero_padding(stage))
            block.conv2.register_forward_pre_hook(zero_padding(stage + 1))
            if block.diff:
                block.conv3.register_forward_pre_hook(zero_padding(stage))
            self._time_strides.append(block.conv1.stride[1])
        for layer in inner.conformer.layers:
            layer.conv_module.depthwise_conv.register_forward_pre_hook(zero_padding(len(self._time_strides)))

    def num_frames(self, num_samples: int) -> int:
        """Frames MuQ gives for ``num_samples`` samples: ceil(mel frames / 4), mel frames = samples // hop."""
        length = num_samples // self.model.model.hop_length
        for stride in self._time_strides:
            length = (length - 1) // stride + 1
        return length

    # --- windows -------------------------------------------------------------------------------------------------
    def plan_windows(self, item: int, num_samples: int) -> list[Window]:
        """Windows of ``window_frames`` frames starting on frame boundaries; the last one ends at the end."""
        total = self.num_frames(num_samples)
        frame, window = self.samples_per_frame, self.window_frames * self.samples_per_frame
        if num_samples <= window + frame:
            return [Window(item, 0, num_samples, 0, total, 0)]
        hop = (self.window_frames - self.overlap_frames) * frame
        starts = list(range(0, num_samples - window, hop))
        last = (num_samples - window) // frame * frame
        if last > starts[-1]:
            starts.append(last)
        stops = [min(start + window, num_samples) for start in starts[:-1]] + [num_samples]
        first_frames = [start // frame for start in starts]
        end_frames = [f + self.num_frames(stop - start) for f, start, stop in zip(first_frames, starts, stops)]
        cuts = [0] + [(first_frames[k + 1] + end_frames[k]) // 2 for k in range(len(starts) - 1)] + [total]
        return [Window(item, start, stop, cuts[k] - first_frames[k], cuts[k + 1] - first_frames[k], cuts[k])
                for k, (start, stop) in enumerate(zip(starts, stops))]

    # --- forward -------------------------------------------------------------------------------------------------
    def _forward(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """Selected hidden states of each piece (unpadded waveforms), batched exactly: float32 [selected, T_i, dim]."""
        import torch
        import torch.nn.functional as F

        inner = self.model.model
        mels = []
        for piece in pieces:
            wave = torch.from_numpy(piece).to(self.device)[None]
            mel = inner.normalize(inner.preprocessing(wave, features=["melspec_2048"]))["melspec_2048"]
            mels.append(mel[0])  # [n_mels, M_i]
        lengths = [mel.shape[-1] for mel in mels]
        longest = max(lengths)
        batch = torch.stack([F.pad(mel, (0, longest - mel.shape[-1])) for mel in mels])
        padded = any(length != longest for length in lengths)
        stage_lengths = [torch.tensor(lengths)]
        for stride in self._time_strides:
            stage_lengths.append((stage_lengths[-1] - 1) // stride + 1)
        frames = stage_lengths[-1]
        # on the model's device once per batch, not once per hooked conv
        self._valid_lengths = [length.to(self.device) for length in stage_lengths] if padded else None
        try:
            hidden = inner.conv(batch)  # [B, T, dim]
            mask = (torch.arange(hidden.shape[1])[None] < frames[:, None]).to(hidden.device) if padded else None
            states = inner.conformer(hidden, attention_mask=mask, output_hidden_states=True).hidden_states
        finally:
            self._valid_lengths = None
        selected = torch.stack([states[layer] for layer in self._selected], dim=1).float().cpu().numpy()
        return [selected[b, :, :count] for b, count in enumerate(frames.tolist())]

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[Encoded]:
        """Encodes mono float32 waveforms at 24 kHz (any lengths >= 2048 samples); one `Encoded` per input."""
        import torch

        waves = [self._checked(i, w) for i, w in enumerate(waveforms)]
        windows = [window for i, wave in enumerate(waves) for window in self.plan_windows(i, len(wave))]
        windows.sort(key=lambda w: w.stop - w.start, reverse=True)  # similar lengths share a batch: little padding
        frames = [np.empty((len(self._selected), self.num_frames(len(w)), self.dim), np.float32) for w in waves]
        with torch.inference_mode():
            for first in range(0, len(windows), self.batch_size):
                chunk = windows[first:first + self.batch_size]
                outputs = self._forward([waves[w.item][w.start:w.stop] for w in chunk])
                for w, out in zip(chunk, outputs):
                    kept = w.keep_stop - w.keep_start
                    frames[w.item][:, w.offset:w.offset + kept] = out[:, w.keep_start:w.keep_stop]
        return [self._encoded(f) for f in frames]

    def _encoded(self, selected: np.ndarray) -> Encoded:
        """One item's `Encoded` from its selected hidden states (the pooled layers, then layer K's input if on)."""
        frames = selected[:self.num_layers]
        pooled = frames.mean(axis=1).reshape(-1)
        if not self.store_input_layer:
            return Encoded(frames=frames, pooled=pooled)
        return MuQEncoded(frames=frames, pooled=pooled, input_frames=selected[self.num_layers])

    def encode_file(self, path: str | Path) -> Encoded:
        """Loads an audio file as mono, resamples it to ``sample_rate`` (`crescend_jax.encoders.base.resample`) and
        encodes it."""
        import librosa

        audio, rate = librosa.load(str(path), sr=None, mono=True)
        return self.encode([resample(audio, rate, self.sample_rate)])[0]

    def _checked(self, index: int, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave)
        if wave.ndim != 1:
            raise ValueError(f"waveform {index}: shape {wave.shape}, expected mono [samples] at {self.sample_rate} "
                             f"Hz; average the channels or use MuQEncoder.encode_file(path)")
        if len(wave) < MIN_SAMPLES:
            raise ValueError(f"waveform {index}: {len(wave)} samples; MuQ needs >= {MIN_SAMPLES} "
                             f"({MIN_SAMPLES / self.sample_rate:.3f} s at {self.sample_rate} Hz)")
        if not np.all(np.isfinite(wave)):
            raise ValueError(f"waveform {index}: contains NaN or inf samples; check its rendering")
        return np.ascontiguousarray(wave, dtype=np.float32)
