r"""Approach B: a Siamese comparator, P(a above b) per dimension for two performances of the same music.

    crescend-jax train --config configs/approach_b.py --workdir runs/approach_b_concat
    crescend-jax train --config configs/approach_b.py --config.model.comparison=bilinear \
        --workdir runs/approach_b_bilinear
    crescend-jax train --config configs/approach_b.py --config.model.comparison=cross_attention \
        --config.model.input=frames --config.store.root=<a store extracted with --config.store.frames=True> ...

`configs/baseline.py` with another ``model`` section (see `crescend_jax.models.siamese.default_model_config`):
one shared encoder encodes each performance of a P x K batch once, and the head (``model.comparison``: concat,
bilinear or cross_attention, each antisymmetric) scores every ordered same-group pair of each block.
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.models.siamese import default_model_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "baseline.py")
    config.model = default_model_config()
    config.train.batch_size = 64  # 8 blocks of K = 8 performances: up to 8 x 28 distinct pairs per step
    config.experiment.name = "approach_b"
    config.experiment.hypothesis = (
        "Modelling the comparison itself beats scoring each performance alone: a head that sees both performances "
        "of a pair at once (their difference, their product, or their frames attending to each other) can weigh "
        "what distinguishes two renditions of the same passage, which a per-performance score must encode on an "
        "absolute scale shared across pieces; trained with a BCE on which of the two raters put higher (ties and "
        "near-ties skipped, pairs weighted by rater agreement), every pair of every group seen in both orientations "
        "each epoch, and each performance encoded once per batch.")
    return config
