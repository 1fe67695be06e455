"""An approach's model as jitted functions on a mesh (init, encode, compare), and prediction of table rows.

Shared by training (validation) and evaluation (held-out prediction), so both see the model exactly alike. The
functions of one (approach, model settings, input width, mesh) are kept in a small cache (the `MAX_CACHED` most
recently used), so the folds of a run and the evaluation that follows it in the same process reuse one
compilation while a long sweep holds no more than a few; the approach is stateless (`models.contract`), so reusing
them is only a matter of time, never of correctness.

We use jax.jit over the split NNX state rather than nnx.jit: the NNX graph is traversed once at trace time instead of
on every call, and the state is a plain pytree with explicit shardings that orbax saves and restores as is.

Frame models are evaluated on the crops that cover each whole track (`evaluation_crops`). Every output of ``encode``
is averaged over a track's crops -- scores, named embeddings and a comparator's vector encoding alike -- except a
comparator's **sequence** encoding ([T', E] per crop, e.g. approach B's cross_attention): frame sequences of
different crops are not aligned in time, so their mean means nothing. Such pairs are compared crop by crop
instead: for rows a and b with C_a and C_b crops, C = min(C_a, C_b) comparisons pair crop
floor((c + 1/2) C_a / C) of a with crop floor((c + 1/2) C_b / C) of b (c = 0..C-1: proportional positions, the
same passages when two performances differ only in tempo), and the pair's logits are the mean of the C logits.
The alignment does not depend on the order of a and b, so an antisymmetric comparator stays antisymmetric. Training
draws the crops of such a head the same way: the members of a block are cut around one fraction of their tracks
(`models.sampler.aligned_crop_starts`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError, config_to_json
from crescend_jax.data.groups import within_group_pairs
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contract import COMPARATOR, Approach, Objective, Predictions
from crescend_jax.models.targets import num_targets
from crescend_jax.runtime import distributed

# The config fields that never change what a model computes: a resumed run (`train.trainer`), a re-evaluation
# (`cli evaluate` overrides) and a sweep's finished check may differ in them, and they are left out of the cache key.
NON_MODEL_FIELDS = ("train.resume", "train.stop_after_steps", "train.distributed", "eval", "experiment")
PREDICT_CHUNK = 4096  # rows (or crops) per prediction call
MAX_CACHED = 4  # model functions kept per process (least recently used dropped)
COMPUTE_DTYPES = ("float32", "bfloat16")  # train.compute_dtype (float16 would need loss scaling)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": leaf}."""
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in flatten(sub, f"{prefix}{name}.").items()}
    return {prefix[:-1]: tree}


