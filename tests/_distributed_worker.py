"""Test helpers: a synthetic EmbeddingTable and a tiny config; run as a script, one process of a jax.distributed
training job (``python tests/_distributed_worker.py WORKDIR PROCESS_ID NUM_PROCESSES PORT OUT.npz``)."""

from __future__ import annotations

import sys

import ml_collections
import numpy as np

from crescend_jax.data.table import EmbeddingTable


def synthetic_table(compositions: int = 4, groups_per_composition: int = 3, performers: int = 4, dim: int = 16,
                    seed: int = 0) -> EmbeddingTable:
    """Labels are a fixed smooth function of the embeddings, so a model can learn the within-group order."""
    rng = np.random.default_rng(seed)
    keys, comps, groups, perfs = [], [], [], []
    for c in range(compositions):
        for g in range(groups_per_composition):
            for p in range(performers):
                keys.append(f"Comp{c}_8bars_{p}_{g}")
                comps.append(f"Comp{c}")
                groups.append(f"Comp{c}_8bars_{g}")
                perfs.append(str(p))
    n = len(keys)
    pooled = rng.normal(size=(n, dim)).astype(np.float32)
    weights = rng.normal(size=(dim, 19)).astype(np.float32) / np.sqrt(dim)
    label_mean = (1.0 / (1.0 + np.exp(-pooled @ weights))).astype(np.float32)
    return EmbeddingTable(
        keys=np.array(keys), compositions=np.array(comps), pieces=np.array([f"{c}_8bars" for c in comps]),
        performers=np.array(perfs), groups=np.array(groups), renders=np.array(["fluidr3"] * n),
        label_mean=label_mean, label_std=np.full((n, 19), 0.1, np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * n,
        pooled=pooled, frames=None, encoder="synthetic", frame_rate=0.0)


def sampled_batch(approach, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int = 0,
                  index: int = 0) -> dict[str, np.ndarray]:
    """Batch number ``index`` of ``approach``'s sampler on ``table``, gathered like the trainer does (host numpy,
    unstandardised inputs), plus "row"."""
    import jax

    from crescend_jax.models.contract import crop_frames
    from crescend_jax.train.input_pipeline import gather, host_table

    sampler = approach.sampler(table, config, seed)
    for _ in range(index):
        next(sampler)
    plan = next(sampler)
    width = table.pooled.shape[1]
    device = host_table(table, np.zeros(width, np.float32), np.ones(width, np.float32),
                        crop_frames(config, table.frame_rate))
    arrays = {"rows": plan.rows} if plan.crop_start is None else {"rows": plan.rows, "crop_start": plan.crop_start}
    batch = {k: np.array(v) for k, v in jax.device_get(gather(device, arrays)).items()}
    batch["row"] = plan.rows
    return batch


def tiny_config(**train_overrides) -> ml_collections.ConfigDict:
    """configs/baseline.py's model and train sections, made small; folds = 2 groups of compositions."""
    from crescend_jax.models.baseline import default_model_config
    from crescend_jax.train.trainer import default_train_config

    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"num_folds": 2, "test_compositions": (), "fold_seed": 0})
    config.model = default_model_config()
    config.model.hidden_dim = 32
    config.train = default_train_config()
    config.train.batch_size = 8
    config.train.num_steps = 40
    config.train.eval_every = 10
    config.train.log_every = 5
    config.train.val_fraction = 0.3  # 3 training compositions in a one-fold run: one of them validates
    config.train.learning_rate = 1e-2
    config.train.update(train_overrides)
    return config


def worker_config() -> ml_collections.ConfigDict:
    """The run each distributed worker makes (one fold, 20 steps)."""
    config = tiny_config(num_steps=20)
    config.data.test_compositions = ("Comp0",)
    return config


def main(workdir: str, process_id: int, num_processes: int, port: int, out: str) -> None:
    import jax

    config = worker_config()
    config.train.distributed.coordinator_address = f"localhost:{port}"
    config.train.distributed.num_processes = num_processes
    config.train.distributed.process_id = process_id
    from crescend_jax.evaluate.predict import predict_heldout
    from crescend_jax.train.trainer import train

    train(config, workdir, table=synthetic_table())
    assert jax.process_count() == num_processes, jax.process_count()
    predictions = predict_heldout(workdir, table=synthetic_table())  # collective: every process calls it
    if process_id == 0:
        np.savez(out, scores=predictions.scores, keys=predictions.table.keys, devices=jax.device_count())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
