"""The command line as a user meets it: every command's exit code for a config mistake (2) and a data failure (1),
each failure one line, `--help` listing flags and config fields, and evaluate on a full disk."""

import re
from pathlib import Path

import numpy as np
import pytest
from _distributed_worker import synthetic_table, tiny_config

from crescend_jax import cli, commands
from crescend_jax.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, code, message", [
    # config mistakes: exit 2, nothing started
    (["extract", "--config", "{configs}/percepiano.py", "--config.data.rot=x"], 2, "did you mean --config.data.root"),
    (["extract", "--config", "{configs}/percepiano.py", "--config.render.soundfonts=nosuch",
      "--config.store.root={tmp}/stores"], 2, "soundfont 'nosuch'"),
    (["merge", "--config", "{configs}/percepiano.py", "--config.encoder.name=featurs"], 2,
     "config.encoder.name is 'featurs' but config.encoder has no such section"),
    (["train", "--config={configs}/percepiano.py", "--workdir={tmp}/run"], 2,
     "has no model, train section(s), which train needs; train takes configs/baseline.py"),
    (["train", "--config={configs}/baseline.py", "--workdir={tmp}/run", "--config.encoder.name=featurs"], 2,
     "config.encoder.name is 'featurs'"),
    (["train", "--config={configs}/baseline.py", "--workdir={tmp}/run", "--config.train.learning_rate=-0.001"], 2,
     "train.learning_rate=-0.001 must be > 0"),
    (["evaluate", "--workdir={tmp}/run", "extra"], 2, "unexpected argument 'extra'"),
    (["demo", "--config={configs}/demo.py", "--workdir={tmp}/demo", "--config.baseline=nope"], 2,
     "config.baseline='nope' is not one of config.approaches"),
    (["sweep", "--config={configs}/sweeps/ablations.py", "--workdir={tmp}/sweep", "--all.train.batch_size=-8"], 2,
     "train.batch_size=-8 must be >= 1"),
    (["sweep", "--config={configs}/baseline.py", "--workdir={tmp}/sweep"], 2, "is not a sweep config"),
    (["analyze"], 2, "analyze needs either --workdir=SWEEPDIR or --runs"),
    # data failures: exit 1
    (["extract", "--config", "{configs}/percepiano.py", "--config.data.root={tmp}/nowhere",
      "--config.store.root={tmp}/stores"], 1, "does not exist"),
    (["merge", "--config", "{configs}/percepiano.py", "--config.store.root={tmp}/stores"], 1, "nothing to merge"),
    (["train", "--config={configs}/baseline.py", "--workdir={tmp}/run", "--config.store.root={tmp}/stores"], 1,
     "no store under"),
    (["evaluate", "--workdir={tmp}"], 1, "has no config.json: it is not a training workdir"),
    (["analyze", "--runs", "{tmp}/nowhere"], 1, "metrics.json does not exist"),
], ids=lambda value: None if not isinstance(value, list) else " ".join(value[:1] + value[-1:])[:40])
def test_every_command_exits_2_for_a_config_mistake_and_1_for_a_data_failure(argv, code, message, tmp_path, capsys):
    argv = [item.format(configs=CONFIGS, tmp=tmp_path) for item in argv]
    assert cli.main(argv) == code
    line = _one_error_line(capsys.readouterr().err)
    assert message in line
    if code == 2:
        assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("command, shown", [
    ("train", ["--workdir=DIR", "--config.FIELD=VALUE", "configs/baseline.py", "train: batch_size=32",
               "learning_rate=0.0001", "Exit codes"]),
    ("extract", ["--shard=i/N", "configs/percepiano.py", "render: "]),
    ("evaluate", ["--baseline=DIR", "eval: ", "bootstrap_replicates=2000"]),
    ("sweep", ["--all.FIELD=VALUE", "seeds = (0,)", "lr_scaling: "]),
    ("analyze", ["--out=DIR", "--runs DIR1 DIR2"]),
])
def test_help_lists_flags_and_config_fields(command, shown, capsys):
    for flag in ("--help", "--helpfull", "-h"):
        assert cli.main([command, flag]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"crescend-jax {command}: ") and len(out.splitlines()) > 5
        for text in shown:
            assert text in out, (flag, text)


def test_help_of_another_config_file_lists_its_fields(capsys):
    assert cli.main(["train", f"--config={CONFIGS / 'approach_a.py'}", "--help"]) == 0
    out = capsys.readouterr().out
    assert f"config fields ({CONFIGS / 'approach_a.py'};" in out and "model.loss: " in out


def _evaluated_pair(tmp_path, monkeypatch, capsys):
    import crescend_jax.data.store as store

    table = synthetic_table()
    monkeypatch.setattr(store, "load_table", lambda config: table)
    config = tiny_config(num_steps=10)
    config.data.test_compositions = ("Comp0",)
    from crescend_jax.evaluate.run import default_eval_config

    config.eval = default_eval_config()
    config.eval.disentanglement, config.eval.reference, config.eval.bootstrap_replicates = False, False, 100
    for name in ("base", "run"):
        train(config, tmp_path / name, table=table)
    capsys.readouterr()  # the training's progress
    return tmp_path / "base", tmp_path / "run"


def test_evaluate_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    import errno
    import os

    base, run = _evaluated_pair(tmp_path, monkeypatch, capsys)
    real = np.savez_compressed

    def full(file, *args, **kwargs):
        Path(file).write_bytes(b"")  # what a full disk leaves: an empty file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", full)
    assert commands.evaluate_command(str(base)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write the evaluation into {base} (No space left on device)" in line
    assert not (base / "heldout.npz").exists() and not (base / "metrics.json").exists()
    assert not [p for p in base.iterdir() if p.name.startswith(".heldout-")]
    monkeypatch.setattr(np, "savez_compressed", real)
    assert commands.evaluate_command(str(base)) == 0
    capsys.readouterr()
    (base / "heldout.npz").write_bytes(b"")  # a baseline damaged before writes were atomic
    assert commands.evaluate_command(str(run), baseline=str(base)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"baseline predictions {base / 'heldout.npz'} cannot be used" in line


def test_evaluate_prints_the_comparison_with_its_baseline(tmp_path, monkeypatch, capsys):
    base, run = _evaluated_pair(tmp_path, monkeypatch, capsys)
    assert commands.evaluate_command(str(base)) == 0
    capsys.readouterr()
    assert commands.evaluate_command(str(run), baseline=str(base)) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("this run − baseline:")]  # printed once
    assert re.search(r"this run − baseline: [+−-]\d\.\d{3} \[[+−-]\d\.\d{3}, [+−-]\d\.\d{3}\]: \S", line), line
