"""PercePiano's score-aligned store: ``crescend-jax extract --config configs/percepiano_aligned.py``.

`configs/percepiano.py` with the `aligned` encoder (one frame per score beat of each segment's score MIDI,
`crescend_jax.encoders.aligned`) and frames kept in the store (``store.frames=True``: frame j of every performance of
a group is the same score position). Train any approach on it with the same two overrides, e.g.
``crescend-jax train --config configs/baseline.py --config.encoder.name=aligned --config.store.frames=True``; add
``--config.data.group_relative=True`` for group-relative inputs, ``--config.trunk.kind=sequence`` to read the frames
beat by beat through the sequence trunk (`crescend_jax.models.sequence_trunk`) instead of their mean. ``--config.encoder.aligned.positions=chord``: one
frame per score chord instead.
"""

import ml_collections

from crescend_jax.config import config_beside


def get_config() -> ml_collections.ConfigDict:
    config = config_beside(__file__, "percepiano.py")
    config.encoder.name = "aligned"
    config.store.frames = True
    return config
