"""Frozen vs fine-tuned MuQ (the research plan's fifth ablation): approach A on PercePiano, same folds, same store.

    crescend-jax sweep --config=configs/sweeps/muq_finetune.py --workdir=runs/muq_finetune
    crescend-jax sweep --config=configs/sweeps/muq_finetune.py:/path/to/MuQ-checkpoint --workdir=...

Both points read one MuQ store extracted with the frames entering layer K (``encoder.muq.store_input_layer=K``,
K = 9 here; the sweep extracts it first, on a GPU when one is there: ``encoder.muq.device="auto"``):

* ``a-frozen``: approach A on the stored pooled vectors of layers 9-12 (what every other sweep trains on);
* ``a-finetune``: approach A behind MuQ's layers 9..12 in Flax, initialised from the same checkpoint and trained
  with them on 10 s crops of the stored layer-8 frames (``trunk.kind="finetune"``, `crescend_jax.models.trunk`;
  trunk learning rate ``trunk.learning_rate``, the head's ``train.learning_rate``).

``a-frozen`` is the baseline, so the table's paired interval is fine-tuned minus frozen on the same held-out pairs.
The argument after ``:`` is the MuQ checkpoint (a local directory or a Hugging Face id in the local cache; default
``encoder.muq.checkpoint`` of configs/percepiano_muq.py). Quick look: ``--config.seeds="(0,)"``,
``--all.train.num_steps=300``, ``--all.trunk.remat=True`` for long crops on a small GPU.
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, point

CONFIGS = Path(__file__).resolve().parents[1]
FIRST_LAYER = 9


def get_config(checkpoint: str | None = None) -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "muq_finetune"
    config.base = str(CONFIGS / "approach_a.py")
    config.baseline = "a-frozen"
    config.seeds = (0, 1, 2)
    config.extract = True
    muq = {"store_input_layer": FIRST_LAYER, "device": "auto", **({"checkpoint": checkpoint} if checkpoint else {})}
    config.fixed = ml_collections.ConfigDict({"encoder": {"name": "muq", "muq": muq},
                                              "trunk": {"first_layer": FIRST_LAYER}})
    config.points = (
        point("a-frozen", fields={"trunk.kind": "frozen"}),
        point("a-finetune", fields={"trunk.kind": "finetune", "model.input": "frames",
                                    "model.sampler.crop_seconds": 10.0}),
    )
    config.notes = ("a-finetune trains MuQ's layers 9-12 (about 100M parameters): run it on an accelerator; on a "
                    "CPU a step of 8 x 10 s crops takes tens of seconds (bench/muq_finetune.md)",)
    return config
