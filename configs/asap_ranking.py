"""Ranking pre-training on ASAP's group-relative derived targets (approach A: one rank head per target) + InfoNCE.

    crescend-jax extract --config configs/asap.py                               # the windows' store (once)
    crescend-jax train    --config configs/asap_ranking.py --workdir runs/asap_ranking
    crescend-jax evaluate --workdir runs/asap_ranking                           # held-out works, per target

`configs/asap.py` (ASAP without the compositions that may be PercePiano's) with approach A's model and training
sections, ranking ``data.targets="derived"``: tempo, tempo instability, velocity level and range, articulation and
pedal, each relative to its same-music window group (`crescend_jax.data.targets`: centred per group, scaled by the
robust within-group SD; pairs closer than ``model.loss.derived_min_label_gap`` = 0.1 SD are ties). L = L_rank(derived)
+ ``model.loss.lambda_piece`` x same-window InfoNCE (0 allowed: ranking alone). One fold: whole works holding ~20% of
the windows are held out (``data.test_fraction``, ``data.split_level="work"``) and never trained on; the checkpoint is
chosen on ~10% validation works by derived-target ranking accuracy. The evaluation reports, on the held-out works,
each target's within-group ranking accuracy (two-stage interval: works, then groups), the ridge on the same inputs,
linear probes and same-window retrieval (`crescend_jax.evaluate.derived`).

Label-free InfoNCE pre-training with the same heads, measured the same way (its heads never train; its probes say what
its embedding holds): ``--config.model.loss.derived_weight=0 --config.model.loss.lambda_piece=1``.

The targets are read off each performance's MIDI, so on a MIDI-based encoder (``midi``, ``aligned``) they are nearly
given; the audio-features store (the default encoder) is the meaningful input. `configs/sweeps/asap_ranking.py` then
fine-tunes approach A on PercePiano from this run (``model.init_from``).
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
    config.data.test_compositions = ()
    config.data.test_fraction = 0.2  # held-out works, never trained on (one fold, drawn by data.fold_seed)
    config.data.targets = "derived"
    config.model = default_model_config()
    config.model.loss.lambda_piece = 0.1
    config.model.loss.derived_weight = 1.0
    config.model.loss.derived_min_label_gap = 0.1
    config.train = default_train_config()
    config.train.batch_size = 2048  # 512 windows x 4 performances per step
    config.train.num_steps = 3000
    config.train.eval_every = 500
    config.train.val_fraction = 0.1  # validation works (whole), for checkpoint selection on the derived targets
    config.trunk = default_trunk_config()
    config.eval = default_eval_config()
    config.eval.disentanglement = False  # the composition probes of 35,000 windows x 130 works take hours here
    config.experiment = ml_collections.ConfigDict()
    config.experiment.name = "asap_ranking"
    config.experiment.hypothesis = (
        "Ranking the performances of one passage by what each performer did (faster, louder, wider dynamics, more "
        "legato, more pedal: measured from the performance, relative to the others) teaches an encoder the "
        "differences between performances, which same-window InfoNCE teaches it to ignore; those rankings "
        "generalise to works it never heard.")
    return config
