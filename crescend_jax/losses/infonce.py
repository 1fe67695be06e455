"""Exact multi-positive InfoNCE (SupCon "L_out") in memory linear in the batch, on one device or sharded.

For L2-normalised embeddings ``z`` float32 [B, D], group ids ``group`` int32 [B] and the real rows ``where`` bool [B]
(m_i = 0: a padding row, neither anchor nor key), with ``s = z z^T / T``::

    valid(i, j) = [i != j] m_i m_j                      keys of anchor i: every other real row
    P(i)        = {j : valid(i, j), g_j = g_i}           positives, n_i = |P(i)|
    A           = {i : m_i = 1, n_i >= 1}                anchors
    lse_i       = logsumexp_{j : valid(i, j)} s_ij
    l_i         = lse_i - (1/n_i) sum_{p in P(i)} s_ip    (i in A; 0 otherwise)
    L           = sum_{i in A} v_i l_i / sum_{i in A} v_i (the default reduction; v = ``weights``, 1 by default)

and with v = 1, ``L = (1/|A|) sum_i -(1/n_i) sum_p [s_ip - lse_i]``. Negatives are all other real rows, including
other groups of the same piece.

``infonce_loss`` and ``sharded_infonce_loss`` never build the B x B logits. The forward pass tiles the queries and
the keys into ``block_size`` blocks and keeps a running (online) log-sum-exp per row; a ``jax.custom_vjp`` saves only
``z`` and per-row ``lse`` and ``n`` and recomputes the tiles in the backward pass. With
``G_ij = dL/ds_ij = w_i (p_ij - [j in P(i)] / n_i)``, ``p_ij = exp(s_ij - lse_i)`` and ``w_i = dL/dl_i`` (the
cotangent of the per-anchor losses, e.g. ``[i in A] / |A|`` for the plain mean), the gradient of the symmetric ``s``
is

    dL/dz_i = (1/T) sum_j H_ij z_j,   H = G + G^T,
    dL/dT   = -(1/T^2) sum_ij G_ij (z_i . z_j) = -(1/(2T)) sum_i z_i . dL/dz_i.

Every entry ``H_ij`` is formed from one recomputed tile entry ``s_ij`` and the saved ``lse``/``n``/``w`` of both rows,
so the key-side ("column") contribution of a row is computed by the device that owns the row: the backward pass is
one tile recompute plus one ``H @ z_keys`` matmul per tile (4 B^2 D FLOPs, 6 B^2 D with the forward pass) and no
gradient ever travels between devices. The sharded version keeps each device's rows and brings the key blocks to them,
either around a ring (``jax.lax.ppermute``, the transfer of the next shard issued before the tiles of the current one)
or with one ``all_gather`` of ``z`` (only B x D).

Matmuls use JAX's default precision for float32 (full float32 on CPU; set ``jax_default_matmul_precision`` to
``"highest"`` on TPU/GPU for bit-faithful float32).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from crescend_jax.losses.reduction import ReduceFn, reduce_loss, weighted_mean

# Tile edge by platform when block_size is None. CPU: 512-row tiles (1 MiB of float32 logits, cache-sized): the loss
# alone ran at 100% of the float32 matmul rate at B = 16,384 against 84% with 2,048 (bench/infonce.md), and approach
# A's whole step took 0.77-0.95x the time of 2,048-row tiles at 1,024 and 4,096 rows (bench/ab/07; 256-row tiles
# 1.04-1.12x that of 512, bench/ab/08). Accelerators: larger tiles for their faster matmuls; 8192 is not measured in
# bench/.
DEFAULT_BLOCK_SIZE = {"cpu": 512}
ACCELERATOR_BLOCK_SIZE = 8192
STRATEGIES = ("ring", "allgather")
_FLOOR = -1e30  # initial running max: finite, so that exp(-inf - _FLOOR) = 0 and never NaN


class _Rows(NamedTuple):
    """Per-row metadata of a set of rows (queries or keys): global index (-1 for block padding), group, mask."""

    index: jax.Array  # int32 [N]
    group: jax.Array  # int32 [N]
    mask: jax.Array  # bool  [N]


class _Stats(NamedTuple):
    """Running per-query statistics over the keys seen so far (all float32 [N])."""

    row_max: jax.Array  # max_j s_ij over valid keys (_FLOOR if none yet)
    sum_exp: jax.Array  # sum_j exp(s_ij - row_max) over valid keys
    pos_count: jax.Array  # n_i
    pos_sum: jax.Array  # sum_{p in P(i)} s_ip
    pos_max: jax.Array  # max_{p in P(i)} s_ip (-inf if none)


class _KeyGrad(NamedTuple):
    """Per-row backward factors of the keys: lse, w = g [anchor] / |A| and w / n (all float32 [N])."""

    lse: jax.Array
    weight: jax.Array
    weight_per_pos: jax.Array


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_rows(x: jax.Array, rows: int, value: Any = 0) -> jax.Array:
    """Pad axis 0 of x to ``rows`` with ``value``."""
    extra = rows - x.shape[0]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1), constant_values=value)


def _blocks(x: jax.Array, block: int) -> jax.Array:
    """[N, ...] -> [N / block, block, ...]."""
    return x.reshape((x.shape[0] // block, block) + x.shape[1:])


def _masks(q_rows: _Rows, k_rows: _Rows) -> tuple[jax.Array, jax.Array]:
    """The valid and positive masks [bq, bk] of a tile."""
    valid = q_rows.mask[:, None] & k_rows.mask[None, :] & (q_rows.index[:, None] != k_rows.index[None, :])
    return valid, valid & (q_rows.group[:, None] == k_rows.group[None, :])


def _tile(q: jax.Array, q_rows: _Rows, k: jax.Array, k_rows: _Rows) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Scaled similarities s [bq, bk] (q is pre-scaled by 1/T) and the valid / positive masks [bq, bk]."""
    return jnp.dot(q, k.T, preferred_element_type=jnp.float32), *_masks(q_rows, k_rows)


