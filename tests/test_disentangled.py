"""Approach C: the closed-form adversary loss, model shapes, every term switching off, the reversal wiring, 8 devices
= 1, and on planted data the adversary taking the piece out of z_style while z_piece keeps it."""

import functools

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
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate.disentanglement import composition_probe, group_holdout_split
from crescend_jax.losses.adversarial import (empty_moments, least_squares_adversary_loss, masked_cross_entropy,
                                             update_moments)
from crescend_jax.models import get_approach
from crescend_jax.models.disentangled import LAMBDAS, Disentangled, default_model_config
from crescend_jax.models.functions import model_functions
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import host_table, place_plan, place_table
from crescend_jax.train.step import build_train_step
from crescend_jax.train.trainer import default_train_config

TERMS = {"lambda_head": "head_loss", "lambda_piece": "piece_loss", "lambda_adv": "adv_loss",
         "lambda_style": "style_loss", "lambda_orth": "orth_loss"}


def tiny_config(num_steps: int = 100, batch_size: int = 16, **model_overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": ("Comp0",), "fold_seed": 0})
    config.model = default_model_config()
    config.model.hidden_dim = 32
    config.model.piece_dim = 8
    config.model.style_dim = 8
    config.model.adversary.hidden_dim = 16
    config.model.loss.lambda_orth = 0.1  # every term on
    config.model.update(model_overrides)
    config.train = default_train_config()
    config.train.batch_size = batch_size
    config.train.num_steps = num_steps
    config.train.learning_rate = 1e-3
    return config


def _batch(table, config):
    batch = sampled_batch(Disentangled(), table, config)
    batch.pop("row")
    return batch


# ----------------------------------------------------------------------------------------------------- the loss


def _numpy_r2(z, labels, num_classes, ridge):
    z = (z - z.mean(0)) / z.std(0)
    y = np.eye(num_classes)[labels]
    y = y - y.mean(0)
    n = len(z)
    w = np.linalg.solve(z.T @ z / n + ridge * np.eye(z.shape[1]), z.T @ y / n)
    return 1.0 - ((y - z @ w) ** 2).sum() / (y**2).sum()


def test_least_squares_adversary_equals_numpy_and_ignores_padding_and_scale():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=30)
    z = (rng.normal(size=(30, 5)) + 0.8 * np.eye(3)[labels] @ rng.normal(size=(3, 5))).astype(np.float32)
    fit = jax.jit(lambda z, l, m: least_squares_adversary_loss(z, l, where=m, num_classes=4, ridge=1e-3))
    loss, diag = fit(z, labels, np.ones(30, np.float32))
    want = _numpy_r2(z.astype(np.float64), labels, 4, 1e-3)
    assert 0.2 < want < 0.9
    assert float(diag["r2"]) == pytest.approx(want, abs=1e-4)
    assert float(loss) == pytest.approx(1 - want, abs=1e-4)
    padded = np.concatenate([z, np.full((6, 5), 1e3, np.float32)])
    padded_labels = np.concatenate([labels, np.full(6, -1)])
    mask = np.concatenate([np.ones(30), np.zeros(6)]).astype(np.float32)
    assert float(fit(padded, padded_labels, mask)[0]) == pytest.approx(float(loss), abs=1e-5)
    scaled = fit(7 * z - 3, labels, np.ones(30, np.float32))[0]
    assert float(scaled) == pytest.approx(float(loss), abs=1e-4)  # scale-free
    single = fit(z, np.zeros(30, labels.dtype), np.ones(30, np.float32))
    assert float(single[0]) == 1.0  # one class: nothing to read
    # running moments: decayed sums; fitted to one batch's moments, the same value as the fit to the batch
    moments = update_moments(empty_moments(5, 4), z, labels, where=np.ones(30, np.float32), decay=0.5)
    assert float(least_squares_adversary_loss(z, labels, num_classes=4, moments=moments)[0]) == pytest.approx(
        float(loss), abs=1e-4)
    twice = update_moments(moments, z[:10], labels[:10], decay=0.5)
    assert float(twice.weight) == 0.5 * 30 + 10
    np.testing.assert_allclose(np.asarray(twice.zz), 0.5 * z.T @ z + z[:10].T @ z[:10], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(twice.zy), 0.5 * z.T @ np.eye(4)[labels] + z[:10].T @ np.eye(4)[labels[:10]],
                               rtol=1e-5, atol=1e-5)


