"""MuQ's conformer layers in Flax NNX: what ``muq`` 0.1.0 computes, trainable and shardable like any JAX model.

MuQ (``muq.MuQ``, non-flash) builds its conformer with transformers' ``Wav2Vec2ConformerEncoder``; hidden state i
(1..depth) is the output of conformer layer i, and the last one also goes through the encoder's final layer norm.
`MuQLayers` runs layers K..L on ``hidden_states[K-1]`` and returns ``hidden_states[K..L]`` exactly as MuQ indexes
them. Each `ConformerLayer` computes (x: [B, T, H], all layer norms over H with eps 1e-5)::

    x = x + 0.5 * FFN1(LN(x))                  FFN(h) = W2 act(W1 h + b1) + b2, act = swish for MuQ
    x = x + MHSA(LN(x))                        position encoding: rotary or relative (below)
    x = x + Conv(x)                            Conv(h) = P2 act(BN(DWConv(GLU(P1 LN(h)))))
    x = LN(x + 0.5 * FFN2(LN(x)))

- rotary (MuQ-large): the *input* of the query and key projections is rotated, per head, by
  ``h * cos(t w) + rotate_half(h) * sin(t w)`` with ``w_j = base^(-2j / head_size)``, t the frame index, and
  ``rotate_half([a, b]) = [-b, a]``; values use the unrotated input.
- relative (Transformer-XL): ``scores[t, s] = ((q_t + u) . k_s + (q_t + v) . W_pos pe(t - s)) / sqrt(head_size)``
  with sinusoidal ``pe(r) = [sin(r c_0), cos(r c_0), sin(r c_1), ...]``, ``c_j = 10000^(-2j / H)``.
- BN is the depthwise conv's batch norm with MuQ's running statistics, kept frozen (torch's eval mode) also when
  fine-tuning: its statistics are `nnx.BatchStat` variables, only the affine scale and bias are `nnx.Param`.

Padding ([B, T] boolean ``mask``, True on real frames) is handled as `crescend_jax.encoders.muq` handles it at
extraction, so a padded item gives the same valid frames as the item alone: attention never attends to padded keys,
and the depthwise convolution sees zeros at padded steps (what the unpadded item sees as its own zero padding).
Outputs at padded frames are unspecified (finite); mask them when pooling.

Dropout follows MuQ's config (rates of the training run) and is active only in ``train()`` mode; call ``eval()``
for inference. `crescend_jax.encoders.muq_convert` fills these modules from MuQ's PyTorch weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # transformers' ACT2FN names: "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation
    "swish": jax.nn.silu, "silu": jax.nn.silu, "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False), "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}
POSITION_TYPES = ("rotary", "relative", None)


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """The conformer hyperparameters of a MuQ model (`from_muq_config` reads them from its ``config.json``)."""

    hidden_size: int = 1024
    num_heads: int = 16
    ffn_dim: int = 4096
    conv_kernel: int = 31
    depth: int = 12  # conformer layers in the whole model (hidden states 1..depth)
    activation: str = "swish"
    position_embeddings: str | None = "rotary"  # "rotary", "relative" or None
    rotary_base: float = 10000.0
    final_layer_norm_eps: float = 1e-5  # the encoder's norm after the last layer (the layers' norms use 1e-5)
    attention_dropout: float = 0.1  # attention probabilities and the attention block's output
    hidden_dropout: float = 0.1  # feed-forward outputs
    activation_dropout: float = 0.1  # feed-forward hidden activations
    conv_dropout: float = 0.1  # convolution block's output

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.position_embeddings == "rotary" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"rotary position embeddings need an even head size, got "
                             f"{self.hidden_size // self.num_heads}")
        if self.conv_kernel % 2 != 1:
            raise ValueError(f"conv_kernel {self.conv_kernel} must be odd (MuQ's 'same' depthwise convolution)")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {sorted(_ACTIVATIONS)}")
        if self.position_embeddings not in POSITION_TYPES:
            raise ValueError(f"position_embeddings {self.position_embeddings!r} is not one of {POSITION_TYPES}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_muq_config(cls, config: Mapping[str, Any]) -> "ConformerConfig":
        """From MuQ's config (``config.json`` as a dict, or a ``MuQConfig``): ``encoder_dim``, ``encoder_depth``
        and the ``w2v2_config`` fields MuQ passes to its conformer."""
        if not isinstance(config, Mapping):
            config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else vars(config)
        try:
            w2v2 = config["w2v2_config"]
            return cls(hidden_size=int(config["encoder_dim"]), num_heads=int(w2v2["num_attention_heads"]),
                       ffn_dim=int(w2v2["intermediate_size"]), conv_kernel=int(w2v2["conv_depthwise_kernel_size"]),
                       depth=int(config["encoder_depth"]), activation=str(w2v2["hidden_act"]),
                       position_embeddings=w2v2["position_embeddings_type"],
                       rotary_base=float(w2v2.get("rotary_embedding_base", 10000)),
                       final_layer_norm_eps=float(w2v2["layer_norm_eps"]),
                       attention_dropout=float(w2v2["attention_dropout"]),
                       hidden_dropout=float(w2v2["hidden_dropout"]),
                       activation_dropout=float(w2v2["activation_dropout"]),
                       conv_dropout=float(w2v2["conformer_conv_dropout"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a MuQ config: missing {err}; expected MuQConfig fields encoder_dim, encoder_depth "
                             f"and w2v2_config (num_attention_heads, intermediate_size, ...)") from None

    def without_dropout(self) -> "ConformerConfig":
        """The same layers with every dropout rate 0 (deterministic fine-tuning)."""
        return dataclasses.replace(self, attention_dropout=0.0, hidden_dropout=0.0, activation_dropout=0.0,
                                   conv_dropout=0.0)


# --- position encodings (tables depend only on the static length T) ------------------------------------------------
def rotary_frequencies(head_size: int, base: float) -> np.ndarray:
    """float32 [head_size / 2]: ``base^(-2j / head_size)``, computed in float32 as MuQ's ``inv_freq`` buffer."""
    exponents = np.arange(0, head_size, 2, dtype=np.int64).astype(np.float32) / np.float32(head_size)
    return np.float32(1.0) / np.power(np.float32(base), exponents, dtype=np.float32)


