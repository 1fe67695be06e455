"""Approach C, "disentangled": a dual encoder that separates which music is played (z_piece) from how (z_style).

Two encoders read the same input (pooled vectors or frame crops): the piece encoder gives z_piece [B, Ep], the style
encoder z_style [B, Es]; 19 linear dimension heads read z_style only. The objective, every term switchable (a weight
of 0 switches a term off and skips its computation):

    L = lambda_head  * L_head(heads(z_style))            within-group margin ranking (approach A's) or MSE
      + lambda_piece * L_piece(z_piece)                  same-music InfoNCE (exact, tiled, sharded) or a composition
                                                          classifier
      + lambda_adv   * L_adv(R_lambda(z_style), c)       an adversary reads the composition c from z_style behind
                                                          the gradient reversal layer R_lambda
      + lambda_style * L_style(z_style)                  spreads z_style inside each group
      + lambda_orth  * L_orth(z_piece, z_style)          optional orthogonality penalty

R_lambda is the identity forward and hands the style encoder -lambda times the adversary's gradient (Ganin &
Lempitsky 2015), so the style encoder is pushed to make the composition unreadable from z_style; lambda follows
the DANN schedule 2 / (1 + exp(-gamma p)) - 1 over p = step / train.num_steps, or stays constant
(`reversal_strength`). Two adversaries (``model.adversary.kind``):

* "linear" (default): the least-squares linear classifier of the composition, re-fit in closed form at every step
  (`least_squares_adversary_loss`, L_adv = 1 - R^2 on the batch) to running moments of z_style and the composition
  over about adversary.window x style_dim recent rows (`RunningMoments`, updated inside the loss, each batch decayed
  by 1 - batch / window rows). It is always the best linear read-out of recent z_style, so the game has no lag, and
  it targets exactly what a linear probe of the composition measures. The window is sized by the width: a fit to E
  features on n rows explains about E / n of the label variance by chance, so each batch alone (window 0) fails when
  it holds fewer rows than style_dim (the fit interpolates: R^2 = 1, no gradient; on PercePiano's batches of 32 with
  style_dim 128 the adversary never moved), and a few rows per feature leave a noise floor the encoder cannot push
  below; a much longer window fits stale embeddings of an encoder that has moved on, and lags again.
* "mlp": a trained classifier (cross-entropy, an MLP or a linear layer) that learns ``lr_multiplier`` times faster
  than the encoders (`ScaledLinear`).

On the planted data of tests/test_disentangled.py (6 compositions, chance 1/6; batches of 32), a fresh linear probe
of the composition on held-out groups read it from z_style with 0.83 accuracy without an adversary, 0.72 with the
trained MLP adversary (the encoder keeps re-encoding the piece faster than the adversary re-learns it, the known
weakness of adversarial removal, Elazar & Goldberg 2018), 0.47 with the linear adversary fitted to each batch alone
and 0.11 with the default window (style_dim 32: 320 rows). With style_dim 64, windows of 320 / 640 rows gave 0.15 /
0.22 (batches of 96, style_dim 16: 960 rows 0.14, about 9,600 rows 0.63).

The classes are the fold's training compositions, dense ids in the batch's "composition" field; their number must
be fixed when the model is built, so it is ``model.adversary.num_classes`` and the sampler refuses a fold with more
training compositions than that while a composition classifier is in use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.adversarial import (ORTHOGONALITY_KINDS, SCHEDULES, Moments, between_group_share,
                                             empty_moments, gradient_reversal, least_squares_adversary_loss,
                                             masked_cross_entropy, orthogonality_penalty, reversal_strength,
                                             update_moments, within_group_variance_hinge)
from crescend_jax.losses.infonce import STRATEGIES, infonce_loss
from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.models.contract import (SCORER, Approach, Objective, check_batch_config, choice, crop_frames,
                                          model_input)
from crescend_jax.models.contrastive import ranking_term
from crescend_jax.models.layers import Encoder, check_encoder_options, encoder_options, unit_rows
from crescend_jax.models.sampler import GroupSampler

HEAD_LOSSES = ("ranking", "mse")
PIECE_OBJECTIVES = ("infonce", "classifier")
PIECE_POSITIVES = ("group", "composition")
ADVERSARIES = ("linear", "mlp")
STYLE_TERMS = ("between_share", "variance_hinge")
LAMBDAS = ("lambda_head", "lambda_piece", "lambda_adv", "lambda_style", "lambda_orth")


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section of approach C.

    input, pooling, input_dim, init_from, init_from_prefix, hidden_dim, num_layers, dropout, input_dropout: as
      approach A, for each of the two encoders (`models.layers.Encoder`: its own pooling and MLP trunk, Linear,
      LayerNorm, GELU, dropout). The style encoder's parameters live under ``style/`` (a warm start of another model
      from it strips that prefix: ``model.init_from_prefix="style/"``).
    piece_dim, style_dim: widths of z_piece and z_style. normalize_embeddings: a parameter-free LayerNorm on each
      row of z_piece and z_style (`Encoder`).
    sampler.group_size: K performances per group slot; sampler.crop_seconds: crop length for input="frames".
    loss.head: "ranking" (approach A's within-group margin ranking of the raw head scores; loss.margin,
      loss.min_label_gap, loss.agreement_weighting as in A) or "mse" (the baseline's MSE of sigmoid(heads) against
      the label means; the scores are then those sigmoids).
    loss.lambda_head, lambda_piece, lambda_adv, lambda_style, lambda_orth: the weights of the five terms (0 = off).
    piece.objective: "infonce" (multi-positive InfoNCE on the L2-normalised z_piece with positives piece.positives:
      "group" = the same-music group, "composition" = any performance of the same composition; piece.temperature,
      piece.block_size (0 = platform default), piece.strategy ("ring"/"allgather" on a multi-device mesh)) or
      "classifier" (a linear classifier of the composition on z_piece, cross-entropy).
    adversary.kind: "linear" (closed-form least squares re-fit every step to moments of about adversary.window x
      style_dim recent rows, window 0 = each batch alone; ridge adversary.ridge) or "mlp" (trained;
      adversary.hidden_dim, 0 = one linear layer; adversary.lr_multiplier). adversary.num_classes: outputs of the
      composition classifiers (>= the training compositions of every fold). adversary.schedule: "dann" or "constant";
      adversary.scale: lambda's final (dann) or constant value; adversary.gamma: the DANN steepness.
    style.kind: "between_share" (`between_group_share`, scale-free) or "variance_hinge"
      (`within_group_variance_hinge` with style.target_std).
    orthogonality.kind: "cross_correlation" or "cosine" (`orthogonality_penalty`; cosine needs piece_dim ==
      style_dim).
    """
    config = ml_collections.ConfigDict()
    config.name = "disentangled"
    config.input = "pooled"
    config.pooling = "mean"
    config.input_dim = 0
    config.init_from = ""  # a finished workdir whose parameters start every fold (train/warm_start.py)
    config.init_from_prefix = ""  # use only the source's parameters under this path prefix
    config.hidden_dim = 512
    config.num_layers = 2
    config.dropout = 0.2
    config.input_dropout = 0.0
    config.piece_dim = 128
    config.style_dim = 128
    config.normalize_embeddings = True
    config.sampler = ml_collections.ConfigDict()
    config.sampler.group_size = 4
    config.sampler.crop_seconds = 10.0
    config.loss = ml_collections.ConfigDict()
    config.loss.head = "ranking"
    config.loss.margin = 0.2
    config.loss.min_label_gap = 0.02
    config.loss.agreement_weighting = True
    config.loss.lambda_head = 1.0
    config.loss.lambda_piece = 0.1
    config.loss.lambda_adv = 1.0
    config.loss.lambda_style = 0.1
    config.loss.lambda_orth = 0.0
    config.piece = ml_collections.ConfigDict()
    config.piece.objective = "infonce"
    config.piece.positives = "group"
    config.piece.temperature = 0.1
    config.piece.block_size = 0
    config.piece.strategy = "ring"
    config.adversary = ml_collections.ConfigDict()
    config.adversary.kind = "linear"
    config.adversary.num_classes = 64
    config.adversary.ridge = 1e-3
    config.adversary.window = 10.0
    config.adversary.hidden_dim = 128
    config.adversary.lr_multiplier = 10.0
    config.adversary.schedule = "dann"
    config.adversary.scale = 1.0
    config.adversary.gamma = 10.0
    config.style = ml_collections.ConfigDict()
    config.style.kind = "between_share"
    config.style.target_std = 1.0
    config.orthogonality = ml_collections.ConfigDict()
    config.orthogonality.kind = "cross_correlation"
    return config


