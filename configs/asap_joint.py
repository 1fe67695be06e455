"""Joint training: PercePiano's 19 ratings and ASAP's derived targets in one run, separate heads, a mixing weight.

    crescend-jax extract --config configs/percepiano.py ; crescend-jax extract --config configs/asap.py
    crescend-jax train    --config configs/asap_joint.py --workdir runs/asap_joint
    crescend-jax evaluate --workdir runs/asap_joint --baseline runs/approach_a     # paired on PercePiano

Approach A on one table made of both corpora's stores (the same encoder, `crescend_jax.data.joint`): 19 rating heads
and 6 derived-target heads on one encoder; L = L_rank(ratings) + ``model.loss.derived_weight`` x L_rank(derived) +
``model.loss.lambda_piece`` x InfoNCE (derived_weight 0: the derived heads get no gradient, the run is approach A on
PercePiano with ASAP's windows only in the InfoNCE). Every batch holds half PercePiano, half ASAP slots
(``data.<corpus>.batch_share``). Folds split each corpus by its own rule: PercePiano exactly as `configs/approach_a.py`
(the same held-out compositions, so the comparison with approach A is paired), ASAP's held-out works
(``data.asap.test_fraction``) held out in every fold and never trained on. Checkpoints are chosen on PercePiano's
validation compositions (the ratings); the report is PercePiano's, and ``metrics.json``'s ``derived`` block reports
the held-out ASAP works.
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.data import asap, percepiano
from crescend_jax.data.joint import default_joint_data_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "approach_a.py")
    pp = percepiano.default_data_config()
    pp.update(config.data.to_dict())  # approach A's PercePiano section (its folds, its input view)
    pp.batch_share = 1.0
    windows = asap.default_data_config()
    windows.test_fraction = 0.2
    windows.batch_share = 1.0
    config.corpus = "joint"
    config.data = default_joint_data_config({"percepiano": pp, "asap": windows})
    config.model.loss.derived_weight = 1.0
    config.model.loss.derived_min_label_gap = 0.1
    config.train.batch_size = 2 * config.train.batch_size  # PercePiano's batch of approach A, plus as many ASAP rows
    config.eval.disentanglement = False
    config.experiment.name = "asap_joint"
    config.experiment.hypothesis = (
        "Ranking ASAP's derived targets beside PercePiano's ratings, on one encoder, gives the rating heads features "
        "of how performances differ (tempo, dynamics, articulation, pedal) learnt from a thousand performances, "
        "without a separate pre-training stage to forget.")
    return config
