"""One file per approach; each exposes an `Approach` (see crescend_jax.train.approach)."""
