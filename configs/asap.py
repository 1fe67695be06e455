"""Extract ASAP's same-music windows into the embedding store: ``crescend-jax extract --config configs/asap.py``.

`configs/percepiano.py` with ``corpus = "asap"`` and ASAP's data section (`crescend_jax.data.asap`): every
performance of a score with at least two performances, cut into windows of ``data.bars_per_window`` bars through the
downbeat annotations; window k of every performance of a piece plays the same bars (one same-music group). Labels
are derived from the performance MIDI (tempo, its stability, dynamics, articulation, pedal); the 19 rating dimensions
are NaN. Compositions that may also be PercePiano's are left out (``data.exclude_in_percepiano``, default True), so
pre-training never sees PercePiano test music; folds keep whole works (``data.split_level = "work"``). A smoke run:
``--config.data.compositions='("Bach/Fugue/bwv_848",)'`` (add ``--config.encoder.name=midi`` to skip rendering).
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.data.asap import default_data_config


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "percepiano.py")
    config.corpus = "asap"
    config.data = default_data_config()
    return config