def _forward_tile(stats: _Stats, q: jax.Array, q_rows: _Rows, k: jax.Array, k_rows: _Rows) -> _Stats:
    """Fold one [bq, bk] tile into the running statistics of its bq queries (online log-sum-exp)."""
    return _fold_tile(stats, *_tile(q, q_rows, k, k_rows))


def _fold_tile(stats: _Stats, s: jax.Array, valid: jax.Array, positive: jax.Array) -> _Stats:
    """`_forward_tile` on a computed tile: s [bq, bk] and its valid / positive masks."""
    s_valid = jnp.where(valid, s, -jnp.inf)
    row_max = jnp.maximum(stats.row_max, s_valid.max(axis=1))
    sum_exp = stats.sum_exp * jnp.exp(stats.row_max - row_max) + jnp.exp(s_valid - row_max[:, None]).sum(axis=1)
    return _Stats(
        row_max=row_max,
        sum_exp=sum_exp,
        pos_count=stats.pos_count + positive.sum(axis=1, dtype=jnp.float32),
        pos_sum=stats.pos_sum + jnp.where(positive, s, 0.0).sum(axis=1),
        pos_max=jnp.maximum(stats.pos_max, jnp.where(positive, s, -jnp.inf).max(axis=1)),
    )


def _backward_tile(
    dq: jax.Array, q: jax.Array, q_rows: _Rows, q_grad: _KeyGrad, k: jax.Array, k_rows: _Rows, k_grad: _KeyGrad
) -> jax.Array:
    """dq [bq, D] += H_tile @ k with H_ij = G_ij + G_ji recomputed from the tile (q is pre-scaled by 1/T)."""
    s, valid, positive = _tile(q, q_rows, k, k_rows)
    # p = exp(s - lse) <= 1 exactly; the clamp absorbs rounding (s_ij stands in for s_ji in the column term, and the
    # two round differently), which overflows exp once |s| reaches about 1e6
    p_row = jnp.where(valid & (q_grad.weight != 0)[:, None], jnp.exp(jnp.minimum(s - q_grad.lse[:, None], 0.0)), 0.0)
    p_col = jnp.where(valid & (k_grad.weight != 0)[None, :], jnp.exp(jnp.minimum(s - k_grad.lse[None, :], 0.0)), 0.0)
    h = q_grad.weight[:, None] * p_row + k_grad.weight[None, :] * p_col - jnp.where(
        positive, q_grad.weight_per_pos[:, None] + k_grad.weight_per_pos[None, :], 0.0
    )
    return dq + jnp.dot(h.astype(k.dtype), k, preferred_element_type=jnp.float32)


