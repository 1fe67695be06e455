"""The contract between an approach (``models/<approach>.py``) and the layers above it (``train/``, ``evaluate/``).

An approach supplies four things and nothing else:

* ``build_model(config, input_dim, rngs)``: the Flax NNX model;
* ``loss(model, batch, step, mesh)``: scalar loss + scalar diagnostics on a (sharded) device batch, inside jit;
  ``step`` is the optimizer step (int32 scalar) so schedules (e.g. a gradient-reversal weight) live in the approach;
* ``sampler(table, config, seed)``: its batch stream, as a host-side `Sampler` of row indices (and frame-crop starts):
  the training core keeps the table on the devices and gathers each batch there from these indices;
* ``encode(model, x)`` (and, for comparators, ``compare(model, a, b)``): what it predicts, per performance.

Two kinds of approach:

* a **scorer** (``kind = "scorer"``): ``encode`` returns ``{"scores": [N, 19], ...}``; higher = higher on the dimension;
* a **comparator** (``kind = "comparator"``): ``encode`` returns ``{"encoding": [N, E], ...}``, each performance encoded
  once, and ``compare(model, encoding_a [P, E], encoding_b [P, E])`` returns logits [P, 19] of P(a above b).

Every other key of ``encode``'s dict is a named embedding [N, E] (e.g. ``hidden``, ``z_piece``, ``z_style``) that the
evaluation may probe. A scorer is a special case of a comparator: P(a above b) = sigmoid(s_a - s_b)
(`Predictions.pair_probabilities`).

Device batches (``loss``'s ``batch``), built by the core from a `BatchPlan`, leading axis B (a multiple of the mesh):

* ``x``: float32 [B, D] standardised pooled vectors, or [B, T, F] standardised frame crops (``model.input="frames"``);
* ``label_mean``, ``label_std``: float32 [B, 19] (std NaN -> 0; zeros on padding rows);
* ``group``: int32 [B] dense same-music group id (-1 on padding), ``composition``: int32 [B] dense composition id of
  the fold's training compositions (-1 on padding), ``mask``: float32 [B] 1 real / 0 padding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.groups import within_group_pairs
from crescend_jax.data.table import EmbeddingTable

SCORER = "scorer"
COMPARATOR = "comparator"
KINDS = (SCORER, COMPARATOR)
INPUTS = ("pooled", "frames")
DEVICE_FIELDS = ("x", "label_mean", "label_std", "group", "composition", "mask")


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """One batch as the sampler chooses it (host numpy). rows: int32 [B] table rows, -1 = padding; crop_start:
    int32 [B] first frame of each row's crop (frame inputs; 0 for padding), or None for pooled inputs."""

    rows: np.ndarray
    crop_start: np.ndarray | None = None


