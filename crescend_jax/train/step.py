"""The jitted train step: gather the batch on the devices, loss and gradients, one optimizer update.

    (model_state, opt_state, device_table, plan, step) -> (model_state, opt_state, metrics)

A pure function of its arguments and of what it is built from (the model's graph, the approach's frozen objective,
the optimiser, the mesh), as the flax examples' ``train_step``.

The state is donated (updated in place); metrics are replicated scalars: "loss", "grad_norm" and the approach's
diagnostics. `update_step` is the same step on an already gathered batch (the benchmark's "step alone").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.models.functions import ModelFunctions
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import gather


@dataclasses.dataclass
class TrainStep:
    """step(model_state, opt_state, device_table, plan, step) and update(model_state, opt_state, batch, step)."""

    step: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]
    update: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]
    init_optimizer: Callable[[Any], Any]


def build_train_step(functions: ModelFunctions, tx: optax.GradientTransformation, mesh: Mesh) -> TrainStep:
    """The jitted functions of one run on ``functions``' model (its train-mode graph, approach and objective)."""
    approach, objective, graphdef = functions.approach, functions.objective, functions.graphdef

    def update(model_state, opt_state, batch, step):
        model = nnx.merge(graphdef, model_state)
        (loss, diagnostics), grads = nnx.value_and_grad(
            lambda m: approach.loss(objective, m, batch, step, mesh), has_aux=True)(model)
        params = nnx.state(model, nnx.Param)
        updates, opt_state = tx.update(grads, opt_state, params)
        nnx.update(model, optax.apply_updates(params, updates))
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **diagnostics}
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