def _init_stats(like: jax.Array) -> _Stats:
    """Empty statistics shaped like ``like`` (float32 [...]); derived from it so that shard_map types match."""
    zero = jnp.zeros_like(like, dtype=jnp.float32)
    return _Stats(zero + _FLOOR, zero, zero, zero, zero - jnp.inf)


def _forward_pass(stats: _Stats, q: jax.Array, q_rows: _Rows, k: jax.Array, k_rows: _Rows, block: int) -> _Stats:
    """Fold all keys k [Nk, D] into the statistics [Nq] of queries q [Nq, D]; Nq, Nk multiples of ``block``."""
    key_blocks = (_blocks(k, block), jax.tree.map(lambda a: _blocks(a, block), k_rows))

    def query_block(_, xs):
        q_b, rows_b, stats_b = xs

        def key_block(carry, k_xs):
            return _forward_tile(carry, q_b, rows_b, *k_xs), None

        return None, jax.lax.scan(key_block, stats_b, key_blocks)[0]

    per_block = jax.tree.map(lambda a: _blocks(a, block), (q, q_rows, stats))
    return jax.tree.map(lambda a: a.reshape(-1), jax.lax.scan(query_block, None, per_block)[1])


def _backward_pass(
    dq: jax.Array, q: jax.Array, q_rows: _Rows, q_grad: _KeyGrad, k: jax.Array, k_rows: _Rows, k_grad: _KeyGrad,
    block: int,
) -> jax.Array:
    """Accumulate into dq [Nq, D] the contributions of all keys [Nk, D]; Nq, Nk multiples of ``block``."""
    key_blocks = jax.tree.map(lambda a: _blocks(a, block), (k, k_rows, k_grad))

    def query_block(_, xs):
        dq_b, q_b, rows_b, grad_b = xs

        def key_block(carry, k_xs):
            return _backward_tile(carry, q_b, rows_b, grad_b, *k_xs), None

        return None, jax.lax.scan(key_block, dq_b, key_blocks)[0]

    per_block = jax.tree.map(lambda a: _blocks(a, block), (dq, q, q_rows, q_grad))
    return jax.lax.scan(query_block, None, per_block)[1].reshape(dq.shape)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of how to compute the loss: single device (mesh None) or sharded over ``axis_name``."""

    block_size: int
    mesh: Mesh | None = None
    axis_name: str = "data"
    strategy: str = "ring"

    @property
    def num_shards(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[self.axis_name]

    def one_tile(self, local_rows: int) -> bool:
        """Whether the whole batch is one tile on one device (B <= block_size, no mesh): then the forward keeps
        p = exp(s - lse) [B, B] for the backward instead of recomputing s (4 B^2 bytes more memory)."""
        return self.mesh is None and local_rows <= self.block_size

    def block_for(self, local_rows: int) -> int:
        """The tile edge: ``block_size``, shrunk for small shards (to a multiple of 8)."""
        return min(self.block_size, _round_up(local_rows, 8))

    # ---- collectives (identity on one device) ----
    def psum(self, x: Any) -> Any:
        return x if self.mesh is None else jax.lax.psum(x, self.axis_name)

    def shard_offset(self, local_rows: int) -> jax.Array:
        return jnp.int32(0) if self.mesh is None else jax.lax.axis_index(self.axis_name) * local_rows

    def over_all_keys(self, step, carry: Any, keys: Any) -> Any:
        """carry = step(carry, keys_shard) for every device's shard of ``keys`` (a pytree of [N_local, ...])."""
        if self.mesh is None:
            return step(carry, keys)
        if self.strategy == "allgather":
            gathered = jax.tree.map(lambda a: jax.lax.all_gather(a, self.axis_name, tiled=True), keys)
            return step(carry, gathered)
        n = self.num_shards
        perm = [(i, (i + 1) % n) for i in range(n)]

        def ring_step(_, state):
            carry, shard = state
            incoming = jax.lax.ppermute(shard, self.axis_name, perm)  # issued before the tiles: overlaps them
            return step(carry, shard), incoming

        carry, shard = jax.lax.fori_loop(0, n - 1, ring_step, (carry, keys))
        return step(carry, shard)

    def shard(self, fn, in_specs, out_specs):
        if self.mesh is None:
            return fn
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)


