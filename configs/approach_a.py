"""Approach A: within-group margin ranking (19 dimensions) + lambda * same-music InfoNCE, on P groups x K batches.

    crescend-jax train --config configs/approach_a.py --workdir runs/approach_a

`configs/baseline.py` with another ``model`` section (see `crescend_jax.models.contrastive.default_model_config`).
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.models.contrastive import default_model_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "baseline.py")
    config.model = default_model_config()
    config.experiment.name = "approach_a"
    config.experiment.hypothesis = (
        "Training on what the evaluation measures - the order of performances of the same music - beats regressing "
        "each performance's means: a margin loss over same-group pairs (weighted by how surely raters agree on "
        "the order) ignores the between-piece offsets a pointwise regressor spends capacity on, and a small "
        "same-music InfoNCE term shapes a shared embedding in which performances are compared.")
    return config
