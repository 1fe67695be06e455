"""model.init_from: a fold starts from another run's parameters; other shapes, other folds, a source that trained on
the target's test music are refused; B starts from A's encoder or C's style encoder."""

import json

import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config
from flax import nnx

from crescend_jax.config import ConfigError
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.models.functions import model_functions
from crescend_jax.runtime import distributed
from crescend_jax.train.trainer import train
from crescend_jax.train.warm_start import overlap_with_test_music, warm_start


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
    assert not np.allclose(np.asarray(nnx.filter_state(state, nnx.Param)["hidden"]["kernel"][...]),
                           np.asarray(nnx.filter_state(fresh, nnx.Param)["hidden"]["kernel"][...]))
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


def test_a_source_that_trained_on_the_test_music_is_refused(tmp_path):
    """A single-fold source (pre-training) is checked against each target fold's test music, named in one line."""
    table = synthetic_table()
    source = one_fold()
    source.data.test_compositions = ("Comp3",)  # trains on Comp0-2
    train(source, tmp_path / "source", table=table)
    folds = json.loads((tmp_path / "source" / "folds.json").read_text())
    assert folds[0]["train_compositions"] == ["Comp0", "Comp1", "Comp2"] and folds[0]["test_works"] == ["Comp3"]
    target = one_fold()  # tests Comp0
    target.model.init_from = str(tmp_path / "source")
    with pytest.raises(ConfigError, match=r"^model.init_from=\S+source \(fold 0\) trained on music that fold 0 of "
                                          r"this run tests: composition Comp0; hold it out"):
        train(target, tmp_path / "leak", table=table)
    two_folds = tiny_config(num_steps=10)  # folds of two compositions each: both test music the source trained on
    two_folds.model.init_from = str(tmp_path / "source")
    with pytest.raises(ConfigError, match="composition Comp"):
        train(two_folds, tmp_path / "leak2", table=table)
    clean = one_fold()
    clean.data.test_compositions = ("Comp3",)
    clean.model.init_from = str(tmp_path / "source")
    assert train(clean, tmp_path / "clean", table=table)[0]["init_from"]["source_fold"] == 0

    del folds[0]["train_compositions"]  # a source made before folds.json listed its training music
    (tmp_path / "source" / "folds.json").write_text(json.dumps(folds))
    target.data.test_compositions = ("Comp2",)
    with pytest.raises(ConfigError, match="does not list what fold 0 trained on"):
        train(target, tmp_path / "unknown", table=table)


def test_test_music_is_compared_across_asap_and_percepiano_by_catalogue():
    asap = {"train_compositions": ["Schubert/Impromptu_op142/3", "Bach/Fugue/bwv_848"]}
    overlap = overlap_with_test_music(asap, "asap", {"test_compositions": ["Schubert_D935_no.3"]}, "percepiano",
                                 "composition")
    assert overlap == ["Schubert/Impromptu_op142/3 (ASAP) may be Schubert_D935_no.3 (PercePiano)"]
    assert not overlap_with_test_music(asap, "asap", {"test_compositions": ["Schubert_D935_no.2"]}, "percepiano",
                                  "composition")
    works = {"train_compositions": ["Beethoven_WoO80_var2"], "train_works": ["Beethoven_WoO80"]}
    tested = {"test_compositions": ["Beethoven_WoO80_var1"], "test_works": ["Beethoven_WoO80"]}
    assert not overlap_with_test_music(works, "percepiano", tested, "percepiano", "composition")
    assert overlap_with_test_music(works, "percepiano", tested, "percepiano", "work") == ["work Beethoven_WoO80"]


def test_b_starts_from_a_encoder_and_from_c_style_encoder(tmp_path):
    """The combined sweep's warm starts: A's encoder and C's style/ encoder share B's parameter paths."""
    from crescend_jax.models import contrastive, disentangled, siamese

    table = synthetic_table()
    sources = {"a": contrastive.default_model_config(), "c": disentangled.default_model_config()}
    sources["a"].update(hidden_dim=32, projection_dim=8)
    sources["c"].update(hidden_dim=32, style_dim=8, piece_dim=8)
    for name, model in sources.items():
        config = one_fold(batch_size=16)
        config.model = model
        train(config, tmp_path / name, table=table)
    for name, prefix in (("a", ""), ("c", "style/")):
        config = one_fold(batch_size=16)
        config.model = siamese.default_model_config()
        config.model.update(hidden_dim=32, embedding_dim=8, init_from=str(tmp_path / name), init_from_prefix=prefix,
                            normalize_embeddings=name == "c")
        config.model.sampler.group_size = 4
        (record,) = train(config, tmp_path / f"b_from_{name}", table=table)
        copied = record["init_from"]["copied"]
        assert {"mlp/linears/0/kernel", "mlp/linears/1/kernel", "mlp/norms/1/scale", "projection/kernel"} <= set(
            copied), name
        assert not any(path.startswith("head/") for path in copied) and record["init_from"]["source_prefix"] == prefix
