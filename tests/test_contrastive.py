"""Approach A: model shapes, the loss on one vs eight devices, jitted steps that lower it, the trainer end to end."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from _distributed_worker import sampled_batch, synthetic_table
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError, load_config
from crescend_jax.models import get_approach
from crescend_jax.models.contrastive import ContrastiveRanking, ContrastiveRankingModel, default_model_config
from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.runtime import distributed
from crescend_jax.train.trainer import default_train_config, train


def tiny_config(**model_overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": ("Comp0",), "fold_seed": 0})
    config.model = default_model_config()
    config.model.hidden_dim = 32
    config.model.projection_dim = 16
    config.model.update(model_overrides)
    config.train = default_train_config()
    config.train.batch_size = 16
    config.train.num_steps = 30
    config.train.eval_every = 15
    config.train.log_every = 5
    config.train.val_fraction = 0.3
    config.train.learning_rate = 3e-3
    config.train.eval_every = 15
    return config


def test_registry_and_config_file():
    assert isinstance(get_approach("contrastive"), ContrastiveRanking)
    config = load_config("configs/approach_a.py", ["--config.model.loss.margin=0.5"])
    assert config.model.name == "contrastive" and config.model.loss.margin == 0.5
    baseline = load_config("configs/baseline.py")
    assert set(config.keys()) == set(baseline.keys())


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_model_shapes_and_pooled_equals_one_frame(pooling):
    model = ContrastiveRankingModel(12, hidden_dim=16, num_layers=2, dropout=0.0, projection_dim=8, pooling=pooling,
                                    rngs=nnx.Rngs(0))
    call = nnx.jit(lambda m, x: m(x))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 12)), jnp.float32)
    z, scores = call(model, x)
    assert z.shape == (5, 8) and scores.shape == (5, 19)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=1), 1.0, rtol=1e-5)
    z_frames, scores_frames = call(model, x[:, None, :])
    np.testing.assert_allclose(np.asarray(scores_frames), np.asarray(scores), rtol=1e-5, atol=1e-6)
    frames_z, frames_scores = call(model, jnp.ones((3, 7, 12)))
    assert frames_z.shape == (3, 8) and frames_scores.shape == (3, 19)


def _setup(table, config, mesh):
    """(a fresh approach's loss bound to the config's objective, the model, a sampled batch, the approach)."""
    approach = ContrastiveRanking()
    model = approach.build_model(config, table.pooled.shape[1], nnx.Rngs(params=0, dropout=1))
    batch = sampled_batch(approach, table, config)
    batch.pop("row")
    objective = ContrastiveRanking().objective(config)  # another instance: approaches hold no state
    return functools.partial(approach.loss, objective), model, batch, approach


def test_loss_is_the_same_on_one_and_eight_devices():
    table, config = synthetic_table(), tiny_config(dropout=0.0)
    assert jax.device_count() == 8
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    eight = distributed.make_mesh()
    loss, model, batch, _ = _setup(table, config, eight)
    graphdef, state = nnx.split(model)
    loss_one, diag_one = jax.jit(lambda s, b: loss(nnx.merge(graphdef, s), b, 0, one))(state, batch)
    sharded = distributed.shard_batch(batch, eight)
    loss_eight, diag_eight = jax.jit(lambda s, b: loss(nnx.merge(graphdef, s), b, 0, eight))(
        distributed.replicate(state, eight), sharded)
    assert float(loss_eight) == pytest.approx(float(loss_one), rel=1e-5)
    assert float(diag_eight["piece_loss"]) == pytest.approx(float(diag_one["piece_loss"]), rel=1e-5)
    assert float(diag_one["rank_pairs"]) > 0 and float(diag_one["piece_num_anchors"]) == 16


def test_jitted_steps_lower_the_loss_on_a_sharded_batch():
    table, config = synthetic_table(), tiny_config()
    mesh = distributed.make_mesh()
    loss_fn, model, _, approach = _setup(table, config, mesh)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        (loss, diag), grads = nnx.value_and_grad(lambda m: loss_fn(m, batch, 0, mesh), has_aux=True)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss, diag

    batch = sampled_batch(approach, table, config)
    batch.pop("row")
    sharded = distributed.shard_batch(batch, mesh)
    state = distributed.replicate(state, mesh)
    losses = []
    for _ in range(25):
        state, loss, diag = step(state, sharded)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]
    assert float(diag["rank_accuracy"]) > 0.6


@pytest.mark.slow
def test_trainer_end_to_end(tmp_path):
    table = synthetic_table()
    config = tiny_config()
    records = train(config, tmp_path, table=table)
    assert len(records) == 1
    held = predict_heldout(tmp_path, table=table)
    assert held.scores.shape == (len(held.table), 19) and np.isfinite(held.scores).all()
    assert set(held.table.compositions) == {"Comp0"}


def test_frames_input_gives_finite_gradients():
    table = synthetic_table(compositions=2)
    rng = np.random.default_rng(0)
    table.frames = [rng.normal(size=(2, 30, 8)).astype(np.float32) for _ in range(len(table))]
    table.frame_rate = 10.0
    config = tiny_config(input="frames", pooling="attention")
    config.model.sampler.crop_seconds = 1.5
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    loss, model, batch, approach = _setup(table, config, one)
    assert batch["x"].shape == (16, 15, 16)
    grads = nnx.jit(nnx.grad(lambda m, b: loss(m, b, 0, one)[0]))(model, batch)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    encode = functools.partial(approach.encode, approach.objective(config))
    outputs = nnx.jit(encode)(model, jnp.asarray(batch["x"][:4]))
    assert outputs["scores"].shape == (4, 19) and outputs["z_piece"].shape == (4, 16)


def test_zero_padding_rows_give_finite_gradients_at_initialisation():
    """Zero biases at init map a zero padding row to z = 0; its L2 normalisation must not make NaN gradients."""
    table = synthetic_table(compositions=2)
    config = tiny_config()
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    loss, model, batch, _ = _setup(table, config, one)
    batch["x"][-1], batch["mask"][-1], batch["group"][-1] = 0.0, 0.0, -1
    z, _ = model(jnp.asarray(batch["x"]))
    assert float(jnp.abs(z[-1]).max()) == 0.0  # the case that produced NaN gradients
    grads = nnx.grad(lambda m: loss(m, batch, 0, one)[0])(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_the_loss_needs_no_built_model_on_the_same_instance():
    """The approach carries no state between calls: a fresh instance's loss and encode, given the objective, work on
    a model another instance built, and equal that instance's."""
    table, config = synthetic_table(), tiny_config(dropout=0.0)
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    loss, model, batch, builder = _setup(table, config, one)
    fresh = ContrastiveRanking()
    objective = fresh.objective(config)
    assert objective == builder.objective(config) and hash(objective) == hash(builder.objective(config))
    assert float(fresh.loss(objective, model, batch, 0, one)[0]) == float(loss(model, batch, 0, one)[0])
    np.testing.assert_array_equal(np.asarray(fresh.encode(objective, model, batch["x"])["scores"]),
                                  np.asarray(builder.encode(objective, model, batch["x"])["scores"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        objective.margin = 1.0


def test_bad_settings():
    approach = ContrastiveRanking()
    with pytest.raises(ValueError, match="not whole groups"):
        approach.loss(approach.objective(tiny_config()), lambda x: (x, x), {"x": jnp.zeros((6, 3)),
                      **{k: jnp.zeros(6) for k in ("mask", "group")}, "label_mean": jnp.zeros((6, 19)),
                      "label_std": jnp.zeros((6, 19))}, 0, None)
    with pytest.raises(ValueError, match="model.input"):
        approach.build_model(tiny_config(input="wav"), 16, nnx.Rngs(0))
    with pytest.raises(ValueError, match="pooling"):
        approach.build_model(tiny_config(pooling="max"), 16, nnx.Rngs(0))
    table = synthetic_table()
    table.frame_rate = 10.0
    with pytest.raises(ValueError, match="store with frames"):
        approach.sampler(table, tiny_config(input="frames"), 0)
    assert list(itertools.islice(approach.sampler(table, tiny_config(), 0), 2))
    with pytest.raises(ConfigError, match="pooling"):
        approach.check_config(tiny_config(pooling="max"))


def test_unknown_infonce_strategy_is_refused_at_build():
    with pytest.raises(ConfigError, match="model.loss.strategy"):
        ContrastiveRanking().build_model(tiny_config(loss={**default_model_config().loss, "strategy": "tree"}), 16,
                                         nnx.Rngs(0))
