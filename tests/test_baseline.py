"""The pointwise baseline: registry, loss, batches, one training step (flax-examples style), its config."""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config

from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.models import get_approach
from crescend_jax.models.baseline import PointwiseBaseline, plain_batches
from crescend_jax.train import distributed
from crescend_jax.train.trainer import _compiled


def test_registry_returns_baseline_and_names_known_approaches():
    assert isinstance(get_approach("baseline"), PointwiseBaseline)
    with pytest.raises(ValueError, match=r"unknown approach 'pairwise'.*'baseline', 'contrastive'"):
        get_approach("pairwise")


def test_masked_mse_ignores_padding_rows_even_with_nan_labels():
    scores = jnp.array([[0.2, 0.4], [0.9, 0.1], [0.5, 0.5]])
    labels = jnp.array([[0.0, 0.5], [1.0, 0.0], [jnp.nan, jnp.nan]])
    loss, diagnostics = masked_mse(scores, labels, jnp.array([1.0, 1.0, 0.0]))
    expected = (0.2**2 + 0.1**2 + 0.1**2 + 0.1**2) / 4
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(diagnostics["mae"], (0.2 + 0.1 + 0.1 + 0.1) / 4, rtol=1e-6)


def test_plain_batches_visit_every_row_once_per_epoch():
    table = synthetic_table(compositions=2, groups_per_composition=2, performers=4)  # 16 rows
    stream = plain_batches(table, 8, np.random.default_rng(0))
    first_epoch = np.concatenate([next(stream)["row"] for _ in range(2)])
    assert sorted(first_epoch) == list(range(16))
    batch = next(stream)
    assert batch["x"].shape == (8, 16) and batch["label_mean"].shape == (8, 19) and batch["mask"].sum() == 8
    np.testing.assert_array_equal(batch["group"], table.group_ids()[batch["row"]])


def test_one_train_step_lowers_the_loss_on_a_fixed_batch():
    config = tiny_config(learning_rate=1e-2)
    config.model.dropout = 0.0
    approach, mesh = PointwiseBaseline(), distributed.make_mesh()
    fold = _compiled(approach, config, 16, mesh)
    batch = next(approach.batches(synthetic_table(), config, np.random.default_rng(0)))
    device_batch = distributed.shard_batch({k: v for k, v in batch.items() if k != "row"}, mesh)
    state, first = fold.train_step(fold.init(0), device_batch)
    for _ in range(5):
        state, metrics = fold.train_step(state, device_batch)
    assert np.isfinite(float(first["loss"])) and float(first["grad_norm"]) > 0
    assert float(metrics["loss"]) < float(first["loss"])
    scores = fold.predict(state, batch["x"][:5])  # 5 rows: padded to the 8 devices and cut back
    assert scores.shape == (5, 19) and np.all((scores > 0) & (scores < 1))


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in
                        ("crescend_jax.data.render", "crescend_jax.encoders.features", "crescend_jax.data.store")),
                    reason="render/features default configs have not landed")
def test_baseline_config_loads_with_overrides():
    from crescend_jax.config import load_config

    config = load_config("configs/baseline.py", ["--config.train.num_steps=7", "--config.model.hidden_dim=64"])
    assert config.model.name == "baseline" and config.model.hidden_dim == 64 and config.train.num_steps == 7
    assert config.train.learning_rate == 1e-4 and config.model.dropout == 0.3
    assert config.train.batch_size % 8 == 0  # runs on 1, 2, 4 or 8 devices
