"""Approach A, "contrastive": within-group pairwise ranking plus a same-music InfoNCE term.

    L = L_rank + lambda_piece * L_contrastive

L_rank is `margin_ranking_loss` over the pairs of each group slot of a P x K batch (`group_batches`), on the 19
rank-head scores; L_contrastive is the exact tiled multi-positive InfoNCE on the L2-normalised piece head, with the
performances of the same music as positives.
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
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.infonce import STRATEGIES, infonce_loss, sharded_infonce_loss
from crescend_jax.losses.ranking import margin_ranking_loss
from crescend_jax.models.contract import SCORER, check_batch_config, crop_frames, model_input
from crescend_jax.models.sampler import GroupSampler

POOLINGS = ("mean", "attention")


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section of approach A.

    input: "pooled" trains on the stored pooled vectors [B, D]; "frames" on random crops [B, T, F] of the stored
      frames (F = D), pooled by ``pooling`` ("mean" or "attention": a learned softmax over time). Prediction always
      reads pooled vectors, seen as a one-frame sequence.
    input_dim: 0 = the store's width. hidden_dim, num_layers, dropout: the MLP trunk (LayerNorm, GELU, dropout).
    projection_dim: width of the shared projection that both heads read.
    sampler.group_size: K performances per group slot (batch = batch_size / K groups x K).
    sampler.crop_seconds: crop length for input="frames".
    loss.margin, loss.min_label_gap, loss.agreement_weighting: see `margin_ranking_loss` / `agreement_weights`.
    loss.lambda_piece: weight of the InfoNCE term (0 = ranking only). loss.temperature: its T.
    loss.block_size: InfoNCE tile edge; 0 = the loss's platform default, the fastest in bench/infonce.md (2048 on
      CPU, 8192 on accelerators). loss.strategy: "ring" or "allgather" on a multi-device mesh.
    """
    config = ml_collections.ConfigDict()
    config.name = "contrastive"
    config.input = "pooled"
    config.pooling = "mean"
    config.input_dim = 0
    config.init_from = ""  # a finished workdir whose parameters start every fold (train/warm_start.py)
    config.init_from_prefix = ""  # use only the source's parameters under this path prefix (e.g. "style/")
    config.hidden_dim = 512
    config.num_layers = 2
    config.dropout = 0.2
    config.input_dropout = 0.0  # on the standardised inputs (a small-data regulariser)
    config.projection_dim = 256
    config.sampler = ml_collections.ConfigDict()
    config.sampler.group_size = 4
    config.sampler.crop_seconds = 10.0
    config.loss = ml_collections.ConfigDict()
    config.loss.margin = 0.2
    config.loss.min_label_gap = 0.02
    config.loss.agreement_weighting = True
    config.loss.lambda_piece = 0.1
    config.loss.temperature = 0.1
    config.loss.block_size = 0
    config.loss.strategy = "ring"
    return config


class AttentionPooling(nnx.Module):
    """x [B, T, F] -> sum_t a_t x_t with a = softmax_t(x_t . w / sqrt(F)), [B, F]."""

    def __init__(self, dim: int, rngs: nnx.Rngs):
        self.score = nnx.Linear(dim, 1, use_bias=False, rngs=rngs)
        self.scale = dim ** -0.5

    def __call__(self, x: jax.Array) -> jax.Array:
        weights = jax.nn.softmax(self.score(x)[..., 0] * self.scale, axis=-1)
        return jnp.einsum("bt,btf->bf", weights, x)


class ContrastiveRankingModel(nnx.Module):
    """x [B, D] or [B, T, D] -> pooling -> num_layers x (Linear, LayerNorm, GELU, Dropout) -> projection [B, E]
    -> piece head z [B, E] (L2-normalised) and rank head scores [B, 19]."""

    def __init__(self, input_dim: int, *, hidden_dim: int, num_layers: int, dropout: float, projection_dim: int,
                 pooling: str, rngs: nnx.Rngs, input_dropout: float = 0.0):
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; set --config.model.pooling to one of {POOLINGS}")
        self.attention = AttentionPooling(input_dim, rngs) if pooling == "attention" else None
        widths = [input_dim] + [hidden_dim] * num_layers
        self.linears = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in widths[1:]])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs)
        self.projection = nnx.Linear(widths[-1], projection_dim, rngs=rngs)
        self.piece_head = nnx.Linear(projection_dim, projection_dim, rngs=rngs)
        self.rank_head = nnx.Linear(projection_dim, NUM_DIMENSIONS, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z float32 [B, E] unit rows, scores float32 [B, 19])."""
        z, scores, _ = self.outputs(x)
        return z, scores

    def outputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z [B, E] unit rows, scores [B, 19], the shared projection h [B, E])."""
        if x.ndim == 2:
            x = x[:, None, :]  # a pooled vector is a one-frame sequence
        h = self.attention(x) if self.attention is not None else jnp.mean(x, axis=1)
        h = self.input_dropout(h)
        for linear, norm in zip(self.linears, self.norms):
            h = self.dropout(nnx.gelu(norm(linear(h))))
        h = self.projection(h)
        z = self.piece_head(nnx.gelu(h))
        # rsqrt of a clamped squared norm, not z / max(norm(z), eps): the gradient of norm() is NaN at z = 0, which a
        # zero padding row reaches at initialisation (zero biases), and 0 * NaN poisons every parameter.
        z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))
        return z, self.rank_head(h), h


