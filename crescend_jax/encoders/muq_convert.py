"""MuQ's PyTorch conformer weights <-> the parameters of `crescend_jax.encoders.muq_flax.MuQLayers`.

A source is a MuQ checkpoint directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, as
`MuQ.save_pretrained` writes and the Hugging Face snapshot holds), a ``.safetensors`` / ``.bin`` file, a live torch
module (``MuQ``, its ``.model`` or its ``.model.conformer``) or a state dict. Names are matched after the conformer's
prefix (``model.conformer.`` in MuQ's checkpoint), so ``layers.{i-1}.*`` holds hidden state i's layer.

Layouts (torch -> Flax): ``nn.Linear`` weight [out, in] -> kernel [in, out]; kernel-1 ``Conv1d`` weight [out, in, 1]
-> kernel [in, out]; depthwise ``Conv1d`` weight [H, 1, k] -> kernel [k, 1, H]; LayerNorm / BatchNorm weight ->
scale; BatchNorm running_mean / running_var -> mean / var. Every mapping is a transpose or a reshape, so a round
trip Flax -> torch state dict -> Flax is exact. Anything that does not fit (a missing, unexpected or mis-shaped
parameter, a layer count or rotary frequency table that disagrees with the config) is a `ConversionError` naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from crescend_jax.encoders.muq_flax import ConformerConfig, MuQLayers, rotary_frequencies

CHECKPOINT_PREFIX = "model.conformer."  # where MuQ.save_pretrained puts the conformer
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LAYER_KEY = re.compile(r"^(.*?)layers\.(\d+)\.ffn1_layer_norm\.weight$")
_IGNORED = re.compile(r"num_batches_tracked$")  # BatchNorm step counters: no effect on the forward


class ConversionError(ValueError):
    """MuQ weights that do not fit the requested layers or config."""


# --- reading a source ------------------------------------------------------------------------------------------------
def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (bf16/fp16 upcast: numpy has no bfloat16)
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.dtype.itemsize < 4:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _read_weight_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                return {key: f.get_tensor(key) for key in f.keys()}
        except (TypeError, ValueError):  # a dtype numpy lacks (bfloat16): read through torch
            from safetensors.torch import load_file

            return {key: _to_numpy(value) for key, value in load_file(str(path)).items()}
    import torch

    return {key: _to_numpy(value) for key, value in torch.load(path, map_location="cpu", weights_only=True).items()}


def read_source(source: Any) -> tuple[dict[str, np.ndarray], ConformerConfig | None]:
    """The conformer's weights (names without the prefix, float arrays) and, when the source has one, its config."""
    config = None
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
            if weights is None:
                raise ConversionError(f"{path} holds neither of {WEIGHT_FILES}; pass a MuQ checkpoint directory "
                                      f"(MuQ.save_pretrained) or a weight file")
            if (path / "config.json").is_file():
                config = ConformerConfig.from_muq_config(json.loads((path / "config.json").read_text()))
            state = _read_weight_file(weights)
        elif path.is_file():
            state = _read_weight_file(path)
        else:
            raise ConversionError(f"MuQ weights {path}: no such file or directory")
    elif hasattr(source, "state_dict"):  # a torch module
        model_config = getattr(source, "config", None)
        if model_config is not None and hasattr(model_config, "w2v2_config"):
            config = ConformerConfig.from_muq_config(model_config)
        state = {key: _to_numpy(value) for key, value in source.state_dict().items()}
    elif isinstance(source, Mapping):
        state = {key: _to_numpy(value) for key, value in source.items()}
    else:
        raise ConversionError(f"cannot read MuQ weights from a {type(source).__name__}; pass a checkpoint directory, "
                              f"a weight file, a torch module or a state dict")
    prefixes = {match.group(1) for key in state if (match := _LAYER_KEY.match(key))}
    if len(prefixes) != 1:
        found = "several conformers (" + ", ".join(sorted(map(repr, prefixes))) + ")" if prefixes else "none"
        raise ConversionError(f"expected one MuQ conformer (keys like '{CHECKPOINT_PREFIX}layers.0.ffn1_layer_norm."
                              f"weight'), found {found}")
    (prefix,) = prefixes
    return {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix) and not _IGNORED.search(key)}, config


# --- the name and layout mapping ---------------------------------------------------------------------------------
def _torch_name_and_layout(path: tuple, first: int) -> tuple[str, str]:
    """(conformer-relative torch name, layout) of one Flax variable path."""
    parts = [str(p) for p in path]
    if parts[0] == "layers":
        parts[1] = str(int(parts[1]) + first - 1)
    module, leaf = parts[-2], parts[-1]
    if leaf == "kernel":
        layout = {"pointwise_conv1": "conv1x1", "pointwise_conv2": "conv1x1", "depthwise_conv": "depthwise"}.get(
            module, "linear")
        return ".".join(parts[:-1] + ["weight"]), layout
    renamed = {"scale": "weight", "mean": "running_mean", "var": "running_var"}.get(leaf, leaf)
    return ".".join(parts[:-1] + [renamed]), "same"


def _to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return value.T
    if layout == "conv1x1":
        return value.T[:, :, None]
    if layout == "depthwise":
        return value.transpose(2, 1, 0)
    return value


def _from_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return value.T
    if layout == "conv1x1":
        return value[:, :, 0].T
    if layout == "depthwise":
        return value.transpose(2, 1, 0)
    return value


