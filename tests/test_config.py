"""Config files and ``--config.field=value`` overrides, through the CLI as a user types them."""

import json
from pathlib import Path

import pytest

from crescend_jax import cli
from crescend_jax.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_config_file_loads():
    for path in sorted(CONFIGS.glob("*.py")):
        config = load_config(path)
        assert config.corpus in ("percepiano", "demo", "asap", "joint"), path


def test_overrides_keep_field_types():
    config = load_config(CONFIGS / "percepiano.py", [
        "--config.data.root=/elsewhere",
        "--config.render.workers=1",
        "--config.render.gain=1",  # an int where a float lives stays a float
        "--config.render.soundfonts=('musescore','fluidr3')",
        "--config.store.frames=true",
        "--config.encoder.name=muq",
    ])
    assert config.data.root == "/elsewhere" and config.render.workers == 1
    assert isinstance(config.render.gain, float) and config.render.gain == 1.0
    assert config.render.soundfonts == ("musescore", "fluidr3") and config.store.frames is True
    assert config.encoder.name == "muq"


@pytest.mark.parametrize("override, message", [
    ("--config.data.rot=x", r"unknown config field --config.data.rot; did you mean --config.data.root"),
    ("--config.nosuch=1", "unknown config field --config.nosuch"),
    ("--config.render.workers=many", r"--config.render.workers=many: .*invalid literal for int"),
    ("--config.render.workers", "write --config.field=value"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "percepiano.py", [override])


def test_a_tuple_field_given_a_bare_string_is_the_one_element_tuple():
    config = load_config(CONFIGS / "percepiano.py", ["--config.data.test_compositions=Schubert_D960_mv3"])
    assert config.data.test_compositions == ("Schubert_D960_mv3",)
    config = load_config(CONFIGS / "percepiano.py", ["--config.data.test_compositions=('A','B')"])
    assert config.data.test_compositions == ("A", "B")


def test_config_errors_exit_2_in_every_command(tmp_path, capsys):
    for command in ("extract", "merge", "train", "demo"):
        argv = [command, "--config", str(CONFIGS / "baseline.py"), "--config.data.rot=x"]
        if command in ("train", "demo"):
            argv.append(f"--workdir={tmp_path / command}")
        assert cli.main(argv) == 2, command
        assert "did you mean --config.data.root" in capsys.readouterr().err
        assert not (tmp_path / command).exists()
    assert cli.main(["train", "--config", str(CONFIGS / "baseline.py")]) == 2
    assert "needs --workdir" in capsys.readouterr().err
    assert cli.main(["evaluate", f"--workdir={tmp_path}", "--config.eval.min_gap=x"]) == 1  # not a run: data error
    assert cli.main(["nosuch"]) == 2


def test_cli_reports_config_errors_and_bad_shards(capsys):
    assert cli.main(["extract", "--config", str(CONFIGS / "percepiano.py"), "--config.data.rot=x"]) == 2
    assert "did you mean --config.data.root" in capsys.readouterr().err
    assert cli.main(["extract", "--config", str(CONFIGS / "percepiano.py"), "--shard", "3/2"]) == 2
    assert "--shard '3/2'" in capsys.readouterr().err
    assert cli.main(["train", "--config", "configs/nope.py", "--workdir", "w"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(CONFIGS.parent / "README.md"), "--workdir", "w"]) == 2
    assert "is not a Python file" in capsys.readouterr().err


def test_demo_bad_baseline_is_a_clean_error_and_null_metrics_print_na(tmp_path, capsys):
    from crescend_jax import demo

    assert cli.main(["demo", "--config", str(CONFIGS / "demo.py"), "--workdir", str(tmp_path),
                     "--config.baseline=nope"]) == 2
    assert "config.baseline='nope' is not one of config.approaches" in capsys.readouterr().err
    # metrics.json writes NaN as null (e.g. no dimension with a ceiling above chance): the summary says n/a
    (tmp_path / "run").mkdir()
    mean = lambda value: {"mean": value}  # noqa: E731
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({
        "pooled": {"pairwise_accuracy": mean(0.6), "kendall_tau_b": mean(None), "intra_group_std": mean(0.01)},
        "fraction_of_ceiling": {"pairwise_accuracy": mean(None)}, "ceiling": mean(None)}))
    row = demo._summary_rows(tmp_path, ["run"])[-1]
    assert row.startswith("| run | 0.600 | n/a |  | n/a | n/a | 0.010 |")
    assert "ceiling (mean over dimensions): n/a." in demo._ceiling_line(tmp_path, "run")


def test_config_beside_a_missing_file_is_a_config_error(tmp_path):
    from crescend_jax.config import config_beside

    with pytest.raises(ConfigError, match="extends .*missing.py, which does not exist"):
        config_beside(tmp_path / "child.py", "missing.py")
