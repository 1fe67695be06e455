"""The pointwise baseline: pooled embedding -> MLP(512, dropout 0.3) -> 19 sigmoids, MSE on label means, Adam 1e-4.

    crescend-jax train --config configs/baseline.py --workdir runs/baseline

`configs/percepiano.py` (corpus, data, render, encoder, store) plus the training sections.
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.data.table import default_input_config
from crescend_jax.evaluate.run import default_eval_config
from crescend_jax.models.baseline import default_model_config
from crescend_jax.models.trunk import default_trunk_config
from crescend_jax.train.trainer import default_train_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "percepiano.py")
    # Group-relative inputs: each performance minus its same-music group's mean (crescend_jax.data.table), the
    # Score/Score2 deadpan renditions in that mean unless group_relative_deadpan=False.
    config.data.update(default_input_config())
    config.model = default_model_config()
    config.train = default_train_config()
    # "frozen": the stored embeddings; "finetune": MuQ layers K..12 in Flax; "sequence": an encoder over the aligned
    # encoder's beats (trunk.sequence.*, on-device augmentation trunk.augment.*; crescend_jax/models/sequence_trunk.py)
    config.trunk = default_trunk_config()
    config.eval = default_eval_config()
    config.experiment = ml_collections.ConfigDict()
    config.experiment.name = "baseline"
    config.experiment.hypothesis = (
        "A pointwise regressor of each performance's mean ratings already orders same-music performances above "
        "chance; it is the prior model the ranking approaches must beat on held-out compositions.")
    return config