def rotary_tables(length: int, head_size: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 cos, sin [T, head_size] of the rotary embedding, computed in float32 as MuQ does."""
    freqs = np.arange(length, dtype=np.float32)[:, None] * rotary_frequencies(head_size, base)[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(angles), np.sin(angles)


def relative_table(length: int, hidden_size: int) -> np.ndarray:
    """float32 sinusoidal embeddings [2T - 1, H] of relative positions T-1, T-2, ..., -(T-1) (row k: T-1-k)."""
    div_term = np.exp(np.arange(0, hidden_size, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / hidden_size))
    position = np.arange(length, dtype=np.float32)[:, None]
    angles = position * div_term  # [T, H/2], |r| = 0..T-1
    positive = np.zeros((length, hidden_size), np.float32)
    positive[:, 0::2], positive[:, 1::2] = np.sin(angles), np.cos(angles)
    negative = np.zeros((length, hidden_size), np.float32)
    negative[:, 0::2], negative[:, 1::2] = np.sin(-angles), np.cos(-angles)
    return np.concatenate([positive[::-1], negative[1:]], axis=0)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array, num_heads: int) -> jax.Array:
    """Rotary embedding of x [B, T, H] per head (cos, sin: [T, head_size])."""
    b, t, h = x.shape
    x = x.reshape(b, t, num_heads, h // num_heads)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos[:, None, :] + rotated * sin[:, None, :]).reshape(b, t, h)


# --- modules (attribute names mirror MuQ's PyTorch modules; the converter relies on them) ---------------------------
class FeedForward(nnx.Module):
    """Linear -> act -> dropout -> Linear -> dropout."""

    def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs) -> None:
        self.intermediate_dense = nnx.Linear(config.hidden_size, config.ffn_dim, rngs=rngs)
        self.intermediate_dropout = nnx.Dropout(config.activation_dropout)
        self.output_dense = nnx.Linear(config.ffn_dim, config.hidden_size, rngs=rngs)
        self.output_dropout = nnx.Dropout(config.hidden_dropout)
        self.activation = config.activation

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        x = self.intermediate_dropout(_ACTIVATIONS[self.activation](self.intermediate_dense(x)), rngs=rngs)
        return self.output_dropout(self.output_dense(x), rngs=rngs)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with MuQ's rotary or relative position encoding and key padding mask."""

    def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs) -> None:
        h = config.hidden_size
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.position_embeddings = config.position_embeddings
        self.linear_q = nnx.Linear(h, h, rngs=rngs)
        self.linear_k = nnx.Linear(h, h, rngs=rngs)
        self.linear_v = nnx.Linear(h, h, rngs=rngs)
        self.linear_out = nnx.Linear(h, h, rngs=rngs)
        self.dropout = nnx.Dropout(config.attention_dropout)
        if self.position_embeddings == "relative":
            self.linear_pos = nnx.Linear(h, h, use_bias=False, rngs=rngs)
            self.pos_bias_u = nnx.Param(jnp.zeros((self.num_heads, self.head_size), jnp.float32))
            self.pos_bias_v = nnx.Param(jnp.zeros((self.num_heads, self.head_size), jnp.float32))

    def __call__(self, x: jax.Array, mask: jax.Array | None, positions: tuple[jax.Array, ...],
                 rngs: nnx.Rngs | None) -> jax.Array:
        b, t, _ = x.shape
        heads = lambda y: y.reshape(b, t, self.num_heads, self.head_size)  # noqa: E731
        query_key_input = _rotate(x, *positions, self.num_heads) if self.position_embeddings == "rotary" else x
        q, k, v = heads(self.linear_q(query_key_input)), heads(self.linear_k(query_key_input)), heads(self.linear_v(x))
        if self.position_embeddings == "relative":
            (table,) = positions  # [2T-1, H], row r holds relative position T-1-r
            p = self.linear_pos(table).reshape(2 * t - 1, self.num_heads, self.head_size)
            scores = jnp.einsum("btnd,bsnd->bnts", q + self.pos_bias_u[...], k)
            by_offset = jnp.einsum("btnd,rnd->bntr", q + self.pos_bias_v[...], p)  # [B, N, T, 2T-1]
            # Transformer-XL shift: shifted[..., t, s] = by_offset[..., t, T-1-t+s] (relative position t-s)
            padded = jnp.pad(by_offset, ((0, 0), (0, 0), (0, 0), (1, 0))).reshape(b, self.num_heads, 2 * t, t)
            shifted = padded[:, :, 1:].reshape(b, self.num_heads, t, 2 * t - 1)[..., :t]
            scores = (scores + shifted) / math.sqrt(self.head_size)
        else:
            scores = jnp.einsum("btnd,bsnd->bnts", q, k) / math.sqrt(self.head_size)
        if mask is not None:
            scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        probs = self.dropout(jax.nn.softmax(scores, axis=-1), rngs=rngs)
        out = jnp.einsum("bnts,bsnd->btnd", probs, v).reshape(b, t, self.num_heads * self.head_size)
        return self.linear_out(out)