def model_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config`` flattened ({"model.hidden_dim": 512, ...}) without the `NON_MODEL_FIELDS`."""
    return {k: v for k, v in flatten(json.loads(config_to_json(config))).items() if not k.startswith(NON_MODEL_FIELDS)}


@dataclasses.dataclass
class ModelFunctions:
    """The jitted functions of one approach's model.

    approach and objective: what the model computes (the objective built from the config, `Approach.objective`);
    graphdef: the train-mode graph; init(fold) -> replicated model state (nnx.State) for ``fold``;
    encode(state, x [N, ...] host) -> dict of host arrays [N, ...]; compare(state, a [P, E], b [P, E]) -> host
    logits [P, C] (comparators only; C label columns, 19 by default); compute_dtype: ``train.compute_dtype``, the
    dtype of the training step's matmuls and activations (`train.step`; prediction runs in float32).
    """

    approach: Approach
    objective: Objective
    graphdef: Any
    init: Callable[[int], Any]
    encode: Callable[[Any, np.ndarray], dict[str, np.ndarray]]
    compare: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None
    compute_dtype: str = "float32"


_CACHE: collections.OrderedDict[tuple, ModelFunctions] = collections.OrderedDict()


def _padded_to(x: np.ndarray, multiple: int) -> np.ndarray:
    padded = np.zeros((-(-len(x) // multiple) * multiple, *x.shape[1:]), np.float32)
    padded[: len(x)] = x
    return padded


def model_functions(approach: Approach, config: ml_collections.ConfigDict, input_dim: int,
                    mesh: Mesh) -> ModelFunctions:
    """`ModelFunctions` for these settings: the cached ones when the same (approach, model settings, input width,
    mesh) was built recently (module doc), else built and traced now."""
    cache_key = (type(approach), approach.name, json.dumps(model_settings(config), sort_keys=True), input_dim, mesh)
    if cache_key in _CACHE:
        _CACHE.move_to_end(cache_key)
        return _CACHE[cache_key]
    functions = _build(approach, config, input_dim, mesh)
    _CACHE[cache_key] = functions
    while len(_CACHE) > MAX_CACHED:
        _CACHE.popitem(last=False)
    return functions


def compute_dtype(config: ml_collections.ConfigDict) -> str:
    """``config.train.compute_dtype`` (float32 when the section has no such field), checked: one of
    `COMPUTE_DTYPES`."""
    name = config.train.get("compute_dtype", "float32")
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"train.compute_dtype={name!r} must be one of {COMPUTE_DTYPES}; set "
                          "--config.train.compute_dtype")
    return name


def _build(approach: Approach, config: ml_collections.ConfigDict, input_dim: int, mesh: Mesh) -> ModelFunctions:
    objective = approach.objective(config)
    dtype = compute_dtype(config)

    def create(fold: jax.Array) -> nnx.Module:
        key = jax.random.fold_in(jax.random.key(config.train.seed), fold)
        return approach.build_model(config, input_dim, nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))

    model = nnx.eval_shape(create, jnp.int32(0))  # shapes first, then one jitted, replicated initialisation
    graphdef = nnx.graphdef(model)
    model.eval()  # Dropout off: a separate (static) graph for prediction
    eval_graphdef = nnx.graphdef(model)
    replicated, sharded = distributed.replicated(mesh), distributed.data_sharded(mesh)
    jitted_init = jax.jit(lambda fold: nnx.state(create(fold)), out_shardings=replicated)
    devices = mesh.devices.size

    jitted_encode = jax.jit(lambda state, x: approach.encode(objective, nnx.merge(eval_graphdef, state), x),
                            out_shardings=sharded)

    def encode(state, x: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {}
        for start in range(0, max(len(x), 1), PREDICT_CHUNK):
            chunk = x[start:start + PREDICT_CHUNK]
            device_x = distributed.shard_batch({"x": _padded_to(chunk, devices)}, mesh)["x"]
            for name, value in jitted_encode(state, device_x).items():
                out.setdefault(name, []).append(distributed.to_host(value)[: len(chunk)])
        return {name: np.concatenate(parts) for name, parts in out.items()}

    compare = None
    if approach.kind == COMPARATOR:
        jitted_compare = jax.jit(
            lambda state, a, b: approach.compare(objective, nnx.merge(eval_graphdef, state), a, b),
            out_shardings=sharded)

        def compare(state, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            parts = []
            for start in range(0, len(a), PREDICT_CHUNK):
                chunk = {"a": _padded_to(a[start:start + PREDICT_CHUNK], devices),
                         "b": _padded_to(b[start:start + PREDICT_CHUNK], devices)}
                device = distributed.shard_batch(chunk, mesh)
                logits = distributed.to_host(jitted_compare(state, device["a"], device["b"]))
                parts.append(logits[: min(PREDICT_CHUNK, len(a) - start)])
            return np.concatenate(parts) if parts else np.zeros((0, num_targets(config)), np.float32)

    return ModelFunctions(approach=approach, objective=objective, graphdef=graphdef,
                          init=lambda fold: jitted_init(np.int32(fold)), encode=encode, compare=compare,
                          compute_dtype=dtype)


# ----------------------------------------------------------------------------------------------------- prediction


def evaluation_crops(length: int, crop: int) -> np.ndarray:
    """Start frames of the crops that cover a ``length``-frame track: 0, crop, 2 crop, ... while a crop fits, plus
    one crop ending at the last frame when the track is not a whole number of crops; [0] when the track is shorter
    than one crop (read cyclically, or NaN-padded for score positions, as in training)."""
    if length <= crop:
        return np.zeros(1, np.int64)
    starts = np.arange(0, length - crop + 1, crop)
    if starts[-1] + crop < length:
        starts = np.append(starts, length - crop)
    return starts


def frame_window(frames: np.ndarray, start: int, crop: int, padded: bool = False) -> np.ndarray:
    """A store's ``frames`` [layers, T, dim] -> float32 [crop, layers * dim] from ``start`` (each frame's layers
    concatenated layer-major, like the pooled vector), read cyclically, or with ``padded`` (score positions) NaN past
    the last frame, as the training gather reads them (`train.input_pipeline`)."""
    layers, total, dim = frames.shape
    position = start + np.arange(crop)
    window = frames[:, position % total].transpose(1, 0, 2).reshape(crop, layers * dim).astype(np.float32)
    if padded:
        window[position >= total] = np.nan
    return window


def _standardised(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


def crop_outputs(functions: ModelFunctions, state: Any, table: EmbeddingTable, mean: np.ndarray, std: np.ndarray,
                 config: ml_collections.ConfigDict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``encode`` of the inputs the model trained on, before any averaging: (name -> float [C, ...], owner int [C]),
    one entry per standardised pooled vector (C = N, owner = 0..N-1), or for frame models (the approach's
    `Approach.window_frames` > 0) one per crop of `evaluation_crops` (owner = its row; a row's crops are consecutive,
    in track order)."""
    crop = functions.approach.window_frames(config, table)
    if crop == 0:
        return functions.encode(state, _standardised(table.pooled, mean, std)), np.arange(len(table))
    if table.frames is None:
        raise ValueError("a frame model needs a store with frames to be evaluated")
    padded = table.frame_rate == 0  # score positions: NaN past a row's last one, never wrapped
    owner, windows = [], []
    for row, frames in enumerate(table.frames):
        for start in evaluation_crops(frames.shape[1], crop):
            owner.append(row)
            windows.append(_standardised(frame_window(frames, int(start), crop, padded), mean, std))
    outputs = functions.encode(state, np.stack(windows) if windows else np.zeros((0, crop, len(mean)), np.float32))
    return outputs, np.asarray(owner, np.int64)


