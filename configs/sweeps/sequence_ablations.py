"""What the sequence trunk's augmentations and the trunk itself bring: approach A on PercePiano's score-aligned beats,
leave-one-composition-out, 3 seeds.

    crescend-jax sweep --config=configs/sweeps/sequence_ablations.py --workdir=runs/sequence_ablations
    crescend-jax analyze --workdir=runs/sequence_ablations

Points (every one compared with ``a-sequence``, the trunk with every augmentation on, same seeds, paired):

* ``a-no_tempo``, ``a-no_velocity``, ``a-no_crop``: one augmentation switched off (``trunk.augment.<name>=False``;
  `crescend_jax.models.sequence_augment` says which features each one moves);
* ``a-no_augmentation``: all three off;
* ``a-pooled``: the frozen trunk, i.e. A on the pooled aligned vectors (the mean over the beats): what reading the
  beats one by one adds;
* ``b-cross_attention``: approach B's cross_attention head behind the same trunk, comparing two performances position
  by position (``trunk.sequence.cross_window``), for what an aligned comparison adds over A's scores
  (``model.input="frames"``: B's own check asks for it; the trunk hands the head its per-position sequence). B's
  encoder then runs at every position and its head per ordered pair of a block at every position, so both are sized
  to the trunk's 64-wide output (``model.hidden_dim=128``, ``model.embedding_dim=64`` instead of 512 and 256): about
  3 instead of 17 matmul GFLOP per step of 64 rows at 64 positions (`scripts/bench_sequence.py`'s `sequence_step`
  counts them).

Quick look: ``--config.seeds="(0,)"`` and ``--all.train.num_steps=300``.
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
AUGMENTATIONS = ("tempo", "velocity", "crop")


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "sequence_ablations"
    approaches = existing_approaches(CONFIGS)
    config.base = str(approaches["approach_a"])
    config.baseline = "a-sequence"
    config.seeds = (0, 1, 2)
    config.extract = True
    config.fixed = ml_collections.ConfigDict({"encoder": {"name": "aligned"}, "store": {"frames": True},
                                              "data": {"num_folds": 0, "test_compositions": ()}})
    sequence = {"trunk.kind": "sequence"}
    points = [point("a-sequence", fields=sequence)]
    points += [point(f"a-no_{name}", fields={**sequence, f"trunk.augment.{name}": False}) for name in AUGMENTATIONS]
    points.append(point("a-no_augmentation", fields={**sequence, **{f"trunk.augment.{name}": False
                                                                    for name in AUGMENTATIONS}}))
    points.append(point("a-pooled", fields={"trunk.kind": "frozen"}))
    notes = []
    if "approach_b" in approaches:
        points.append(point("b-cross_attention", base=approaches["approach_b"],
                            fields={**sequence, "model.comparison": "cross_attention", "model.input": "frames",
                                    "model.hidden_dim": 128, "model.embedding_dim": 64}))
    else:
        notes.append("approach B has no config yet (configs/approach_b.py): its point is left out")
    config.points = tuple(points)
    config.notes = tuple(notes)
    return config
