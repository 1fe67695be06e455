"""Contrastive pre-training of approach A's encoder on ASAP's same-music windows (no ratings: InfoNCE alone).

    crescend-jax extract --config configs/asap.py                       # the windows' store (once)
    crescend-jax train   --config configs/asap_pretrain.py --workdir runs/asap_pretrain
    crescend-jax sweep   --config configs/sweeps/asap_pretraining.py:runs/asap_pretrain --workdir runs/asap_pretraining

`configs/asap.py` (corpus, data, store: ASAP without the compositions that may be PercePiano's) with approach A's
model and training sections. ASAP has no ratings, so ``train.label_free=True``: the 19 label means are NaN, the
ranking term finds no qualifying pair and only the same-music InfoNCE learns (``model.loss.lambda_piece=1``), over
large P x K batches of windows (window k of K performances of one piece are positives; every other window of the
batch, from the same piece or another, a negative). One fold: the work ``data.test_compositions`` is held out
(split by works), the rest trains; there is no validation (no labels), the last step is kept. The PercePiano runs
of `configs/sweeps/asap_pretraining.py` start every fold from this run (``model.init_from``); its widths must be
approach A's (they are: the same model section).
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.evaluate.run import default_eval_config
from crescend_jax.models.contrastive import default_model_config
from crescend_jax.models.trunk import default_trunk_config
from crescend_jax.train.trainer import default_train_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "asap.py")
    config.data.num_folds = 0
    config.data.test_compositions = ("Bach/Fugue/bwv_848",)  # one work held out: a single pre-training fold
    config.model = default_model_config()
    config.model.loss.lambda_piece = 1.0
    config.train = default_train_config()
    config.train.label_free = True
    config.train.batch_size = 2048  # 512 windows x 4 performances per step
    config.train.num_steps = 3000  # 1 min 43 s per 600 steps here; the InfoNCE still falls at 600
    config.train.eval_every = 500
    config.train.val_fraction = 0.0
    config.trunk = default_trunk_config()
    config.eval = default_eval_config()
    config.experiment = ml_collections.ConfigDict()
    config.experiment.name = "asap_pretrain"
    config.experiment.hypothesis = (
        "Same-music windows of a thousand ASAP performances teach an encoder what differs between performances of "
        "one passage far better than PercePiano's hundred groups can; starting approach A from it on PercePiano "
        "raises held-out pairwise accuracy over training from scratch.")
    return config
