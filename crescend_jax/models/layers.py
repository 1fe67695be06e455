"""The layers the approaches share: time pooling, the MLP, the encoder built from them, L2-normalised rows.

(This encoder is each approach's own; ``config.trunk``, `models.trunk`, is what may sit in front of the approach,
e.g. MuQ's fine-tuned layers, whose parameters live under ``trunk/``.)

    Encoder:  x [B, D] or [B, T, D] -> pool over T (mean, or a learned softmax) -> input dropout
              -> num_layers x (Linear, LayerNorm, GELU, Dropout) = h [B, H] -> Linear = z [B, E]
              -> (normalize) a parameter-free LayerNorm of each row of z

Approach A's and B's models are encoders with heads (they subclass `Encoder`, so their parameters live at the top
level: ``pool/``, ``mlp/``, ``projection/``); approach C holds two (``piece/``, ``style/``). The same paths in
every approach are what lets a warm start copy one approach's encoder into another's (`train.warm_start`: A's
encoder into B, or C's ``style/`` encoder into B with ``model.init_from_prefix="style/"``).

A pooled vector [B, D] is read as a one-frame sequence: pooling leaves it as it is (the mean or the softmax of a
single frame is that frame). Without pooling (``pooling=None``) the MLP runs on every step of a sequence
[B, T', D] (approach B's cross-attention head reads frame sequences).

`encoder_options` reads these settings from ``config.model`` (hidden_dim, num_layers, dropout, pooling, input_dropout)
and `check_encoder_options` refuses bad ones, for every approach alike.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from crescend_jax.config import ConfigError

POOLINGS = ("mean", "attention")


def unit_rows(z: jax.Array) -> jax.Array:
    """z [B, E] with L2-normalised rows: z * rsqrt(max(|z|^2, 1e-12)). A zero (padding) row stays 0 with a finite
    gradient: the gradient of norm() is NaN at 0, which a zero padding row reaches at initialisation (zero biases),
    and 0 * NaN would poison every parameter."""
    squares = jnp.sum(jnp.square(z.astype(jnp.float32)), axis=-1, keepdims=True)  # float32 in a bfloat16 step too
    return z * jax.lax.rsqrt(jnp.maximum(squares, 1e-12)).astype(z.dtype)


class TimePooling(nnx.Module):
    """x [B, T, F] -> [B, F]: the mean over time ("mean"), or sum_t a_t x_t with a = softmax_t(x_t . w / sqrt(F))
    ("attention", w a learned [F] vector)."""

    def __init__(self, dim: int, pooling: str, rngs: nnx.Rngs):
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; set --config.model.pooling to one of {POOLINGS}")
        self.score = nnx.Linear(dim, 1, use_bias=False, rngs=rngs) if pooling == "attention" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.score is None:
            return jnp.mean(x, axis=1)
        weights = jax.nn.softmax(self.score(x)[..., 0] * x.shape[-1] ** -0.5, axis=-1)
        return jnp.einsum("bt,btf->bf", weights, x)


class MLP(nnx.Module):
    """h [..., D] -> num_layers x (Linear, LayerNorm, GELU, Dropout) -> [..., hidden_dim] (num_layers = 0: h as is,
    ``output_dim`` = D). One dropout module serves every layer."""

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int, dropout: float, rngs: nnx.Rngs):
        widths = [input_dim] + [hidden_dim] * num_layers
        self.linears = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in widths[1:]])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.output_dim = widths[-1]

    def __call__(self, h: jax.Array) -> jax.Array:
        for linear, norm in zip(self.linears, self.norms):
            h = self.dropout(nnx.gelu(norm(linear(h))))
        return h


class Encoder(nnx.Module):
    """x [B, D] or [B, T, D] -> (z [B, E], h [B, H]) (module doc); with ``pooling=None`` x [B, T', D] ->
    (z [B, T', E], h [B, T', H]).

    input_dropout: rate of the dropout on the pooled inputs, or None for no such module (approach B has none).
    normalize: a parameter-free LayerNorm of each row of z (mean 0, variance 1 over E), so that no classifier
    reading z can be evaded by rescaling it (approach C).
    """

    def __init__(self, input_dim: int, *, hidden_dim: int, num_layers: int, dropout: float, output_dim: int,
                 pooling: str | None, rngs: nnx.Rngs, input_dropout: float | None = 0.0, normalize: bool = False):
        self.pool = TimePooling(input_dim, pooling, rngs) if pooling is not None else None
        self.mlp = MLP(input_dim, hidden_dim, num_layers, dropout, rngs)
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs) if input_dropout is not None else None
        self.projection = nnx.Linear(self.mlp.output_dim, output_dim, rngs=rngs)
        self.output_norm = (nnx.LayerNorm(output_dim, use_scale=False, use_bias=False, rngs=rngs) if normalize
                            else None)

    def embed(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z, h): the projection and the MLP's last hidden layer (see the class doc for shapes)."""
        if self.pool is not None and x.ndim == 3:
            x = self.pool(x)
        h = self.input_dropout(x) if self.input_dropout is not None else x
        h = self.mlp(h)
        z = self.projection(h)
        return (self.output_norm(z) if self.output_norm is not None else z), h

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.embed(x)


def encoder_options(model: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `Encoder` keyword arguments ``config.model`` sets: hidden_dim, num_layers, dropout, pooling and
    input_dropout (0 when the section has no such field)."""
    return {"hidden_dim": model.hidden_dim, "num_layers": model.num_layers, "dropout": model.dropout,
            "pooling": model.pooling, "input_dropout": model.get("input_dropout", 0.0)}


def check_encoder_options(model: ml_collections.ConfigDict, *, min_layers: int = 0) -> None:
    """Raises `ConfigError` naming the field for an encoder setting of ``config.model`` out of range."""
    if model.pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {model.pooling!r}; set --config.model.pooling to one of {POOLINGS}")
    if model.hidden_dim < 1 or model.num_layers < min_layers:
        raise ConfigError(f"model.hidden_dim={model.hidden_dim} must be >= 1 and model.num_layers="
                          f"{model.num_layers} >= {min_layers}; set --config.model.hidden_dim / num_layers")
    for name in ("dropout", "input_dropout"):
        if name in model and not 0 <= model[name] < 1:
            raise ConfigError(f"model.{name}={model[name]} must be in [0, 1); set --config.model.{name}")


# ----------------------------------------------------------------------------------------------------- sequences
# The masked sequence layers (`RelativeSelfAttention`, `SequenceBlock`, `MaskedPooling`) of the sequence trunk
# (`models.sequence_trunk`) that can sit in front of any approach's encoder: x [B, T, H] with a position mask
# m [B, T] (1 = a real position). A masked position is never read (as a key, or by the pooling); its own output is
# computed but means nothing. A row with no real position reads and pools to 0, never NaN.

_NEVER = -1e9  # the score of a position that may not be read: finite, so a row with none left is not NaN


def relative_distances(length: int, max_distance: int) -> jax.Array:
    """int32 [T, T]: clip(s - t, -R, R) + R, the index of key s's distance from query t in a [2R + 1] bias table."""
    t = jnp.arange(length)
    return jnp.clip(t[None, :] - t[:, None], -max_distance, max_distance) + max_distance


class RelativeSelfAttention(nnx.Module):
    """Masked multi-head self-attention with a learned relative-position bias per head (Shaw et al. 2018; T5):

        s[b, n, t, u] = q_t . k_u / sqrt(c) + beta[n, clip(u - t, -R, R)]      c = H / heads
        a[b, n, t, :] = softmax over the real positions u of s[b, n, t, :]      (0 when the row has none)
        out[b, t]     = W_o concat_n sum_u a[b, n, t, u] v_u                    [B, T, H]

    Positions are score positions, so u - t counts beats: the bias says how much a beat listens to the beat R
    positions away whatever the piece's length; beyond +-R every distance shares one bias. beta starts at 0.
    """

    def __init__(self, dim: int, num_heads: int, max_distance: int, rngs: nnx.Rngs):
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"sequence attention: width {dim} must be a multiple of num_heads {num_heads} >= 1")
        self.num_heads, self.max_distance = num_heads, max_distance
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((num_heads, 2 * max_distance + 1), jnp.float32))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        batch, length, dim = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # [B, T, heads, c]
        scores = jnp.einsum("btnc,bunc->bntu", q, k) * q.shape[-1] ** -0.5
        scores = scores + self.bias[...][:, relative_distances(length, self.max_distance)][None]
        readable = jnp.broadcast_to((mask > 0)[:, None, None, :], scores.shape)
        weights = jax.nn.softmax(jnp.where(readable, scores, _NEVER), axis=-1)
        weights = weights * jnp.any(readable, axis=-1, keepdims=True)
        read = jnp.einsum("bntu,bunc->btnc", weights, v)
        return self.out(read.reshape(batch, length, dim))


