"""Extract PercePiano with MuQ: ``crescend-jax extract --config configs/percepiano_muq.py`` (``--shard i/N``, merge).

`configs/percepiano.py` with ``encoder.name = "muq"`` (``OpenMuQ/MuQ-large-msd-iter`` from the local Hugging Face
cache, layers 9-12; settings in ``config.encoder.muq``). Any training config reads these embeddings with the same
one field: ``--config.encoder.name=muq``.
"""

import ml_collections

from crescend_jax.config import config_beside


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "percepiano.py")
    config.encoder.name = "muq"
    return config
