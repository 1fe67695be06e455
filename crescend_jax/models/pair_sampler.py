"""Pair-covering P groups x K performances batches for the comparator (approach B).

A batch is P blocks of K rows, group-major: rows p * K .. p * K + K - 1 hold block p, real rows first, then -1
padding. A block holds members of one same-music group only, and the comparator scores every ordered pair inside it
(`losses.comparison.block_pairs`), so a pair that meets in a block is trained in both orientations.

Every epoch covers every pair of every group:

* a group of n = 1 gives no pair: it is counted (``num_singletons``) and left out, not an error;
* 2 <= n <= K: one block with all members;
* n > K: the members are shuffled and split into c = ceil(n / h) chunks as even as possible, h = K // 2 (so each
  chunk has <= h rows), and every pair of chunks is one block (<= 2h <= K rows). Two members in different chunks
  meet exactly once, two in one chunk meet c - 1 times.

Cost: ``blocks_per_group(n, K)`` = C(c, 2) blocks, about 2 n^2 / K^2, i.e. about K(K-1) C(c, 2) ordered pair slots
for n(n-1) distinct ordered pairs: about half the slots are new pairs for large n (the rest are the repeated
within-chunk pairs and padding). Example: K = 8, n = 20 gives c = 5 chunks of 4, 10 blocks of 8 rows.

Hard-pair emphasis (``hard_pair_weight`` w > 0): a block's hardness h_b in [0, 1] is the share of its qualifying
entries (ordered pair, dimension) with label gap min_label_gap < |gap| <= hard_gap, i.e. pairs that the loss trains
on but that are close to call. The block is emitted 1 + floor(w h_b) times, plus once more with probability
frac(w h_b), so on average 1 + w h_b times per epoch.

Epochs are fresh shuffles (of the chunking and of the block order) drawn from the caller's numpy Generator, and are
joined end to end: a batch that straddles two epochs takes its last blocks from the next one, so every batch is full
and has a static shape.

`PairBatchSampler` is the training core's `Sampler` over this: `BatchPlan` s of int32 rows (plus frame-crop starts
for frame inputs: drawn per row, or with ``aligned_crops`` centred at one fraction of the track per block, so that a
head that compares frame sequences trains on the same passage of both performances, as the evaluation compares them,
`models.functions.aligned_crops`), checkpointable (``state()`` is JSON: the generator's state and the blocks left of
the current epoch; ``restore`` continues exactly there).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator

import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contract import BatchPlan
from crescend_jax.models.sampler import aligned_crop_starts, crop_starts, frame_lengths


def blocks_per_group(size: int, group_size: int) -> int:
    """Blocks one epoch spends on a group of ``size`` rows at K = ``group_size`` (see the module doc)."""
    if size < 2:
        return 0
    if size <= group_size:
        return 1
    chunks = math.ceil(size / (group_size // 2))
    return chunks * (chunks - 1) // 2


def group_blocks(members: np.ndarray, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The blocks covering every pair of one group's rows ``members`` (>= 2 of them), members in random order."""
    shuffled = rng.permutation(members)
    if len(shuffled) <= group_size:
        return [shuffled]
    chunks = np.array_split(shuffled, math.ceil(len(shuffled) / (group_size // 2)))
    return [np.concatenate([chunks[a], chunks[b]]) for a in range(len(chunks)) for b in range(a + 1, len(chunks))]


def block_hardness(label_mean: np.ndarray, *, hard_gap: float, min_label_gap: float) -> float:
    """Share of the entries (ordered pair i != j, dimension) of one block's label means [m, D] with
    min_label_gap < |gap| <= hard_gap among those with |gap| > min_label_gap (NaN labels never count); 0 if none."""
    gap = np.abs(label_mean[:, None, :] - label_mean[None, :, :])
    with np.errstate(invalid="ignore"):
        qualifies = gap > min_label_gap  # False for NaN and on the diagonal (gap 0)
        hard = qualifies & (gap <= hard_gap)
    total = int(qualifies.sum())
    return float(hard.sum()) / total if total else 0.0


class PairSampler:
    """Row-index batches [P * K] (int64, -1 = padding) that cover every same-group pair each epoch (module doc).

    Args:
      group_ids: int [N], the same-music group of each table row (e.g. ``EmbeddingTable.group_ids()``).
      group_size: K rows per block (>= 2).
      groups_per_batch: P blocks per batch (>= 1), so a batch has P * K rows.
      label_mean: float [N, D], needed only when hard_pair_weight > 0.
      hard_pair_weight: w >= 0, extra emissions of a block per unit of hardness (0 = off).
      hard_gap, min_label_gap: the band of |gap| that counts as hard (see `block_hardness`).
    """

    def __init__(self, group_ids: np.ndarray, group_size: int, groups_per_batch: int, *,
                 label_mean: np.ndarray | None = None, hard_pair_weight: float = 0.0, hard_gap: float = 0.05,
                 min_label_gap: float = 0.0):
        if group_size < 2:
            raise ConfigError(f"pair batches need group_size >= 2 performances per block, got {group_size}; "
                              "set --config.model.sampler.group_size")
        if groups_per_batch < 1:
            raise ConfigError(f"pair batches need at least one block per batch, got {groups_per_batch}; raise "
                              "--config.train.batch_size to a multiple of model.sampler.group_size")
        if hard_pair_weight < 0:
            raise ConfigError(f"hard_pair_weight must be >= 0, got {hard_pair_weight}")
        if hard_pair_weight > 0 and label_mean is None:
            raise ValueError("PairSampler: hard_pair_weight > 0 needs label_mean to measure label gaps")
        group_ids = np.asarray(group_ids)
        _, inverse = np.unique(group_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1]) if len(order) else []
        self.members = [rows for rows in groups if len(rows) >= 2]
        self.num_singletons = sum(len(rows) == 1 for rows in groups)
        if not self.members:
            raise ValueError(f"no group of the {len(group_ids)} rows holds >= 2 performances; nothing to compare")
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.label_mean = None if label_mean is None else np.asarray(label_mean, np.float32)
        self.hard_pair_weight = float(hard_pair_weight)
        self.hard_gap = hard_gap
        self.min_label_gap = min_label_gap

    @property
    def blocks_per_epoch(self) -> int:
        """Blocks of one epoch before hard-pair repeats."""
        return sum(blocks_per_group(len(rows), self.group_size) for rows in self.members)

    @property
    def batches_per_epoch(self) -> int:
        """Batches that hold one epoch without hard-pair repeats: ceil(blocks_per_epoch / P)."""
        return -(-self.blocks_per_epoch // self.groups_per_batch)

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """One epoch's blocks in random order, hard ones repeated: int64 [num_blocks, K], -1 padding at the end."""
        blocks = [block for rows in self.members for block in group_blocks(rows, self.group_size, rng)]
        if self.hard_pair_weight > 0:
            repeated = []
            for block in blocks:
                extra = self.hard_pair_weight * block_hardness(
                    self.label_mean[block], hard_gap=self.hard_gap, min_label_gap=self.min_label_gap)
                copies = 1 + int(extra) + int(rng.uniform() < extra - int(extra))
                repeated.extend([block] * copies)
            blocks = repeated
        table = np.full((len(blocks), self.group_size), -1, dtype=np.int64)
        for slot, b in enumerate(rng.permutation(len(blocks))):
            table[slot, :len(blocks[b])] = blocks[b]
        return table

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Endless row-index batches int64 [P * K] (group-major, -1 = padding), epochs joined end to end."""
        queue = np.empty((0, self.group_size), dtype=np.int64)
        while True:
            while len(queue) < self.groups_per_batch:
                queue = np.concatenate([queue, self.epoch(rng)])
            batch, queue = queue[:self.groups_per_batch], queue[self.groups_per_batch:]
            yield batch.reshape(-1)


class PairBatchSampler:
    """The `Sampler` of approach B: endless `BatchPlan` s of ``batch_size // group_size`` pair-covering blocks.

    Rows are `PairSampler` blocks of ``table`` (group-major, -1 padding, as int32); with ``crop_frames`` > 0 each row
    also gets a uniform crop start (`crop_starts`; padding 0), or with ``aligned_crops`` the members of a block get
    crops centred at one shared fraction f ~ U[0, 1) of their tracks (`aligned_crop_starts`: the same passage of
    performances that differ in tempo, as the evaluation aligns them). Groups of one performance give no pair: they are
    counted in ``num_singletons`` and reported once with a warning, never an error.

    Args:
      table: the fold's training rows. batch_size: rows per batch, a multiple of ``group_size`` (K >= 2).
      seed: anything `numpy.random.default_rng` takes (the trainer passes [train.seed, fold]).
      crop_frames: frames per crop for frame inputs (0 = pooled inputs, no crop starts).
      hard_pair_weight, hard_gap, min_label_gap: hard-pair emphasis (see `PairSampler`; labels are the table's means).
      aligned_crops: one crop position per block (above) instead of one per row.
    """

    def __init__(self, table: EmbeddingTable, batch_size: int, group_size: int, seed: Any, *, crop_frames: int = 0,
                 hard_pair_weight: float = 0.0, hard_gap: float = 0.05, min_label_gap: float = 0.0,
                 aligned_crops: bool = False):
        if group_size < 2 or batch_size % group_size:
            raise ConfigError(f"train.batch_size={batch_size} must be a multiple of model.sampler.group_size="
                              f"{group_size} >= 2; set --config.train.batch_size / --config.model.sampler.group_size")
        self.pairs = PairSampler(table.group_ids(), group_size, batch_size // group_size,
                                 label_mean=table.label_mean if hard_pair_weight > 0 else None,
                                 hard_pair_weight=hard_pair_weight, hard_gap=hard_gap, min_label_gap=min_label_gap)
        self.num_singletons = self.pairs.num_singletons
        if self.num_singletons:
            warnings.warn(f"{self.num_singletons} same-music group(s) of the {len(table)} training rows hold a single "
                          "performance: they give no pair and are left out of the comparison batches", stacklevel=2)
        self.crop_frames = crop_frames
        self.aligned_crops = aligned_crops
        self.lengths = frame_lengths(table) if crop_frames > 0 else None
        self.rng = np.random.default_rng(seed)
        self.queue = np.empty((0, group_size), np.int64)  # blocks left of the current epoch

    def __iter__(self) -> "PairBatchSampler":
        return self

    def __next__(self) -> BatchPlan:
        needed = self.pairs.groups_per_batch
        while len(self.queue) < needed:
            self.queue = np.concatenate([self.queue, self.pairs.epoch(self.rng)])
        blocks, self.queue = self.queue[:needed], self.queue[needed:]
        rows = blocks.reshape(-1).astype(np.int32)
        starts = None
        if self.crop_frames > 0 and self.aligned_crops:
            fraction = np.repeat(self.rng.random(needed), self.pairs.group_size)  # one per block
            starts = aligned_crop_starts(self.lengths, rows, self.crop_frames, fraction)
        elif self.crop_frames > 0:
            starts = crop_starts(self.lengths, rows, self.crop_frames, self.rng)
        return BatchPlan(rows=rows, crop_start=starts)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "queue": self.queue.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.queue = np.asarray(state["queue"], np.int64).reshape(-1, self.pairs.group_size)
