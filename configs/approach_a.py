"""Approach A: within-group margin ranking (19 dimensions) + lambda * same-music InfoNCE, on P groups x K batches.

    crescend-jax train --config configs/approach_a.py --workdir runs/approach_a

Same sections and data/render/encoder/store/train defaults as configs/baseline.py; only ``model`` differs
(see `crescend_jax.models.contrastive.default_model_config`).
"""

import ml_collections

from crescend_jax.data.percepiano import default_data_config
from crescend_jax.data.render import default_render_config
from crescend_jax.data.store import default_store_config
from crescend_jax.encoders import default_encoder_config
from crescend_jax.models.contrastive import default_model_config
from crescend_jax.train.trainer import default_train_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.corpus = "percepiano"
    config.data = default_data_config()
    config.render = default_render_config()
    config.encoder = default_encoder_config()
    config.store = default_store_config()
    config.model = default_model_config()
    config.train = default_train_config()
    config.eval = ml_collections.ConfigDict()
    config.eval.baseline_workdir = ""  # a trained baseline to compare against in the report ("" = none)
    config.experiment = ml_collections.ConfigDict()
    config.experiment.name = "approach_a"
    config.experiment.hypothesis = (
        "Training on what the evaluation measures - the order of performances of the same music - beats regressing "
        "each performance's means: a margin loss over same-group pairs (weighted by how surely raters agree on "
        "the order) ignores the between-piece offsets a pointwise regressor spends capacity on, and a small "
        "same-music InfoNCE term shapes a shared embedding in which performances are compared.")
    return config