class FrozenBatchNorm(nnx.Module):
    """Batch norm with fixed statistics (torch's eval mode): ``(x - mean) / sqrt(var + eps) * scale + bias``."""

    def __init__(self, num_features: int, epsilon: float = 1e-5) -> None:
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.epsilon = epsilon

    def __call__(self, x: jax.Array) -> jax.Array:
        return (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + self.epsilon) * self.scale[...] + self.bias[...]


class DepthwiseConv1d(nnx.Module):
    """Depthwise 'same' convolution over time, no bias: ``y[t, c] = sum_j kernel[j, 0, c] x[t + j - (k-1)/2, c]``
    (zeros outside), kernel [k, 1, C] as `nnx.Conv` lays it out. Computed as k shifted multiply-adds, which XLA
    fuses into one pass: on a CPU its forward + backward is ~5x faster than XLA's grouped convolution (measured at
    1024 channels, kernel 31, 500 frames)."""

    def __init__(self, channels: int, kernel_size: int, *, rngs: nnx.Rngs) -> None:
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, 1, channels), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        size, time = kernel.shape[0], x.shape[1]
        half = (size - 1) // 2
        padded = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
        out = padded[:, :time] * kernel[0, 0]
        for j in range(1, size):
            out = out + padded[:, j:j + time] * kernel[j, 0]
        return out


class ConvolutionModule(nnx.Module):
    """LN -> pointwise conv (2H) -> GLU -> depthwise conv (zeros at padded steps) -> BN -> act -> pointwise conv."""

    def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs) -> None:
        h, k = config.hidden_size, config.conv_kernel
        self.layer_norm = nnx.LayerNorm(h, epsilon=1e-5, use_fast_variance=False, rngs=rngs)
        self.pointwise_conv1 = nnx.Linear(h, 2 * h, use_bias=False, rngs=rngs)  # a kernel-1 conv is a Linear
        self.depthwise_conv = DepthwiseConv1d(h, k, rngs=rngs)
        self.batch_norm = FrozenBatchNorm(h)
        self.pointwise_conv2 = nnx.Linear(h, h, use_bias=False, rngs=rngs)
        self.dropout = nnx.Dropout(config.conv_dropout)
        self.activation = config.activation

    def __call__(self, x: jax.Array, mask: jax.Array | None, rngs: nnx.Rngs | None) -> jax.Array:
        x = self.pointwise_conv1(self.layer_norm(x))
        x = jax.nn.glu(x, axis=-1)  # first half * sigmoid(second half), as torch's GLU(dim=channels)
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0.0)
        x = _ACTIVATIONS[self.activation](self.batch_norm(self.depthwise_conv(x)))
        return self.dropout(self.pointwise_conv2(x), rngs=rngs)


