"""Extract PercePiano into the embedding store: ``crescend-jax extract --config configs/percepiano.py``.

Sections: corpus, data (the PercePiano checkout and its folds), render (fluidsynth), encoder (``name`` picks
"features", the default, or "muq"; each has its own sub-section), store. Any field can be overridden with
``--config.<section>.<field>=value``.
"""

import ml_collections

from crescend_jax.data.percepiano import default_data_config
from crescend_jax.data.render import default_render_config
from crescend_jax.data.store import default_store_config
from crescend_jax.encoders import default_encoder_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.corpus = "percepiano"
    config.data = default_data_config()
    config.render = default_render_config()
    config.encoder = default_encoder_config()
    config.store = default_store_config()
    return config
