"""Extract PercePiano with MuQ: ``crescend-jax extract --config configs/percepiano_muq.py`` (``--shard i/N``, merge).

`configs/percepiano.py` with ``encoder.name = "muq"`` (``OpenMuQ/MuQ-large-msd-iter`` from the local Hugging Face
cache, layers 9-12; settings in ``config.encoder.muq``). Any training config reads these embeddings with the same
one field: ``--config.encoder.name=muq``.
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_percepiano_config", Path(__file__).with_name("percepiano.py"))
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.encoder.name = "muq"
    return config
