"""Approach B, "siamese": a comparator that says which of two performances of the same music is higher, per dimension.

    encoding_i = f(x_i)                               one shared encoder, each performance of the batch encoded once
    logit_d(a, b) = head_d(encoding_a, encoding_b)    antisymmetric: logit(a, b) = -logit(b, a)
    P(a above b on d) = sigmoid(logit_d(a, b))

The encoder f is the shared `models.layers.Encoder` (num_layers x (Linear, LayerNorm, GELU, Dropout), then a
Linear projection to ``embedding_dim``), approach A's encoder and C's style encoder, with the same parameter paths,
so either warm-starts it (``model.init_from``, with ``model.init_from_prefix="style/"`` for C's). The head
(``model.comparison``) is one of `crescend_jax.models.comparators`:

* ``concat``, ``bilinear``: the encoding is a vector [E]. Pooled inputs [B, D] go straight through the trunk; frame
  crops [B, T, F] are pooled over time first (``pooling``: mean, or a learned softmax over time).
* ``cross_attention``: the encoding is a frame sequence [T', E]: crops [B, T, F] are cut into patches of
  ``frame_stride`` consecutive frames, concatenated ([B, T', frame_stride F], T' = T // frame_stride; a partial patch
  at the end is dropped), and the trunk runs on every patch; the head lets the two sequences attend to each other.
  It needs frame inputs (``model.input="frames"``, a store extracted with frames).

Training: a batch is P blocks of K performances of one group (`PairBatchSampler`: over an epoch every pair of every
group meets in a block; for the cross_attention head the crops of a block's members are centred at one fraction of
their tracks, the passages the evaluation compares); the B = P K rows are encoded once, the head's ``block_logits``
forms every ordered pair of each block on the encodings ([P, K, K, 19], exactly antisymmetric), and
`block_comparison_loss` scores the tile
(BCE / logistic-margin / hinge on which is higher; ties and gaps <= min_label_gap skipped; label smoothing;
optional rater-agreement weights). Evaluation reads P(a above b) from ``compare`` on the encodings
(`crescend_jax.models.functions.predict_rows`; sequence encodings are compared crop by crop, aligned).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.comparison import KINDS, block_comparison_loss
from crescend_jax.models.comparators import COMPARATORS, make_comparator
from crescend_jax.models.contract import (COMPARATOR, Approach, Objective, check_batch_config, choice, crop_frames,
                                          model_input)
from crescend_jax.models.layers import POOLINGS, Encoder, check_encoder_options
from crescend_jax.models.pair_sampler import PairBatchSampler

SEQUENCE_HEADS = ("cross_attention",)  # heads whose encoding is a frame sequence
HEAD_OPTIONS = {  # config.model.head fields each head reads
    "concat": ("hidden_dim", "num_layers", "dropout"),
    "bilinear": ("rank",),
    "cross_attention": ("num_heads", "attention_dim", "hidden_dim", "num_layers", "pooling", "dropout"),
}
FRAMES_HINT = ("extract a store that keeps frames with `crescend-jax extract --config configs/percepiano.py "
               "--config.store.frames=True` (a store of its own, beside the one without frames), then train on it "
               "with --config.model.input=frames")


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section of approach B.

    comparison: the head, "concat" | "bilinear" | "cross_attention" (`crescend_jax.models.comparators`).
    input: "pooled" (stored pooled vectors) or "frames" (random crops of the stored frames; cross_attention needs it).
    pooling: time pooling of frame crops before the trunk for the vector heads ("mean" or "attention").
    frame_stride: cross_attention only, consecutive frames concatenated into one step before the trunk (T' = crop
      frames // stride; attention costs T'^2 per pair).
    input_dim: 0 = the store's width. hidden_dim, num_layers, dropout: the MLP trunk. embedding_dim: E.
    normalize_embeddings: a parameter-free LayerNorm of each encoding (as approach C's z_style; set it when starting
      from C's style encoder).
    init_from, init_from_prefix: a finished workdir whose parameters start every fold, and the path prefix of the
      source's parameters to use ("style/": C's style encoder), as in approach A (`train.warm_start`).
    head.*: the head's settings (concat: hidden_dim, num_layers, dropout; bilinear: rank; cross_attention:
      num_heads, attention_dim (0 = E), hidden_dim, num_layers, pooling, dropout).
    sampler.group_size: K performances per block (batch = batch_size / K blocks); sampler.crop_seconds: frame crops;
      sampler.hard_pair_weight (0 = off), sampler.hard_gap: hard-pair emphasis (`PairSampler`).
    loss.kind: "bce" | "logistic_margin" | "hinge"; loss.margin (logit scale, the margin kinds);
      loss.min_label_gap: label gaps at or below it are skipped; loss.label_smoothing: eps in [0, 1);
      loss.agreement_weighting: weight pairs by how surely raters agree on the order (`agreement_weights`).
    """
    config = ml_collections.ConfigDict()
    config.name = "siamese"
    config.comparison = "concat"
    config.input = "pooled"
    config.pooling = "mean"
    config.frame_stride = 5
    config.input_dim = 0
    config.init_from = ""
    config.init_from_prefix = ""
    config.hidden_dim = 512
    config.num_layers = 2
    config.dropout = 0.2
    config.embedding_dim = 256
    config.normalize_embeddings = False
    config.head = ml_collections.ConfigDict()
    config.head.hidden_dim = 256
    config.head.num_layers = 1
    config.head.dropout = 0.0
    config.head.rank = 16
    config.head.num_heads = 4
    config.head.attention_dim = 0
    config.head.pooling = "mean"
    config.sampler = ml_collections.ConfigDict()
    config.sampler.group_size = 8
    config.sampler.crop_seconds = 10.0
    config.sampler.hard_pair_weight = 0.0
    config.sampler.hard_gap = 0.05
    config.loss = ml_collections.ConfigDict()
    config.loss.kind = "bce"
    config.loss.margin = 1.0
    config.loss.min_label_gap = 0.02
    config.loss.label_smoothing = 0.0
    config.loss.agreement_weighting = True
    return config


