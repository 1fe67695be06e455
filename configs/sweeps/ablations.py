"""Ablations on PercePiano (default librosa encoder, leave-one-composition-out, 3 seeds):

    crescend-jax sweep --config=configs/sweeps/ablations.py --workdir=runs/ablations
    python scripts/generate_readme.py --only ablations    # the README's block from runs/ablations/results.json

* approach: baseline, A, B, C (each one whose config file exists in configs/);
* each loss term of A off: the InfoNCE term (``model.loss.lambda_piece=0``), rater-agreement weighting, the margin
  (``model.loss.margin=0``);
* each weighted term of C switched: a term on by default is set to 0, one off by default (e.g. ``lambda_orth``)
  to 0.1 (read from configs/approach_c.py when it exists; ``lambda_head``, the objective itself, stays);
* InfoNCE temperature 0.05 / 0.1 / 0.2 / 0.5 (A's ``model.loss.temperature``, C's ``model.piece.temperature``);
* projection width 64 / 128 / 256 / 512 (A's ``model.projection_dim``, C's ``piece_dim`` and ``style_dim`` together).

A setting equal to the approach's default is the approach's own point (not trained twice). The approaches are
compared with the baseline, every ablation point with its own approach's default point (``approach_a`` /
``approach_c``) pooled over the same seeds (seeds resampled with the music, same-seed runs paired,
`crescend_jax.evaluate.seed_pooling`): the table's paired Δ then says what switching that one setting changes. Quick
look: ``--config.seeds="(0,)"``, ``--all.train.num_steps=300``, or ``--config.only="('approach_a','a-no_infonce')"``.
"""

from pathlib import Path

import ml_collections

from crescend_jax.config import load_config
from crescend_jax.sweeps import default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
TEMPERATURES = (0.05, 0.1, 0.2, 0.5)
WIDTHS = (64, 128, 256, 512)


def _others(values, default):
    return tuple(v for v in values if v != default)


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "ablations"
    approaches = existing_approaches(CONFIGS)
    config.base = str(approaches["baseline"])
    config.baseline = "baseline"
    config.seeds = (0, 1, 2)
    config.extract = True
    points = [point(label, base=path) for label, path in approaches.items()]
    notes = []
    if "approach_a" in approaches:
        a = str(approaches["approach_a"])
        loss = load_config(a).model.loss
        versus_a = {"base": a, "baseline": "approach_a"}
        points += [
            point("a-no_infonce", **versus_a, fields={"model.loss.lambda_piece": 0.0}),
            point("a-no_agreement", **versus_a, fields={"model.loss.agreement_weighting": False}),
            point("a-no_margin", **versus_a, fields={"model.loss.margin": 0.0}),
            point("a", **versus_a, grid={"model.loss.temperature": _others(TEMPERATURES, loss.temperature)}),
            point("a", **versus_a, grid={"model.projection_dim": _others(WIDTHS, load_config(a).model.projection_dim)}),
        ]
    if "approach_c" in approaches:
        c = str(approaches["approach_c"])
        versus_c = {"base": c, "baseline": "approach_c"}
        model = load_config(c).model
        for term, value in model.loss.items():
            if term.startswith("lambda_") and term != "lambda_head":
                switched = 0.0 if value else 0.1
                points.append(point(f"c-{'no' if value else 'with'}_{term[len('lambda_'):]}", **versus_c,
                                    fields={f"model.loss.{term}": switched}))
        if "piece" in model and "temperature" in model.piece:
            points.append(point("c", **versus_c, grid={"model.piece.temperature": _others(TEMPERATURES,
                                                                                          model.piece.temperature)}))
        for width in WIDTHS:
            if width != model.piece_dim or width != model.style_dim:
                points.append(point(f"c-dim={width}", **versus_c, fields={"model.piece_dim": width,
                                                                           "model.style_dim": width}))
    else:
        notes.append("approach C has no config yet (configs/approach_c.py): its points are left out")
    if "approach_b" not in approaches:
        notes.append("approach B has no config yet (configs/approach_b.py): its point is left out")
    config.points = tuple(points)
    config.notes = tuple(notes)
    return config
