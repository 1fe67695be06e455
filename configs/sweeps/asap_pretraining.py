"""Does contrastive pre-training on ASAP help approach A on PercePiano? Same folds, paired against training from
scratch.

    crescend-jax train --config configs/asap_pretrain.py --workdir runs/asap_pretrain        # pre-training, once
    crescend-jax sweep --config=configs/sweeps/asap_pretraining.py:runs/asap_pretrain --workdir=runs/asap_pretraining

Points (each seed of each): ``a-scratch`` (approach A, fresh initialisation: the paired baseline) and ``a-asap``
(approach A whose every fold starts from the pre-training run's single fold: ``model.init_from``, every parameter
of the same path and shape copied, `crescend_jax.train.warm_start`). Both read the same PercePiano store with the
same folds; the table's paired interval is pre-trained minus scratch on the same held-out pairs. The argument after
``:`` is the pre-training workdir (default runs/asap_pretrain). The pre-training never saw PercePiano music
(`configs/asap.py` leaves out ASAP compositions that may be PercePiano's).
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, point

CONFIGS = Path(__file__).resolve().parents[1]


def get_config(pretrained: str | None = None) -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "asap_pretraining"
    config.base = str(CONFIGS / "approach_a.py")
    config.baseline = "a-scratch"
    config.seeds = (0, 1, 2)
    config.extract = True
    source = str(Path(pretrained or "runs/asap_pretrain").resolve())
    config.points = (point("a-scratch"), point("a-asap", fields={"model.init_from": source}))
    config.notes = (f"a-asap starts every fold from {source} (train it first: configs/asap_pretrain.py)",)
    return config
