"""The sequence trunk (``trunk.kind="sequence"``): a small encoder over score-aligned frames in front of any approach.

The `aligned` encoder stores one frame per score position (beat) of each performance, [T, F] with F = 19 named
features and NaN where a position or a feature holds no value; frame t of every performance of a same-music group is
the same score position. The model is::

    x [B, T, F]  (standardised per feature; NaN = no value)
      -> m_tf = isfinite(x_tf); x_tf -> 0 where not m_tf                       (0 = the feature's training mean)
      -> h_0 = Linear([x, m]) [B, T, H]                                        (the indicators say what was missing)
      -> num_layers x pre-norm block: masked self-attention with a learned relative-position bias per head
         (distances clipped at +-max_distance positions), GELU MLP          (`models.layers.SequenceBlock`)
      -> LayerNorm = the sequence s [B, T, H];  position mask p_t = any_f m_tf  [B, T]
      -> masked attention pooling over the real positions = the pooled vector [B, H]  (`models.layers.MaskedPooling`)
      -> the approach's own head, built exactly as for pooled inputs of width H (baseline, A, B's vector heads, C)

Approach B's ``cross_attention`` head reads the sequence instead: B's encoder runs on every position
(``frame_stride`` 1) and the head compares the two performances of a pair position by position: their positions are
the same score positions, index by index, so position t of one reads positions t +- ``trunk.sequence.cross_window``
of the other (0: position t only), masked positions of either side never read, and the pair is pooled over the
real positions. Its encoding carries the position mask as its last channel, [N, T, E + 1], so that ``compare`` sees
which positions are real.

**Masks.** A position is real when it holds any value; the attention never reads, and the pooling never weighs, a
position that is not; a row with no real position pools to 0 (finite, whatever follows). For the `aligned` encoder a
position where no note was matched is masked (`prepare_table` clears its one remaining value, missing_share, so the
trunk sees it as empty; the pooled vectors keep it). Padding past a row's last position is NaN too.

**Inputs and windows.** The core reads each row as one window of ``trunk.sequence.max_positions`` positions (64:
PercePiano's segments hold 8-54 score beats), NaN-padded (`Approach.window_frames`; score positions are never
wrapped). Evaluation reads whole sequences, no crops; a row longer than the window is read as consecutive windows
(`models.functions.evaluation_crops`, outputs averaged; a sequence head compares the aligned windows) and trained on
one window per step at a random place shared by the rows of a group (`SequenceSampler`). So memory is bounded by
the window: attention holds [rows, heads, max_positions, max_positions] per block (4,096 rows x 4 heads x 64^2
floats = 256 MiB per prediction chunk).

**Standardisation** (`input_stats`): mean and standard deviation of each feature over every finite value of the
fold's training rows (all their positions); the pooled statistics are those of the stored pooled vectors. The trunk
keeps them (``trunk/mean``, ``trunk/std``, fixed) for the augmentation, which works on the unstandardised values.

**Augmentation** (training only; ``trunk.augment``, `models.sequence_augment`): global tempo scaling, velocity offset
and group-aligned random crops, drawn on the device inside the jitted step from the step's key (the trunk's seed,
fixed at initialisation from ``train.seed`` and the fold, folded with the optimizer step: a resumed run draws what an
uninterrupted one would).

**Group-relative inputs** (``data.group_relative=True``) need nothing here: the frames arrive minus their group's
mean per position, masked positions stay NaN.

Sharding is the core's: the batch on the "data" axis, the trunk replicated with the head; ``trunk.remat``
recomputes each block in the backward pass (`nnx.remat`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.encoders.aligned import FEATURE_NAMES
from crescend_jax.models.contract import Approach, BatchPlan, InputError, InputStats, Objective, Sampler, \
    standardisation
from crescend_jax.models.layers import POOLINGS, MaskedPooling, SequenceBlock
from crescend_jax.models.sequence_augment import Augmentation, augment, augmentation_from_config
from crescend_jax.models.trunk import Statistic

SEQUENCE_HEADS = {"siamese": ("cross_attention",)}  # approach -> its heads that compare sequences, not vectors
# the feature the aligned encoder defines exactly where a position has a matched note (its mask)
MATCHED_FEATURE = "velocity_abs_dev"


class SequenceTrunkError(InputError):
    """A store the sequence trunk cannot read; the message names the fix."""


# ----------------------------------------------------------------------------------------------------- config


def reads_sequence(config: ml_collections.ConfigDict) -> bool:
    """Whether the approach's head compares sequences (B's cross_attention) rather than reading the pooled vector."""
    return config.model.get("comparison", "") in SEQUENCE_HEADS.get(config.model.name, ())


def check_sequence_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` naming the ``trunk.sequence`` / ``trunk.augment`` field that is out of range."""
    sequence = config.trunk.sequence
    for name in ("width", "num_layers", "num_heads", "mlp_dim", "max_positions"):
        if int(sequence[name]) < 1:
            raise ConfigError(f"trunk.sequence.{name}={sequence[name]} must be >= 1; set --config.trunk.sequence.{name}")
    if sequence.width % sequence.num_heads:
        raise ConfigError(f"trunk.sequence.width={sequence.width} must be a multiple of trunk.sequence.num_heads="
                          f"{sequence.num_heads}")
    if sequence.max_distance < 1:
        raise ConfigError(f"trunk.sequence.max_distance={sequence.max_distance} must be >= 1 (positions)")
    if not 0 <= sequence.dropout < 1:
        raise ConfigError(f"trunk.sequence.dropout={sequence.dropout} must be in [0, 1)")
    if sequence.pooling not in POOLINGS:
        raise ConfigError(f"unknown trunk.sequence.pooling {sequence.pooling!r}; set it to one of {POOLINGS}")
    if sequence.cross_window < -1:
        raise ConfigError(f"trunk.sequence.cross_window={sequence.cross_window} must be >= 0 (positions t +- window) "
                          "or -1 (every position)")
    augmentation_from_config(config)


