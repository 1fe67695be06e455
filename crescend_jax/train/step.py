"""The jitted train step: gather the batch on the devices, loss and gradients, one optimizer update.

    (model_state, opt_state, device_table, plan, step) -> (model_state, opt_state, metrics)

A pure function of its arguments and of what it is built from (the model's graph, the approach's frozen objective,
the optimiser, the mesh), as the flax examples' ``train_step``.

The state is donated (updated in place); metrics are replicated scalars: "loss", "grad_norm" and the approach's
diagnostics. `update_step` is the same step on an already gathered batch (the benchmark's "step alone").

Mixed precision (``train.compute_dtype``, e.g. "bfloat16"; `ModelFunctions.compute_dtype`): the parameters, their
gradients and the optimizer state stay float32; the loss sees a copy of the model whose floating-point parameters
are cast to the compute dtype, and the inputs ``x`` cast alike, so every matmul and activation of the model runs in
it (LayerNorm statistics in float32, as flax computes them). The losses compute in float32 whatever their inputs
(`crescend_jax.losses`: each casts the model's outputs up first; InfoNCE's tile products take compute-dtype
operands with float32 accumulation, its log-sum-exp in float32). "float32" (the default) runs the plain update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.models.functions import ModelFunctions
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import gather


def _cast(tree: Any, dtype: jnp.dtype) -> Any:
    """Every floating-point leaf of ``tree`` as ``dtype`` (integer leaves, e.g. dropout counters, and keys as they
    are)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@dataclasses.dataclass
class TrainStep:
    """step(model_state, opt_state, device_table, plan, step) and update(model_state, opt_state, batch, step)."""

    step: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]
    update: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]
    init_optimizer: Callable[[Any], Any]


def build_train_step(functions: ModelFunctions, tx: optax.GradientTransformation, mesh: Mesh) -> TrainStep:
    """The jitted functions of one run on ``functions``' model (its train-mode graph, approach and objective)."""
    approach, objective, graphdef = functions.approach, functions.objective, functions.graphdef

    compute_dtype = jnp.dtype(functions.compute_dtype)

    def update(model_state, opt_state, batch, step):
        model = nnx.merge(graphdef, model_state)
        if compute_dtype != jnp.float32:
            batch = {**batch, "x": _cast(batch["x"], compute_dtype)}

        def loss_fn(m):
            if compute_dtype != jnp.float32:  # the same graph on parameters cast to the compute dtype (module doc)
                graph, params, rest = nnx.split(m, nnx.Param, ...)  # rest (dropout streams) is m's own: it advances
                m = nnx.merge(graph, _cast(params, compute_dtype), rest)
            return approach.loss(objective, m, batch, step, mesh)

        (loss, diagnostics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        params = nnx.state(model, nnx.Param)
        updates, opt_state = tx.update(grads, opt_state, params)
        nnx.update(model, optax.apply_updates(params, updates))
        metrics = {"loss": loss.astype(jnp.float32), "grad_norm": optax.tree.norm(grads), **diagnostics}
        return nnx.state(model), opt_state, metrics

    def step(model_state, opt_state, table, plan, step_number):
        return update(model_state, opt_state, gather(table, plan), step_number)

    replicated = distributed.replicated(mesh)
    out = (replicated, replicated, replicated)

    def init_optimizer(model_state):
        params = nnx.state(nnx.merge(graphdef, model_state), nnx.Param)
        return tx.init(params)

    return TrainStep(step=jax.jit(step, donate_argnums=(0, 1), out_shardings=out),
                     update=jax.jit(update, donate_argnums=(0, 1), out_shardings=out),
                     init_optimizer=jax.jit(init_optimizer, out_shardings=replicated))
