"""Batch-size sensitivity where batches can be large: ASAP pre-training at 256 .. 32,768 rows on a fixed budget of
examples seen, label-free InfoNCE against derived-target ranking, learning-rate rules none / linear / sqrt; each
pre-training then fine-tuned on PercePiano.

    crescend-jax extract --config configs/percepiano.py && crescend-jax extract --config configs/asap.py
    crescend-jax sweep --config=configs/sweeps/asap_batch_size.py --workdir=runs/asap_batch_size
    crescend-jax sweep --config=configs/sweeps/asap_batch_size.py:256,1024,4096 --workdir=runs/asap_batch_size
    crescend-jax sweep --config=configs/sweeps/asap_batch_size.py:64,256@65536 --workdir=runs/asap_bs_smoke
    python scripts/asap_report.py batch_size runs/asap_batch_size   # a plot per measure against the batch, the table

The argument after ``:`` is ``SIZES[@BUDGET]``: the batch sizes (rows; default 256, 1,024, 4,096, 16,384, 32,768)
and the budget of examples seen by every pre-training run (default 2^22 = 4,194,304 rows, about 120 passes over
ASAP's training windows): a point of batch B runs ceil(BUDGET / B) steps, so every point sees the same number of
examples (not steps). Points, for each batch B and rule R (rates scaled from ``train.learning_rate`` = 1e-4 at the
reference batch 256: none = 1e-4, linear = 1e-4 B / 256, sqrt = 1e-4 sqrt(B / 256); at B = 256 the rules agree and
only the ``none`` point runs, standing for all three):

* ``infonce-b<B>-<R>``: approach A on ASAP (`configs/asap_ranking.py`) with ``lambda_piece=1``, ``derived_weight=0``:
  same-window InfoNCE alone (P windows x K = 4 performances, every other window of the batch a negative);
* ``rank-b<B>-<R>``: the same with ``lambda_piece=0``, ``derived_weight=1``: the 6 derived targets' ranking alone;
* ``pp-<objective>-b<B>-<R>``: approach A on PercePiano from that run (``model.init_from``), paired with
  ``pp-scratch`` on the same folds.

Every ASAP point holds out the same works (``data.test_fraction=0.2``, ``data.fold_seed=0``) and keeps its last step
(``train.val_fraction=0``: no early stopping to confound the budget); the ridge on the inputs is the ``input`` probe
of every point's derived block (the same for every point: ``eval.reference=False`` spares its 26 recomputations,
each an inner cross-validation over ~130 works). Measured per point: same-window retrieval top-1
on the held-out works (``metrics.json`` derived.retrieval), derived-target ranking accuracy (the rank heads, and a
linear probe of the shared projection for both objectives), PercePiano accuracy after fine-tuning (with its paired
interval against pp-scratch), and from ``done.json`` the steady-state examples/s and the fold's peak RSS (the
accelerator's peak allocation on a GPU). One seed by default (``--config.seeds="(0,1,2)"`` for intervals over seeds).
"""

import math
from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, point

CONFIGS = Path(__file__).resolve().parents[1]
BATCH_SIZES = (256, 1024, 4096, 16384, 32768)
BUDGET = 2**22
RULES = ("none", "linear", "sqrt")
REFERENCE_BATCH = 256
OBJECTIVES = {
    "infonce": {"model.loss.lambda_piece": 1.0, "model.loss.derived_weight": 0.0},
    "rank": {"model.loss.lambda_piece": 0.0, "model.loss.derived_weight": 1.0},
}


def parse(argument: str | None) -> tuple[tuple[int, ...], int]:
    """(batch sizes, budget) from ``SIZES[@BUDGET]``."""
    if not argument:
        return BATCH_SIZES, BUDGET
    sizes, _, budget = argument.partition("@")
    return tuple(int(b) for b in sizes.split(",") if b), int(budget) if budget else BUDGET


def get_config(argument: str | None = None) -> ml_collections.ConfigDict:
    sizes, budget = parse(argument)
    config = default_sweep_config()
    config.name = "asap_batch_size"
    config.base = str(CONFIGS / "approach_a.py")
    config.baseline = "pp-scratch"
    config.seeds = (0,)
    config.extract = False
    config.lr_scaling.reference_batch = REFERENCE_BATCH
    ranking = str(CONFIGS / "asap_ranking.py")
    points = [point("pp-scratch")]
    for objective, fields in OBJECTIVES.items():
        for batch in sizes:
            steps = math.ceil(budget / batch)
            for rule in (RULES[:1] if batch == REFERENCE_BATCH else RULES):  # one run where the rules agree
                name = f"{objective}-b{batch}-{rule}"
                points.append(point(name, base=ranking, baseline="", fields={
                    **fields, "train.batch_size": batch, "train.num_steps": steps, "lr_scaling.rule": rule,
                    "train.learning_rate": 1e-4, "train.val_fraction": 0.0, "eval.reference": False,
                    "train.eval_every": max(1, steps // 4), "train.log_every": max(1, min(25, steps // 8))}))
                points.append(point(f"pp-{name}", fields={"model.init_from": f"@{name}"}))
    config.points = tuple(points)
    config.notes = (
        f"Every ASAP point sees {budget:,} examples (ceil(budget / batch) steps); rates are scaled from 1e-4 at "
        f"{REFERENCE_BATCH} rows. The accuracy of an ASAP point is its derived-target ranking accuracy on held-out "
        "works (an InfoNCE point's heads never train: read its probe); pp-* points are PercePiano accuracies, paired "
        "with pp-scratch. scripts/asap_report.py batch_size draws a plot per measure against the batch.",
    )
    return config