class Sampler(Protocol):
    """An endless, checkpointable stream of `BatchPlan` s: ``state()`` is JSON, ``restore(state)`` continues exactly
    where that state was taken (so a resumed run draws the batches an uninterrupted one would, without replaying)."""

    def __iter__(self) -> Iterator[BatchPlan]: ...

    def __next__(self) -> BatchPlan: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class Approach(Protocol):
    """What each approach supplies; the core owns the loop, data placement, sharding, optimiser, checkpoints."""

    name: str
    kind: str  # SCORER or COMPARATOR

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        """Raises `ConfigError` for a bad ``config.model`` / batch setting (called before any workdir is made)."""
        ...

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        ...

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh) -> tuple[jax.Array, dict[str, Any]]:
        ...

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int) -> Sampler:
        ...

    def encode(self, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        ...

    def compare(self, model: nnx.Module, a: jax.Array, b: jax.Array) -> jax.Array:
        """Comparators only: logits float32 [P, 19] of P(a above b) from encodings [P, E]; antisymmetric."""
        ...


# ----------------------------------------------------------------------------------------------------- inputs


def model_input(config: ml_collections.ConfigDict) -> str:
    """``config.model.input`` ("pooled" when the approach has no such field), checked."""
    value = config.model.get("input", "pooled")
    if value not in INPUTS:
        raise ConfigError(f"unknown model.input {value!r}; set --config.model.input to one of {INPUTS}")
    return value


def crop_frames(config: ml_collections.ConfigDict, frame_rate: float) -> int:
    """Frames per training crop for frame inputs (``model.sampler.crop_seconds`` x the store's frame rate); 0 for
    pooled inputs. Raises `ConfigError` when the crop holds no frame."""
    if model_input(config) != "frames":
        return 0
    seconds = config.model.sampler.crop_seconds
    frames = round(seconds * frame_rate)
    if frames < 1:
        raise ConfigError(f"model.sampler.crop_seconds={seconds} gives no frame at {frame_rate} frames/s; raise "
                          "--config.model.sampler.crop_seconds")
    return frames


def check_batch_config(config: ml_collections.ConfigDict, group_size: int | None = None) -> None:
    """The checks every approach shares: positive batch size and steps; whole groups of ``group_size`` (>= 2)."""
    train = config.train
    for name in ("batch_size", "num_steps", "eval_every", "log_every"):
        if train.get(name, 1) < 1:
            raise ConfigError(f"train.{name}={train[name]} must be a positive integer; set --config.train.{name}")
    if group_size is not None:
        if group_size < 2:
            raise ConfigError(f"model.sampler.group_size={group_size} must be >= 2 (a group slot needs a pair); set "
                              "--config.model.sampler.group_size")
        if train.batch_size % group_size:
            raise ConfigError(f"train.batch_size={train.batch_size} is not a multiple of model.sampler.group_size="
                              f"{group_size}; change --config.train.batch_size or --config.model.sampler.group_size")


# ----------------------------------------------------------------------------------------------------- predictions


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


@dataclasses.dataclass
class Predictions:
    """What an approach predicts for N rows (host numpy), typed by its kind.

    scores: float [N, 19] for a scorer, else None.
    pairs: for a comparator, (i, j, probability): rows i, j int [P] (every within-group pair, i before j) and
      probability float [P, 19] = P(row i above row j); else None.
    embeddings: name -> float [N, E], the named embeddings the evaluation may probe.
    """

    scores: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    embeddings: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return SCORER if self.scores is not None else COMPARATOR

    def pair_probabilities(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """P(row i above row j) float [P, 19] for row pairs (i, j) of one group: sigmoid(s_i - s_j) for a scorer;
        the stored probabilities for a comparator (1 - p for a pair asked in the other orientation)."""
        if self.scores is not None:
            return _sigmoid(self.scores[i] - self.scores[j])
        a, b, p = self.pairs
        i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
        n = int(max(a.max(initial=-1), b.max(initial=-1), i.max(initial=-1), j.max(initial=-1))) + 1
        stored = a.astype(np.int64) * n + b
        order = np.argsort(stored)
        sorted_codes = stored[order]

        def find(code: np.ndarray) -> np.ndarray:  # index of each code among the stored pairs, -1 if absent
            if not len(order):
                return np.full(len(code), -1)
            at = np.clip(np.searchsorted(sorted_codes, code), 0, len(order) - 1)
            return np.where(sorted_codes[at] == code, order[at], -1)

        direct, reverse = find(i * n + j), find(j * n + i)
        flipped = direct < 0
        index = np.where(flipped, reverse, direct)
        if (index < 0).any():
            raise ValueError(f"{(index < 0).sum()} asked pair(s) were not compared (pairs never cross groups)")
        values = p[index]
        return np.where(flipped[:, None], 1.0 - values, values)

    def subset(self, rows: np.ndarray) -> "Predictions":
        """The predictions of ``rows`` (int [M], increasing), renumbered 0..M-1; comparator pairs kept inside them."""
        rows = np.asarray(rows)
        embeddings = {name: value[rows] for name, value in self.embeddings.items()}
        if self.scores is not None:
            return Predictions(scores=self.scores[rows], embeddings=embeddings)
        a, b, p = self.pairs
        new_index = np.full(int(max(a.max(initial=-1), b.max(initial=-1), rows.max(initial=-1))) + 1, -1)
        new_index[rows] = np.arange(len(rows))
        keep = (new_index[a] >= 0) & (new_index[b] >= 0)
        return Predictions(pairs=(new_index[a[keep]], new_index[b[keep]], p[keep]), embeddings=embeddings)


def win_scores(predictions: Predictions, groups: np.ndarray) -> np.ndarray:
    """Per-row ranking scores float [N, 19] inside each group.

    Scorer: its scores. Comparator: expected win counts w_i = sum_{j in group(i), j != i} P(i above j) (a Borda
    count over the comparator's probabilities; for a scorer seen as a comparator it orders each group exactly as
    the scores do, since each term increases with s_i). Groups of one give 0.
    """
    if predictions.scores is not None:
        return predictions.scores
    i, j, p = predictions.pairs
    wins = np.zeros((len(groups), p.shape[1]))
    np.add.at(wins, i, p)
    np.add.at(wins, j, 1.0 - p)
    return wins


def mean_pairwise_accuracy(predictions: Predictions, labels: np.ndarray, groups: np.ndarray) -> float:
    """Mean over dimensions of the share of within-group pairs ordered as ``labels`` order them, from the pair
    probabilities (P > 0.5 says i above j; exactly 0.5 counts 0.5; label ties and NaN labels are skipped); NaN
    when no pair is usable. The trainer's checkpoint-selection metric (the evaluation reports the full set)."""
    i, j = within_group_pairs(groups)
    if len(i) == 0:
        return float("nan")
    p = predictions.pair_probabilities(i, j)
    gap = labels[i] - labels[j]
    usable = np.isfinite(gap) & (gap != 0) & np.isfinite(p)
    correct = np.where(p == 0.5, 0.5, ((p > 0.5) == (gap > 0)).astype(np.float64))
    counts = usable.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_dim = np.where(counts > 0, np.where(usable, correct, 0.0).sum(axis=0) / counts, np.nan)
    return float(np.nanmean(per_dim)) if np.isfinite(per_dim).any() else float("nan")
