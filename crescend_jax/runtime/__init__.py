"""Ground-floor runtime shared by training and evaluation: devices, the mesh, multi-process start-up (distributed)
and orbax fold checkpoints (checkpoint). Nothing here knows about approaches, models or metrics."""
