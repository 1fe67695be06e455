"""Ranking pre-training on ASAP's derived targets with approach B (a Siamese comparator, one output per target).

    crescend-jax train --config configs/asap_ranking_b.py --workdir runs/asap_ranking_b

`configs/asap_ranking.py` (ASAP, ``data.targets="derived"``, held-out works, the same steps and batch) with approach
B's model section: each performance encoded once, the comparator scores every ordered pair of each block of K = 8
windows of one group per target (BCE; ties within ``model.loss.derived_min_label_gap`` skipped). B has no InfoNCE
term; its warm start onto PercePiano copies the shared encoder (the same parameter paths as A's).
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.models.siamese import default_model_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "asap_ranking.py")
    config.model = default_model_config()
    config.model.loss.derived_weight = 1.0
    config.model.loss.derived_min_label_gap = 0.1
    config.experiment.name = "asap_ranking_b"
    return config