def _local_rows(plan: _Plan, group: jax.Array, mask: jax.Array, padded: int) -> _Rows:
    n = group.shape[0]
    index = plan.shard_offset(n) + jnp.arange(n, dtype=jnp.int32)
    return _Rows(
        index=_pad_rows(index, padded, -1),
        group=_pad_rows(group.astype(jnp.int32), padded, -1),
        mask=_pad_rows(mask > 0, padded, False),
    )


def _local_inputs(plan: _Plan, z, group, mask, temperature):
    """This device's rows padded to whole blocks: (rows, z32 [padded, D], keys k, queries q = z / T, block, padded).
    k and q are in z's dtype (the tile products' operands: bfloat16 in a bfloat16 step, accumulated in float32);
    z32 is z in float32."""
    block = plan.block_for(z.shape[0])
    padded = _round_up(z.shape[0], block)
    z32 = _pad_rows(z.astype(jnp.float32), padded)
    k, q = _pad_rows(z, padded), (z32 / temperature).astype(z.dtype)
    return _local_rows(plan, group, mask, padded), z32, k, q, block, padded


def _local_forward(plan: _Plan, z, group, mask, temperature):
    """Per-device forward: the per-row losses and anchor mask of its rows, the diagnostics (replicated), and the
    per-row residuals (lse, n, anchor) of its rows, plus p = exp(s - lse) [B, B] when the batch is one tile
    (`_Plan.one_tile`)."""
    n_local = z.shape[0]
    rows, _, k, q, block, padded = _local_inputs(plan, z, group, mask, temperature)
    if plan.one_tile(n_local):
        s, valid, positive = _tile(q, rows, k, rows)
        stats = _fold_tile(_init_stats(rows.index), s, valid, positive)
    else:

        def step(stats, key_shard):
            k, k_rows = key_shard
            return _forward_pass(stats, q, rows, k, k_rows, block)

        stats = plan.over_all_keys(step, _init_stats(rows.index), (k, rows))
    lse = stats.row_max + jnp.log(stats.sum_exp)
    anchor = rows.mask & (stats.pos_count > 0)
    safe_count = jnp.where(anchor, stats.pos_count, 1.0)
    positive_logit = stats.pos_sum / safe_count
    per_row = jnp.where(anchor, lse - positive_logit, 0.0)
    num_anchors = plan.psum(anchor.sum(dtype=jnp.float32))
    denominator = jnp.maximum(num_anchors, 1.0)

    def anchor_mean(x):
        return plan.psum(jnp.where(anchor, x, 0.0).sum()) / denominator

    diagnostics = {
        "num_anchors": num_anchors,
        "mean_positive_similarity": anchor_mean(positive_logit) * temperature,
        "mean_logsumexp": anchor_mean(lse),
        "positive_top1_accuracy": anchor_mean((stats.pos_max >= stats.row_max).astype(jnp.float32)),
    }
    residuals = (lse[:n_local], stats.pos_count[:n_local], anchor[:n_local])
    if plan.one_tile(n_local):  # the backward reads p instead of recomputing s (one product, two exponentials)
        residuals += (jnp.where(valid, jnp.exp(jnp.minimum(s - lse[:, None], 0.0)), 0.0),)
    return per_row[:n_local], anchor[:n_local], diagnostics, residuals