# ----------------------------------------------------------------------------------------------------- the model


class ScaledLinear(nnx.Module):
    """y = c (x W + b) with parameters W [in, out], b [out] and a fixed multiplier c; W starts as lecun_normal / c
    and b as 0, so y starts like a plain Linear's.

    Adam's step on a parameter does not depend on the scale of its gradient, so no loss weight can make one module
    learn faster; this parameterisation does: a step of ~lr on W moves c W by ~c lr, i.e. the module trains at c
    times the run's learning rate whatever optimiser settings the training core uses."""

    def __init__(self, in_features: int, out_features: int, multiplier: float, rngs: nnx.Rngs):
        self.multiplier = float(multiplier)
        kernel = nnx.initializers.lecun_normal()(rngs.params(), (in_features, out_features), jnp.float32)
        self.kernel = nnx.Param(kernel / self.multiplier)
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.multiplier * (x @ self.kernel[...] + self.bias[...])


class Adversary(nnx.Module):
    """The trained ("mlp") adversary: z [B, E] -> Linear(hidden) -> GELU -> Linear(C) logits [B, C], or one
    Linear(C) when hidden_dim is 0; `ScaledLinear` layers, so it learns ``lr_multiplier`` times faster than the
    encoders it plays against (two time scales)."""

    def __init__(self, input_dim: int, hidden_dim: int, num_classes: int, lr_multiplier: float, rngs: nnx.Rngs):
        self.hidden = ScaledLinear(input_dim, hidden_dim, lr_multiplier, rngs) if hidden_dim > 0 else None
        self.out = ScaledLinear(hidden_dim if hidden_dim > 0 else input_dim, num_classes, lr_multiplier, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.out(nnx.gelu(self.hidden(z)) if self.hidden is not None else z)


class RunningMoments(nnx.Module):
    """The linear adversary's state: `Moments` of z_style and the one-hot composition (non-trainable `nnx.BatchStat`
    variables; the loss updates them, like batch-norm statistics, and checkpoints keep them)."""

    def __init__(self, dim: int, num_classes: int):
        empty = empty_moments(dim, num_classes)
        self.weight, self.z, self.y, self.zz, self.zy = (nnx.BatchStat(value) for value in empty)

    def get(self) -> Moments:
        return Moments(self.weight[...], self.z[...], self.y[...], self.zz[...], self.zy[...])

    def set(self, moments: Moments) -> None:
        for variable, value in zip((self.weight, self.z, self.y, self.zz, self.zy), moments):
            variable[...] = value


@dataclasses.dataclass
class Outputs:
    """What `DisentangledModel` computes for B rows: z_piece [B, Ep], z_style [B, Es], the heads' raw scores
    [B, 19] and the style trunk's last hidden layer [B, H]."""

    z_piece: jax.Array
    z_style: jax.Array
    logits: jax.Array
    hidden: jax.Array


class DisentangledModel(nnx.Module):
    """Piece encoder -> z_piece; style encoder -> z_style -> 19 linear heads; the adversary's state (``adversary``:
    "mlp" = a trained classifier, "linear" with ``moments`` = `RunningMoments`) and optionally a composition classifier
    on z_piece, with ``num_classes`` classes."""

    def __init__(self, input_dim: int, *, hidden_dim: int, num_layers: int, dropout: float, piece_dim: int,
                 style_dim: int, pooling: str, normalize: bool, num_classes: int, adversary: str, moments: bool,
                 adversary_hidden_dim: int, adversary_lr_multiplier: float, piece_classifier: bool, rngs: nnx.Rngs,
                 input_dropout: float = 0.0):
        encoder = dict(hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout, pooling=pooling,
                       normalize=normalize, rngs=rngs, input_dropout=input_dropout)  # `models.layers.Encoder`
        self.piece = Encoder(input_dim, output_dim=piece_dim, **encoder)
        self.style = Encoder(input_dim, output_dim=style_dim, **encoder)
        self.heads = nnx.Linear(style_dim, NUM_DIMENSIONS, rngs=rngs)
        self.adversary = (Adversary(style_dim, adversary_hidden_dim, num_classes, adversary_lr_multiplier, rngs)
                          if adversary == "mlp" else None)
        self.moments = RunningMoments(style_dim, num_classes) if adversary == "linear" and moments else None
        self.piece_classifier = nnx.Linear(piece_dim, num_classes, rngs=rngs) if piece_classifier else None

    def __call__(self, x: jax.Array) -> Outputs:
        z_piece, _ = self.piece(x)
        z_style, hidden = self.style(x)
        return Outputs(z_piece=z_piece, z_style=z_style, logits=self.heads(z_style), hidden=hidden)


# ----------------------------------------------------------------------------------------------------- the objective


@dataclasses.dataclass(frozen=True, kw_only=True)
class DisentangledObjective(Objective):
    """The loss settings of approach C (`objective_from_config`)."""

    num_steps: int
    head: str
    margin: float
    min_label_gap: float
    agreement_weighting: bool
    lambda_head: float
    lambda_piece: float
    lambda_adv: float
    lambda_style: float
    lambda_orth: float
    piece_objective: str
    piece_positives: str
    temperature: float
    block_size: int
    strategy: str
    adversary: str
    num_classes: int
    ridge: float
    decay: float
    schedule: str
    scale: float
    gamma: float
    style_kind: str
    target_std: float
    orthogonality_kind: str

    @property
    def uses_classes(self) -> bool:
        """Whether a term classifies compositions (then a fold may hold at most ``num_classes`` of them)."""
        return self.lambda_adv != 0 or (self.lambda_piece != 0 and self.piece_objective == "classifier")


def objective_from_config(config: ml_collections.ConfigDict) -> DisentangledObjective:
    """The loss settings of ``config.model`` (checked; a `ConfigError` names the field)."""
    model, loss, adversary = config.model, config.model.loss, config.model.adversary
    lambdas = {name: float(loss[name]) for name in LAMBDAS}
    for name, value in lambdas.items():
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"model.loss.{name}={value} must be a finite weight >= 0 (0 switches the term off)")
    if model.piece.temperature <= 0 or model.piece.block_size < 0:
        raise ConfigError("model.piece.temperature must be > 0 and model.piece.block_size >= 0 (0 = platform default)")
    if adversary.num_classes < 2 or adversary.hidden_dim < 0 or adversary.lr_multiplier <= 0 or adversary.ridge <= 0:
        raise ConfigError("model.adversary.num_classes must be >= 2, hidden_dim >= 0, lr_multiplier > 0 and "
                          "ridge > 0")
    if adversary.window < 0:
        raise ConfigError(f"model.adversary.window={adversary.window} must be >= 0 (0 = fit each batch alone)")
    window_rows = adversary.window * model.style_dim  # decayed so that the window holds about window_rows rows
    decay = max(0.0, 1.0 - config.train.batch_size / window_rows) if window_rows > 0 else 0.0
    if adversary.gamma <= 0 or model.style.target_std <= 0:
        raise ConfigError("model.adversary.gamma and model.style.target_std must be > 0")
    orthogonality = choice(model.orthogonality.kind, ORTHOGONALITY_KINDS, "orthogonality.kind")
    if orthogonality == "cosine" and lambdas["lambda_orth"] and model.piece_dim != model.style_dim:
        raise ConfigError(f"model.orthogonality.kind='cosine' needs piece_dim == style_dim (got {model.piece_dim} and "
                          f"{model.style_dim}); use 'cross_correlation' or equal widths")
    return DisentangledObjective(
        group_size=model.sampler.group_size, num_steps=config.train.num_steps,
        head=choice(loss.head, HEAD_LOSSES, "loss.head"), margin=loss.margin, min_label_gap=loss.min_label_gap,
        agreement_weighting=loss.agreement_weighting, **lambdas,
        piece_objective=choice(model.piece.objective, PIECE_OBJECTIVES, "piece.objective"),
        piece_positives=choice(model.piece.positives, PIECE_POSITIVES, "piece.positives"),
        temperature=model.piece.temperature, block_size=model.piece.block_size,
        strategy=choice(model.piece.strategy, STRATEGIES, "piece.strategy"),
        adversary=choice(adversary.kind, ADVERSARIES, "adversary.kind"), num_classes=adversary.num_classes,
        ridge=adversary.ridge, decay=decay,
        schedule=choice(adversary.schedule, SCHEDULES, "adversary.schedule"),
        scale=adversary.scale, gamma=adversary.gamma,
        style_kind=choice(model.style.kind, STYLE_TERMS, "style.kind"), target_std=model.style.target_std,
        orthogonality_kind=orthogonality)