@dataclasses.dataclass(frozen=True)
class _Objective:
    """The loss settings `ContrastiveRanking.loss` reads (fixed when the model is built)."""

    group_size: int
    margin: float
    min_label_gap: float
    agreement_weighting: bool
    lambda_piece: float
    temperature: float
    block_size: int
    strategy: str


def objective_from_config(config: ml_collections.ConfigDict) -> _Objective:
    """The loss settings of ``config.model`` (checked)."""
    model, loss = config.model, config.model.loss
    if loss.strategy not in STRATEGIES:
        raise ConfigError(f"unknown model.loss.strategy {loss.strategy!r}; set --config.model.loss.strategy to one "
                          f"of {STRATEGIES}")
    if loss.block_size < 0 or loss.temperature <= 0:
        raise ConfigError("model.loss.block_size must be >= 0 (0 = platform default) and model.loss.temperature > 0")
    return _Objective(
        group_size=model.sampler.group_size, margin=loss.margin, min_label_gap=loss.min_label_gap,
        agreement_weighting=loss.agreement_weighting, lambda_piece=loss.lambda_piece,
        temperature=loss.temperature, block_size=loss.block_size, strategy=loss.strategy)


class ContrastiveRanking:
    """`Approach` "contrastive" (approach A, a scorer)."""

    name = "contrastive"
    kind = SCORER

    def __init__(self) -> None:
        self._objective: _Objective | None = None

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        model = config.model
        check_batch_config(config, model.sampler.group_size)
        model_input(config)
        if model.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {model.pooling!r}; set --config.model.pooling to one of {POOLINGS}")
        if model.input == "frames" and model.sampler.crop_seconds <= 0:
            raise ConfigError("model.sampler.crop_seconds must be positive for frame inputs")
        objective_from_config(config)

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        model = config.model
        model_input(config)
        self._objective = objective_from_config(config)
        return ContrastiveRankingModel(
            input_dim, hidden_dim=model.hidden_dim, num_layers=model.num_layers, dropout=model.dropout,
            projection_dim=model.projection_dim, pooling=model.pooling, rngs=rngs,
            input_dropout=model.get("input_dropout", 0.0))

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh) -> tuple[jax.Array, dict[str, Any]]:
        """L_rank on the [P, K] layout plus lambda_piece * InfoNCE over the whole (sharded) batch."""
        del step  # no schedule
        objective = self._objective
        if objective is None:
            raise RuntimeError("ContrastiveRanking.loss needs build_model(config, ...) first (it fixes the loss settings)")
        z, scores = model(batch["x"])
        rows, k = scores.shape[0], objective.group_size
        if rows % k:
            raise ValueError(f"batch of {rows} rows is not whole groups of model.sampler.group_size={k}")
        grouped = lambda a: a.reshape(rows // k, k, *a.shape[1:])
        rank_loss, diagnostics = margin_ranking_loss(
            grouped(scores), grouped(batch["label_mean"]), grouped(batch["mask"]),
            grouped(batch["label_std"]) if objective.agreement_weighting else None,
            margin=objective.margin, min_label_gap=objective.min_label_gap)
        if objective.lambda_piece == 0:
            return rank_loss, diagnostics
        block_size = objective.block_size or None
        if mesh.devices.size > 1:
            piece_loss, piece = sharded_infonce_loss(
                z, batch["group"], batch["mask"], objective.temperature, mesh=mesh, axis_name=mesh.axis_names[0],
                block_size=block_size, strategy=objective.strategy)
        else:
            piece_loss, piece = infonce_loss(z, batch["group"], batch["mask"], objective.temperature,
                                             block_size=block_size)
        diagnostics.update({f"piece_{name}": value for name, value in piece.items()}, piece_loss=piece_loss)
        return rank_loss + objective.lambda_piece * piece_loss, diagnostics

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int) -> GroupSampler:
        return GroupSampler(table, config.train.batch_size, config.model.sampler.group_size, seed,
                            crop_frames=crop_frames(config, table.frame_rate))

    def encode(self, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        z, scores, h = model.outputs(x)
        return {"scores": scores, "z_piece": z, "hidden": h}