def head_config(config: ml_collections.ConfigDict, *, sampler: bool = False) -> ml_collections.ConfigDict:
    """``config`` as the approach's head sees it: pooled inputs, or for a sequence head (`reads_sequence`) frames of
    one position per step (``frame_stride`` 1) compared within ``cross_window``. ``sampler``: the config its sampler
    reads (pooled inputs always: the core reads whole windows, the trunk's `SequenceSampler` places them)."""
    head = copy.deepcopy(config)
    with head.unlocked():
        head.model.input = "pooled"
        if reads_sequence(config) and not sampler:
            head.model.input = "frames"
            head.model.frame_stride = 1
            head.model.head.window = int(config.trunk.sequence.cross_window)
    return head


# ----------------------------------------------------------------------------------------------------- the model


class SequenceEncoder(nnx.Module):
    """x [B, T, F] (standardised, NaN = no value) -> (pooled [B, H], sequence [B, T, H], position mask [B, T])
    (module doc). Keeps the fold's feature statistics ``mean``, ``std`` [F] and the augmentation ``seed`` (fixed
    `Statistic` s)."""

    def __init__(self, features: int, *, width: int, num_layers: int, num_heads: int, mlp_dim: int, dropout: float,
                 max_distance: int, pooling: str, remat: bool, rngs: nnx.Rngs):
        self.embed = nnx.Linear(2 * features, width, rngs=rngs)
        self.blocks = nnx.List([SequenceBlock(width, num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout,
                                              max_distance=max_distance, rngs=rngs) for _ in range(num_layers)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.pool = MaskedPooling(width, pooling, rngs)
        self.mean = Statistic(jnp.zeros(features, jnp.float32))
        self.std = Statistic(jnp.ones(features, jnp.float32))
        self.seed = Statistic(jax.random.key_data(rngs.params()))
        self.remat = remat
        self.width = width

    def step_key(self, step: jax.Array) -> jax.Array:
        """The augmentation key of optimizer step ``step``: the trunk's seed folded with it."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.seed.get_value()), step)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        known = jnp.isfinite(x)
        mask = jnp.any(known, axis=-1).astype(jnp.float32)
        h = self.embed(jnp.concatenate([jnp.where(known, x, 0.0), known.astype(x.dtype)], axis=-1))
        apply = nnx.remat(_apply_block) if self.remat else _apply_block
        for block in self.blocks:
            h = apply(block, h, mask)
        h = self.norm(h)
        return self.pool(h, mask), h, mask


def _apply_block(block: SequenceBlock, h: jax.Array, mask: jax.Array) -> jax.Array:
    return block(h, mask)


class SequenceModel(nnx.Module):
    """``trunk`` (`SequenceEncoder`) then ``head`` (the approach's model on the trunk's output)."""

    def __init__(self, trunk: SequenceEncoder, head: nnx.Module) -> None:
        self.trunk = trunk
        self.head = head


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceObjective(Objective):
    """The inner approach's objective, the augmentation settings, and whether the head reads the sequence."""

    inner: Objective
    augment: Augmentation
    sequence_head: bool


# ----------------------------------------------------------------------------------------------------- the sampler


class SequenceSampler:
    """The inner approach's batches (its rows, pooled-input layout) with the window start of each row: 0 for a row
    that fits one window; for a longer one a uniform place, the same fraction u_g of the room for every row of one
    group in the batch (start = floor(u_g (T - window + 1))), so aligned rows stay aligned. Checkpointable: the
    inner sampler's state and this generator's."""

    def __init__(self, inner: Sampler, table: EmbeddingTable, window: int, seed: Any):
        self.inner = inner
        self.window = window
        self.lengths = np.array([f.shape[1] for f in table.frames], np.int64)
        self.groups = table.group_ids()
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[BatchPlan]:
        return self

    def __next__(self) -> BatchPlan:
        plan = next(self.inner)
        rows = plan.rows
        safe = np.where(rows >= 0, rows, 0)
        room = np.maximum(self.lengths[safe] - self.window, 0) + 1
        _, group = np.unique(self.groups[safe], return_inverse=True)
        fraction = self.rng.random(int(group.max(initial=-1)) + 1)[group]
        starts = np.minimum(np.floor(fraction * room), room - 1)
        return BatchPlan(rows=rows, crop_start=np.where(rows >= 0, starts, 0).astype(np.int32))

    def state(self) -> dict[str, Any]:
        return {"inner": self.inner.state(), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.inner.restore(state["inner"])
        self.rng.bit_generator.state = state["rng"]


# ----------------------------------------------------------------------------------------------------- the table


def is_aligned(table: EmbeddingTable) -> bool:
    """Whether ``table`` holds the `aligned` encoder's frames (its name, group-relative or not, and its width)."""
    return table.encoder.startswith("aligned-") and table.pooled.shape[1] == len(FEATURE_NAMES)


def sequence_table(table: EmbeddingTable, config: ml_collections.ConfigDict) -> EmbeddingTable:
    """The table the trunk reads (module doc): ``table`` with, for the `aligned` encoder, every feature of a position
    without a matched note set to NaN. Raises `SequenceTrunkError` for a store without frames, with time frames or
    several layers, or (when the tempo or velocity augmentation is on) frames that are not the aligned features."""
    if table.frames is None:
        raise SequenceTrunkError(
            f"trunk.kind='sequence' reads frames but the store {table.encoder!r} was read without them: extract and "
            "read it with --config.store.frames=True (e.g. --config.encoder.name=aligned --config.store.frames=True)")
    if table.frame_rate != 0:
        raise SequenceTrunkError(
            f"trunk.kind='sequence' reads score positions but the store {table.encoder!r} holds time frames "
            f"({table.frame_rate:g} frames/s): use the aligned encoder (--config.encoder.name=aligned "
            "--config.store.frames=True)")
    layouts = sorted({(f.shape[0], f.shape[2]) for f in table.frames})
    if layouts and layouts != [(1, table.pooled.shape[1])]:
        raise SequenceTrunkError(f"the store {table.encoder!r} holds frames of (layers, width) {layouts}, not one layer "
                                 f"of its {table.pooled.shape[1]} pooled features per position")
    settings = augmentation_from_config(config)
    if settings.needs_aligned_features and not is_aligned(table):
        raise SequenceTrunkError(
            f"the tempo and velocity augmentations move named aligned features, but the store {table.encoder!r} is "
            "not the aligned encoder's: use --config.encoder.name=aligned, or switch them off with "
            "--config.trunk.augment.tempo=False --config.trunk.augment.velocity=False")
    if not is_aligned(table):
        return table
    matched = FEATURE_NAMES.index(MATCHED_FEATURE)
    frames = []
    for f in table.frames:
        f = np.array(f, np.float32)
        f[:, ~np.isfinite(f[0, :, matched])] = np.nan
        frames.append(f)
    return dataclasses.replace(table, frames=frames)


def feature_statistics(table: EmbeddingTable, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 [F] of each feature over every finite value of the rows' frames (std 1 where below 1e-6
    or undefined, mean 0 for a feature with no value); (0, 1) when not ``enabled``."""
    width = table.frames[0].shape[-1] if table.frames else table.pooled.shape[1]
    if not enabled or not table.frames:
        return np.zeros(width, np.float32), np.ones(width, np.float32)
    values = np.concatenate([f.reshape(-1, width) for f in table.frames]).astype(np.float64)
    known = np.isfinite(values)
    count = known.sum(axis=0)
    mean = np.where(known, values, 0.0).sum(axis=0) / np.maximum(count, 1)
    var = np.where(known, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    std = np.sqrt(var)
    return mean.astype(np.float32), np.where((count > 0) & (std > 1e-6), std, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- the approach


class Sequenced(Approach):
    """An `Approach` with the sequence trunk in front of ``inner``'s model (module doc); same name and kind."""

    def __init__(self, inner: Approach) -> None:
        self.inner = inner
        self.name, self.kind = inner.name, inner.kind

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        check_sequence_config(config)
        self.inner.check_config(head_config(config))

    def objective(self, config: ml_collections.ConfigDict) -> SequenceObjective:
        inner = self.inner.objective(head_config(config))
        return SequenceObjective(group_size=inner.group_size, inner=inner, augment=augmentation_from_config(config),
                                 sequence_head=reads_sequence(config))

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> SequenceModel:
        check_sequence_config(config)
        sequence = config.trunk.sequence
        trunk = SequenceEncoder(input_dim, width=sequence.width, num_layers=sequence.num_layers,
                                num_heads=sequence.num_heads, mlp_dim=sequence.mlp_dim, dropout=sequence.dropout,
                                max_distance=sequence.max_distance, pooling=sequence.pooling,
                                remat=bool(config.trunk.remat), rngs=rngs)
        return SequenceModel(trunk, self.inner.build_model(head_config(config), sequence.width, rngs))

    def _head_batch(self, objective: SequenceObjective, model: SequenceModel, batch: dict[str, jax.Array],
                    x: jax.Array) -> dict[str, jax.Array]:
        pooled, sequence, mask = model.trunk(x)
        if objective.sequence_head:
            return {**batch, "x": sequence, "step_mask": mask}
        return {**batch, "x": pooled}

    def loss(self, objective: SequenceObjective, model: SequenceModel, batch: dict[str, jax.Array],
             step: jax.Array, mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        """The inner approach's loss on the trunk's output of the (augmented) batch."""
        x = batch["x"]
        if objective.augment.active:
            trunk = model.trunk
            x = augment(x, batch["group"], trunk.step_key(step), trunk.mean.get_value(), trunk.std.get_value(),
                        objective.augment)
        return self.inner.loss(objective.inner, model.head, self._head_batch(objective, model, batch, x), step, mesh)

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: Any) -> SequenceSampler:
        inner = self.inner.sampler(table, head_config(config, sampler=True), seed)
        return SequenceSampler(inner, table, self.window_frames(config, table), [*np.atleast_1d(seed), 1])

    def encode(self, objective: SequenceObjective, model: SequenceModel, x: jax.Array) -> dict[str, jax.Array]:
        pooled, sequence, mask = model.trunk(x)
        if not objective.sequence_head:
            return self.inner.encode(objective.inner, model.head, pooled)
        encoding, hidden = model.head.encode(sequence, mask)  # B's own encode, with the positions' mask
        return {"encoding": jnp.concatenate([encoding, mask[..., None]], axis=-1), "hidden": hidden}

    def compare(self, objective: SequenceObjective, model: SequenceModel, a: jax.Array, b: jax.Array) -> jax.Array:
        if not objective.sequence_head:
            return self.inner.compare(objective.inner, model.head, a, b)
        return model.head.compare(a[..., :-1], b[..., :-1], a[..., -1], b[..., -1])

    # -- the input hooks

    def prepare_table(self, table: EmbeddingTable, config: ml_collections.ConfigDict, *,
                      training: bool) -> EmbeddingTable:
        del training
        return sequence_table(table, config)

    def input_stats(self, table: EmbeddingTable, config: ml_collections.ConfigDict) -> InputStats:
        enabled = config.train.get("standardize_inputs", True)
        mean, std = feature_statistics(table, enabled)
        pooled_mean, pooled_std = standardisation(table.pooled, enabled)
        return InputStats(mean=mean, std=std, pooled_mean=pooled_mean, pooled_std=pooled_std)

    def initial_state(self, model_state: nnx.State, config: ml_collections.ConfigDict,
                      stats: InputStats) -> nnx.State:
        """``model_state`` with the fold's feature statistics in the trunk (each leaf keeps its sharding)."""
        state = nnx.to_pure_dict(model_state)
        for name, value in (("mean", stats.mean), ("std", stats.std)):
            old = state["trunk"][name]
            state["trunk"][name] = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
        nnx.replace_by_pure_dict(model_state, state)
        return model_state

    def window_frames(self, config: ml_collections.ConfigDict, table: EmbeddingTable) -> int:
        """``trunk.sequence.max_positions``: every row is read whole (NaN-padded) when it fits."""
        return int(config.trunk.sequence.max_positions)
