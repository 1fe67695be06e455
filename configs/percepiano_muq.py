"""Extract PercePiano with MuQ: ``crescend-jax extract --config configs/percepiano_muq.py`` (``--shard i/N``, merge).

`configs/percepiano.py` with its encoder section switched to MuQ (``OpenMuQ/MuQ-large-msd-iter`` from the local
Hugging Face cache, layers 9-12); a training config switches to these embeddings the same way, with one field:
``config.encoder = crescend_jax.encoders.muq.default_encoder_config()``.
"""

import importlib.util
from pathlib import Path

import ml_collections

from crescend_jax.encoders.muq import default_encoder_config


def get_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_percepiano_config", Path(__file__).with_name("percepiano.py"))
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.encoder = default_encoder_config()
    return config
