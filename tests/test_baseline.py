"""The pointwise baseline: registry, loss, batches, one training step (flax-examples style), its config."""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config

from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.models import get_approach
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.models.functions import model_functions
from crescend_jax.models.sampler import PlainSampler
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import host_table, place_plan, place_table
from crescend_jax.train.optimizer import build_optimizer
from crescend_jax.train.step import build_train_step


def test_registry_returns_baseline_and_names_known_approaches():
    assert isinstance(get_approach("baseline"), PointwiseBaseline)
    with pytest.raises(ValueError, match=r"unknown approach 'pairwise'.*'baseline', 'contrastive'"):
        get_approach("pairwise")


def test_masked_mse_ignores_padding_rows_even_with_nan_labels():
    scores = jnp.array([[0.2, 0.4], [0.9, 0.1], [0.5, 0.5]])
    labels = jnp.array([[0.0, 0.5], [1.0, 0.0], [jnp.nan, jnp.nan]])
    loss, diagnostics = masked_mse(scores, labels, where=jnp.array([1.0, 1.0, 0.0]))
    expected = (0.2**2 + 0.1**2 + 0.1**2 + 0.1**2) / 4
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(diagnostics["mae"], (0.2 + 0.1 + 0.1 + 0.1) / 4, rtol=1e-6)


def test_plain_sampler_visits_every_row_once_per_epoch_and_resumes_exactly():
    table = synthetic_table(compositions=2, groups_per_composition=2, performers=4)  # 16 rows
    sampler = PlainSampler(table, 8, seed=0)
    first_epoch = np.concatenate([next(sampler).rows for _ in range(2)])
    assert sorted(first_epoch) == list(range(16))
    state = sampler.state()
    ahead = [next(sampler).rows for _ in range(3)]
    resumed = PlainSampler(table, 8, seed=123)
    resumed.restore(state)
    for expected in ahead:
        np.testing.assert_array_equal(next(resumed).rows, expected)


def test_one_train_step_lowers_the_loss_on_a_fixed_batch():
    config = tiny_config(learning_rate=1e-2)
    config.model.dropout = 0.0
    approach, mesh, table = PointwiseBaseline(), distributed.make_mesh(), synthetic_table()
    functions = model_functions(approach, config, 16, mesh)
    state = functions.init(0)
    tx = build_optimizer(config.train, state)
    steps = build_train_step(functions, tx, mesh)
    opt_state = steps.init_optimizer(state)
    device_table = place_table(host_table(table, np.zeros(16, np.float32), np.ones(16, np.float32), 0), mesh)
    plan = place_plan(next(approach.sampler(table, config, 0)), mesh)
    state, opt_state, first = steps.step(state, opt_state, device_table, plan, np.int32(0))
    for step in range(5):
        state, opt_state, metrics = steps.step(state, opt_state, device_table, plan, np.int32(step + 1))
    assert np.isfinite(float(first["loss"])) and float(first["grad_norm"]) > 0
    assert float(metrics["loss"]) < float(first["loss"])
    outputs = functions.encode(state, table.pooled[:5])  # 5 rows: padded to the 8 devices and cut back
    assert outputs["scores"].shape == (5, 19) and np.all((outputs["scores"] > 0) & (outputs["scores"] < 1))
    assert outputs["hidden"].shape == (5, 32)


def test_a_frozen_parameter_group_does_not_move():
    from crescend_jax.train.optimizer import param_group_config

    config = tiny_config(learning_rate=1e-2)
    config.train.param_groups = {"first": param_group_config("^hidden/", 0.0, frozen=True)}
    approach, mesh, table = PointwiseBaseline(), distributed.make_mesh(), synthetic_table()
    functions = model_functions(approach, config, 16, mesh)
    state = functions.init(0)
    before = {k: np.asarray(v) for k, v in (("hidden", state["hidden"]["kernel"][...]),
                                             ("out", state["out"]["kernel"][...]))}
    steps = build_train_step(functions, build_optimizer(config.train, state), mesh)
    opt_state = steps.init_optimizer(state)
    device_table = place_table(host_table(table, np.zeros(16, np.float32), np.ones(16, np.float32), 0), mesh)
    plan = place_plan(next(approach.sampler(table, config, 0)), mesh)
    for step in range(3):
        state, opt_state, _ = steps.step(state, opt_state, device_table, plan, np.int32(step))
    np.testing.assert_array_equal(np.asarray(state["hidden"]["kernel"][...]), before["hidden"])
    assert not np.allclose(np.asarray(state["out"]["kernel"][...]), before["out"])


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in
                        ("crescend_jax.data.render", "crescend_jax.encoders.features", "crescend_jax.data.store")),
                    reason="render/features default configs have not landed")
def test_baseline_config_loads_with_overrides():
    from crescend_jax.config import load_config

    config = load_config("configs/baseline.py", ["--config.train.num_steps=7", "--config.model.hidden_dim=64"])
    assert config.model.name == "baseline" and config.model.hidden_dim == 64 and config.train.num_steps == 7
    assert config.train.learning_rate == 1e-4 and config.model.dropout == 0.3
    assert config.train.batch_size % 8 == 0  # runs on 1, 2, 4 or 8 devices
