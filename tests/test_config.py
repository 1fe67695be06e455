"""Config files and ``--config.field=value`` overrides, through the CLI as a user types them."""

from pathlib import Path

import pytest

from crescend_jax import cli
from crescend_jax.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_config_file_loads():
    for path in sorted(CONFIGS.glob("*.py")):
        config = load_config(path)
        assert config.corpus in ("percepiano", "demo"), path


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
    ("--config.render.workers=many", "cannot be casted"),
    ("--config.render.workers", "write --config.field=value"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "percepiano.py", [override])


def test_cli_reports_config_errors_and_bad_shards(capsys):
    assert cli.main(["extract", "--config", str(CONFIGS / "percepiano.py"), "--config.data.rot=x"]) == 2
    assert "did you mean --config.data.root" in capsys.readouterr().err
    assert cli.main(["extract", "--config", str(CONFIGS / "percepiano.py"), "--shard", "3/2"]) == 2
    assert "--shard '3/2'" in capsys.readouterr().err
    assert cli.main(["train", "--config", "configs/nope.py", "--workdir", "w"]) == 2
    assert "does not exist" in capsys.readouterr().err