class SequenceBlock(nnx.Module):
    """A pre-norm transformer block on x [B, T, H] with mask [B, T]:
    x + Dropout(Attn(LN(x), mask)), then + Dropout(Linear(GELU(Linear_mlp(LN(.))))) (`RelativeSelfAttention`)."""

    def __init__(self, dim: int, *, num_heads: int, mlp_dim: int, dropout: float, max_distance: int,
                 rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = RelativeSelfAttention(dim, num_heads, max_distance, rngs)
        self.mlp_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.dropout(self.attention(self.attention_norm(x), mask))
        return x + self.dropout(self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x)))))


class MaskedPooling(nnx.Module):
    """h [B, T, H], mask [B, T] -> [B, H] over the real positions only: "attention": sum_t a_t h_t with
    a = softmax over real t of (w . h_t / sqrt(H)) (w a learned [H] vector); "mean": their mean. A row with no real
    position pools to 0."""

    def __init__(self, dim: int, pooling: str, rngs: nnx.Rngs):
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; set --config.trunk.sequence.pooling to one of {POOLINGS}")
        self.score = nnx.Linear(dim, 1, use_bias=False, rngs=rngs) if pooling == "attention" else None

    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        real = mask > 0
        if self.score is None:
            weights = real.astype(h.dtype) / jnp.maximum(jnp.sum(real, axis=-1, keepdims=True), 1).astype(h.dtype)
        else:
            weights = jax.nn.softmax(jnp.where(real, self.score(h)[..., 0] * h.shape[-1] ** -0.5, _NEVER), axis=-1)
            weights = jnp.where(real, weights, 0.0)
        return jnp.einsum("bt,bth->bh", weights, h)
