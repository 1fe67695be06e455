"""The input path: a fold's training table lives on the devices and each batch is gathered there.

The host only samples indices (a `BatchPlan`: int32 rows and crop starts, a few KiB) and places them sharded over
the "data" axis; every process places only its own slice of the (identically sampled) global index array, so no
host ever builds the global batch. Inside the jitted step `gather` turns the indices into the device batch that
``Approach.loss`` reads (fields in `crescend_jax.models.contract`). The table is replicated on every device:
PercePiano's pooled table is 19 MB, ASAP's windows a few hundred MB. Frame tables are stored flat, [sum_i T_i, F]
(no padding to the longest track), with per-row offsets and lengths; a crop of time frames reads frames
``offset + (start + t) mod length``, so a track shorter than the crop repeats end to end. Score-position frames
(``frame_rate == 0``: frame t of every performance of a group is the same score position) are never repeated: a
window reads ``offset + start + t`` while ``start + t < length`` and NaN past the row's last position (NaN is how a
model reads "no value here", `crescend_jax.models.contract`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from crescend_jax.data.groups import dense_ids
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contract import BatchPlan
from crescend_jax.runtime import distributed


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DeviceTable:
    """A fold's training rows on the devices (replicated).

    x: float32 [N, D] standardised pooled vectors, or [sum T_i, F] standardised frames (row-major by row);
    offsets, lengths: int32 [N] each row's first frame in ``x`` and its frame count (frames only; zeros for pooled);
    label_mean, label_std: float32 [N, 19] (NaN std -> 0); group, composition: int32 [N] dense ids.
    padded: score-position frames, read without wrapping (NaN past a row's end) instead of cyclically.
    """

    x: jax.Array
    offsets: jax.Array
    lengths: jax.Array
    label_mean: jax.Array
    label_std: jax.Array
    group: jax.Array
    composition: jax.Array
    crop_frames: int = dataclasses.field(metadata={"static": True}, default=0)
    padded: bool = dataclasses.field(metadata={"static": True}, default=False)


def host_table(table: EmbeddingTable, mean: np.ndarray, std: np.ndarray, crop_frames: int) -> DeviceTable:
    """The numpy `DeviceTable` of ``table`` with inputs standardised by (``mean``, ``std``) [D] (NaN frames stay NaN);
    score-position frames (``table.frame_rate == 0``) are read padded, time frames cyclically."""
    if crop_frames > 0:
        flat = [f.transpose(1, 0, 2).reshape(f.shape[1], -1) for f in table.frames]  # [T_i, layers * dim]
        lengths = np.array([len(f) for f in flat], np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
        x = (np.concatenate(flat).astype(np.float32) - mean) / std
    else:
        lengths = offsets = np.zeros(len(table), np.int32)
        x = (table.pooled.astype(np.float32) - mean) / std
    return DeviceTable(
        x=x.astype(np.float32), offsets=offsets, lengths=lengths,
        label_mean=table.label_mean.astype(np.float32),
        label_std=np.nan_to_num(table.label_std.astype(np.float32), nan=0.0),
        group=dense_ids(table.groups), composition=dense_ids(table.compositions), crop_frames=crop_frames,
        padded=crop_frames > 0 and table.frame_rate == 0)


def place_table(table: DeviceTable, mesh: Mesh) -> DeviceTable:
    """``table`` replicated on every device of ``mesh`` (every process passes the same values)."""
    return distributed.replicate(table, mesh)


def place_plan(plan: BatchPlan, mesh: Mesh) -> dict[str, jax.Array]:
    """A `BatchPlan` as global int32 arrays sharded over "data" (each process places its own slice)."""
    arrays = {"rows": plan.rows.astype(np.int32)}
    if plan.crop_start is not None:
        arrays["crop_start"] = plan.crop_start.astype(np.int32)
    return distributed.shard_batch(arrays, mesh)


def gather(table: DeviceTable, plan: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The device batch of ``plan`` (inside jit): rows -1 are padding (zeros, group/composition -1, mask 0)."""
    rows = plan["rows"]
    real = rows >= 0
    safe = jnp.where(real, rows, 0)
    if table.crop_frames > 0 and table.padded:  # score positions: NaN past the row's last position, never wrapped
        position = plan["crop_start"][:, None] + jnp.arange(table.crop_frames)[None, :]
        inside = position < table.lengths[safe][:, None]
        frame = table.offsets[safe][:, None] + jnp.minimum(position, jnp.maximum(table.lengths[safe], 1)[:, None] - 1)
        x = jnp.where(inside[..., None], table.x[frame], jnp.nan)  # [B, T, F]
    elif table.crop_frames > 0:
        t = jnp.arange(table.crop_frames)
        length = jnp.maximum(table.lengths[safe], 1)
        frame = table.offsets[safe][:, None] + (plan["crop_start"][:, None] + t[None, :]) % length[:, None]
        x = table.x[frame]  # [B, T, F]
    else:
        x = table.x[safe]  # [B, D]
    keep = real.reshape(-1, *([1] * (x.ndim - 1)))
    return {
        "x": jnp.where(keep, x, 0.0),
        "label_mean": jnp.where(real[:, None], table.label_mean[safe], 0.0),
        "label_std": jnp.where(real[:, None], table.label_std[safe], 0.0),
        "group": jnp.where(real, table.group[safe], -1),
        "composition": jnp.where(real, table.composition[safe], -1),
        "mask": real.astype(jnp.float32),
    }
