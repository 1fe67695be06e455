"""Orbax checkpoints of one fold: the latest and the best (by validation pairwise accuracy) are kept.

A checkpoint holds named state items -- the training core saves "model" (the NNX state: parameters, dropout RNG) and
"optimizer" (the optax state) -- and a JSON record (the step and the sampler's state), so a resumed run draws exactly
the batches an uninterrupted run would have seen, and the evaluation restores the "model" item alone.
"""

from __future__ import annotations

import json
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

    def save(self, step: int, items: dict[str, Any], record: dict[str, Any], val_accuracy: float | None) -> None:
        """Saves each state item (pytrees of jax arrays) and ``record`` (JSON) at ``step``."""
        metrics = None if val_accuracy is None or not np.isfinite(val_accuracy) else {
            VALIDATION_METRIC: float(val_accuracy)}
        # Host copies: replicated arrays are written once, without orbax slicing every device's replica.
        args = {name: ocp.args.StandardSave(jax.device_get(_savable(state))) for name, state in items.items()}
        self.manager.save(step, args=ocp.args.Composite(record=ocp.args.JsonSave(record), **args), metrics=metrics,
                          force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy; None when no checkpoint has a metric."""
        return self.manager.best_step()

    def selected_step(self, fold_dir: Path) -> int | None:
        """The fold's selected step: ``fold_dir/done.json``'s best_step (by validation, or the last step without a
        validation split) when that checkpoint is kept, else the best by validation, else the latest; None when the
        fold has no checkpoint."""
        done = Path(fold_dir) / "done.json"
        if done.exists() and (step := json.loads(done.read_text()).get("best_step")) is not None:
            if step in self.manager.all_steps():
                return int(step)
        step = self.best_step()
        return step if step is not None else self.latest_step()

    def restore(self, step: int, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the items named in ``templates``, each shaped, typed and sharded like its template (replicated arrays),
        JSON record) of ``step``; items not asked for are not read."""
        args = {name: ocp.args.StandardRestore(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                                                            jax.eval_shape(_savable, template)))
                for name, template in templates.items()}
        restored = self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore(), **args))

        def place(t: jax.Array, x: np.ndarray) -> jax.Array:
            array = jax.make_array_from_process_local_data(t.sharding, np.asarray(x), np.shape(x))
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(t)) if _is_key(t) else array

        items = {name: jax.tree.map(place, template, restored[name]) for name, template in templates.items()}
        return items, restored["record"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
