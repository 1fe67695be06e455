"""Ranking on derived targets: one head per target (A and B), joint training (both heads move; mixing weight 0 leaves
the derived heads' gradient at exactly zero; fixed corpus shares per batch), and held-out ASAP work evaluation
(per-target accuracy, probes, retrieval; a joint run reports PercePiano's ratings and pairs with PercePiano runs)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config
from flax import nnx

from crescend_jax.config import ConfigError
from crescend_jax.data.dimensions import DIMENSIONS
from crescend_jax.data.fingerprint import FingerprintMismatch
from crescend_jax.data.joint import default_joint_data_config, joint_table
from crescend_jax.data.performance_labels import DERIVED_LABELS
from crescend_jax.data.run_table import run_table
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate.run import evaluate_workdir
from crescend_jax.models import contrastive, siamese
from crescend_jax.models.corpus_mix import CorpusMixSampler, corpus_slots
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.train.input_pipeline import gather, host_table
from crescend_jax.train.trainer import train

K = len(DERIVED_LABELS)


def asap_like(works: int = 6, windows: int = 3, performers: int = 4, dim: int = 16, seed: int = 1) -> EmbeddingTable:
    """Windows of ``works`` one-folder works; derived labels = a piece offset + a linear function of the inputs, so
    the group-relative targets are learnable from the inputs and the raw labels are dominated by the piece."""
    rng = np.random.default_rng(seed)
    keys, comps, groups, perfs, works_ = [], [], [], [], []
    for w in range(works):
        for k in range(windows):
            for p in range(performers):
                group = f"Asap{w}/f__4bars__w{k:03d}"
                keys.append(f"{group}__P{p}")
                comps.append(f"Asap{w}/f")
                groups.append(group)
                perfs.append(f"P{p}")
                works_.append(f"Composer/Work{w}")
    n = len(keys)
    pooled = rng.normal(size=(n, dim)).astype(np.float32)
    weights = rng.normal(size=(dim, K)).astype(np.float32)
    offsets = np.repeat(rng.normal(size=(works, K)) * 20, windows * performers, axis=0)
    derived = (pooled @ weights + offsets).astype(np.float32)
    derived[:, 0] = np.exp(derived[:, 0] / 40) * 100  # tempo: positive bpm
    return EmbeddingTable(
        keys=np.array(keys), compositions=np.array(comps), pieces=np.array(comps), performers=np.array(perfs),
        groups=np.array(groups), renders=np.array(["fluidr3"] * n), label_mean=np.full((n, 19), np.nan, np.float32),
        label_std=np.full((n, 19), np.nan, np.float32), label_truth=np.full((n, 19), np.nan, np.float32),
        ratings=[np.zeros((0, 19), np.float32)] * n, pooled=pooled, frames=None, encoder="synthetic",
        frame_rate=0.0, works=np.array(works_), derived=derived, derived_names=DERIVED_LABELS,
        in_percepiano=np.zeros(n, bool))


def asap_section(**fields) -> ml_collections.ConfigDict:
    section = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": (), "fold_seed": 0, "split_level": "work",
                                         "exclude_compositions": (), "test_fraction": 0.34, "targets": "derived",
                                         "target_transform": "pooled", "derived_labels": ()})
    section.update(fields)
    return section


def with_model(config, approach: str):
    if approach == "a":
        config.model = contrastive.default_model_config()
        config.model.hidden_dim, config.model.projection_dim, config.model.dropout = 32, 16, 0.0
        config.model.loss.lambda_piece = 0.5
    else:
        config.model = siamese.default_model_config()
        config.model.hidden_dim, config.model.embedding_dim, config.model.dropout = 32, 16, 0.0
        config.model.sampler.group_size = 4
    config.train.batch_size = 16
    return config


def asap_config(approach: str = "a", **train_overrides):
    config = with_model(tiny_config(**train_overrides), approach)
    config.corpus = "asap"
    config.data = asap_section()
    config.eval = ml_collections.ConfigDict({"bootstrap_replicates": 50, "disentanglement": False})
    return config


def joint_config(**train_overrides):
    config = with_model(tiny_config(**train_overrides), "a")
    config.corpus = "joint"
    percepiano = ml_collections.ConfigDict({"num_folds": 2, "test_compositions": (), "fold_seed": 0,
                                            "split_level": "composition", "exclude_compositions": ()})
    config.data = default_joint_data_config({"percepiano": percepiano,
                                             "asap": asap_section(targets="ratings", test_fraction=0.34)})
    config.eval = ml_collections.ConfigDict({"bootstrap_replicates": 50, "disentanglement": False})
    return config


def batch_of(plan, table, config):
    width = table.pooled.shape[1]
    device = host_table(table, np.zeros(width, np.float32), np.ones(width, np.float32), 0)
    arrays = {"rows": jnp.asarray(plan.rows)}
    return gather(jax.tree.map(jnp.asarray, device), arrays)


def head_gradients(approach, config, table, plan):
    """(loss, gradient of the rank head's kernel [E, T] or of B's head output layer) of one batch."""
    model = approach.build_model(config, table.pooled.shape[1], nnx.Rngs(0))
    objective = approach.objective(config)
    batch = batch_of(plan, table, config)

    def loss_fn(m):
        return approach.loss(objective, m, batch, jnp.int32(0), None)[0]

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    return loss, grads


@pytest.mark.parametrize("name", ["a", "b"])
def test_one_head_per_derived_target(name):
    config = asap_config(name)
    table = run_table(config, asap_like())
    approach = contrastive.ContrastiveRanking() if name == "a" else siamese.Siamese()
    plan = next(approach.sampler(table, config, 0))
    loss, grads = head_gradients(approach, config, table, plan)
    assert np.isfinite(float(loss)) and float(loss) > 0
    if name == "a":
        kernel = np.asarray(grads["rank_head"]["kernel"][...])
        assert kernel.shape == (16, K) and (np.abs(kernel).sum(axis=0) > 0).all()  # every target's head learns
    else:
        leaves = jax.tree.leaves(nnx.state(grads))
        assert any(np.shape(leaf)[-1:] == (K,) and np.abs(np.asarray(leaf)).sum() > 0 for leaf in leaves)
    baseline = asap_config("a")
    baseline.model = tiny_config().model
    with pytest.raises(ConfigError, match="ranks the 19 ratings only"):
        PointwiseBaseline().check_config(baseline)


def test_joint_batches_hold_fixed_corpus_shares_and_both_heads_learn():
    config = joint_config()
    table = run_table(config, joint_table({"percepiano": synthetic_table(), "asap": asap_like()}))
    assert table.label_names == DIMENSIONS + DERIVED_LABELS
    approach = contrastive.ContrastiveRanking()
    sampler = CorpusMixSampler(approach, table, config, [0, 0])
    plan = next(sampler)
    corpora = table.corpora[plan.rows]
    assert (corpora[:8] == "percepiano").all() and (corpora[8:] == "asap").all()  # 2 slots of 4 each
    sampler.restore(json.loads(json.dumps(sampler.state())))
    assert corpus_slots({"percepiano": 1.0, "asap": 3.0}, 4) == {"percepiano": 1, "asap": 3}
    assert corpus_slots({"percepiano": 1.0, "asap": 100.0}, 4) == {"percepiano": 1, "asap": 3}

    _, grads = head_gradients(approach, config, table, plan)
    kernel = np.abs(np.asarray(grads["rank_head"]["kernel"][...]))
    assert (kernel[:, :19].sum(axis=0) > 0).all() and (kernel[:, 19:].sum(axis=0) > 0).all()
    config.model.loss.derived_weight = 0.0
    _, grads = head_gradients(approach, config, table, plan)
    kernel = np.asarray(grads["rank_head"]["kernel"][...])
    assert (kernel[:, 19:] == 0).all() and np.abs(kernel[:, :19]).sum() > 0  # the ASAP heads get nothing
    assert (np.asarray(grads["rank_head"]["bias"][...])[19:] == 0).all()


def test_one_optimizer_step_on_a_joint_table_moves_both_heads_and_weight_zero_freezes_the_derived_ones():
    import optax

    table = run_table(joint_config(), joint_table({"percepiano": synthetic_table(), "asap": asap_like()}))
    approach = contrastive.ContrastiveRanking()
    for weight in (1.0, 0.0):
        config = joint_config()
        config.model.loss.derived_weight = weight
        plan = next(CorpusMixSampler(approach, table, config, [0, 0]))
        batch = batch_of(plan, table, config)
        model = approach.build_model(config, table.pooled.shape[1], nnx.Rngs(0))
        objective = approach.objective(config)
        before = np.asarray(model.rank_head.kernel[...]).copy()
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        grads = nnx.grad(lambda m: approach.loss(objective, m, batch, jnp.int32(0), None)[0])(model)
        optimizer.update(model, grads)
        change = np.abs(np.asarray(model.rank_head.kernel[...]) - before).sum(axis=0)
        assert (change[:19] > 0).all()  # the ratings' heads learn from PercePiano's slots
        assert ((change[19:] > 0).all() if weight else (change[19:] == 0).all())


def stub_store(monkeypatch, tables):
    import crescend_jax.data.store as store

    monkeypatch.setattr(store, "load_table", lambda config: tables[config.corpus])


def test_held_out_asap_works_are_evaluated_per_derived_target(tmp_path, monkeypatch):
    config = asap_config("a", num_steps=30, eval_every=10)
    table = asap_like(works=8)
    stub_store(monkeypatch, {"asap": table})
    train(config, tmp_path / "run")
    (fold,) = json.loads((tmp_path / "run" / "folds.json").read_text())
    held = np.isin(table.keys, fold["test_keys"])
    assert held.any() and not set(table.works[held]) & set(table.works[~held])  # whole works held out
    done = json.loads((tmp_path / "run" / "fold_0" / "done.json").read_text())
    assert done["examples_per_second"] > 0 and done["peak_rss_bytes"] > 0 and done["measured_steps"] == 29

    metrics = evaluate_workdir(str(tmp_path / "run"))
    assert metrics["dimensions"] == list(DERIVED_LABELS) and metrics["num_rows"] == held.sum()
    block = metrics["derived"]
    assert block["dimensions"] == list(DERIVED_LABELS) and len(block["accuracy"]["per_dimension"]) == K
    assert block["accuracy"]["mean"] == pytest.approx(metrics["pooled"]["pairwise_accuracy"]["mean"])
    assert set(block["retrieval"]) == {"input", "z_piece", "hidden"}
    assert set(block["retrieval"]["input"]) == {"all", "composition"}
    assert set(block["probe"]) == {"input", "z_piece", "hidden"}
    assert block["probe"]["input"]["mean"] > 0.75  # the group-relative targets are linear in the inputs
    assert block["interval"]["mean"]["low"] <= block["accuracy"]["mean"] <= block["interval"]["mean"]["high"]

    # fine-tuning on PercePiano from it: the encoder is copied, the 6 derived heads make way for 19 fresh ones
    finetune = with_model(tiny_config(num_steps=5, eval_every=5), "a")
    finetune.corpus = "percepiano"
    finetune.data.test_compositions = ("Comp0",)
    finetune.model.init_from = str(tmp_path / "run")
    train(finetune, tmp_path / "finetune", table=synthetic_table())
    record = json.loads((tmp_path / "finetune" / "fold_0" / "done.json").read_text())["init_from"]
    assert record["fresh_heads"] == ["rank_head/bias", "rank_head/kernel"]
    assert "piece_head/kernel" in record["copied"] and "rank_head/kernel" not in record["copied"]


def test_a_joint_run_reports_percepianos_ratings_and_asaps_held_out_works(tmp_path, monkeypatch):
    config = joint_config(num_steps=20, eval_every=10)
    percepiano, asap = synthetic_table(), asap_like(works=8)
    stub_store(monkeypatch, {"percepiano": percepiano, "asap": asap})
    train(config, tmp_path / "joint")
    folds = json.loads((tmp_path / "joint" / "folds.json").read_text())
    assert len(folds) == 2
    held_asap = [set(k for k in f["test_keys"] if k in set(asap.keys.tolist())) for f in folds]
    assert held_asap[0] and held_asap[0] == held_asap[1]  # ASAP's held-out works are held out in every fold

    metrics = evaluate_workdir(str(tmp_path / "joint"))
    assert metrics["dimensions"] == list(DIMENSIONS) and metrics["num_rows"] == len(percepiano)
    saved = np.load(tmp_path / "joint" / "heldout.npz")
    assert set(saved["keys"].tolist()) == set(percepiano.keys.tolist()) and saved["scores"].shape[1] == 19
    block = metrics["derived"]
    assert block["num_rows"] == len(held_asap[0]) and block["dimensions"] == list(DERIVED_LABELS)
    assert block["interval"]["unit"] == "work"  # ASAP's own split level

    # paired with a PercePiano-only run of the same folds: compared on the PercePiano rows it shares
    alone = with_model(tiny_config(num_steps=20, eval_every=10), "a")
    alone.corpus = "percepiano"
    alone.data = config.data.percepiano
    train(alone, tmp_path / "alone")
    evaluate_workdir(str(tmp_path / "alone"))
    compared = evaluate_workdir(str(tmp_path / "joint"), baseline=str(tmp_path / "alone"))
    assert compared["versus_baseline"]["mean"]["low"] <= compared["versus_baseline"]["mean"]["high"]
    alone.data.fold_seed, alone.data.num_folds = 1, 3
    train(alone, tmp_path / "other_folds")
    evaluate_workdir(str(tmp_path / "other_folds"))
    with pytest.raises(FingerprintMismatch, match="hold out different folds"):
        evaluate_workdir(str(tmp_path / "joint"), baseline=str(tmp_path / "other_folds"))
