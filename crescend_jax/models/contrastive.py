"""Approach A, "contrastive": within-group pairwise ranking plus a same-music InfoNCE term.

    L = L_rank + lambda_piece * L_contrastive

L_rank is `margin_ranking_loss` over the pairs of each group slot of a P x K batch (`group_batches`), on the rank
head's scores: one per label column (the 19 ratings, or the targets of ``data.targets``: then L_rank is split into the
ratings' term plus ``model.loss.derived_weight`` times the derived targets' term, `crescend_jax.models.targets`);
L_contrastive is the exact tiled multi-positive InfoNCE on the L2-normalised piece head, with the performances of
the same music as positives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.infonce import STRATEGIES, infonce_loss
from crescend_jax.losses.ranking import margin_ranking_loss
from crescend_jax.models.contract import (SCORER, Approach, Objective, check_batch_config, choice, crop_frames,
                                          model_input)
from crescend_jax.models.layers import POOLINGS, Encoder, check_encoder_options, encoder_options, unit_rows
from crescend_jax.models.sampler import GroupSampler
from crescend_jax.models.targets import (DEFAULT_DERIVED_MIN_LABEL_GAP, DEFAULT_DERIVED_WEIGHT, TargetColumns,
                                         split_terms, target_columns)


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section of approach A.

    input: "pooled" trains on the stored pooled vectors [B, D]; "frames" on random crops [B, T, F] of the stored
      frames (F = D), pooled by ``pooling`` ("mean" or "attention": a learned softmax over time). Prediction reads
      the inputs the model trained on (`models.functions`): pooled vectors (a one-frame sequence), or for frame
      models every crop of the track, the outputs averaged over its crops.
    input_dim: 0 = the store's width. hidden_dim, num_layers, dropout: the MLP trunk (LayerNorm, GELU, dropout).
    projection_dim: width of the shared projection that both heads read.
    sampler.group_size: K performances per group slot (batch = batch_size / K groups x K).
    sampler.crop_seconds: crop length for input="frames".
    loss.margin, loss.min_label_gap, loss.agreement_weighting: see `margin_ranking_loss` / `agreement_weights`.
    loss.derived_weight, loss.derived_min_label_gap: the derived targets' term (``data.targets`` "derived" or
      "both", `crescend_jax.models.targets`): its weight w (0 = no derived term) and its tie gap (within-group SDs).
    loss.lambda_piece: weight of the InfoNCE term (0 = ranking only). loss.temperature: its T.
    loss.block_size: InfoNCE tile edge; 0 = the loss's platform default, the fastest in bench/infonce.md (512 on
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
    config.loss.derived_weight = DEFAULT_DERIVED_WEIGHT
    config.loss.derived_min_label_gap = DEFAULT_DERIVED_MIN_LABEL_GAP
    config.loss.agreement_weighting = True
    config.loss.lambda_piece = 0.1
    config.loss.temperature = 0.1
    config.loss.block_size = 0
    config.loss.strategy = "ring"
    return config


class ContrastiveRankingModel(Encoder):
    """An `Encoder` x [B, D] or [B, T, D] -> shared projection h [B, E], then a piece head z [B, E] (L2-normalised)
    and a rank head scores [B, C], one per label column (C = 19 ratings by default)."""

    def __init__(self, input_dim: int, *, hidden_dim: int, num_layers: int, dropout: float, projection_dim: int,
                 pooling: str, rngs: nnx.Rngs, input_dropout: float = 0.0, num_targets: int = 19):
        super().__init__(input_dim, hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout,
                         output_dim=projection_dim, pooling=pooling, rngs=rngs, input_dropout=input_dropout)
        self.piece_head = nnx.Linear(projection_dim, projection_dim, rngs=rngs)
        self.rank_head = nnx.Linear(projection_dim, num_targets, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z float32 [B, E] unit rows, scores float32 [B, C])."""
        z, scores, _ = self.outputs(x)
        return z, scores

    def outputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z [B, E] unit rows, scores [B, C], the shared projection h [B, E])."""
        h, _ = self.embed(x)
        z = unit_rows(self.piece_head(nnx.gelu(h)))
        return z, self.rank_head(h), h


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContrastiveObjective(Objective):
    """The loss settings of approach A (`objective_from_config`)."""

    margin: float
    min_label_gap: float
    agreement_weighting: bool
    lambda_piece: float
    temperature: float
    block_size: int
    strategy: str
    columns: TargetColumns | None = None  # the head layout (None: 19 ratings, one term)


def objective_from_config(config: ml_collections.ConfigDict) -> ContrastiveObjective:
    """The loss settings of ``config.model`` (checked)."""
    model, loss = config.model, config.model.loss
    choice(loss.strategy, STRATEGIES, "loss.strategy")
    if loss.block_size < 0 or loss.temperature <= 0:
        raise ConfigError("model.loss.block_size must be >= 0 (0 = platform default) and model.loss.temperature > 0")
    return ContrastiveObjective(
        group_size=model.sampler.group_size, margin=loss.margin, min_label_gap=loss.min_label_gap,
        agreement_weighting=loss.agreement_weighting, lambda_piece=loss.lambda_piece,
        temperature=loss.temperature, block_size=loss.block_size, strategy=loss.strategy,
        columns=target_columns(config))


def ranking_term(objective: Objective, scores: jax.Array, batch: dict[str, jax.Array]
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`margin_ranking_loss` of scores [B, C] on the P x K layout of ``batch``, with ``objective``'s margin,
    min_label_gap and agreement_weighting (approach A's ranking term, approach C's "ranking" head); split into the
    ratings' and the derived targets' terms when the objective's ``columns`` hold derived targets
    (`crescend_jax.models.targets.split_terms`)."""
    grouped = objective.grouped
    labels, mask = grouped(batch["label_mean"]), grouped(batch["mask"])
    stds = grouped(batch["label_std"]) if objective.agreement_weighting else None
    columns = getattr(objective, "columns", None)
    if columns is None or columns.plain:
        return margin_ranking_loss(grouped(scores), labels, where=mask, label_std=stds, margin=objective.margin,
                                   min_label_gap=objective.min_label_gap)

    def term(index, min_gap):
        return margin_ranking_loss(grouped(scores)[..., index], labels[..., index], where=mask,
                                   label_std=None if stds is None else stds[..., index], margin=objective.margin,
                                   min_label_gap=min_gap)

    return split_terms(columns, term)