def abstract_layers(config: ConformerConfig, first: int, last: int | None = None, *,
                    remat: bool = False) -> MuQLayers:
    """`MuQLayers` with shapes only (no memory, no initialisation)."""
    return nnx.eval_shape(lambda: MuQLayers(config, first, last, remat=remat, rngs=nnx.Rngs(0)))


def expected_shapes(config: ConformerConfig, first: int, last: int | None = None) -> dict[str, tuple[int, ...]]:
    """Conformer-relative torch names and shapes that layers ``first..last`` read."""
    shapes = {}
    for path, variable in nnx.to_flat_state(nnx.state(abstract_layers(config, first, last))):
        name, layout = _torch_name_and_layout(path, first)
        shapes[name] = _to_torch_layout(np.empty(variable.shape, np.bool_), layout).shape
    return shapes


def _check(weights: Mapping[str, np.ndarray], config: ConformerConfig, first: int, last: int,
           where: str) -> None:
    depth = {int(match.group(2)) for key in weights if (match := _LAYER_KEY.match(key))}
    problems = []
    if depth != set(range(config.depth)):
        problems.append(f"the weights hold conformer layers {_span(depth)} but the config has {config.depth} "
                        f"(0..{config.depth - 1})")
    expected = expected_shapes(config, first, last)
    read = {key for key in weights
            if key.split(".")[0] == "layers" and first - 1 <= int(key.split(".")[1]) <= last - 1}
    if last == config.depth:
        read |= {key for key in weights if key.startswith("layer_norm.")}
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(read - expected.keys())
    reshaped = sorted(f"{k} {tuple(weights[k].shape)} vs {expected[k]}" for k in expected.keys() & weights.keys()
                      if tuple(weights[k].shape) != expected[k])
    problems += [f"{len(items)} {what} (e.g. {'; '.join(items[:4])})"
                 for what, items in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatches: weights vs config", reshaped)) if items]
    if config.position_embeddings == "rotary" and "embed_positions.inv_freq" in weights:
        stored = np.asarray(weights["embed_positions.inv_freq"], np.float32)
        computed = rotary_frequencies(config.head_size, config.rotary_base)
        if stored.shape != computed.shape or not np.allclose(stored, computed, rtol=1e-6, atol=0):
            problems.append(f"the rotary frequencies (embed_positions.inv_freq, shape {stored.shape}) are not those "
                            f"of head size {config.head_size} and base {config.rotary_base:g}")
    if problems:
        raise ConversionError(f"MuQ weights from {where} do not fit conformer layers {first}..{last} of "
                              f"{config}: {'; '.join(problems)}")


def _span(indices: set[int]) -> str:
    return f"{min(indices)}..{max(indices)}" if indices else "none"


# --- public API ------------------------------------------------------------------------------------------------------
def convert_state(weights: Mapping[str, np.ndarray], config: ConformerConfig, first: int, last: int | None = None,
                  *, where: str = "a state dict") -> nnx.State:
    """The `nnx.State` of ``MuQLayers(config, first, last)`` from conformer-relative torch weights (see
    `read_source`); float32 arrays, `nnx.Param` and `nnx.BatchStat` as the module declares them."""
    last = config.depth if last is None else last
    model = abstract_layers(config, first, last)  # validates first..last
    _check(weights, config, first, last, where)
    filled = []
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        name, layout = _torch_name_and_layout(path, first)
        value = _from_torch_layout(np.asarray(weights[name], np.float32), layout)
        filled.append((path, variable.replace(value=jax.numpy.asarray(value))))
    return nnx.from_flat_state(filled)


def load_muq_layers(source: Any, first: int, last: int | None = None, config: ConformerConfig | None = None, *,
                    remat: bool = False) -> MuQLayers:
    """`MuQLayers` ``first..last`` initialised from MuQ's weights in ``source`` (see the module docstring).

    ``config`` is needed only when the source carries none (a bare weight file or state dict); when both exist
    they must agree except for dropout rates (``config`` wins: e.g. ``config.without_dropout()``). Returned in
    ``eval()`` mode; call ``train()`` to fine-tune with the config's dropout.
    """
    weights, found = read_source(source)
    if config is None:
        if found is None:
            raise ConversionError("these MuQ weights come without a config: pass config=ConformerConfig(...) or "
                                  "the checkpoint directory holding config.json")
        config = found
    elif found is not None and found.without_dropout() != config.without_dropout():
        raise ConversionError(f"the checkpoint's config {found} differs from the given {config} (only dropout rates "
                              f"may differ)")
    where = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    state = convert_state(weights, config, first, last, where=where)
    graphdef, _ = nnx.split(abstract_layers(config, first, last, remat=remat))
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def to_torch_state_dict(model: MuQLayers, prefix: str = CHECKPOINT_PREFIX) -> dict[str, np.ndarray]:
    """The torch-layout float32 arrays of ``model`` under MuQ's names (``prefix`` + conformer-relative name);
    ``torch_model.load_state_dict({k: torch.from_numpy(v) ...}, strict=False)`` loads them into a MuQ."""
    return {prefix + name: np.array(_to_torch_layout(np.asarray(variable.get_value()), layout), order="C")
            for path, variable in nnx.to_flat_state(nnx.state(model))
            for name, layout in [_torch_name_and_layout(path, model.first)]}