class SiameseModel(Encoder):
    """The shared encoder (an `Encoder`) and the comparison head.

    encode(x): x [B, D] or [B, T, F] -> (encoding [B, E] or, for a sequence head, [B, T', E]; hidden [B, hidden]).
    block_logits(encoding [P, K, ...]) -> [P, K, K, 19]; compare(a, b) (encodings [P, ...]) -> [P, 19].
    """

    def __init__(self, input_dim: int, *, comparison: str, hidden_dim: int, num_layers: int, dropout: float,
                 embedding_dim: int, pooling: str, frame_stride: int, head: dict[str, Any], rngs: nnx.Rngs,
                 normalize: bool = False):
        sequence = comparison in SEQUENCE_HEADS
        super().__init__(input_dim * frame_stride if sequence else input_dim, hidden_dim=hidden_dim,
                         num_layers=num_layers, dropout=dropout, output_dim=embedding_dim,
                         pooling=None if sequence else pooling, rngs=rngs, input_dropout=None, normalize=normalize)
        self.sequence = sequence
        self.frame_stride = frame_stride
        self.head = make_comparator(comparison, embedding_dim, rngs=rngs, **head)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.sequence:
            if x.ndim != 3:
                raise ValueError(f"a cross_attention encoder reads frame crops [B, T, F], got shape {x.shape}")
            steps = x.shape[1] // self.frame_stride
            if steps < 1:
                raise ValueError(f"a crop of {x.shape[1]} frames is shorter than model.frame_stride="
                                 f"{self.frame_stride}")
            x = x[:, : steps * self.frame_stride].reshape(x.shape[0], steps, self.frame_stride * x.shape[2])
        encoding, h = self.embed(x)
        return encoding, (jnp.mean(h, axis=1) if self.sequence else h)

    def block_logits(self, encoding: jax.Array) -> jax.Array:
        if self.sequence:
            return self.head.block_logits(encoding, jnp.ones(encoding.shape[:-1], encoding.dtype))
        return self.head.block_logits(encoding)

    def compare(self, a: jax.Array, b: jax.Array) -> jax.Array:
        if self.sequence:
            return self.head(a, jnp.ones(a.shape[:-1], a.dtype), b, jnp.ones(b.shape[:-1], b.dtype))
        return self.head(a, b)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiameseObjective(Objective):
    """The loss settings of approach B (`check_model_config`)."""

    kind: str
    margin: float
    min_label_gap: float
    label_smoothing: float
    agreement_weighting: bool


def _positive(value, name: str) -> None:
    if value < 1:
        raise ConfigError(f"model.{name}={value} must be >= 1; set --config.model.{name}")