def _mean_over_crops(outputs: dict[str, np.ndarray], owner: np.ndarray, num_rows: int) -> dict[str, np.ndarray]:
    """Each output averaged over the crops of its row: name -> float32 [N, ...]."""
    counts = np.bincount(owner, minlength=num_rows).astype(np.float64)
    result = {}
    for name, value in outputs.items():
        total = np.zeros((num_rows, *value.shape[1:]))
        np.add.at(total, owner, value)
        result[name] = (total / counts.reshape(-1, *([1] * (value.ndim - 1)))).astype(np.float32)
    return result


def encode_rows(functions: ModelFunctions, state: Any, table: EmbeddingTable, mean: np.ndarray, std: np.ndarray,
                config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """``encode`` of every row of ``table`` on the inputs the model trained on: standardised pooled vectors, or for
    frame models the mean of its outputs over the crops that cover the whole track (`evaluation_crops`), each frame
    standardised like the pooled vectors. Returns name -> float [N, ...]."""
    outputs, owner = crop_outputs(functions, state, table, mean, std, config)
    return _mean_over_crops(outputs, owner, len(table))


def aligned_crops(owner: np.ndarray, i: np.ndarray, j: np.ndarray, num_rows: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop-aligned comparisons of row pairs (i, j) (module doc): (pair int [M], crop of i int [M], crop of j
    int [M]), crops indexing the entries of `crop_outputs` whose ``owner`` [C] is sorted by row;
    M = sum over pairs of min(C_i, C_j)."""
    counts = np.bincount(owner, minlength=num_rows)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    count_i, count_j = counts[i], counts[j]
    per_pair = np.minimum(count_i, count_j)
    if (per_pair < 1).any():
        raise ValueError("a compared row has no crop")
    pair = np.repeat(np.arange(len(i)), per_pair)
    c = np.arange(len(pair)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)  # 0..C-1 within each pair
    position = lambda count: ((2 * c + 1) * count[pair]) // (2 * per_pair[pair])  # floor((c + 1/2) count / C)
    return pair, first[i][pair] + position(count_i), first[j][pair] + position(count_j)


def _compare_sequences(functions: ModelFunctions, state: Any, encoding: np.ndarray, owner: np.ndarray,
                       i: np.ndarray, j: np.ndarray, num_rows: int) -> np.ndarray:
    """Logits float64 [P, C] of row pairs (i, j) from per-crop sequence encodings [C, T', E]: the mean over the
    pair's aligned crops (`aligned_crops`), compared PREDICT_CHUNK comparisons at a time."""
    pair, crop_i, crop_j = aligned_crops(owner, i, j, num_rows)
    total = np.zeros((len(i), functions.compare(state, encoding[:0], encoding[:0]).shape[1]))
    for start in range(0, len(pair), PREDICT_CHUNK):
        part = slice(start, start + PREDICT_CHUNK)
        logits = functions.compare(state, encoding[crop_i[part]], encoding[crop_j[part]])
        np.add.at(total, pair[part], logits.astype(np.float64))
    return total / np.bincount(pair, minlength=len(i))[:, None]


def predict_rows(functions: ModelFunctions, state: Any, table: EmbeddingTable, mean: np.ndarray, std: np.ndarray,
                 config: ml_collections.ConfigDict) -> Predictions:
    """`Predictions` of the rows of ``table``: a scorer's scores, or a comparator's P(i above j) for every
    within-group pair (each performance encoded once, pairs formed on the encodings), plus named embeddings."""
    if functions.compare is None:
        outputs = encode_rows(functions, state, table, mean, std, config)
        scores = outputs.pop("scores")
        return Predictions(scores=scores, embeddings=outputs)
    outputs, owner = crop_outputs(functions, state, table, mean, std, config)
    encoding = outputs.pop("encoding")
    embeddings = _mean_over_crops(outputs, owner, len(table))
    i, j = within_group_pairs(table.groups)
    if encoding.ndim > 2:  # a sequence per crop: compare aligned crops, average the logits (module doc)
        logits = _compare_sequences(functions, state, encoding, owner, i, j, len(table))
    else:
        encoding = _mean_over_crops({"encoding": encoding}, owner, len(table))["encoding"]
        logits = functions.compare(state, encoding[i], encoding[j]).astype(np.float64)
    probability = 0.5 * (1.0 + np.tanh(0.5 * logits))
    return Predictions(pairs=(i, j, probability), embeddings=embeddings)
