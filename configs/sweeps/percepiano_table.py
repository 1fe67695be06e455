"""The README's PercePiano table: encoders x approaches, leave-one-composition-out, 3 seeds pooled, each approach
compared with the baseline on the same encoder, with the ridge reference on the same inputs.

    crescend-jax sweep --config=configs/sweeps/percepiano_table.py --workdir=runs/percepiano_table
    python scripts/generate_readme.py --only percepiano_table    # the README's block from runs/.../results.json

Encoders: ``features`` (librosa, rendered audio), ``midi`` (symbolic features of the performance MIDI) and
``features+midi`` (both stores' pooled vectors side by side, ``store.fuse=("features", "midi")``), ``aligned`` (the
score-aligned beats' pooled vectors, raw and group-relative) and the same aligned frames through the sequence trunk
(``trunk.kind="sequence"``, points ``<approach>-aligned_sequence`` and ``<approach>-aligned_group_relative_sequence``,
each compared with the baseline behind the same trunk). Approaches:
baseline, A, B, C (each one whose config file exists in configs/). Points are named ``<approach>-<encoder>``; the
sweep extracts every store first (a no-op once stored). Seeds: 3, pooled by `crescend_jax.evaluate.seed_pooling`
(their intervals resample the seeds as well as the held-out music, since the seed-to-seed spread of one system is as
large as the gaps between systems); a quick look: ``--config.seeds="(0,)"``.
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
ENCODERS = {
    "features": {"encoder.name": "features"},
    "midi": {"encoder.name": "midi"},
    "fused": {"encoder.name": "features", "store.fuse": ("features", "midi")},
    # the score-position encoder's store (pooled = the mean over score beats; its frames kept for frame models) and
    # the same inputs minus each same-music group's mean (transductive over the group's inputs, crescend_jax.data.table)
    "aligned": {"encoder.name": "aligned", "store.frames": True},
    "aligned_group_relative": {"encoder.name": "aligned", "store.frames": True, "data.group_relative": True},
    # the same two inputs read beat by beat by the sequence trunk (crescend_jax.models.sequence_trunk: masked
    # self-attention with relative positions over the score positions, attention pooling, then each approach's own
    # head; on-device tempo / velocity / crop augmentation); their baseline is the baseline with the same trunk
    "aligned_sequence": {"encoder.name": "aligned", "store.frames": True, "trunk.kind": "sequence"},
    "aligned_group_relative_sequence": {"encoder.name": "aligned", "store.frames": True, "data.group_relative": True,
                                        "trunk.kind": "sequence"},
}


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "percepiano_table"
    approaches = existing_approaches(CONFIGS)
    config.base = str(approaches["baseline"])
    config.seeds = (0, 1, 2)
    config.extract = True
    config.fixed = ml_collections.ConfigDict({"data": {"num_folds": 0, "test_compositions": ()}})
    points = []
    for encoder, fields in ENCODERS.items():
        baseline = f"baseline-{encoder}"
        for label, path in approaches.items():
            name = f"{label}-{encoder}"
            points.append(point(name, base=path, fields=fields, baseline="" if name == baseline else baseline))
    config.points = tuple(points)
    config.notes = tuple(f"{label} has no config yet (configs/{label}.py): its points are left out"
                         for label in ("approach_b", "approach_c") if label not in approaches)
    return config
