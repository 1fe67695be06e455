"""Approach B (siamese comparator): antisymmetry through the approach, a planted ordering learned by each head, the
pair sampler as a checkpointable `Sampler`, 8 devices = 1, crop-aligned sequence comparison, the trainer end to end."""

import itertools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from _distributed_worker import sampled_batch, synthetic_table
from flax import nnx
from jax.sharding import Mesh
from test_contract import frame_signal_table

from crescend_jax.config import ConfigError, load_config
from crescend_jax.data.groups import within_group_pairs
from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.evaluate.summary import evaluate_predictions
from crescend_jax.models import get_approach
from crescend_jax.models.functions import aligned_crops, evaluation_crops
from crescend_jax.models.pair_sampler import PairBatchSampler
from crescend_jax.models.siamese import Siamese, default_model_config
from crescend_jax.runtime import distributed
from crescend_jax.train.trainer import TrainingError, default_train_config, train

HEADS = ["concat", "bilinear", "cross_attention"]


def tiny_config(comparison: str = "concat", **model_overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": ("Comp0",), "fold_seed": 0})
    config.model = default_model_config()
    config.model.update({"comparison": comparison, "hidden_dim": 32, "embedding_dim": 16, "dropout": 0.0})
    config.model.head.update({"hidden_dim": 32, "rank": 4, "num_heads": 2})
    config.model.sampler.group_size = 4
    if comparison == "cross_attention":
        config.model.update({"input": "frames", "frame_stride": 2})
        config.model.sampler.crop_seconds = 1.0
    config.model.update(model_overrides)
    config.train = default_train_config()
    config.train.update({"batch_size": 16, "num_steps": 30, "eval_every": 15, "log_every": 5, "val_fraction": 0.3,
                         "learning_rate": 3e-3})
    return config


def perturbed(model: nnx.Module, seed: int) -> nnx.Module:
    """Random weights everywhere (zero-initialised biases too), so nothing is antisymmetric by accident."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves), rest)


def inputs(comparison: str, rows: int, seed: int, dim: int = 6, frames: int = 10) -> jax.Array:
    shape = (rows, frames, dim) if comparison == "cross_attention" else (rows, dim)
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_registry_config_file_and_refusals():
    assert isinstance(get_approach("siamese"), Siamese)
    config = load_config("configs/approach_b.py", ["--config.model.comparison=bilinear"])
    assert config.model.name == "siamese" and config.model.comparison == "bilinear"
    assert set(config.keys()) == set(load_config("configs/baseline.py").keys())
    Siamese().check_config(config)
    for field, value, match in [("comparison", "dot", "comparison"), ("loss.kind", "mse", "loss.kind"),
                                ("loss.label_smoothing", 1.0, "label_smoothing"), ("head.rank", 0, "head.rank"),
                                ("sampler.group_size", 3, "multiple"), ("input", "audio", "model.input")]:
        bad = tiny_config()
        *path, name = field.split(".")
        target = bad.model
        for part in path:
            target = target[part]
        target[name] = value
        with pytest.raises(ConfigError, match=match):
            Siamese().check_config(bad)
    pooled_cross = tiny_config("cross_attention", input="pooled")
    with pytest.raises(ConfigError, match=r"--config\.store\.frames=True") as err:
        Siamese().check_config(pooled_cross)
    assert "crescend-jax extract" in str(err.value)


@pytest.mark.parametrize("comparison", HEADS)
def test_compare_is_antisymmetric_through_the_approach(comparison):
    approach = Siamese()
    config = tiny_config(comparison)
    model = perturbed(approach.build_model(config, 6, nnx.Rngs(params=0, dropout=1)), seed=2)
    model.eval()
    graphdef, state = nnx.split(model)
    objective = approach.objective(config)

    @jax.jit
    def run(state, xa, xb):
        model = nnx.merge(graphdef, state)
        a, b = approach.encode(objective, model, xa)["encoding"], approach.encode(objective, model, xb)["encoding"]
        rest = a.shape[1:]
        tile = model.block_logits(a[:4].reshape(1, 4, *rest))  # the tile the loss reads = explicit pairs
        explicit = approach.compare(objective, model, jnp.repeat(a[:4], 4, axis=0),
                                    jnp.tile(a[:4], (4,) + (1,) * len(rest)))
        return a, approach.compare(objective, model, a, b), approach.compare(objective, model, b, a), tile, explicit

    a, forward, backward, tile, explicit = map(np.asarray, run(state, inputs(comparison, 7, seed=3),
                                                              inputs(comparison, 7, seed=4)))
    assert a.shape == ((7, 5, 16) if comparison == "cross_attention" else (7, 16))  # T' = 10 frames // stride 2
    assert forward.shape == (7, 19) and forward.std() > 0.1
    np.testing.assert_allclose(forward, -backward, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-forward)) + 1 / (1 + np.exp(-backward)), 1.0, atol=1e-6)
    np.testing.assert_allclose(tile.reshape(16, 19), explicit, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("comparison", HEADS)
def test_each_head_learns_a_planted_ordering(comparison):
    """4 groups x 6 performances; each dimension's label is a different linear function of the input (its time mean
    for frames): after training on every block, every within-group pair of every dimension is ordered right."""
    rng = np.random.default_rng(0)
    x = inputs(comparison, 24, seed=1, dim=6, frames=4)
    pooled = np.asarray(x).mean(axis=1) if x.ndim == 3 else np.asarray(x)
    labels = pooled @ rng.normal(size=(6, 19))
    approach = Siamese()
    config = tiny_config(comparison, frame_stride=1)
    config.model.sampler.group_size = 6
    config.train.batch_size = 24
    config.model.loss.update({"min_label_gap": 0.0, "agreement_weighting": False})
    model = approach.build_model(config, 6, nnx.Rngs(params=0, dropout=1))
    batch = {"x": x, "label_mean": jnp.asarray(labels, jnp.float32), "label_std": jnp.zeros((24, 19)),
             "mask": jnp.ones(24), "group": jnp.repeat(jnp.arange(4), 6), "composition": jnp.zeros(24, jnp.int32)}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-2)
    objective = approach.objective(config)
    loss = lambda params: approach.loss(objective, nnx.merge(graphdef, params, rest), batch, 0, None)[0]

    @jax.jit
    def fit(params):  # 300 Adam steps in one compiled loop
        def body(_, carry):
            params, opt_state = carry
            updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        return jax.lax.fori_loop(0, 300, body, (params, tx.init(params)))[0]

    model = nnx.merge(graphdef, fit(params), rest)
    model.eval()
    encoding = approach.encode(objective, model, x)["encoding"]
    i, j = within_group_pairs(np.repeat(np.arange(4), 6))
    logits = np.asarray(approach.compare(objective, model, encoding[i], encoding[j]))
    gap = labels[i] - labels[j]
    assert ((logits > 0) == (gap > 0)).mean() == 1.0


def test_pair_batch_sampler_covers_every_pair_and_restores_exactly():
    table = synthetic_table(compositions=2, groups_per_composition=3, performers=6, seed=1)
    table = table.subset(np.flatnonzero(~np.isin(np.arange(len(table)), [1, 2, 3, 4, 5])))  # one group of one
    with pytest.warns(UserWarning, match="1 same-music group"):
        sampler = PairBatchSampler(table, batch_size=12, group_size=4, seed=[0, 1])
    assert sampler.num_singletons == 1
    epoch_blocks = sampler.pairs.blocks_per_epoch  # 5 groups of 6 (3 chunks of 2: 3 blocks each) = 15 blocks
    assert epoch_blocks == 15
    plans = [next(sampler) for _ in range(sampler.pairs.batches_per_epoch)]
    assert all(p.rows.dtype == np.int32 and p.rows.shape == (12,) and p.crop_start is None for p in plans)
    blocks = np.concatenate([p.rows for p in plans]).reshape(-1, 4)[:epoch_blocks]
    seen = {(a, b) for block in blocks for a, b in itertools.permutations(block[block >= 0].tolist(), 2)}
    groups = table.groups
    want = {(a, b) for a in range(len(table)) for b in range(len(table)) if a != b and groups[a] == groups[b]}
    assert seen == want  # both orientations of every same-group pair, nothing across groups, no singleton

    state = json.loads(json.dumps(sampler.state()))
    ahead = [next(sampler).rows for _ in range(7)]
    with pytest.warns(UserWarning):
        restored = PairBatchSampler(table, batch_size=12, group_size=4, seed=[5, 5])
    restored.restore(state)
    for expected in ahead:
        np.testing.assert_array_equal(next(restored).rows, expected)

    frames = frame_signal_table()
    crops = PairBatchSampler(frames, batch_size=8, group_size=4, seed=0, crop_frames=10)
    plan = next(crops)
    lengths = np.array([f.shape[1] for f in frames.frames])
    real = plan.rows >= 0
    assert (plan.crop_start[real] <= lengths[plan.rows[real]] - 10).all() and (plan.crop_start[~real] == 0).all()


def test_sharded_step_matches_one_device():
    assert jax.device_count() == 8
    config = tiny_config(batch_size=32)
    config.train.batch_size = 32
    config.model.dropout = 0.2  # dropout on: the masks must agree too
    batch = sampled_batch(Siamese(), synthetic_table(), config)
    batch.pop("row")
    batch["mask"][-3:] = 0.0  # padding rows must be ignored identically

    def loss_and_grads(mesh):
        approach = Siamese()
        model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, batch):
            return nnx.value_and_grad(lambda m: approach.loss(approach.objective(config), m, batch, 0, mesh),
                                      has_aux=True)(
                nnx.merge(graphdef, state))

        (loss, _), grads = step(distributed.replicate(state, mesh), distributed.shard_batch(batch, mesh))
        return float(loss), jax.tree.map(np.asarray, nnx.state(grads, nnx.Param))

    one_loss, one_grads = loss_and_grads(Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    eight_loss, eight_grads = loss_and_grads(distributed.make_mesh())
    np.testing.assert_allclose(eight_loss, one_loss, rtol=1e-5)  # sharded sums add in another order
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), eight_grads, one_grads)


def test_aligned_crops_pair_proportional_positions_in_either_order():
    owner = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])  # rows with 3, 2 and 5 crops
    pair, crop_a, crop_b = aligned_crops(owner, np.array([0, 2, 0]), np.array([1, 1, 2]), 3)
    np.testing.assert_array_equal(pair, [0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(crop_a, [0, 2, 6, 8, 0, 1, 2])  # crops 0, 2 of 3 and 1, 3 of 5 for C = 2
    np.testing.assert_array_equal(crop_b, [3, 4, 3, 4, 5, 7, 9])  # crops 0, 2, 4 of 5 for C = 3
    swapped = aligned_crops(owner, np.array([1, 1, 2]), np.array([0, 2, 0]), 3)
    np.testing.assert_array_equal(swapped[1], crop_b)
    np.testing.assert_array_equal(swapped[2], crop_a)


def test_cross_attention_trains_on_the_passages_it_is_evaluated_on():
    """Two performances of one passage, the second twice as slow (each frame twice), feature 0 = the fraction of the
    track: the evaluation compares crops whose centres sit at nearly the same fraction of both tracks, and the
    cross_attention head trains on crops drawn that way too (one fraction per block), whereas the vector heads'
    independent crops land anywhere."""
    crop = 10  # 1 s at 10 frames/s
    fast = np.stack([np.arange(100) / 100, np.zeros(100)], axis=1).astype(np.float32)
    table = synthetic_table(compositions=1, groups_per_composition=1, performers=2, dim=2)
    table.frames, table.frame_rate = [fast[None], np.repeat(fast, 2, axis=0)[None]], 10.0
    centre = lambda row, start: table.frames[row][0, start + crop // 2, 0]

    starts = [evaluation_crops(f.shape[1], crop) for f in table.frames]
    owner = np.repeat([0, 1], [len(s) for s in starts])
    _, crop_a, crop_b = aligned_crops(owner, np.array([0]), np.array([1]), 2)
    flat = np.concatenate(starts)
    evaluated = np.abs(centre(0, flat[crop_a]) - centre(1, flat[crop_b]))
    assert evaluated.max() <= crop / 2 / 100

    def trained(config):
        sampler = Siamese().sampler(table, config, 0)
        gaps = []
        for plan in itertools.islice(sampler, 50):
            for block_rows, block_starts in zip(plan.rows.reshape(-1, 4), plan.crop_start.reshape(-1, 4)):
                real = block_rows >= 0
                (a, b), (start_a, start_b) = block_rows[real], block_starts[real]
                gaps.append(abs(centre(a, start_a) - centre(b, start_b)))
        return np.array(gaps)

    assert trained(tiny_config("cross_attention")).max() <= crop / 2 / 100  # as evaluated
    assert trained(tiny_config("concat", input="frames")).max() > 0.3  # pooled vectors: any crops


def heldout_accuracy(config, table, workdir):
    train(config, workdir, table=table)
    held = predict_heldout(workdir, table=table)
    assert held.predictions.kind == "comparator" and held.predictions.embeddings["hidden"].ndim == 2
    i, j, p = held.predictions.pairs
    assert np.isfinite(p).all() and len(i) == len(within_group_pairs(held.table.groups)[0])
    metrics = evaluate_predictions(held.table, held.predictions, held.fold, ceiling_splits=2)
    return metrics["pooled"]["pairwise_accuracy"]["mean"]


def test_train_and_evaluate_concat_on_pooled_vectors(tmp_path):
    config = tiny_config("concat")
    config.train.update({"num_steps": 100, "eval_every": 100, "learning_rate": 1e-2})
    assert heldout_accuracy(config, synthetic_table(groups_per_composition=6, performers=8), tmp_path) > 0.72


def test_train_and_evaluate_cross_attention_on_frames(tmp_path):
    table = frame_signal_table()
    assert np.ptp(table.pooled[:, 1]) < 1e-6  # only the frames tell performances apart
    config = tiny_config("cross_attention")
    config.train.update({"num_steps": 150, "eval_every": 150, "learning_rate": 3e-3})
    assert heldout_accuracy(config, table, tmp_path) > 0.85

    no_frames = frame_signal_table()
    no_frames.frames = None
    with pytest.raises(TrainingError, match=r"--config\.store\.frames=True") as err:
        train(config, tmp_path / "no_frames", table=no_frames)
    assert "crescend-jax extract" in str(err.value) and not (tmp_path / "no_frames").exists()
