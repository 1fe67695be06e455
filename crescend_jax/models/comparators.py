"""Comparison heads of approach B: logit P(a above b) for each of the D perceptual dimensions.

Every head is antisymmetric by construction, logit(a, b) = -logit(b, a) exactly, so P(a > b) + P(b > a) = 1 (up to
the sigmoid's own rounding, ~1e-7): each one computes some not necessarily antisymmetric score M(a, b) (or g(a, b))
and returns a difference M(a, b) - M(b, a) (plus s(a) - s(b) for a per-performance score s); IEEE rounding is
symmetric, fl(x - y) = -fl(y - x), so swapping the operands negates the result bit for bit (tested with exact
equality, eager and jitted, on CPU; the tile's is exact by construction, U - U^T of its upper triangle U).

Heads read the encoder's output of each performance once (vectors [.., E] or frame sequences [.., T, F]) and form
pairs by indexing / broadcasting that encoded batch, never by re-encoding a performance per pair. Two entry points:

  head(a, b)           explicit pairs: leading shapes of a and b broadcast, logits [..., D];
  head.block_logits(.) every ordered pair inside each group slot of a [P, K, ...] batch, logits [P, K, K, D] with
                       logits[p, i, j] = logit(member i above member j), exactly antisymmetric (0 on the diagonal).

Per-performance work (projections) is done on [P, K, ...] before pairing; only what depends on both members is
computed per pair. The pair MLP heads (concat, cross_attention) compute each unordered pair {i, j} once (the K(K-1)/2
pairs i < j of the tile's upper triangle, taken by static slices, never index gathers): their joint term is
symmetric and is shared by both orientations, and the tile is filled with v at (i, j) and -v at (j, i)
(`_tile_from_upper`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crescend_jax.config import ConfigError
from crescend_jax.data.dimensions import NUM_DIMENSIONS

POOLINGS = ("mean", "attention")
_MASKED = -1e9  # score of a masked key frame: finite, so a fully masked sequence gives uniform weights, never NaN


def _on_rows(linear: nnx.Linear, x: jax.Array) -> jax.Array:
    """``linear`` on x [..., F] as one 2-D product [N, F] @ [F, H] (N = the product of the leading sizes), reshaped
    back to [..., H]. The same numbers as ``linear(x)``; with several leading axes XLA CPU's weight gradient (which
    then contracts two or more axes) writes a transposed copy of the [.., H] cotangent first, and on the pair head's
    [P, M, hidden] tensors that copy cost more than the product itself."""
    return linear(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class PairMLP(nnx.Module):
    """g(a, b) [..., D] = MLP(W [xa, xb, xa * xb, |xa - xb|] + c): a general (not antisymmetric) pair scorer.

    The first layer is split into W_a xa + W_b xb + W_p (xa * xb) + W_d |xa - xb| (the same as one linear layer on
    the concatenation, and spanning [xa - xb, xa + xb, xa * xb, |xa - xb|]), so on broadcast inputs such as
    x[:, :, None] and x[:, None, :] the W_a and W_b terms are computed once per performance, and only the product and
    distance terms once per pair. Then (GELU, dropout, Linear(hidden)) x (num_layers - 1), GELU, dropout, Linear(D).
    """

    def __init__(self, dim: int, num_dimensions: int, *, hidden_dim: int, num_layers: int, dropout: float,
                 rngs: nnx.Rngs):
        if num_layers < 1:
            raise ConfigError(f"the comparator MLP needs num_layers >= 1, got {num_layers}")
        self.first = nnx.Linear(dim, hidden_dim, rngs=rngs)
        self.second = nnx.Linear(dim, hidden_dim, use_bias=False, rngs=rngs)
        self.product = nnx.Linear(dim, hidden_dim, use_bias=False, rngs=rngs)
        self.distance = nnx.Linear(dim, hidden_dim, use_bias=False, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(hidden_dim, hidden_dim, rngs=rngs) for _ in range(num_layers - 1)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, num_dimensions, rngs=rngs)

    def __call__(self, xa: jax.Array, xb: jax.Array) -> jax.Array:
        return self.finish(_on_rows(self.first, xa) + _on_rows(self.second, xb) + self.joint(xa, xb))

    def joint(self, xa: jax.Array, xb: jax.Array) -> jax.Array:
        """W_p (xa * xb) + W_d |xa - xb| [..., hidden]: the part of the first layer that needs both members; it is
        symmetric in (a, b) (bit for bit: IEEE products and |differences| commute), so both orientations of a pair
        share it. (One product of the concatenated [xa * xb, |xa - xb|] with [W_p; W_d] measured no faster:
        bench/ab/10.)"""
        return _on_rows(self.product, xa * xb) + _on_rows(self.distance, jnp.abs(xa - xb))

    def finish(self, h: jax.Array) -> jax.Array:
        """The layers after the first one's pre-activation h [..., hidden] -> [..., D]."""
        h = self.dropout(nnx.gelu(h))
        for linear in self.hidden:
            h = self.dropout(nnx.gelu(_on_rows(linear, h)))
        return _on_rows(self.out, h)

    def antisymmetric(self, xa: jax.Array, xb: jax.Array, first_a: jax.Array | None = None,
                      second_b: jax.Array | None = None, first_b: jax.Array | None = None,
                      second_a: jax.Array | None = None) -> jax.Array:
        """g(a, b) - g(b, a) [..., D] for pairs xa, xb [..., dim] (broadcast), the joint term computed once. The
        per-performance terms W_a x and W_b x may be passed precomputed (e.g. gathered from [P, K, hidden])."""
        first_a = _on_rows(self.first, xa) if first_a is None else first_a
        second_a = _on_rows(self.second, xa) if second_a is None else second_a
        first_b = _on_rows(self.first, xb) if first_b is None else first_b
        second_b = _on_rows(self.second, xb) if second_b is None else second_b
        shared = self.joint(xa, xb)
        return self.finish(first_a + second_b + shared) - self.finish(first_b + second_a + shared)