def test_least_squares_adversary_gradient_is_the_envelope_gradient():
    """Stopping the gradient at the fitted weights gives exactly the gradient of the re-solved minimum."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=20)
    z = jnp.asarray(rng.normal(size=(20, 4)) + np.eye(3)[labels] @ rng.normal(size=(3, 4)), jnp.float32)
    mask = jnp.ones(20)
    ridge = 0.1

    def penalised_minimum(z):  # min_W ||Y - Z W||^2 / n + ridge ||W||^2, differentiated through the solve
        features = (z - z.mean(0)) / z.std(0)
        y = jax.nn.one_hot(labels, 3)
        y = y - y.mean(0)
        w = jnp.linalg.solve(features.T @ features / 20 + ridge * jnp.eye(4), features.T @ y / 20)
        return (jnp.sum((y - features @ w) ** 2) / 20 + ridge * jnp.sum(w**2)) * 20 / jnp.sum(y**2)

    got = jax.jit(jax.grad(
        lambda z: least_squares_adversary_loss(z, labels, where=mask, num_classes=3, ridge=ridge)[0]))(z)
    want = jax.jit(jax.grad(penalised_minimum))(z)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------------------------------- the model


def test_registry_and_config_file():
    assert isinstance(get_approach("disentangled"), Disentangled)
    config = load_config("configs/approach_c.py", ["--config.model.loss.lambda_adv=0"])
    assert config.model.name == "disentangled" and config.model.loss.lambda_adv == 0.0
    assert set(config.keys()) == set(load_config("configs/baseline.py").keys())
    assert config.experiment.hypothesis
    Disentangled().check_config(config)


@pytest.mark.parametrize("head", ["ranking", "mse"])
def test_model_shapes(head):
    approach = Disentangled()
    config = tiny_config(loss={**default_model_config().loss, "head": head}, pooling="attention")
    model = approach.build_model(config, 12, nnx.Rngs(params=0, dropout=1))
    model.eval()
    encode = functools.partial(approach.encode, approach.objective(config))  # eager: three input shapes
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 12)), jnp.float32)
    out = encode(model, x)
    assert {k: v.shape for k, v in out.items()} == {"scores": (5, 19), "z_style": (5, 8), "z_piece": (5, 8),
                                                    "hidden": (5, 32)}
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out["z_piece"]), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["z_style"]).mean(1), 0.0, atol=1e-5)  # the parameter-free LayerNorm
    if head == "mse":
        assert ((np.asarray(out["scores"]) > 0) & (np.asarray(out["scores"]) < 1)).all()
    frames = encode(model, x[:, None, :])  # a pooled vector is a one-frame sequence
    np.testing.assert_allclose(np.asarray(frames["scores"]), np.asarray(out["scores"]), rtol=1e-5, atol=1e-6)
    assert encode(model, jnp.ones((3, 7, 12)))["z_style"].shape == (3, 8)


def test_every_term_switches_off_and_the_loss_is_their_weighted_sum():
    table = synthetic_table()
    config = tiny_config(dropout=0.0)
    batch = _batch(table, config)
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))

    def loss_fn(config, transform):
        approach = Disentangled()
        model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))
        objective = approach.objective(config)
        return transform(lambda m: approach.loss(objective, m, batch, jnp.int32(60), one), model)

    loss, diagnostics = loss_fn(config, lambda f, m: nnx.jit(f)(m))
    terms = {k: float(v) for k, v in diagnostics.items()}
    weights = {name: config.model.loss[name] for name in LAMBDAS}
    assert set(TERMS.values()) <= set(terms)
    assert float(loss) == pytest.approx(sum(weights[n] * terms[t] for n, t in TERMS.items()), rel=1e-5)
    assert {"adv_accuracy", "adv_lambda", "adv_r2", "rank_accuracy", "piece_num_anchors"} <= set(terms)
    for name, term in TERMS.items():
        off = config.copy_and_resolve_references()
        off.model.loss[name] = 0.0
        _, off_terms = loss_fn(off, nnx.eval_shape)  # traced, not compiled: which terms the loss computes
        assert set(off_terms) == set(terms) - {key for key in terms if _belongs(key, term)}, name
    nothing = config.copy_and_resolve_references()
    for name in LAMBDAS:
        nothing.model.loss[name] = 0.0
    loss, diagnostics = loss_fn(nothing, lambda f, m: f(m))
    assert float(loss) == 0.0 and diagnostics == {}


def _belongs(key: str, term: str) -> bool:
    """Whether diagnostic ``key`` is reported by the term whose value is ``term`` (e.g. "adv_loss")."""
    if term == "head_loss":
        return key == term or key.startswith("rank_")
    return key.startswith(term.split("_")[0] + "_")


def _grads(approach, objective, model, batch, step, mesh):
    return nnx.jit(nnx.grad(lambda m: approach.loss(objective, m, batch, step, mesh)[0]))(model)


def _flat(tree, prefix):
    return {"/".join(map(str, path)): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(tree, nnx.Param))[prefix])[0]}


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_adversary_reaches_the_style_encoder_reversed(kind):
    """Only the adversarial term on, constant lambda 0.5: the style encoder's gradient is -0.5 times the gradient of
    the adversary's own loss, the piece encoder gets none, a trained adversary's parameters get it unreversed."""
    table = synthetic_table()
    config = tiny_config(dropout=0.0, adversary={**default_model_config().adversary, "kind": kind,
                                                 "schedule": "constant", "scale": 0.5, "hidden_dim": 16})
    for name in LAMBDAS:
        config.model.loss[name] = 0.0
    config.model.loss.lambda_adv = 2.0
    batch = _batch(table, config)
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    approach = Disentangled()
    model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))
    grads = _grads(approach, approach.objective(config), model, batch, jnp.int32(3), one)

    def plain(model):  # the same adversarial loss without the reversal layer
        z_style = model(jnp.asarray(batch["x"])).z_style
        if kind == "linear":  # fitted to the moments of this batch (the first of the window)
            moments = update_moments(empty_moments(8, 64), z_style, batch["composition"], where=batch["mask"],
                                     decay=0.9)
            return 2.0 * least_squares_adversary_loss(z_style, batch["composition"], where=batch["mask"],
                                                      num_classes=64, moments=moments)[0]
        return 2.0 * masked_cross_entropy(model.adversary(z_style), batch["composition"], where=batch["mask"])[0]

    want = nnx.jit(nnx.grad(plain))(model)
    got_style, want_style = _flat(grads, "style"), _flat(want, "style")
    assert any(np.abs(v).max() > 1e-6 for v in want_style.values())
    for path in want_style:
        np.testing.assert_allclose(got_style[path], -0.5 * want_style[path], rtol=1e-4, atol=1e-7, err_msg=path)
    assert all(np.abs(v).max() == 0 for v in _flat(grads, "piece").values())
    if kind == "mlp":
        for path, value in _flat(want, "adversary").items():
            np.testing.assert_allclose(_flat(grads, "adversary")[path], value, rtol=1e-5, atol=1e-8)


def test_reversal_strength_follows_the_dann_schedule_over_train_steps():
    table, config = synthetic_table(), tiny_config(num_steps=100)
    batch = _batch(table, config)
    one = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    approach = Disentangled()
    model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))
    objective = approach.objective(config)
    lam = nnx.jit(lambda m, s: approach.loss(objective, m, batch, s, one)[1]["adv_lambda"])
    assert float(lam(model, jnp.int32(0))) == 0.0
    assert float(lam(model, jnp.int32(50))) == pytest.approx(2 / (1 + np.exp(-5)) - 1, rel=1e-5)
    assert float(lam(model, jnp.int32(100))) == pytest.approx(0.99991, abs=1e-5)


def test_config_and_sampler_refusals():
    approach = Disentangled()
    bad_batch = {"x": jnp.zeros((6, 16)), "mask": jnp.ones(6)}
    with pytest.raises(ValueError, match="not whole groups"):
        approach.loss(approach.objective(tiny_config()), lambda x: x, bad_batch, 0, None)
    for section, field, value in [("loss", "head", "hinge"), ("loss", "lambda_adv", -1.0),
                                  ("adversary", "kind", "forest"), ("piece", "objective", "triplet"),
                                  ("adversary", "schedule", "linear"), ("style", "kind", "vicreg"),
                                  ("adversary", "window", -1.0)]:
        config = tiny_config()
        config.model[section][field] = value
        with pytest.raises(ConfigError, match=field):
            approach.check_config(config)
    table = synthetic_table()  # 4 compositions
    config = tiny_config(adversary={**default_model_config().adversary, "num_classes": 3})
    with pytest.raises(ConfigError, match="num_classes"):
        approach.sampler(table, config, 0)
    config.model.loss.lambda_adv = 0.0  # no classifier of compositions in use: accepted
    assert next(iter(approach.sampler(table, config, 0))).rows.shape == (16,)
    config.model.piece.objective = "classifier"
    with pytest.raises(ConfigError, match="num_classes"):
        approach.sampler(table, config, 0)


# ----------------------------------------------------------------------------------------------------- 8 devices = 1


def test_sharded_step_matches_one_device():
    """Every term on (InfoNCE sharded over the 8 devices, the re-fit adversary, dropout on) and padding rows."""
    assert jax.device_count() == 8
    table = synthetic_table()
    config = tiny_config(batch_size=32)
    batch = _batch(table, config)
    batch["mask"][-3:], batch["group"][-3:], batch["composition"][-3:] = 0.0, -1, -1

    def loss_and_grads(mesh):
        approach = Disentangled()
        model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))
        graphdef, state = nnx.split(model)
        objective = approach.objective(config)

        @jax.jit
        def step(state, batch):
            return nnx.value_and_grad(lambda m: approach.loss(objective, m, batch, jnp.int32(70), mesh),
                                      has_aux=True)(nnx.merge(graphdef, state))

        (loss, diagnostics), grads = step(distributed.replicate(state, mesh), distributed.shard_batch(batch, mesh))
        return float(loss), float(diagnostics["piece_loss"]), jax.tree.map(np.asarray, nnx.state(grads, nnx.Param))

    one_loss, one_piece, one_grads = loss_and_grads(Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    eight_loss, eight_piece, eight_grads = loss_and_grads(distributed.make_mesh())
    assert eight_loss == pytest.approx(one_loss, rel=1e-5) and eight_piece == pytest.approx(one_piece, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), eight_grads, one_grads)


# ----------------------------------------------------------------------------------------------------- planted data


def planted_table(compositions: int = 6, groups: int = 4, performers: int = 6, seed: int = 0) -> EmbeddingTable:
    """Separately planted factors, mixed by a random rotation of the input.

    Each composition has a piece factor (4 dims, plus a small offset per group); each performance a style factor
    (4 dims) that alone decides the within-group order of the labels; 16 dims of noise. The input is a random
    rotation of [piece, style, noise], so every input dimension carries both factors and an encoder reading the
    input for the style picks up the piece unless something takes it out. The labels also move with the piece
    (between-group offsets, as real label means do), which a within-group ranking ignores.
    """
    rng = np.random.default_rng(seed)
    piece = 1.5 * rng.normal(size=(compositions, 4))
    style_weights, piece_weights = rng.normal(size=(4, 19)), rng.normal(size=(4, 19))
    rotation = np.linalg.qr(rng.normal(size=(24, 24)))[0]
    keys, comps, group_ids, perfs, x, y = [], [], [], [], [], []
    for c in range(compositions):
        for g in range(groups):
            group_piece = piece[c] + 0.3 * rng.normal(size=4)
            for p in range(performers):
                style = rng.normal(size=4)
                x.append(rotation @ np.concatenate([group_piece, style, 0.3 * rng.normal(size=16)]))
                y.append(1 / (1 + np.exp(-(style @ style_weights + group_piece @ piece_weights) / 2)))
                keys.append(f"C{c}_8bars_{p}_{g}")
                comps.append(f"C{c}")
                group_ids.append(f"C{c}_8bars_{g}")
                perfs.append(str(p))
    n = len(keys)
    return EmbeddingTable(
        keys=np.array(keys), compositions=np.array(comps), pieces=np.array([c + "_8bars" for c in comps]),
        performers=np.array(perfs), groups=np.array(group_ids), renders=np.array(["r"] * n),
        label_mean=np.array(y, np.float32), label_std=np.full((n, 19), 0.1, np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * n,
        pooled=np.array(x, np.float32), frames=None, encoder="planted", frame_rate=0.0)


def train_and_encode(config: ml_collections.ConfigDict, table: EmbeddingTable) -> tuple[dict[str, np.ndarray], dict]:
    """The training core's jitted step (on-device gather included) for train.num_steps; then every row encoded,
    and the model state as a dict."""
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    functions = model_functions(Disentangled(), config, table.pooled.shape[1], mesh)
    state = functions.init(0)
    steps = build_train_step(functions, optax.adam(config.train.learning_rate), mesh)
    opt_state = steps.init_optimizer(state)
    mean, std = table.pooled.mean(0), table.pooled.std(0)
    device_table = place_table(host_table(table, mean, std, 0), mesh)
    sampler = functions.approach.sampler(table, config, 0)
    for step in range(config.train.num_steps):
        state, opt_state, _ = steps.step(state, opt_state, device_table, place_plan(next(sampler), mesh),
                                         np.int32(step))
    return functions.encode(state, ((table.pooled - mean) / std).astype(np.float32)), nnx.to_pure_dict(state)


def probe(embedding: np.ndarray, table: EmbeddingTable) -> float:
    split = group_holdout_split(table.groups, table.compositions)
    return composition_probe(embedding[split.train], table.compositions[split.train], embedding[split.eval],
                             table.compositions[split.eval], groups_train=table.groups[split.train]).accuracy


def test_the_adversary_takes_the_piece_out_of_z_style_and_z_piece_keeps_it():
    """6 compositions x 4 groups x 6 performers; the probes are scored on held-out groups (chance 1/6). Only the
    adversary differs between the two runs (the spread term, which also removes between-group variance, is off).
    Batches of 32 rows and a 32-wide z_style: a linear adversary fitted to one batch would interpolate it."""
    table = planted_table()
    assert probe(table.pooled, table) > 0.9  # the input names the composition
    config = tiny_config(num_steps=200, batch_size=32, dropout=0.0, piece_dim=16, style_dim=32)
    config.model.loss.lambda_style = config.model.loss.lambda_orth = 0.0
    with_adversary, state = train_and_encode(config, table)
    config.model.loss.lambda_adv = 0.0
    without, _ = train_and_encode(config, table)
    # the adversary's window, 10 x 32 rows: every step's 32 rows, decayed by 1 - 32 / 320 (the step's update is kept)
    assert float(state["moments"]["weight"]) == pytest.approx(32 * (1 - 0.9**200) / (1 - 0.9), rel=1e-4)
    chance = 1 / 6
    style_with, style_without = probe(with_adversary["z_style"], table), probe(without["z_style"], table)
    # observed 0.11 with the adversary, 0.83 without. With it the probe is at chance or below: a composition's mean
    # is taken out of z_style, so the held-out groups of a composition sit opposite its training groups
    # (leave-group-out scores can then fall below chance)
    assert style_with <= chance + 0.1, (style_with, style_without)
    assert style_without >= style_with + 0.35, (style_with, style_without)
    assert probe(with_adversary["z_piece"], table) >= 0.7  # observed 0.99 (the input: 0.97)
