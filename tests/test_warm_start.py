"""model.init_from: a fold starts from another run's parameters; other shapes or other folds are refused."""

import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config
from flax import nnx

from crescend_jax.config import ConfigError
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.models.functions import model_functions
from crescend_jax.runtime import distributed
from crescend_jax.train.trainer import train
from crescend_jax.train.warm_start import warm_start


def one_fold(**overrides):
    config = tiny_config(num_steps=10, **overrides)
    config.data.test_compositions = ("Comp0",)
    return config


def test_a_warm_start_copies_every_shared_parameter_and_refuses_other_shapes(tmp_path):
    table = synthetic_table()
    train(one_fold(), tmp_path / "source", table=table)
    config = one_fold()
    config.model.init_from = str(tmp_path / "source")
    mesh = distributed.make_mesh()
    functions = model_functions(PointwiseBaseline(), config, 16, mesh)
    fresh = functions.init(0)
    folds = [{"fold": 0, "test_keys": sorted(table.keys[table.compositions == "Comp0"])}]
    state, record = warm_start(fresh, config, 0, folds, mesh)
    assert record["copied"] == ["hidden/bias", "hidden/kernel", "out/bias", "out/kernel"] and not record["fresh"]
    assert not np.allclose(np.asarray(state.filter(nnx.Param)["hidden"]["kernel"].value),
                           np.asarray(fresh.filter(nnx.Param)["hidden"]["kernel"].value))
    records = train(config, tmp_path / "warm", table=table)
    assert records[0]["init_from"]["source_fold"] == 0 and records[0]["init_from"]["source_step"] == 10

    wider = one_fold()
    wider.model.hidden_dim = 48
    wider.model.init_from = str(tmp_path / "source")
    with pytest.raises(ConfigError, match=r"the encoders differ \(hidden/bias: \(32,\) -> \(48,\)"):
        train(wider, tmp_path / "wider", table=table)


def test_a_warm_start_from_other_folds_is_refused(tmp_path):
    table = synthetic_table()
    train(tiny_config(num_steps=10), tmp_path / "two_folds", table=table)  # 2 folds of compositions
    config = one_fold()
    config.model.init_from = str(tmp_path / "two_folds")
    with pytest.raises(ConfigError, match="holds out other folds than this run and has 2 folds"):
        train(config, tmp_path / "run", table=table)
    config.model.init_from = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="has no config.json"):
        train(config, tmp_path / "run2", table=table)