def _shifted(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [P, K, ...] -> (left, right) [P, M, ...], M = K(K-1)/2: every pair i < j of the K members as i = left,
    j = right, in shift order: for s = 1 .. K-1 the K - s pairs (i, i + s). Built from 2 (K - 1) static slices
    (their gradient is a pad, not the scatter-add of an index gather)."""
    k = x.shape[1]
    if k < 2:
        return x[:, :0], x[:, :0]
    left = jnp.concatenate([x[:, : k - s] for s in range(1, k)], axis=1)
    right = jnp.concatenate([x[:, s:] for s in range(1, k)], axis=1)
    return left, right


def _diagonals(tile: jax.Array) -> jax.Array:
    """tile [P, K, K, ...] -> [P, M, ...]: its entries (i, i + s) in `_shifted` order, read by a pad and a reshape
    (row i of the flat tile padded to K (K + 1) entries holds (i, i + s) at column s; no gather)."""
    p, k = tile.shape[:2]
    rest = tile.shape[3:]
    if k < 2:
        return tile[:, 0, :0]
    flat = tile.reshape(p, k * k, *rest)
    skewed = jnp.pad(flat, [(0, 0), (0, k)] + [(0, 0)] * len(rest)).reshape(p, k, k + 1, *rest)
    return jnp.concatenate([skewed[:, : k - s, s] for s in range(1, k)], axis=1)


def _tile_from_upper(values: jax.Array, group_size: int) -> jax.Array:
    """v [P, M, D] of the pairs i < j (`_shifted` order) -> tile [P, K, K, D] with v at (i, j), -v at (j, i) and 0
    on the diagonal, exactly antisymmetric: the upper triangle U is laid out by pads and a reshape (the inverse of
    `_diagonals`), and the tile is U - U^T (fl(v - 0) = v, fl(0 - v) = -v)."""
    k, (p, _, d) = group_size, values.shape
    zeros = jnp.zeros((p, k, d), values.dtype)
    columns, start = [zeros], 0  # column s of the skewed [P, K, K + 1, D] layout: the pairs (i, i + s), padded
    for s in range(1, k):
        columns.append(jnp.pad(values[:, start:start + k - s], [(0, 0), (0, s), (0, 0)]))
        start += k - s
    columns.append(zeros)
    upper = jnp.stack(columns, axis=2).reshape(p, k * (k + 1), d)[:, : k * k].reshape(p, k, k, d)
    return upper - jnp.swapaxes(upper, 1, 2)


class ConcatComparator(nnx.Module):
    """"concat": logit(a, b) = g(za, zb) - g(zb, za) with g a `PairMLP` on [za, zb, za * zb, |za - zb|].

    Antisymmetric because it is a difference of one function at swapped arguments; every antisymmetric f can be
    written so (f = (f(a, b) - f(b, a)) / 2), so nothing is lost. On a tile, W_a z and W_b z are computed once per
    performance, the joint term (W_p (za * zb) + W_d |za - zb|, the costly part) once per unordered pair i < j, and
    the rest of g once per ordered pair; (j, i) gets -logit(i, j).
    Inputs: z [..., E] per performance. Output: [..., D] (pairs) or [P, K, K, D] (tile).
    """

    def __init__(self, dim: int, num_dimensions: int = NUM_DIMENSIONS, *, hidden_dim: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, rngs: nnx.Rngs):
        self.pair = PairMLP(dim, num_dimensions, hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout,
                            rngs=rngs)

    def __call__(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        return self.pair.antisymmetric(za, zb)

    def block_logits(self, z: jax.Array) -> jax.Array:
        """z [P, K, E] -> logits [P, K, K, D] of every ordered pair inside each group slot."""
        first, second = _on_rows(self.pair.first, z), _on_rows(self.pair.second, z)  # [P, K, hidden], once each
        (zi, zj), (first_i, first_j), (second_i, second_j) = _shifted(z), _shifted(first), _shifted(second)
        values = self.pair.antisymmetric(zi, zj, first_i, second_j, first_j, second_i)
        return _tile_from_upper(values, z.shape[1])


class BilinearComparator(nnx.Module):
    """"bilinear": logit_d(a, b) = za^T W_d zb + w_d . (za - zb), with W_d = U_d - U_d^T and U_d = L_d R_d^T.

    W_d is antisymmetric, so za^T W_d zb = -zb^T W_d za; the linear term is odd in the swap too (it is the bilinear
    form of [z; 1] with W extended by the column w_d and row -w_d^T, which lets the head express a pointwise score
    difference s(a) - s(b)). U_d has rank r: L_d, R_d are [E, r], so with m = L^T z and n = R^T z ([D, r] per
    performance, computed once)
        za^T W_d zb = m_a . n_b - n_a . m_b
    costs 2 D r multiply-adds per pair (2 E D r per performance for the projections), never an E x E matrix; at
    E = 256, D = 19, r = 16 that is 2 x 77,824 parameters. The result is formed as M(a, b) - M(b, a) +
    (s_a - s_b) with M(a, b) = m_a . n_b and s = w . z.
    Inputs: z [..., E]. Output: [..., D] (pairs) or [P, K, K, D] (tile).
    """

    def __init__(self, dim: int, num_dimensions: int = NUM_DIMENSIONS, *, rank: int = 16, rngs: nnx.Rngs):
        if rank < 1:
            raise ConfigError(f"the bilinear comparator needs rank >= 1, got {rank}")
        init = nnx.initializers.normal(stddev=dim ** -0.5)
        self.left = nnx.Param(init(rngs.params(), (dim, num_dimensions, rank)))
        self.right = nnx.Param(init(rngs.params(), (dim, num_dimensions, rank)))
        self.linear = nnx.Linear(dim, num_dimensions, use_bias=False, rngs=rngs)

    def _factors(self, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """m, n [..., D, r] and s [..., D] of each performance."""
        m = jnp.einsum("...e,edr->...dr", z, self.left[...])
        n = jnp.einsum("...e,edr->...dr", z, self.right[...])
        return m, n, self.linear(z)

    def __call__(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        ma, na, sa = self._factors(za)
        mb, nb, sb = self._factors(zb)
        return (jnp.sum(ma * nb, axis=-1) - jnp.sum(mb * na, axis=-1)) + (sa - sb)

    def block_logits(self, z: jax.Array) -> jax.Array:
        """z [P, K, E] -> logits [P, K, K, D] of every ordered pair inside each group slot."""
        m, n, s = self._factors(z)
        scores = jnp.einsum("pidr,pjdr->pijd", m, n)
        return (scores - jnp.swapaxes(scores, 1, 2)) + (s[:, :, None, :] - s[:, None, :, :])


class CrossAttentionComparator(nnx.Module):
    """"cross_attention": the frame sequences of a [Ta, F] and b [Tb, F] attend to each other, then a pair MLP.

        ca = pool_a(LayerNorm(ha + Attn(q = ha, kv = hb)))   a's frames read b (b's padded frames masked)
        cb = pool_b(LayerNorm(hb + Attn(q = hb, kv = ha)))   the same weights, roles swapped
        logit(a, b) = g(ca, cb) - g(cb, ca)                   g a `PairMLP`

    Swapping a and b swaps (ca, cb) (the attention weights are shared), so the logit is exactly antisymmetric.
    Attn is multi-head scaled dot-product attention (no positional encoding: frames are matched by content); pool is
    the masked mean over the attending side's real frames, or attention pooling (a learned masked softmax over
    time). ``window`` >= 0 restricts frame t of one side to the frames s of the other with |t - s| <= window: for
    sequences aligned index by index (score positions, `models.sequence_trunk`), window 0 compares position t with
    position t only; -1 (default) lets every frame read every frame. A frame with no real frame to read (all masked,
    or none in its window) reads 0. Query, key and value projections are computed once per performance; on a tile the attention itself is
    per ordered pair: [P, K, K, heads, T, T] scores, i.e. O(P K^2 T^2 A) time and memory, so keep crops short.
    Inputs: frames h [..., T, F] with frame masks m [..., T] (1 = real frame). Output: [..., D] or [P, K, K, D].
    """

    def __init__(self, dim: int, num_dimensions: int = NUM_DIMENSIONS, *, num_heads: int = 4,
                 attention_dim: int = 0, hidden_dim: int = 256, num_layers: int = 1, pooling: str = "mean",
                 dropout: float = 0.0, window: int = -1, rngs: nnx.Rngs):
        attention_dim = attention_dim or dim
        if num_heads < 1 or attention_dim % num_heads:
            raise ConfigError(f"cross_attention: attention_dim {attention_dim} must be a multiple of num_heads "
                              f"{num_heads} >= 1")
        if pooling not in POOLINGS:
            raise ConfigError(f"cross_attention: unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if window < -1:
            raise ConfigError(f"cross_attention: window {window} must be >= 0 (|t - s| <= window) or -1 (every frame)")
        self.num_heads = num_heads
        self.window = window
        self.query = nnx.Linear(dim, attention_dim, use_bias=False, rngs=rngs)
        self.key = nnx.Linear(dim, attention_dim, use_bias=False, rngs=rngs)
        self.value = nnx.Linear(dim, attention_dim, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(attention_dim, dim, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.pool_score = nnx.Linear(dim, 1, use_bias=False, rngs=rngs) if pooling == "attention" else None
        self.pair = PairMLP(dim, num_dimensions, hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout,
                            rngs=rngs)

    def _project(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q (scaled by 1/sqrt(head width)), k, v [..., T, heads, A / heads] of each performance."""
        split = lambda x: x.reshape(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        return q * q.shape[-1] ** -0.5, k, v

    def _attend(self, q, k_other, v_other, mask_other) -> jax.Array:
        """What each frame of one performance (q [..., T, heads, c]) reads of the other (k_other, v_other
        [..., S, heads, c], mask_other [..., S]): masked softmax attention within ``window``, [..., T, heads, c]."""
        scores = jnp.einsum("...tnc,...snc->...nts", q, k_other)
        readable = jnp.broadcast_to((mask_other > 0)[..., None, None, :], scores.shape)
        if self.window >= 0:  # aligned sequences: frame t reads frames s with |t - s| <= window
            t, s = np.arange(scores.shape[-2])[:, None], np.arange(scores.shape[-1])[None, :]
            readable = readable & jnp.asarray(np.abs(t - s) <= self.window)
        weights = jax.nn.softmax(jnp.where(readable, scores, _MASKED), axis=-1)
        weights = weights * jnp.any(readable, axis=-1, keepdims=True)  # nothing to read: read 0
        return jnp.einsum("...nts,...snc->...tnc", weights, v_other)

    def _read(self, h, mask, q, k_other, v_other, mask_other) -> jax.Array:
        """Pooled [..., F] view of the performance (h [..., T, F], mask [..., T], q) after attending to the other
        (k_other, v_other [..., S, heads, c], mask_other [..., S]); leading shapes broadcast."""
        if self.window == 0 and q.shape[-3] == v_other.shape[-3]:
            # aligned, t reads t only: the softmax over that one key is 1 (0 when it is masked), so the read is the
            # other's value itself, and its output projection is computed once per performance, not once per pair
            read = v_other * (mask_other > 0)[..., None, None].astype(v_other.dtype)
        else:
            read = self._attend(q, k_other, v_other, mask_other)
        x = self.norm(h + self.dropout(self.out(read.reshape(*read.shape[:-2], -1))))
        real = jnp.broadcast_to(mask > 0, x.shape[:-1])
        if self.pool_score is None:
            pool = real.astype(x.dtype) / jnp.maximum(jnp.sum(real, axis=-1, keepdims=True), 1).astype(x.dtype)
        else:
            pool = jax.nn.softmax(jnp.where(real, self.pool_score(x)[..., 0] * x.shape[-1] ** -0.5, _MASKED), axis=-1)
            pool = jnp.where(real, pool, 0.0)  # a fully masked sequence pools to 0, like the mean
        return jnp.einsum("...t,...tf->...f", pool, x)

    def __call__(self, ha: jax.Array, ma: jax.Array, hb: jax.Array, mb: jax.Array) -> jax.Array:
        """Explicit pairs: ha [..., Ta, F], ma [..., Ta], hb [..., Tb, F], mb [..., Tb] -> logits [..., D]."""
        qa, ka, va = self._project(ha)
        qb, kb, vb = self._project(hb)
        ca = self._read(ha, ma, qa, kb, vb, mb)
        cb = self._read(hb, mb, qb, ka, va, ma)
        return self.pair.antisymmetric(ca, cb)

    def block_logits(self, h: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """h [P, K, T, F], frame_mask [P, K, T] -> logits [P, K, K, D] of every ordered pair inside each slot."""
        q, k, v = self._project(h)
        attending = lambda x: x[:, :, None]  # member i on axis 1
        attended = lambda x: x[:, None, :]  # member j on axis 2
        views = self._read(attending(h), attending(frame_mask), attending(q), attended(k), attended(v),
                           attended(frame_mask))  # [P, K, K, F]: i's view of itself after reading j
        values = self.pair.antisymmetric(_diagonals(views), _diagonals(jnp.swapaxes(views, 1, 2)))
        return _tile_from_upper(values, h.shape[1])


COMPARATORS = {
    "concat": ConcatComparator,
    "bilinear": BilinearComparator,
    "cross_attention": CrossAttentionComparator,
}


def make_comparator(name: str, dim: int, num_dimensions: int = NUM_DIMENSIONS, *, rngs: nnx.Rngs,
                    **options) -> nnx.Module:
    """The head ``name`` (a key of COMPARATORS) on inputs of width ``dim``; ``options`` are its keyword arguments
    (concat: hidden_dim, num_layers, dropout; bilinear: rank; cross_attention: num_heads, attention_dim, hidden_dim,
    num_layers, pooling, dropout)."""
    if name not in COMPARATORS:
        raise ConfigError(f"unknown comparison head {name!r}; set --config.model.comparison to one of "
                          f"{tuple(COMPARATORS)}")
    return COMPARATORS[name](dim, num_dimensions, rngs=rngs, **options)