def check_model_config(config: ml_collections.ConfigDict) -> SiameseObjective:
    """Every check of ``config.model`` (and the batch settings); returns the loss settings. Raises `ConfigError`."""
    model = config.model
    check_batch_config(config, model.sampler.group_size)
    source = model_input(config)
    choice(model.comparison, tuple(COMPARATORS), "comparison")
    if model.comparison in SEQUENCE_HEADS and source != "frames":
        raise ConfigError(f"model.comparison={model.comparison!r} compares frame sequences, so it needs "
                          f"model.input='frames': {FRAMES_HINT}")
    for name in ("hidden_dim", "num_layers", "embedding_dim", "frame_stride"):
        _positive(model[name], name)
    check_encoder_options(model, min_layers=1)
    if not 0 <= model.head.dropout < 1:
        raise ConfigError("model.head.dropout must be in [0, 1)")
    choice(model.head.pooling, POOLINGS, "head.pooling")
    head = model.head
    for name in ("hidden_dim", "num_layers", "rank", "num_heads"):
        _positive(head[name], f"head.{name}")
    attention_dim = head.attention_dim or model.embedding_dim
    if model.comparison == "cross_attention" and (head.attention_dim < 0 or attention_dim % head.num_heads):
        raise ConfigError(f"model.head.attention_dim={attention_dim} (0 = embedding_dim) must be a multiple of "
                          f"model.head.num_heads={head.num_heads}")
    if source == "frames" and model.sampler.crop_seconds <= 0:
        raise ConfigError("model.sampler.crop_seconds must be positive for frame inputs")
    if model.sampler.hard_pair_weight < 0 or model.sampler.hard_gap <= 0:
        raise ConfigError("model.sampler.hard_pair_weight must be >= 0 (0 = off) and model.sampler.hard_gap > 0")
    loss = model.loss
    choice(loss.kind, KINDS, "loss.kind")
    if not 0 <= loss.label_smoothing < 1:
        raise ConfigError(f"model.loss.label_smoothing={loss.label_smoothing} must be in [0, 1)")
    if loss.margin < 0 or loss.min_label_gap < 0:
        raise ConfigError("model.loss.margin and model.loss.min_label_gap must be >= 0")
    return SiameseObjective(group_size=model.sampler.group_size, kind=loss.kind, margin=float(loss.margin),
                            min_label_gap=float(loss.min_label_gap), label_smoothing=float(loss.label_smoothing),
                            agreement_weighting=bool(loss.agreement_weighting))


class Siamese(Approach):
    """`Approach` "siamese" (approach B, a comparator)."""

    name = "siamese"
    kind = COMPARATOR

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        check_model_config(config)

    def objective(self, config: ml_collections.ConfigDict) -> SiameseObjective:
        return check_model_config(config)

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        check_model_config(config)
        model = config.model
        head = {name: model.head[name] for name in HEAD_OPTIONS[model.comparison]}
        return SiameseModel(input_dim, comparison=model.comparison, hidden_dim=model.hidden_dim,
                            num_layers=model.num_layers, dropout=model.dropout, embedding_dim=model.embedding_dim,
                            pooling=model.pooling, frame_stride=model.frame_stride, head=head, rngs=rngs,
                            normalize=model.get("normalize_embeddings", False))

    def loss(self, objective: SiameseObjective, model: nnx.Module, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        """`block_comparison_loss` of every ordered pair of each block of the [P, K] layout (encoded once)."""
        del step, mesh  # no schedule; jit partitions the encoder over the batch and sums the tile's terms
        encoding, _ = model.encode(batch["x"])
        grouped = objective.grouped
        logits = model.block_logits(grouped(encoding))
        return block_comparison_loss(
            logits, grouped(batch["label_mean"]), where=grouped(batch["mask"]),
            label_std=grouped(batch["label_std"]) if objective.agreement_weighting else None,
            kind=objective.kind, margin=objective.margin, min_label_gap=objective.min_label_gap,
            label_smoothing=objective.label_smoothing)

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: Any) -> PairBatchSampler:
        """`PairBatchSampler` blocks; a sequence head's crops are aligned within each block (centred at one fraction
        of every member's track), as the evaluation aligns the crops it compares."""
        model = config.model
        crop = crop_frames(config, table.frame_rate)
        if crop > 0 and table.frames is None:
            raise ConfigError(f"model.input='frames' but the store holds no frames: {FRAMES_HINT}")
        if model.comparison in SEQUENCE_HEADS and crop < model.frame_stride:
            raise ConfigError(f"model.sampler.crop_seconds={model.sampler.crop_seconds} gives {crop} frames at "
                              f"{table.frame_rate} frames/s, fewer than model.frame_stride={model.frame_stride}; "
                              "raise the crop or lower the stride")
        return PairBatchSampler(table, config.train.batch_size, model.sampler.group_size, seed, crop_frames=crop,
                                hard_pair_weight=model.sampler.hard_pair_weight, hard_gap=model.sampler.hard_gap,
                                min_label_gap=model.loss.min_label_gap,
                                aligned_crops=model.comparison in SEQUENCE_HEADS)

    def encode(self, objective: SiameseObjective, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        encoding, hidden = model.encode(x)
        return {"encoding": encoding, "hidden": hidden}

    def compare(self, objective: SiameseObjective, model: nnx.Module, a: jax.Array, b: jax.Array) -> jax.Array:
        return model.compare(a, b)
