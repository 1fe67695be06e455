"""crescend-jax: rank piano performances of the same music on 19 perceptual dimensions."""