class ContrastiveRanking(Approach):
    """`Approach` "contrastive" (approach A, a scorer)."""

    name = "contrastive"
    kind = SCORER

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        model = config.model
        check_batch_config(config, model.sampler.group_size)
        model_input(config)
        check_encoder_options(model)
        if model.input == "frames" and model.sampler.crop_seconds <= 0:
            raise ConfigError("model.sampler.crop_seconds must be positive for frame inputs")
        objective_from_config(config)

    def objective(self, config: ml_collections.ConfigDict) -> ContrastiveObjective:
        return objective_from_config(config)

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        model_input(config)
        check_encoder_options(config.model)
        objective_from_config(config)  # a model is never built for settings its loss would refuse
        return ContrastiveRankingModel(input_dim, projection_dim=config.model.projection_dim, rngs=rngs,
                                       num_targets=target_columns(config).num_targets,
                                       **encoder_options(config.model))

    def loss(self, objective: ContrastiveObjective, model: nnx.Module, batch: dict[str, jax.Array],
             step: jax.Array, mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        """L_rank on the [P, K] layout plus lambda_piece * InfoNCE over the whole (sharded) batch."""
        del step  # no schedule
        z, scores = model(batch["x"])
        rank_loss, diagnostics = ranking_term(objective, scores, batch)
        if objective.lambda_piece == 0:
            return rank_loss, diagnostics
        piece_loss, piece = infonce_loss(z, batch["group"], where=batch["mask"], temperature=objective.temperature,
                                         block_size=objective.block_size or None, mesh=mesh,
                                         strategy=objective.strategy)
        diagnostics.update({f"piece_{name}": value for name, value in piece.items()}, piece_loss=piece_loss)
        return rank_loss + objective.lambda_piece * piece_loss, diagnostics

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int) -> GroupSampler:
        return GroupSampler(table, config.train.batch_size, config.model.sampler.group_size, seed,
                            crop_frames=crop_frames(config, table.frame_rate))

    def encode(self, objective: ContrastiveObjective, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        z, scores, h = model.outputs(x)
        return {"scores": scores, "z_piece": z, "hidden": h}


__all__ = ["POOLINGS", "ContrastiveObjective", "ContrastiveRanking", "ContrastiveRankingModel",
           "default_model_config", "objective_from_config", "ranking_term"]
