"""Combined approaches: contrastive pre-training then Siamese fine-tuning (A then B), and B on C's style encoder.

    crescend-jax sweep --config=configs/sweeps/combined.py --workdir=runs/combined

Points (3 seeds, each compared with the baseline of the same seed):

* ``approach_a``, ``approach_b``: each approach alone (B from a fresh initialisation);
* ``a_then_b``: approach B whose every fold starts from the selected checkpoint of ``approach_a``'s same fold and
  seed (``model.init_from="@approach_a"``, `crescend_jax.train.warm_start`): the MLP trunk and projection are
  copied (A's ``linears``, ``norms``, ``projection`` are B's encoder; A's heads and B's comparison head have no
  counterpart and stay as they are). B's encoder widths are set to A's (``hidden_dim``, ``num_layers``,
  ``embedding_dim`` = A's ``projection_dim``, ``pooling``) so the shapes agree; the warm start refuses any other
  shape.
* ``approach_c`` and ``b_on_c_style``: B starting from C's style encoder (z_style as the comparator's input), with
  B's widths set to the style encoder's (``embedding_dim`` = C's ``style_dim``). C keeps that encoder under the
  parameter path ``style/...`` while B's encoder lives at the top level, so the warm start must strip that prefix:
  the point is included when approach C's config exists *and* B's model section has an ``init_from_prefix`` field
  (set to ``"style/"``); otherwise the sweep says so in its notes.
"""

from pathlib import Path

import ml_collections

from crescend_jax.config import load_config
from crescend_jax.sweeps import default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
PREFIX_FIELD = "init_from_prefix"


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "combined"
    approaches = existing_approaches(CONFIGS)
    config.base = str(approaches["baseline"])
    config.baseline = "baseline"
    config.seeds = (0, 1, 2)
    config.extract = True
    points = [point("baseline", base=approaches["baseline"])]
    notes = []
    if "approach_a" not in approaches or "approach_b" not in approaches:
        notes.append("approach A or B has no config yet: the combined points are left out")
        config.points, config.notes = tuple(points), tuple(notes)
        return config
    a, b = str(approaches["approach_a"]), str(approaches["approach_b"])
    a_model, b_model = load_config(a).model, load_config(b).model
    points += [point("approach_a", base=a), point("approach_b", base=b)]
    points.append(point("a_then_b", base=b, fields={
        "model.init_from": "@approach_a", "model.hidden_dim": a_model.hidden_dim,
        "model.num_layers": a_model.num_layers, "model.embedding_dim": a_model.projection_dim,
        "model.pooling": a_model.pooling, "model.input": a_model.input}))
    if "approach_c" in approaches:
        c = str(approaches["approach_c"])
        c_model = load_config(c).model
        points.append(point("approach_c", base=c))
        if PREFIX_FIELD in b_model:
            points.append(point("b_on_c_style", base=b, fields={
                "model.init_from": "@approach_c", f"model.{PREFIX_FIELD}": "style/",
                "model.hidden_dim": c_model.hidden_dim, "model.num_layers": c_model.num_layers,
                "model.embedding_dim": c_model.style_dim, "model.pooling": c_model.pooling,
                "model.input": c_model.input}))
        else:
            notes.append(f"b_on_c_style left out: approach B's model section has no {PREFIX_FIELD!r} field, and "
                         "without it the warm start finds no parameter path shared by C's style encoder "
                         "(style/...) and B's encoder")
    else:
        notes.append("approach C has no config yet (configs/approach_c.py): b_on_c_style is left out")
    config.points = tuple(points)
    config.notes = tuple(notes)
    return config
