"""Batch-size sensitivity of the contrastive training: held-out accuracy of approach A (its InfoNCE term) and of
approach C (its piece InfoNCE) against the global batch, with the learning-rate scaling rule as a swept field.

    crescend-jax sweep --config=configs/sweeps/batch_size.py --workdir=runs/batch_size
    crescend-jax sweep --config=configs/sweeps/batch_size.py:64,256,1024 --workdir=runs/batch_size_short

* global batch ``train.batch_size`` 64 .. 4096 (the argument after ``:`` picks others). Every point trains on
  random frame crops (``model.input=frames``, ``model.sampler.crop_seconds``) of a store extracted with frames
  (``store.frames=True``; the sweep extracts it): a group slot holds K performances of one same-music group and a
  batch with more slots than groups repeats groups with *fresh crops*, so a batch can hold more distinct items than
  there are performances (PercePiano's 963 segments, fewer per training fold); with pooled vectors a batch beyond
  the fold's rows could only repeat rows.
* ``lr_scaling.rule``: none / linear / sqrt, the point's ``train.learning_rate`` being the rate at the reference
  batch (``lr_scaling.reference_batch=64``): linear = lr * B / 64, sqrt = lr * sqrt(B / 64). At B = 64 the three
  rules are one run.
* ``a-rank_only`` (A with ``lambda_piece=0``) is the control: a batch effect that A shows and it does not comes
  from the contrastive term.
* Steps are fixed (``train.num_steps`` of each approach's config), so a larger batch sees more crops in total;
  change with ``--all.train.num_steps=N``.

The table reports each point against the baseline (pooled inputs of the same store) and the ridge reference; the
plot ``plot_train_batch_size.png`` draws accuracy against the batch, one line per approach and rule.
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
BATCH_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
RULES = ("none", "linear", "sqrt")
FRAMES = {"model.input": "frames", "model.sampler.crop_seconds": 10.0}


def get_config(batch_sizes: str | None = None) -> ml_collections.ConfigDict:
    sizes = tuple(int(b) for b in batch_sizes.split(",")) if batch_sizes else BATCH_SIZES
    config = default_sweep_config()
    config.name = "batch_size"
    approaches = existing_approaches(CONFIGS)
    config.base = str(approaches["baseline"])
    config.baseline = "baseline"
    config.seeds = (0,)
    config.extract = True
    config.fixed = ml_collections.ConfigDict({"store": {"frames": True}})
    config.lr_scaling.reference_batch = 64
    grid = {"train.batch_size": sizes, "lr_scaling.rule": RULES}
    points = [point("baseline", base=approaches["baseline"])]
    notes = []
    if "approach_a" in approaches:
        points.append(point("a", base=approaches["approach_a"], fields=FRAMES, grid=grid))
        points.append(point("a-rank_only", base=approaches["approach_a"],
                            fields={**FRAMES, "model.loss.lambda_piece": 0.0}, grid=grid))
    if "approach_c" in approaches:
        points.append(point("c", base=approaches["approach_c"], fields=FRAMES, grid=grid))
    else:
        notes.append("approach C has no config yet (configs/approach_c.py): its points are left out")
    config.points = tuple(points)
    config.notes = tuple(notes)
    return config
