"""Devices, the data-parallel mesh and multi-process start-up.

One process per host. Each process builds the same global batch (same seed) and feeds only its own slice of
rows; `jax.make_array_from_process_local_data` assembles the global array sharded over the "data" axis.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from crescend_jax.config import ConfigError

DATA_AXIS = "data"

# Environment variables read when the config leaves the field empty (config wins over env).
ENV_COORDINATOR = "CRESCEND_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "CRESCEND_NUM_PROCESSES"
ENV_PROCESS_ID = "CRESCEND_PROCESS_ID"


def default_distributed_config() -> ml_collections.ConfigDict:
    """The ``config.train.distributed`` section.

    coordinator_address: "host:port" of process 0; empty = single process (or ``$CRESCEND_COORDINATOR_ADDRESS``).
    num_processes: processes in the job; 0 = ``$CRESCEND_NUM_PROCESSES`` (default 1).
    process_id: this process's index; -1 = ``$CRESCEND_PROCESS_ID`` (default 0).
    """
    config = ml_collections.ConfigDict()
    config.coordinator_address = ""
    config.num_processes = 0
    config.process_id = -1
    return config


def initialize_distributed(config: ml_collections.ConfigDict | None) -> bool:
    """Starts ``jax.distributed`` when the config or the environment names a coordinator; True if it did.

    Must run before anything touches a device. On CPU the cross-process collectives use gloo.
    """
    config = config if config is not None else default_distributed_config()
    address = config.get("coordinator_address", "") or os.environ.get(ENV_COORDINATOR, "")
    num_processes = config.get("num_processes", 0) or int(os.environ.get(ENV_NUM_PROCESSES, "1"))
    process_id = config.get("process_id", -1)
    if process_id < 0:
        process_id = int(os.environ.get(ENV_PROCESS_ID, "0"))
    if not address:
        if num_processes > 1:
            raise ConfigError(f"num_processes={num_processes} but no coordinator address: set "
                             f"--config.train.distributed.coordinator_address=host:port or ${ENV_COORDINATOR}")
        return False
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"process_id {process_id} is outside [0, {num_processes}): check "
                         f"--config.train.distributed.process_id / ${ENV_PROCESS_ID}")
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # affects only the CPU backend
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id)
    return True


def make_mesh() -> Mesh:
    """A 1-D mesh of every device of every process, axis "data"."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def process_slice(global_rows: int) -> slice:
    """The rows of a global batch that this process feeds (contiguous, equal shares)."""
    count = jax.process_count()
    if global_rows % count:
        raise ValueError(f"a batch of {global_rows} rows cannot be split over {count} processes")
    share = global_rows // count
    return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host batch (the full global batch, identical on every process) -> global arrays sharded over "data"."""
    sharding = data_sharded(mesh)
    out = {}
    for name, value in batch.items():
        local = value[process_slice(value.shape[0])]
        out[name] = jax.make_array_from_process_local_data(sharding, local, value.shape)
    return out


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host or device pytree -> arrays replicated on every device of the mesh (all processes pass the same values)."""
    sharding = replicated(mesh)

    def put(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x))

    return jax.tree.map(put, tree)


def to_host(x: jax.Array) -> np.ndarray:
    """A (possibly cross-process) global array as one numpy array on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
    """Waits until every process reaches ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
