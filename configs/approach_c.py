"""Approach C: a dual encoder separating the music (z_piece) from the playing (z_style); the 19 heads read z_style.

    crescend-jax train --config configs/approach_c.py --workdir runs/approach_c

`configs/baseline.py` with another ``model`` section (see `crescend_jax.models.disentangled.default_model_config`):
within-group margin ranking of the heads on z_style, same-music InfoNCE on z_piece, a re-fit linear composition
adversary behind gradient reversal (DANN schedule) and a within-group spread term on z_style. Switch any term off with
``--config.model.loss.lambda_<term>=0`` (head, piece, adv, style, orth).
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.models.disentangled import default_model_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "baseline.py")
    config.model = default_model_config()
    config.experiment.name = "approach_c"
    config.experiment.hypothesis = (
        "A model that ranks performances of the same music should read how the music is played, not which music it "
        "is. Giving the piece its own embedding (z_piece, trained to recognise the music) and making the composition "
        "unreadable from the embedding the 19 heads use (z_style, behind an adversary and a within-group spread "
        "term) removes between-piece offsets a model could otherwise lean on, so its within-group order should "
        "transfer better to compositions it never saw; the probes should show the piece in z_piece and near chance "
        "in z_style.")
    return config
