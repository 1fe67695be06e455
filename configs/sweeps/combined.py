"""Combined approaches: contrastive pre-training then Siamese fine-tuning (A then B), and B on C's style encoder.

    crescend-jax sweep --config=configs/sweeps/combined.py --workdir=runs/combined

Points (3 seeds, each compared with the baseline of the same seed):

* ``approach_a``, ``approach_b``: each approach alone (B from a fresh initialisation);
* ``a_then_b``: approach B whose every fold starts from the selected checkpoint of ``approach_a``'s same fold and
  seed (``model.init_from="@approach_a"``, `crescend_jax.train.warm_start`): the encoder is copied (A's and B's
  `models.layers.Encoder` share the paths ``pool/``, ``mlp/``, ``projection/``; A's heads and B's comparison head
  have no counterpart and stay as they are). B's encoder widths are set to A's (``hidden_dim``, ``num_layers``,
  ``embedding_dim`` = A's ``projection_dim``, ``pooling``) so the shapes agree; the warm start refuses any other
  shape.
* ``approach_c`` and ``b_on_c_style``: B starting from C's style encoder (z_style as the comparator's input), with
  B's widths set to the style encoder's (``embedding_dim`` = C's ``style_dim``, the same pooling, input and
  parameter-free normalisation of the embedding). C keeps that encoder under the parameter path ``style/...`` and B
  at the top level, so the warm start strips that prefix (``model.init_from_prefix="style/"``).

Every point is required: a missing approach config or field is an error here, never a silently shorter sweep.
"""

from pathlib import Path

import ml_collections

from crescend_jax.config import ConfigError, load_config
from crescend_jax.sweeps import APPROACH_FILES, default_sweep_config, existing_approaches, point

CONFIGS = Path(__file__).resolve().parents[1]
PREFIX_FIELD = "init_from_prefix"


def get_config() -> ml_collections.ConfigDict:
    config = default_sweep_config()
    config.name = "combined"
    approaches = existing_approaches(CONFIGS)
    missing = sorted(set(APPROACH_FILES) - set(approaches))
    if missing:
        raise ConfigError(f"the combined sweep needs every approach's config; missing {missing} in {CONFIGS}")
    config.base = str(approaches["baseline"])
    config.baseline = "baseline"
    config.seeds = (0, 1, 2)
    config.extract = True
    a, b, c = (str(approaches[name]) for name in ("approach_a", "approach_b", "approach_c"))
    a_model, b_model, c_model = (load_config(path).model for path in (a, b, c))
    if PREFIX_FIELD not in b_model:
        raise ConfigError(f"approach B's model section has no {PREFIX_FIELD!r} field: it cannot start from C's "
                          "style encoder (style/...)")
    config.points = (
        point("baseline", base=approaches["baseline"]),
        point("approach_a", base=a),
        point("approach_b", base=b),
        point("a_then_b", base=b, fields={
            "model.init_from": "@approach_a", "model.hidden_dim": a_model.hidden_dim,
            "model.num_layers": a_model.num_layers, "model.embedding_dim": a_model.projection_dim,
            "model.pooling": a_model.pooling, "model.input": a_model.input}),
        point("approach_c", base=c),
        point("b_on_c_style", base=b, fields={
            "model.init_from": "@approach_c", f"model.{PREFIX_FIELD}": "style/",
            "model.hidden_dim": c_model.hidden_dim, "model.num_layers": c_model.num_layers,
            "model.embedding_dim": c_model.style_dim, "model.pooling": c_model.pooling,
            "model.input": c_model.input, "model.normalize_embeddings": c_model.normalize_embeddings}),
    )
    config.notes = ()
    return config
