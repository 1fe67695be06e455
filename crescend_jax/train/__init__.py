"""Training core: jitted data-parallel steps, checkpoints, metrics logging."""
