"""The trainer: kill-and-resume equals an uninterrupted run, metrics files, and every bad input it must refuse."""

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _distributed_worker import synthetic_table, tiny_config

from crescend_jax import cli
from crescend_jax.config import ConfigError
from crescend_jax.data.fingerprint import FingerprintMismatch
from crescend_jax.data.splits import SplitError
from crescend_jax.evaluate.predict import EvaluationError, predict_heldout
from crescend_jax.models.baseline import PointwiseBaseline
from crescend_jax.models.contrastive import default_model_config
from crescend_jax.runtime.checkpoint import FoldCheckpoints
from crescend_jax.train import trainer
from crescend_jax.train.trainer import NonFiniteLossError, TrainingError, TrainingStopped, train


def one_fold_config(**train_overrides):
    config = tiny_config(**{"num_steps": 30, **train_overrides})
    config.data.test_compositions = ("Comp0",)
    return config


def approach_a_config(**train_overrides):
    config = one_fold_config(**train_overrides)
    config.model = default_model_config()
    config.model.hidden_dim, config.model.projection_dim, config.model.dropout = 32, 16, 0.1
    return config


@pytest.mark.parametrize("make_config", [one_fold_config, approach_a_config], ids=["baseline", "approach_a"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, make_config):
    table = synthetic_table()
    train(make_config(), tmp_path / "straight", table=table)
    with pytest.raises(TrainingStopped, match="after step 25"):
        train(make_config(stop_after_steps=25), tmp_path / "killed", table=table)
    assert FoldCheckpoints(tmp_path / "killed" / "fold_0" / "checkpoints").latest_step() == 20
    train(make_config(resume=True), tmp_path / "killed", table=table)

    straight, resumed = (predict_heldout(tmp_path / name, table=table) for name in ("straight", "killed"))
    assert straight.scores.shape == (12, 19) and set(straight.table.compositions) == {"Comp0"}
    np.testing.assert_allclose(resumed.scores, straight.scores, rtol=1e-6, atol=1e-7)
    metrics = [pd.read_json(tmp_path / name / "fold_0" / "metrics.jsonl", lines=True)
               for name in ("straight", "killed")]
    final = [m[m.step == 30].iloc[-1] for m in metrics]
    for column in ("loss", "val_accuracy", "grad_norm"):
        assert final[0][column] == pytest.approx(final[1][column], rel=1e-6)
    assert {"loss", "val_accuracy", "steps_per_s"} <= set(metrics[0].columns)
    for m in metrics:  # each step once, also in the resumed run (its killed part past step 20 was dropped)
        assert m.step.is_unique and list(m.step) == sorted(m.step)
    assert any((tmp_path / "straight" / "fold_0" / "tensorboard").iterdir())
    done = json.loads((tmp_path / "straight" / "fold_0" / "done.json").read_text())
    assert done["steps"] == 30 and done["best_step"] in (10, 20, 30)


def test_nan_embeddings_and_labels_are_named(tmp_path):
    table = synthetic_table()
    table.pooled[5, 3] = np.nan
    with pytest.raises(TrainingError, match=r"1 row\(s\) have NaN/inf embeddings \(e.g. Comp0_8bars_1_1\)"):
        train(one_fold_config(), tmp_path / "a", table=table)
    table = synthetic_table()
    table.label_mean[7, 0] = np.inf
    with pytest.raises(TrainingError, match=r"NaN/inf label means \(e.g. Comp0_8bars_3_1\)"):
        train(one_fold_config(), tmp_path / "b", table=table)


def test_width_mismatch_is_refused(tmp_path):
    config = one_fold_config()
    config.model.input_dim = 1024
    with pytest.raises(TrainingError, match=r"16 wide .* config.model.input_dim=1024"):
        train(config, tmp_path, table=synthetic_table())


def test_fold_without_rankable_groups_is_refused(tmp_path):
    table = synthetic_table()
    solo = table.compositions == "Comp0"
    table.groups = np.where(solo, np.char.add(table.groups, np.char.add("_", table.performers)), table.groups)
    with pytest.raises(SplitError, match=r"fold 0: the test side .* no group with >= 2 performers"):
        train(one_fold_config(), tmp_path, table=table)


def test_resume_with_another_config_names_the_fields(tmp_path):
    table = synthetic_table()
    train(one_fold_config(num_steps=10), tmp_path, table=table)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(one_fold_config(num_steps=10), tmp_path, table=table)
    with pytest.raises(TrainingError, match=r"another config \(train.learning_rate: 0.01 -> 0.5\)"):
        train(one_fold_config(num_steps=10, learning_rate=0.5, resume=True), tmp_path, table=table)
    other_notes = one_fold_config(num_steps=10, resume=True)  # fields that do not change the model: one list
    other_notes.experiment = {"name": "renamed"}
    assert all(name.startswith(trainer.NON_MODEL_FIELDS) for name in ("experiment.name", "eval.min_gap"))
    assert train(other_notes, tmp_path, table=table)[0]["steps"] == 10


class PoisonedBaseline(PointwiseBaseline):
    """The baseline whose loss is NaN at its 26th step (step index 25): the loss sees the step."""

    def loss(self, objective, model, batch, step, mesh):
        loss, diagnostics = super().loss(objective, model, batch, step, mesh)
        return loss + jnp.where(step == 25, jnp.nan, 0.0), diagnostics


def test_nan_loss_stops_with_step_and_keys_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    table = synthetic_table()
    expected = r"fold 0: the loss is nan at step 26; its batch holds rows Comp.*checkpoint \(step 20\) is kept"
    with pytest.raises(NonFiniteLossError, match=expected):
        train(one_fold_config(), tmp_path / "direct", table=table, approach=PoisonedBaseline())
    checkpoints = FoldCheckpoints(tmp_path / "direct" / "fold_0" / "checkpoints")
    assert checkpoints.latest_step() == 20
    checkpoints.close()

    import crescend_jax.data.store as store

    monkeypatch.setattr(store, "load_table", lambda config: table)
    monkeypatch.setattr(trainer, "approach_for", lambda config: PoisonedBaseline())
    assert cli.train_command(one_fold_config(), str(tmp_path / "cli")) == 1
    assert "step 26" in capsys.readouterr().err


def test_cli_reports_a_bad_setting_in_one_line(tmp_path, capsys):
    config = one_fold_config()
    config.model.name = "pairwise"
    assert cli.train_command(config, str(tmp_path)) == 2
    assert "unknown approach 'pairwise'" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "train.batch_size=0 must be a positive integer"),
    ("num_steps", -3, "train.num_steps=-3 must be a positive integer"),
    ("batch_size", 12, "not a multiple of the 8 devices"),
])
def test_config_mistakes_are_refused_before_a_workdir_exists(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        train(one_fold_config(**{field: value}), tmp_path / "run", table=synthetic_table())
    assert not (tmp_path / "run").exists()
    config = approach_a_config(batch_size=24)
    config.model.sampler.group_size = 5
    with pytest.raises(ConfigError, match="not a multiple of model.sampler.group_size=5"):
        train(config, tmp_path / "run", table=synthetic_table())
    assert not (tmp_path / "run").exists()


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "write_text", refuse)
    with pytest.raises(TrainingError, match=r"cannot write the workdir .*run \(Permission denied\); free space"):
        train(one_fold_config(), tmp_path / "run", table=synthetic_table())


