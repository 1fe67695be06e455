"""Checkpoints on a bad day: a full disk during training is one line and exit 1; a damaged checkpoint (corrupt data,
missing manifest, missing item, bad JSON) is named and the previous kept one is used, on resume and in evaluation."""

import shutil

import orbax.checkpoint as ocp
import pytest
from _distributed_worker import synthetic_table, tiny_config

from crescend_jax import commands
from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.runtime import checkpoint
from crescend_jax.runtime.checkpoint import CheckpointError, FoldCheckpoints
from crescend_jax.train.trainer import TrainingStopped, train

DISK_FULL = ('RESOURCE_EXHAUSTED: Error writing "hidden.bias.value/0" in OCDBT database: Failed to write 202768 bytes '
             "to file 8: No space left on device [os_error_code='28']")


def one_fold_config(**train_overrides):
    config = tiny_config(**{"num_steps": 30, **train_overrides})
    config.data.test_compositions = ("Comp0",)
    return config


@pytest.mark.parametrize("where", ["save", "wait"])
def test_disk_full_during_train_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys, where):
    """orbax reports a full disk as ValueError("RESOURCE_EXHAUSTED ...") from save, or from the wait for a save
    running in its threads; both end the command with one line naming the fold's directory."""
    import crescend_jax.data.store as store

    table = synthetic_table()
    monkeypatch.setattr(store, "load_table", lambda config: table)
    calls = {"n": 0}
    method = "save" if where == "save" else "wait_until_finished"
    real = getattr(ocp.CheckpointManager, method)

    def full_after_first(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise ValueError(DISK_FULL)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, method, full_after_first)
    assert commands.train_command(one_fold_config(), str(tmp_path / "run")) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "cannot write a checkpoint under" in line and str(tmp_path / "run" / "fold_0") in line
    assert "no space left on device" in line and "Traceback" not in err and "RESOURCE_EXHAUSTED" not in err


def test_a_write_failure_is_told_apart_from_a_bug():
    assert checkpoint._write_failure(ValueError(DISK_FULL)) == "no space left on device"
    assert checkpoint._write_failure(OSError(28, "No space left on device")) == "no space left on device"
    assert checkpoint._write_failure(ValueError("shapes (3,) and (4,) differ")) is None
    with pytest.raises(ValueError, match="shapes"):
        with checkpoint._writes(checkpoint.Path("/x")):
            raise ValueError("shapes (3,) and (4,) differ")


def _damage(step_dir, how):
    if how == "corrupt data":  # zstd/ocdbt data files overwritten in the middle
        for path in [*(step_dir / "model" / "d").iterdir(), *(step_dir / "model" / "ocdbt.process_0" / "d").iterdir()]:
            data = bytearray(path.read_bytes())
            data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
            path.write_bytes(bytes(data))
    elif how == "missing manifest":
        (step_dir / "model" / "manifest.ocdbt").unlink()
    elif how == "missing item":
        shutil.rmtree(step_dir / "model")
    else:
        (step_dir / "record" / "metadata").write_text("{not json")


@pytest.mark.parametrize("how", ["corrupt data", "missing manifest", "missing item", "bad JSON"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_is_used(tmp_path, capsys, how):
    table = synthetic_table()
    with pytest.raises(TrainingStopped):
        train(one_fold_config(stop_after_steps=25), tmp_path / "run", table=table)  # checkpoints at 10 and 20
    checkpoints = tmp_path / "run" / "fold_0" / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [10, 20]
    _damage(checkpoints / "20", how)
    capsys.readouterr()
    records = train(one_fold_config(resume=True), tmp_path / "run", table=table)  # resumes from step 10
    assert records[0]["steps"] == 30
    err = capsys.readouterr().err
    assert f"warning: checkpoint {checkpoints / '20'} cannot be read" in err and "trying step 10" in err
    # evaluation: the selected step is damaged, the previous kept one predicts instead
    kept = FoldCheckpoints(checkpoints)
    assert kept.manager.all_steps()[-2:] == [20, 30]  # the two latest kept (the damaged 20 was written again)
    selected = kept.selected_step(tmp_path / "run" / "fold_0")
    kept.close()
    _damage(checkpoints / str(selected), how)
    heldout = predict_heldout(tmp_path / "run", table=table)
    assert heldout.predictions.scores.shape == (12, 19)
    assert f"checkpoint {checkpoints / str(selected)} cannot be read" in capsys.readouterr().err


def test_no_readable_checkpoint_is_one_line_naming_the_fold(tmp_path, capsys):
    table = synthetic_table()
    train(one_fold_config(), tmp_path / "run", table=table)
    checkpoints = tmp_path / "run" / "fold_0" / "checkpoints"
    for step_dir in (p for p in checkpoints.iterdir() if p.name.isdigit()):
        _damage(step_dir, "missing item")
    with pytest.raises(CheckpointError, match=f"no checkpoint under {checkpoints} can be read"):
        predict_heldout(tmp_path / "run", table=table)