def _local_backward(plan: _Plan, z, group, mask, temperature, lse, pos_count, anchor, g):
    """Per-device backward: dL/dz of its rows and dL/dT (replicated), for the cotangents g [rows] of its per-row
    losses (w_i = g_i on anchors)."""
    n_local = z.shape[0]
    rows, z32, k, q, block, padded = _local_inputs(plan, z, group, mask, temperature)
    weight = jnp.where(anchor, g, 0.0)
    grad = _KeyGrad(
        lse=_pad_rows(jnp.where(anchor, lse, 0.0), padded),
        weight=_pad_rows(weight, padded),
        weight_per_pos=_pad_rows(weight / jnp.where(anchor, pos_count, 1.0), padded),
    )

    def step(dq, key_shard):
        return _backward_pass(dq, q, rows, grad, *key_shard, block)

    dq = plan.over_all_keys(step, jnp.zeros_like(z32), (k, rows, grad))
    dz = (dq[:n_local] / temperature).astype(z.dtype)
    d_temperature = -plan.psum(jnp.sum(z32[:n_local] * dz.astype(jnp.float32))) / (2.0 * temperature)
    return dz, d_temperature


def _one_tile_backward(plan: _Plan, z, group, mask, temperature, lse, pos_count, anchor, p, g):
    """`_local_backward` of a batch that is one tile (one device), from the forward's p [B', B'] (B' = B padded to
    a multiple of 8): H = W P + (W P)^T - [j in P(i)] (w_i / n_i + w_j / n_j) with W = diag(w), since
    w_j p_ji is the column term of `_backward_tile` (there recomputed as exp(s_ij - lse_j); s_ji and s_ij differ
    by rounding only), then dq = H k: one product instead of two."""
    n_local = z.shape[0]
    rows, z32, k, _, _, padded = _local_inputs(plan, z, group, mask, temperature)
    weight = _pad_rows(jnp.where(anchor, g, 0.0), padded)
    per_positive = _pad_rows(jnp.where(anchor, g, 0.0) / jnp.where(anchor, pos_count, 1.0), padded)
    _, positive = _masks(rows, rows)
    weighted = weight[:, None] * p
    h = weighted + weighted.T - jnp.where(positive, per_positive[:, None] + per_positive[None, :], 0.0)
    dq = jnp.dot(h.astype(k.dtype), k, preferred_element_type=jnp.float32)
    dz = (dq[:n_local] / temperature).astype(z.dtype)
    d_temperature = -jnp.sum(z32[:n_local] * dz.astype(jnp.float32)) / (2.0 * temperature)
    return dz, d_temperature


def _forward(plan: _Plan, z, group, mask, temperature):
    sharded, replicated = P(plan.axis_name), P()
    fn = plan.shard(
        functools.partial(_local_forward, plan),
        in_specs=(sharded, sharded, sharded, replicated),
        out_specs=(sharded, sharded, replicated, (sharded, sharded, sharded)),
    )
    return fn(z, group, mask, temperature)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _infonce(plan: _Plan, z, group, mask, temperature):
    """(per-row losses [B] (0 off anchors), anchor mask [B], diagnostics)."""
    per_row, anchor, diagnostics, _ = _forward(plan, z, group, mask, temperature)
    return per_row, anchor, diagnostics


def _infonce_fwd(plan: _Plan, z, group, mask, temperature):
    per_row, anchor, diagnostics, residuals = _forward(plan, z, group, mask, temperature)
    return (per_row, anchor, diagnostics), (z, group, mask, temperature, residuals)


def _infonce_bwd(plan: _Plan, saved, cotangents):
    z, group, mask, temperature, (lse, pos_count, anchor, *one_tile) = saved
    g = cotangents[0]  # the anchor mask and the diagnostics carry no gradient
    if one_tile:
        dz, d_temperature = _one_tile_backward(plan, z, group, mask, temperature, lse, pos_count, anchor,
                                               *one_tile, g)
        return dz, None, None, d_temperature
    sharded, replicated = P(plan.axis_name), P()
    fn = plan.shard(
        functools.partial(_local_backward, plan),
        in_specs=(sharded,) * 3 + (replicated,) + (sharded,) * 4,
        out_specs=(sharded, replicated),
    )
    dz, d_temperature = fn(z, group, mask, temperature, lse, pos_count, anchor, g)
    return dz, None, None, d_temperature


