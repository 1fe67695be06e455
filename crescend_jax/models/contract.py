"""The contract between an approach (``models/<approach>.py``) and the layers above it (``train/``, ``evaluate/``).

An approach is a stateless `Approach` object: every method is a pure function of its arguments, and nothing is kept
on the object between calls (two instances, or one instance used for two configs, behave alike). It supplies:

* ``check_config(config)``: refuses a bad ``config.model`` / batch setting with a `ConfigError` (before any workdir);
* ``objective(config)``: its loss settings as a frozen, hashable `Objective` value (a dataclass), built from the
  config alone. The core builds it once per run and hands it to ``loss``, ``encode`` and ``compare``, so what the
  model computes never depends on which calls came before (big_vision's ``loss_fn(params, batch)``, the flax
  examples' pure ``train_step``);
* ``build_model(config, input_dim, rngs)``: the Flax NNX model;
* ``loss(objective, model, batch, step, mesh)``: scalar loss + scalar diagnostics on a (sharded) device batch, inside
  jit; ``step`` is the optimizer step (int32 scalar) so schedules (e.g. a gradient-reversal weight) live in the
  objective; ``mesh`` says how the batch is sharded (a loss that needs collectives, e.g. InfoNCE, passes it on);
* ``sampler(table, config, seed)``: its batch stream, as a host-side `Sampler` of row indices (and frame-crop starts):
  the training core keeps the table on the devices and gathers each batch there from these indices;
* ``encode(objective, model, x)`` (and, for comparators, ``compare(objective, model, a, b)``): what it predicts, per
  performance.

Two kinds of approach:

* a **scorer** (``kind = "scorer"``): ``encode`` returns ``{"scores": [N, 19], ...}``; higher = higher on the dimension;
* a **comparator** (``kind = "comparator"``): ``encode`` returns ``{"encoding": [N, E], ...}``, each performance encoded
  once, and ``compare(objective, model, encoding_a [P, E], encoding_b [P, E])`` returns logits [P, 19] of
  P(a above b).

Every other key of ``encode``'s dict is a named embedding [N, E] (e.g. ``hidden``, ``z_piece``, ``z_style``) that the
evaluation may probe. A scorer is a special case of a comparator: P(a above b) = sigmoid(s_a - s_b)
(`Predictions.pair_probabilities`).

**Input hooks.** What the model reads can differ from the stored table: a trunk in front of the approach's own model
(``config.trunk.kind``: "finetune" = MuQ's top layers, `models.trunk.Finetuned`; "sequence" = an encoder over
score-aligned frames, `models.sequence_trunk.Sequenced`) changes the rows' inputs, their standardisation, the
initial weights and the optimiser. Such a trunk is an `Approach` that wraps another one and overrides these five
hooks; the trainer and the held-out prediction call them and never look inside a trunk. Each defaults to "nothing
to do" in `Approach`:

* ``prepare_table(table, config, *, training)`` -> the `EmbeddingTable` the model reads (default: ``table``).
  A trunk may replace ``frames`` (e.g. by the stored layer-input frames, or by per-beat frames [T, F]) or add
  columns. ``training=True`` also runs the checks only training needs (e.g. that the weights the trunk starts from
  reproduce the store). Raises `InputError` (message names the fix) for a table it cannot read;
* ``input_stats(table, config)`` -> `InputStats` of a fold's training rows: the standardisation (mean, std) [F] of
  the model's inputs, and that of the stored pooled vectors (default: both the pooled vectors' statistics, or 0/1
  with ``train.standardize_inputs=False``). Saved per fold in ``input_stats.npz`` and applied at prediction;
* ``initial_state(model_state, config, stats)`` -> the model state a fold starts from (default: the fresh
  initialisation), e.g. converted pre-trained weights and fixed statistics; a warm start (``model.init_from``) is
  applied after it;
* ``param_groups(config)`` -> optimiser groups (`train.optimizer`) the trunk adds after ``train.param_groups``
  (default: none), e.g. its own learning rate, or frozen layers;
* ``window_frames(config, table)`` -> how many frames of each row of the (prepared) table the model reads per input
  window, 0 for the pooled vectors (default: `crop_frames`, i.e. ``model.input="frames"`` crops of
  ``model.sampler.crop_seconds``). Training gathers windows of that length from the sampler's crop starts; the
  evaluation reads the windows that cover each whole row (`models.functions.evaluation_crops`). Time frames are read
  cyclically (a track shorter than the window repeats); **score-position frames** (``table.frame_rate == 0``, e.g.
  the `aligned` encoder's beats) are never repeated: positions past a row's last one are NaN padding.

A trunk over sequences (per-beat frames [T, F], `models.sequence_trunk`) plugs in the same way: ``window_frames``
says how many positions the core reads per row, ``input_stats`` standardises them per feature, ``initial_state``
hands the model those statistics, and ``build_model`` wraps the inner approach's model, which reads the trunk's output
as its input (pooled [B, E], or a sequence for a head that compares sequences); ``loss``/``encode``/``compare`` run
the trunk, then delegate to the inner approach with the inner approach's objective. The frame mask travels inside
``x`` itself: NaN marks a position that holds no value (padding, a masked score position, an undefined feature).

Device batches (``loss``'s ``batch``), built by the core from a `BatchPlan`, leading axis B (a multiple of the mesh):

* ``x``: float32 [B, D] standardised pooled vectors, or [B, T, F] standardised frame windows (``window_frames``;
  NaN where a score-position row has no value, e.g. past its last position);
* ``label_mean``, ``label_std``: float32 [B, 19] (std NaN -> 0; zeros on padding rows);
* ``group``: int32 [B] dense same-music group id (-1 on padding), ``composition``: int32 [B] dense composition id of
  the fold's training compositions (-1 on padding), ``mask``: float32 [B] 1 real / 0 padding.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Iterator, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.groups import within_group_pairs
from crescend_jax.data.pairs import outcome_accuracy, pair_outcome
from crescend_jax.data.table import EmbeddingTable

SCORER = "scorer"
COMPARATOR = "comparator"
KINDS = (SCORER, COMPARATOR)
INPUTS = ("pooled", "frames")
DEVICE_FIELDS = ("x", "label_mean", "label_std", "group", "composition", "mask")


class InputError(ValueError):
    """A table the model cannot read (e.g. a store without the frames a trunk needs); the message names the fix."""


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Objective:
    """An approach's loss settings: a frozen, hashable value built from the config (`Approach.objective`).

    group_size: K rows per group slot of a P x K batch (0: the objective has no group layout). Approaches subclass
    it with their own fields.
    """

    group_size: int = 0

    def grouped(self, a: jax.Array) -> jax.Array:
        """a [B, ...] -> [B / K, K, ...], the P x K group layout of the batch (row p * K + k is slot k of group
        slot p). Raises ValueError when B is not whole groups."""
        rows, k = a.shape[0], self.group_size
        if k < 1 or rows % k:
            raise ValueError(f"batch of {rows} rows is not whole groups of model.sampler.group_size={k}")
        return a.reshape(rows // k, k, *a.shape[1:])


def choice(value: str, choices: tuple[str, ...], field: str) -> str:
    """``value`` when it is one of ``choices``; else a `ConfigError` naming ``config.model.<field>``."""
    if value not in choices:
        raise ConfigError(f"unknown model.{field} {value!r}; set --config.model.{field} to one of {choices}")
    return value


@dataclasses.dataclass(frozen=True)
class InputStats:
    """A fold's input standardisation (host float32 arrays): mean, std [F] of the model's inputs (x -> (x - mean) /
    std); pooled_mean, pooled_std [D] of the stored pooled vectors (the same for a plain approach; a trunk whose
    output is a pooled vector standardises it with them)."""

    mean: np.ndarray
    std: np.ndarray
    pooled_mean: np.ndarray
    pooled_std: np.ndarray


def standardisation(values: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 [D] of ``values`` [N, D] over rows (std 1 where below 1e-6: a constant feature is only
    centred); (0, 1) when not ``enabled``."""
    width = values.shape[1]
    if not enabled:
        return np.zeros(width, np.float32), np.ones(width, np.float32)
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


