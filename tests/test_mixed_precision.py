"""train.compute_dtype="bfloat16": one step stays close to float32 for every approach, the parameters and optimizer
state stay float32, and training on a small table reaches the float32 run's accuracy within its interval."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _distributed_worker import sampled_batch, synthetic_table, tiny_config

from crescend_jax.config import ConfigError, load_config
from crescend_jax.models import get_approach
from crescend_jax.models.functions import model_functions
from crescend_jax.runtime import distributed
from crescend_jax.train.step import build_train_step

ROOT = Path(__file__).resolve().parents[1]
APPROACHES = {  # config file, overrides that make it small
    "baseline": ("configs/baseline.py", ["--config.model.hidden_dim=64"]),
    "approach_a": ("configs/approach_a.py", ["--config.model.hidden_dim=64"]),
    "approach_b": ("configs/approach_b.py", ["--config.model.hidden_dim=64", "--config.model.embedding_dim=32",
                                             "--config.model.head.hidden_dim=32"]),
    "approach_c": ("configs/approach_c.py", ["--config.model.hidden_dim=64", "--config.model.adversary.num_classes=4"]),
}
# One SGD step from the same parameters on the same batch: bfloat16 keeps 8 bits of mantissa (relative rounding
# 2^-9 per operation), so the loss agrees to about 1% and the gradient's direction to a cosine of >= 0.99 (measured
# 0.9990-0.9999 on these models; a float32 step against itself gives 1.0 exactly).
LOSS_RTOL, GRAD_COSINE = 0.02, 0.99


def one_sgd_step(name: str, dtype: str):
    """(loss, gradient as one float32 vector, the updated state's float dtypes) of one SGD(1) step of ``name``."""
    path, overrides = APPROACHES[name]
    config = load_config(ROOT / path, [*overrides, "--config.train.batch_size=32",
                                       f"--config.train.compute_dtype={dtype}"])
    approach = get_approach(config.model.name)
    table = synthetic_table(compositions=4, groups_per_composition=4, performers=8, dim=48)
    batch = {k: jnp.asarray(v) for k, v in sampled_batch(approach, table, config).items() if k != "row"}
    mesh = distributed.make_mesh()
    functions = model_functions(approach, config, 48, mesh)
    state = functions.init(0)
    steps = build_train_step(functions, optax.sgd(1.0), mesh)
    before = [np.asarray(x, np.float32) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    counts = lambda tree: [int(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.unsignedinteger)]
    counts_before = counts(state)  # read before the update donates the state
    new_state, opt_state, metrics = steps.update(state, steps.init_optimizer(state), batch, np.int32(0))
    after = [x for x in jax.tree.leaves(new_state) if jnp.issubdtype(x.dtype, jnp.floating)]
    grad = np.concatenate([(b - np.asarray(a, np.float32)).ravel() for a, b in zip(after, before)])
    dtypes = {str(x.dtype) for x in after} | {str(x.dtype) for x in jax.tree.leaves(opt_state)
                                              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert counts(new_state) != counts_before or not counts_before  # the dropout streams advanced
    return float(metrics["loss"]), grad, dtypes, counts(new_state)


@pytest.mark.parametrize("name", list(APPROACHES))
def test_one_bfloat16_step_stays_close_to_float32(name):
    loss32, grad32, _, counts32 = one_sgd_step(name, "float32")
    loss16, grad16, dtypes, counts16 = one_sgd_step(name, "bfloat16")
    assert dtypes == {"float32"}  # parameters and optimizer state stay float32
    assert counts16 == counts32  # the same dropout stream, advanced alike
    assert np.isfinite(loss16) and loss16 == pytest.approx(loss32, rel=LOSS_RTOL)
    cosine = grad16 @ grad32 / (np.linalg.norm(grad16) * np.linalg.norm(grad32))
    assert np.linalg.norm(grad32) > 0 and cosine >= GRAD_COSINE, cosine
    assert not np.array_equal(grad16, grad32)  # the bfloat16 step did compute in bfloat16


def test_an_unknown_compute_dtype_is_refused():
    config = tiny_config(compute_dtype="float16")
    with pytest.raises(ConfigError, match="train.compute_dtype"):
        model_functions(get_approach(config.model.name), config, 16, distributed.make_mesh())


def heldout_outcomes(workdir, table) -> tuple[np.ndarray, np.ndarray]:
    """(correct [pairs * 19] of every held-out same-group pair and dimension, its group index)."""
    from crescend_jax.evaluate.metrics import pair_outcomes
    from crescend_jax.evaluate.predict import predict_heldout

    heldout = predict_heldout(workdir, table=table)
    outcomes = pair_outcomes(heldout.scores, heldout.table.label_mean, heldout.table.groups)
    correct = outcomes.correct.ravel()
    group = np.repeat(outcomes.group, outcomes.correct.shape[1])
    keep = np.isfinite(correct)
    return correct[keep], group[keep]


def test_bfloat16_training_reaches_the_float32_accuracy_within_its_interval(tmp_path):
    """Approach A (MLP, dropout, InfoNCE and ranking terms) trained on a small synthetic table whose labels are a
    smooth function of the inputs, once per compute dtype from the same seed: the bfloat16 run's held-out pairwise
    accuracy lies in the float32 run's 95% interval (bootstrap over the held-out groups), and both learned (the
    float32 interval is above chance)."""
    from crescend_jax.models.contrastive import default_model_config
    from crescend_jax.train.trainer import train

    table = synthetic_table(compositions=6, groups_per_composition=4, performers=6, dim=16)
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_config(num_steps=60, batch_size=24, compute_dtype=dtype)
        config.data.test_compositions = ("Comp0", "Comp1")
        config.model = default_model_config()
        config.model.hidden_dim, config.model.projection_dim, config.model.dropout = 32, 16, 0.1
        train(config, tmp_path / dtype, table=table)
        results[dtype] = heldout_outcomes(tmp_path / dtype, table)
    correct, group = results["float32"]
    groups = np.unique(group)
    sums = np.array([correct[group == g].sum() for g in groups])
    counts = np.array([(group == g).sum() for g in groups])
    draws = np.random.default_rng(0).integers(0, len(groups), size=(2000, len(groups)))
    low, high = np.quantile(sums[draws].sum(axis=1) / counts[draws].sum(axis=1), [0.025, 0.975])
    accuracy16 = results["bfloat16"][0].mean()
    assert low > 0.5, (low, high)  # float32 learned the order
    assert low <= accuracy16 <= high, (accuracy16, low, high)