_infonce.defvjp(_infonce_fwd, _infonce_bwd)


def _block_size(block_size: int | None, platform: str) -> int:
    """``block_size``, or the platform's default when None."""
    if block_size is None:
        return DEFAULT_BLOCK_SIZE.get(platform, ACCELERATOR_BLOCK_SIZE)
    if block_size < 1:
        raise ValueError(f"infonce: block_size must be a positive integer, got {block_size}")
    return block_size


def _check_inputs(z: jax.Array, group: jax.Array, mask: jax.Array) -> None:
    if z.ndim != 2:
        raise ValueError(f"infonce: z must be [B, D] embeddings, got shape {z.shape}; flatten or pool it first")
    if group.shape != z.shape[:1] or mask.shape != z.shape[:1]:
        raise ValueError(
            f"infonce: group {group.shape} and where {mask.shape} must both be [B] = {z.shape[:1]}, one entry per row "
            "of z"
        )
    if not jnp.issubdtype(group.dtype, jnp.integer):
        raise ValueError(f"infonce: group must hold integer ids, got dtype {group.dtype}; cast it with .astype(int32)")


def _rows_mask(where: jax.Array | None, z: jax.Array) -> jax.Array:
    """``where`` as a bool [B] (None = every row); its shape is checked by `_check_inputs`."""
    if where is None:
        return jnp.ones(z.shape[:1], bool)
    where = jnp.asarray(where)
    return where if where.dtype == bool else where > 0