class Approach(abc.ABC):
    """What each approach supplies (module doc); the core owns the loop, data placement, sharding, optimiser and
    checkpoints. Subclasses set ``name`` and ``kind`` and implement the abstract methods; the input hooks default
    to nothing."""

    name: str
    kind: str  # SCORER or COMPARATOR

    @abc.abstractmethod
    def check_config(self, config: ml_collections.ConfigDict) -> None:
        """Raises `ConfigError` for a bad ``config.model`` / batch setting (called before any workdir is made)."""

    @abc.abstractmethod
    def objective(self, config: ml_collections.ConfigDict) -> Objective:
        """The loss settings of ``config`` (checked), a frozen value."""

    @abc.abstractmethod
    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        """The model on inputs of width ``input_dim`` (the store's pooled width)."""

    @abc.abstractmethod
    def loss(self, objective: Objective, model: nnx.Module, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        """(scalar loss, scalar diagnostics) of ``batch`` (fields in the module doc)."""

    @abc.abstractmethod
    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: Any) -> Sampler:
        """The training batch stream over ``table``'s rows."""

    @abc.abstractmethod
    def encode(self, objective: Objective, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        """What the model predicts for inputs x [N, ...] (module doc)."""

    def compare(self, objective: Objective, model: nnx.Module, a: jax.Array, b: jax.Array) -> jax.Array:
        """Comparators only: logits float32 [P, 19] of P(a above b) from encodings [P, E]; antisymmetric."""
        raise TypeError(f"approach {self.name!r} is a {self.kind}: it has no compare")

    # -- input hooks (module doc): a trunk overrides them; a plain approach keeps these defaults

    def prepare_table(self, table: EmbeddingTable, config: ml_collections.ConfigDict, *,
                      training: bool) -> EmbeddingTable:
        """The table the model reads (default: ``table`` itself)."""
        del config, training
        return table

    def input_stats(self, table: EmbeddingTable, config: ml_collections.ConfigDict) -> InputStats:
        """The standardisation of a fold's training rows ``table`` (default: the pooled vectors' for both)."""
        mean, std = standardisation(table.pooled, config.train.get("standardize_inputs", True))
        return InputStats(mean=mean, std=std, pooled_mean=mean, pooled_std=std)

    def initial_state(self, model_state: nnx.State, config: ml_collections.ConfigDict,
                      stats: InputStats) -> nnx.State:
        """The state a fold starts from (default: the fresh initialisation ``model_state``)."""
        del config, stats
        return model_state

    def param_groups(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """Optimiser groups added after ``train.param_groups`` (default: none)."""
        del config
        return ml_collections.ConfigDict()

    def window_frames(self, config: ml_collections.ConfigDict, table: EmbeddingTable) -> int:
        """Frames per input window read from each row of the prepared ``table``; 0 = its pooled vectors (default:
        `crop_frames` of ``config`` at the table's frame rate)."""
        return crop_frames(config, table.frame_rate)


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

    def pair_margins(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Predicted margins float [P, 19] of row pairs (i, j), positive when row i is predicted above row j, 0 for
        a predicted tie: s_i - s_j for a scorer, P(i above j) - 1/2 for a comparator (`data.pairs`)."""
        if self.scores is not None:
            return self.scores[i].astype(np.float64) - self.scores[j]
        return self.pair_probabilities(i, j) - 0.5

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
    """Mean over dimensions of the within-group pairwise accuracy of ``predictions`` against ``labels`` [N, 19]:
    the outcome rule of `data.pairs` (label ties and NaN labels left out, predicted ties count 1/2) on every pair of
    every group, averaged per dimension, then over the dimensions that have a usable pair; NaN when none has. The
    trainer's checkpoint-selection metric: the reported ``pairwise_accuracy`` mean of the same rows."""
    i, j = within_group_pairs(groups)
    if len(i) == 0:
        return float("nan")
    labels = np.asarray(labels, np.float64)
    accuracy, _ = outcome_accuracy(pair_outcome(predictions.pair_margins(i, j), labels[i] - labels[j]))
    return float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan")
