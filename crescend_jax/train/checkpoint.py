"""Orbax checkpoints of one fold: the latest and the best (by validation pairwise accuracy) are kept.

A checkpoint holds the NNX state of (model, optimizer) -- parameters, dropout RNG, optimizer state and step -- and a
JSON record of the data stream (its initial RNG state and the number of batches drawn), so a resumed run replays
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

VALIDATION_METRIC = "val_accuracy"


def _is_key(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _savable(state: Any) -> Any:
    """Typed PRNG keys -> their raw uint32 data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


class FoldCheckpoints:
    """A `CheckpointManager` in ``directory`` keeping the latest step and the best step by ``val_accuracy``."""

    def __init__(self, directory: str | Path):
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(1),
            checkpoint_managers.BestN(get_metric_fn=lambda m: m[VALIDATION_METRIC], n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=lambda m: m[VALIDATION_METRIC], best_mode="max")
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, step: int, state: Any, record: dict[str, Any], val_accuracy: float | None) -> None:
        """Saves ``state`` (an nnx.State of jax arrays) and ``record`` (JSON) at ``step``."""
        metrics = None if val_accuracy is None else {VALIDATION_METRIC: float(val_accuracy)}
        # Host copies: replicated arrays are written once, without orbax slicing every device's replica.
        host_state = jax.device_get(_savable(state))
        args = ocp.args.Composite(state=ocp.args.StandardSave(host_state), record=ocp.args.JsonSave(record))
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy; None when no checkpoint has a metric."""
        return self.manager.best_step()

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """(state shaped, typed and sharded like ``template`` (replicated arrays), JSON record) of ``step``."""
        host_template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(_savable, template))
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(host_template), record=ocp.args.JsonRestore()))

        def place(t: jax.Array, x: np.ndarray) -> jax.Array:
            array = jax.make_array_from_process_local_data(t.sharding, np.asarray(x), np.shape(x))
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(t)) if _is_key(t) else array

        return jax.tree.map(place, template, restored["state"]), restored["record"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
