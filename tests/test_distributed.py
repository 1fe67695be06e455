"""Data parallelism: the sharded step on 8 simulated devices equals 1 device; a 2-process jax.distributed run
trains and agrees with a 1-process run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from _distributed_worker import sampled_batch, synthetic_table, tiny_config, worker_config
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.runtime import distributed
from crescend_jax.train.trainer import train

# Sharded and single-device reductions sum in different orders: float32 agreement to 1e-6 relative (1e-8 absolute).
RTOL, ATOL = 1e-6, 1e-8


def loss_and_grads(mesh: Mesh, batch: dict[str, np.ndarray]):
    approach, config = PointwiseBaseline(), tiny_config()
    model = approach.build_model(config, 16, nnx.Rngs(params=0, dropout=1))  # dropout on: masks must agree too
    graphdef, state = nnx.split(model)
    state = distributed.replicate(state, mesh)

    @jax.jit
    def step(state, batch):
        return nnx.value_and_grad(lambda m: approach.loss(approach.objective(config), m, batch, 0, mesh),
                                  has_aux=True)(nnx.merge(graphdef, state))

    (loss, _), grads = step(state, distributed.shard_batch(batch, mesh))
    return float(loss), jax.tree.map(np.asarray, nnx.state(grads, nnx.Param))


def test_sharded_step_matches_one_device():
    assert jax.device_count() == 8
    config = tiny_config(batch_size=32)
    batch = sampled_batch(PointwiseBaseline(), synthetic_table(), config)
    batch.pop("row")
    batch["mask"][-5:] = 0.0  # padding rows must be ignored identically
    one_loss, one_grads = loss_and_grads(Mesh(np.asarray(jax.devices()[:1]), ("data",)), batch)
    eight_loss, eight_grads = loss_and_grads(distributed.make_mesh(), batch)
    np.testing.assert_allclose(eight_loss, one_loss, rtol=RTOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), eight_grads, one_grads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_agree_with_one(tmp_path):
    worker = Path(__file__).with_name("_distributed_worker.py")
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).parent)}
    procs = [subprocess.Popen([sys.executable, str(worker), str(tmp_path / "two"), str(i), "2", str(port),
                               str(tmp_path / "two.npz")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    two = np.load(tmp_path / "two.npz")
    assert int(two["devices"]) == 4

    train(worker_config(), tmp_path / "one", table=synthetic_table())
    one = predict_heldout(tmp_path / "one", table=synthetic_table())
    np.testing.assert_array_equal(two["keys"], one.table.keys)
    np.testing.assert_allclose(two["scores"], one.scores, rtol=1e-5, atol=1e-6)