class Disentangled(Approach):
    """`Approach` "disentangled" (approach C, a scorer)."""

    name = "disentangled"
    kind = SCORER

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        model = config.model
        check_batch_config(config, model.sampler.group_size)
        if model_input(config) == "frames" and model.sampler.crop_seconds <= 0:
            raise ConfigError("model.sampler.crop_seconds must be positive for frame inputs")
        check_encoder_options(model)
        if min(model.piece_dim, model.style_dim) < 1:
            raise ConfigError("model.piece_dim and model.style_dim must be positive")
        objective_from_config(config)

    def objective(self, config: ml_collections.ConfigDict) -> DisentangledObjective:
        return objective_from_config(config)

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        model = config.model
        model_input(config)
        objective = objective_from_config(config)
        return DisentangledModel(
            input_dim, piece_dim=model.piece_dim, style_dim=model.style_dim, normalize=model.normalize_embeddings,
            num_classes=objective.num_classes, adversary=objective.adversary, moments=objective.decay > 0,
            adversary_hidden_dim=model.adversary.hidden_dim, adversary_lr_multiplier=model.adversary.lr_multiplier,
            piece_classifier=objective.piece_objective == "classifier", rngs=rngs, **encoder_options(model))

    def loss(self, objective: DisentangledObjective, model: nnx.Module, batch: dict[str, jax.Array],
             step: jax.Array, mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        """The weighted sum of the switched-on terms on a P x K batch (module doc).

        Diagnostics: each switched-on term's value ("head_loss", "piece_loss", "adv_loss", "style_loss",
        "orth_loss"), the head's own (rank_loss/rank_pairs/rank_accuracy, or mse/mae), the piece term's
        ("piece_*"), and for the adversary "adv_accuracy" (on the batch it sees), "adv_lambda" (the reversal
        strength at ``step``) and, for the linear adversary, "adv_r2".
        """
        out = model(batch["x"])
        mask = batch["mask"]
        grouped = objective.grouped
        grouped(mask)  # refuses a batch that is not whole groups before any term runs

        total = jnp.float32(0.0)
        diagnostics: dict[str, Any] = {}
        if objective.lambda_head:
            if objective.head == "ranking":
                head_loss, head = ranking_term(objective, out.logits, batch)
            else:
                head_loss, head = masked_mse(jax.nn.sigmoid(out.logits), batch["label_mean"], where=mask)
            diagnostics.update(head, head_loss=head_loss)
            total = total + objective.lambda_head * head_loss

        if objective.lambda_piece:
            if objective.piece_objective == "infonce":
                piece_loss, piece = infonce_loss(unit_rows(out.z_piece), batch[objective.piece_positives], where=mask,
                                                 temperature=objective.temperature,
                                                 block_size=objective.block_size or None,
                                                 mesh=mesh, strategy=objective.strategy)
            else:
                piece_loss, piece = masked_cross_entropy(model.piece_classifier(out.z_piece), batch["composition"],
                                                         where=mask)
                piece = {"accuracy": piece["accuracy"]}
            diagnostics.update({f"piece_{name}": value for name, value in piece.items()}, piece_loss=piece_loss)
            total = total + objective.lambda_piece * piece_loss

        if objective.lambda_adv:
            strength = reversal_strength(step, objective.num_steps, schedule=objective.schedule,
                                         scale=objective.scale, gamma=objective.gamma)
            reversed_style = gradient_reversal(out.z_style, strength)
            if objective.adversary == "linear":
                moments = None
                if model.moments is not None:  # this batch joins the window the adversary is fitted to
                    moments = update_moments(model.moments.get(), out.z_style, batch["composition"], where=mask,
                                             decay=objective.decay)
                    model.moments.set(moments)
                adv_loss, adv = least_squares_adversary_loss(reversed_style, batch["composition"], where=mask,
                                                             num_classes=objective.num_classes, ridge=objective.ridge,
                                                             moments=moments)
                diagnostics.update(adv_r2=adv["r2"])
            else:
                adv_loss, adv = masked_cross_entropy(model.adversary(reversed_style), batch["composition"], where=mask)
            diagnostics.update(adv_loss=adv_loss, adv_accuracy=adv["accuracy"], adv_lambda=strength)
            total = total + objective.lambda_adv * adv_loss

        if objective.lambda_style:
            if objective.style_kind == "between_share":
                style_loss, _ = between_group_share(grouped(out.z_style), where=grouped(mask))
            else:
                style_loss, _ = within_group_variance_hinge(grouped(out.z_style), where=grouped(mask),
                                                            target_std=objective.target_std)
            diagnostics.update(style_loss=style_loss)
            total = total + objective.lambda_style * style_loss

        if objective.lambda_orth:
            orth_loss, _ = orthogonality_penalty(out.z_piece, out.z_style, where=mask,
                                                 kind=objective.orthogonality_kind)
            diagnostics.update(orth_loss=orth_loss)
            total = total + objective.lambda_orth * orth_loss
        return total, diagnostics

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int) -> GroupSampler:
        """P x K group batches (`GroupSampler`). Raises `ConfigError` when a term classifies compositions and the
        training rows hold more of them than ``model.adversary.num_classes``."""
        objective = objective_from_config(config)
        count = len(np.unique(table.compositions))
        if objective.uses_classes and count > objective.num_classes:
            raise ConfigError(f"the training rows hold {count} compositions but the composition classifiers have "
                              f"model.adversary.num_classes={objective.num_classes} classes; set "
                              f"--config.model.adversary.num_classes={count} (or more)")
        return GroupSampler(table, config.train.batch_size, config.model.sampler.group_size, seed,
                            crop_frames=crop_frames(config, table.frame_rate))

    def encode(self, objective: DisentangledObjective, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        """{"scores" [N, 19] (raw head scores for loss.head="ranking", their sigmoids for "mse"), "z_style" [N, Es],
        "z_piece" [N, Ep] (as the piece term reads it: unit rows for InfoNCE), "hidden" [N, H] (the style trunk's
        last layer, before the projection to z_style)}."""
        out = model(x)
        scores = jax.nn.sigmoid(out.logits) if objective.head == "mse" else out.logits
        z_piece = unit_rows(out.z_piece) if objective.piece_objective == "infonce" else out.z_piece
        return {"scores": scores, "z_style": out.z_style, "z_piece": z_piece, "hidden": out.hidden}
