"""What transfers from ASAP to PercePiano: from scratch vs pre-trained by ranking ASAP's derived targets vs pre-trained
by same-window InfoNCE vs joint training, approach A, 3 seeds, paired on the same PercePiano folds.

    crescend-jax extract --config configs/percepiano.py && crescend-jax extract --config configs/asap.py
    crescend-jax sweep --config=configs/sweeps/asap_ranking.py --workdir=runs/asap_ranking
    python scripts/asap_report.py ranking runs/asap_ranking        # the README block: tables and the related dims

Points (each seed of each; every PercePiano point reads the same PercePiano store and folds, paired with a-scratch):

* ``a-scratch``: approach A on PercePiano from a fresh initialisation (the baseline).
* ``asap-rank`` (ASAP, no baseline): `configs/asap_ranking.py`, ranking the 6 group-relative derived targets + 0.1 x
  InfoNCE, held-out works (20%) never trained on; its metrics.json reports them per target (`evaluate.derived`).
* ``asap-infonce`` (ASAP, no baseline): the same run with ``derived_weight=0``, ``lambda_piece=1``: label-free
  same-window InfoNCE, measured on the same held-out works (probes, retrieval).
* ``a-from_rank``, ``a-from_infonce``: approach A on PercePiano whose every fold starts from that seed's ASAP run
  (``model.init_from``: the shared encoder copied, the 19 rating heads fresh).
* ``joint``: `configs/asap_joint.py`: both corpora in one run, separate heads, ``derived_weight=1``, half of every
  batch from each corpus; reported on PercePiano (paired with a-scratch) and on ASAP's held-out works.

The question per dimension (``dimensions.md``, and the script's table of RELATED_DIMENSIONS): does ranking tempo help
Fast_paced_Slow_paced, velocity range Dynamic range, articulation Articulation_Long_Short, pedal the pedal dimensions?
Every store must be extracted first (``extract=False``: the joint config reads two corpora). Smoke version on a few
ASAP folders and the MIDI encoder: see README ("ASAP as ranking supervision").
"""

from pathlib import Path

import ml_collections

from crescend_jax.sweeps import default_sweep_config, point

CONFIGS = Path(__file__).resolve().parents[1]


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "asap_ranking"
    config.base = str(CONFIGS / "approach_a.py")
    config.baseline = "a-scratch"
    config.seeds = (0, 1, 2)
    config.extract = False
    ranking = str(CONFIGS / "asap_ranking.py")
    config.points = (
        point("a-scratch"),
        point("asap-rank", base=ranking, baseline=""),
        point("asap-infonce", base=ranking, baseline="",
              fields={"model.loss.derived_weight": 0.0, "model.loss.lambda_piece": 1.0, "train.val_fraction": 0.0,
                      "eval.reference": False}),  # the same inputs and held-out works as asap-rank: its reference
        point("a-from_rank", fields={"model.init_from": "@asap-rank"}),
        point("a-from_infonce", fields={"model.init_from": "@asap-infonce"}),
        point("joint", base=str(CONFIGS / "asap_joint.py")),
    )
    config.notes = (
        "asap-rank and asap-infonce are ASAP pre-training runs: their accuracy is the mean within-group ranking "
        "accuracy of the 6 derived targets on held-out ASAP works (asap-infonce's heads never train: see its probes), "
        "not a PercePiano accuracy; the PercePiano points are compared with a-scratch on the same pairs.",
    )
    return config