class ConformerLayer(nnx.Module):
    """One MuQ conformer layer (``Wav2Vec2ConformerEncoderLayer``): [B, T, H] -> [B, T, H]."""

    def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs) -> None:
        h = config.hidden_size
        norm = lambda: nnx.LayerNorm(h, epsilon=1e-5, use_fast_variance=False, rngs=rngs)  # noqa: E731
        self.ffn1_layer_norm = norm()
        self.ffn1 = FeedForward(config, rngs=rngs)
        self.self_attn_layer_norm = norm()
        self.self_attn = SelfAttention(config, rngs=rngs)
        self.self_attn_dropout = nnx.Dropout(config.attention_dropout)
        self.conv_module = ConvolutionModule(config, rngs=rngs)
        self.ffn2_layer_norm = norm()
        self.ffn2 = FeedForward(config, rngs=rngs)
        self.final_layer_norm = norm()

    def __call__(self, x: jax.Array, mask: jax.Array | None, positions: tuple[jax.Array, ...],
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x), rngs)
        x = x + self.self_attn_dropout(self.self_attn(self.self_attn_layer_norm(x), mask, positions, rngs), rngs=rngs)
        x = x + self.conv_module(x, mask, rngs)
        return self.final_layer_norm(x + 0.5 * self.ffn2(self.ffn2_layer_norm(x), rngs))


def _apply_layer(layer: ConformerLayer, x: jax.Array, mask: jax.Array | None, positions: tuple[jax.Array, ...],
                 rngs: nnx.Rngs | None) -> jax.Array:
    return layer(x, mask, positions, rngs)


class MuQLayers(nnx.Module):
    """MuQ conformer layers ``first``..``last`` (1-based, as MuQ's hidden-state indices).

    ``layers[i - first]`` is MuQ's ``conformer.layers[i - 1]``; when ``last == config.depth`` the encoder's final
    layer norm (``layer_norm``) is applied to the last output, as MuQ does for ``hidden_states[depth]``.
    ``remat=True`` recomputes each layer's activations in the backward pass (`nnx.remat`): memory for long crops.
    """

    def __init__(self, config: ConformerConfig, first: int, last: int | None = None, *, remat: bool = False,
                 rngs: nnx.Rngs) -> None:
        last = config.depth if last is None else last
        if not 1 <= first <= last <= config.depth:
            raise ValueError(f"MuQ layers {first}..{last}: need 1 <= first <= last <= depth ({config.depth})")
        self.config = config
        self.first, self.last = first, last
        self.remat = remat
        self.layers = nnx.List([ConformerLayer(config, rngs=rngs) for _ in range(first, last + 1)])
        if last == config.depth:
            self.layer_norm = nnx.LayerNorm(config.hidden_size, epsilon=config.final_layer_norm_eps,
                                            use_fast_variance=False, rngs=rngs)

    @property
    def indices(self) -> tuple[int, ...]:
        """The hidden-state indices the forward returns, in order."""
        return tuple(range(self.first, self.last + 1))

    def positions(self, length: int) -> tuple[jax.Array, ...]:
        """The position tables every layer shares for ``length`` frames."""
        kind = self.config.position_embeddings
        if kind == "rotary":
            return tuple(jnp.asarray(a) for a in rotary_tables(length, self.config.head_size, self.config.rotary_base))
        if kind == "relative":
            return (jnp.asarray(relative_table(length, self.config.hidden_size)),)
        return ()

    def __call__(self, frames: jax.Array, mask: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, ...]:
        """``hidden_states[first - 1]`` frames [B, T, H] and a [B, T] mask (True on real frames; None: no padding)
        -> ``(hidden_states[first], ..., hidden_states[last])``, each float32 [B, T, H] (bf16 frames, as the
        store keeps them, are upcast). ``rngs`` (a ``dropout`` or ``default`` stream) is needed only in ``train()``
        mode with non-zero dropout rates."""
        frames = jnp.asarray(frames, jnp.float32)
        if frames.ndim != 3 or frames.shape[-1] != self.config.hidden_size:
            raise ValueError(f"frames have shape {frames.shape}; expected [batch, time, {self.config.hidden_size}]")
        if mask is not None:
            if mask.shape != frames.shape[:2]:
                raise ValueError(f"mask has shape {mask.shape}; expected {frames.shape[:2]} (batch, time)")
            mask = mask.astype(bool)
        positions = self.positions(frames.shape[1])
        apply = nnx.remat(_apply_layer) if self.remat else _apply_layer
        x, outputs = frames, []
        for layer in self.layers:
            x = apply(layer, x, mask, positions, rngs)
            outputs.append(x)
        if self.last == self.config.depth:
            outputs[-1] = self.layer_norm(outputs[-1])
        return tuple(outputs)