def infonce_loss(
    z: jax.Array,
    group: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    temperature: float | jax.Array,
    block_size: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    strategy: str = "ring",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Exact multi-positive InfoNCE, tiled in ``block_size`` blocks (memory O(B D + block^2)), on one device or over
    a mesh: the one entry point the approaches call.

    The per-anchor losses l_i = lse_i - (1/n_i) sum_{p in P(i)} s_ip (module docstring) are reduced over the anchors
    A (valid rows with a positive); the default reduction is loss = sum_{i in A} w_i l_i / sum_{i in A} w_i.

    Args:
      z: float32 [B, D] L2-normalised rows. group: int [B] (equal ids = positives).
      where: bool (or 0/1 float) [B], the real rows (a row outside it is neither anchor nor key); None = all.
      weights: optional float [B] anchor weights (a row's weight does not change its part as a key).
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [B] values l
        (0 off the anchors).
      temperature: scalar T > 0 (differentiable).
      block_size: the tile edge (None: 512 on CPU, 8192 on GPU/TPU).
      mesh: None or a one-device mesh computes on one device; a mesh of several devices splits the batch over
        ``axis_name`` (default: its first axis) with ``strategy`` (`sharded_infonce_loss`).

    Returns:
      (loss, diagnostics: num_anchors, mean_positive_similarity (cosine), mean_logsumexp, positive_top1_accuracy:
      fraction of anchors whose most similar key is a positive; unweighted means over the anchors, whatever
      ``reduce_fn``).

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [-0.8, -0.6]])  # two groups of two, far apart
    >>> group = jnp.array([0, 0, 1, 1])
    >>> loss, diagnostics = infonce_loss(z, group, temperature=0.5)
    >>> round(float(loss), 4), float(diagnostics["positive_top1_accuracy"])  # each: log(1 + e^-3.2 + e^-3.6)
    (0.0659, 1.0)
    """
    where = _rows_mask(where, z)
    if mesh is not None and mesh.devices.size > 1:
        return sharded_infonce_loss(z, group, where=where, weights=weights, reduce_fn=reduce_fn,
                                    temperature=temperature, mesh=mesh, axis_name=axis_name or mesh.axis_names[0],
                                    block_size=block_size, strategy=strategy)
    _check_inputs(z, group, where)
    plan = _Plan(block_size=_block_size(block_size, jax.default_backend()))
    per_row, anchor, diagnostics = _infonce(plan, z, group, where, jnp.asarray(temperature, jnp.float32))
    return reduce_loss(per_row, where=anchor, weights=weights, reduce_fn=reduce_fn), diagnostics


def sharded_infonce_loss(
    z: jax.Array,
    group: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    temperature: float | jax.Array,
    mesh: Mesh,
    axis_name: str = "data",
    block_size: int | None = None,
    strategy: str = "ring",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``infonce_loss`` with the batch split over ``mesh``'s ``axis_name`` (B a multiple of its size).

    Each device keeps its B/n rows; ``strategy="ring"`` passes the key shards around the devices with ppermute (memory
    per device O(B/n D)), ``strategy="allgather"`` gathers z once (O(B D), one collective). Usable inside ``jax.jit``
    with NamedSharding inputs; the loss and diagnostics are replicated (the unreduced values, ``reduce_fn=None``,
    are split like z).

    >>> import jax, numpy as np, jax.numpy as jnp
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))  # any number of devices dividing B
    >>> z = jnp.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [-0.8, -0.6]])
    >>> loss, _ = sharded_infonce_loss(z, jnp.array([0, 0, 1, 1]), temperature=0.5, mesh=mesh)
    >>> round(float(loss), 4)  # as infonce_loss
    0.0659
    """
    where = _rows_mask(where, z)
    _check_inputs(z, group, where)
    if strategy not in STRATEGIES:
        raise ValueError(f"sharded_infonce_loss: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if axis_name not in mesh.shape:
        raise ValueError(f"sharded_infonce_loss: mesh axes are {tuple(mesh.shape)}, no axis named {axis_name!r}")
    n = mesh.shape[axis_name]
    if z.shape[0] % n:
        raise ValueError(
            f"sharded_infonce_loss: batch {z.shape[0]} is not a multiple of the {n} devices on axis {axis_name!r}; "
            "pad the batch with rows outside where"
        )
    block_size = _block_size(block_size, mesh.devices.flat[0].platform)
    plan = _Plan(block_size=block_size, mesh=mesh, axis_name=axis_name, strategy=strategy)
    per_row, anchor, diagnostics = _infonce(plan, z, group, where, jnp.asarray(temperature, jnp.float32))
    return reduce_loss(per_row, where=anchor, weights=weights, reduce_fn=reduce_fn), diagnostics


def naive_infonce_loss(
    z: jax.Array,
    group: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    temperature: float | jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Reference with the full B x B logits (memory O(B^2)); same definition, arguments and diagnostics, plain
    autodiff.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [-0.8, -0.6]])
    >>> loss, _ = naive_infonce_loss(z, jnp.array([0, 0, 1, 1]), temperature=0.5)
    >>> round(float(loss), 4)  # as infonce_loss
    0.0659
    """
    real = _rows_mask(where, z)
    s = z @ z.T / temperature
    valid = real[:, None] & real[None, :] & ~jnp.eye(z.shape[0], dtype=bool)
    positive = valid & (group[:, None] == group[None, :])
    pos_count = positive.sum(axis=1)
    anchor = real & (pos_count > 0)
    # rows without valid keys get a finite stand-in (their lse is never used) so that autodiff yields no NaN
    lse = jax.nn.logsumexp(jnp.where(anchor[:, None], jnp.where(valid, s, -jnp.inf), 0.0), axis=1)
    pos_mean = jnp.where(positive, s, 0.0).sum(axis=1) / jnp.maximum(pos_count, 1)
    num_anchors = anchor.sum()
    denominator = jnp.maximum(num_anchors, 1)

    def anchor_mean(x):
        return jnp.where(anchor, x, 0.0).sum() / denominator

    per_row = jnp.where(anchor, lse - pos_mean, 0.0)
    top1 = jnp.where(positive, s, -jnp.inf).max(axis=1) >= jnp.where(valid, s, -jnp.inf).max(axis=1)
    diagnostics = {
        "num_anchors": num_anchors.astype(s.dtype),
        "mean_positive_similarity": anchor_mean(pos_mean) * temperature,
        "mean_logsumexp": anchor_mean(lse),
        "positive_top1_accuracy": anchor_mean(top1.astype(s.dtype)),
    }
    return reduce_loss(per_row, where=anchor, weights=weights, reduce_fn=reduce_fn), diagnostics