def test_a_changed_store_is_refused_by_resume_evaluate_and_baseline_comparison(tmp_path):
    table = synthetic_table()
    train(one_fold_config(num_steps=10), tmp_path / "run", table=table)
    train(one_fold_config(num_steps=10), tmp_path / "other", table=table)
    changed = synthetic_table()
    changed.label_mean[3, 0] += 0.25  # e.g. a re-extracted store with new labels
    with pytest.raises(TrainingError, match=r"cannot resume: .*run was trained on other data .*labels_sha256"):
        train(one_fold_config(num_steps=10, resume=True), tmp_path / "run", table=changed)
    with pytest.raises(FingerprintMismatch, match=r"cannot evaluate: .*labels_sha256"):
        predict_heldout(tmp_path / "run", table=changed)
    train(one_fold_config(num_steps=10), tmp_path / "changed", table=changed)
    from crescend_jax.data.fingerprint import check_same_folds

    check_same_folds(tmp_path / "run", tmp_path / "other", "compare")  # same data, same folds: fine
    with pytest.raises(FingerprintMismatch, match="trained on different data"):
        check_same_folds(tmp_path / "run", tmp_path / "changed", "compare with the baseline")


def test_predict_heldout_names_a_fold_without_checkpoint(tmp_path):
    table = synthetic_table()
    with pytest.raises(TrainingStopped):
        train(one_fold_config(stop_after_steps=5), tmp_path, table=table)  # killed before the first save (step 10)
    with pytest.raises(EvaluationError, match=r"fold_0 has no checkpoint; train it first"):
        predict_heldout(tmp_path, table=table)


def test_label_free_pretraining_learns_the_infonce_and_warm_starts_a_rated_run(tmp_path):
    """A corpus without ratings (ASAP) trains approach A's InfoNCE alone with train.label_free, and only then; its
    single fold then starts every fold of a rated run."""
    unrated = synthetic_table()
    unrated.label_mean[:] = np.nan
    unrated.label_std[:] = np.nan
    with pytest.raises(TrainingError, match=r"holds no label means .* --config\.train\.label_free=True"):
        train(approach_a_config(), tmp_path / "refused", table=unrated)
    config = approach_a_config(label_free=True, num_steps=20)
    config.model.loss.lambda_piece = 1.0
    (record,) = train(config, tmp_path / "pretrain", table=unrated)
    assert record["selection"].startswith("last step (label-free") and record["val_rows"] == 0
    metrics = pd.read_json(tmp_path / "pretrain" / "fold_0" / "metrics.jsonl", lines=True)
    assert np.isfinite(metrics.loss).all() and (metrics.rank_pairs == 0).all()  # the ranking term never fires
    assert metrics.piece_loss.iloc[-1] < metrics.piece_loss.iloc[0]  # the InfoNCE learns
    rated = approach_a_config(num_steps=5)
    rated.model.init_from = str(tmp_path / "pretrain")
    (warm,) = train(rated, tmp_path / "rated", table=synthetic_table())
    assert warm["init_from"]["source_fold"] == 0 and "mlp/linears/0/kernel" in warm["init_from"]["copied"]


def test_a_run_saved_before_a_config_field_existed_still_resumes(tmp_path):
    """A config.json without the fields added later (the trunk section, train.label_free) reads as their defaults:
    the run resumes (and a sweep skips it) instead of looking like another config; another value is refused."""
    from crescend_jax.models.trunk import default_trunk_config
    from crescend_jax.sweeps.finished import same_config

    config = one_fold_config(num_steps=10)
    config.trunk = default_trunk_config()
    train(config, tmp_path, table=synthetic_table())
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["trunk"], saved["train"]["label_free"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    again = one_fold_config(num_steps=10, resume=True)
    again.trunk = default_trunk_config()
    assert same_config(tmp_path, again)
    train(again, tmp_path, table=synthetic_table())
    again.train.label_free = True
    assert not same_config(tmp_path, again)
    with pytest.raises(TrainingError, match=r"train\.label_free: False -> True"):
        train(again, tmp_path, table=synthetic_table())
