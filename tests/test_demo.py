"""`make demo` end to end on a tiny demo corpus: corpus -> 2 soundfonts -> store -> every approach -> report."""

from pathlib import Path

import pytest

from crescend_jax.config import load_config
from crescend_jax.demo import run_demo

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.py"
APPROACHES = tuple(load_config(CONFIG, []).approaches)  # every approach the demo runs, kept short here


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_reruns(tmp_path, capsys):
    steps = ["train.num_steps=20", "train.eval_every=10", "train.log_every=5", "eval.ceiling_splits=5"]
    config = load_config(CONFIG, [
        "--config.data.num_pieces=4", "--config.data.segments_per_piece=1", "--config.data.num_performers=3",
        "--config.data.num_raters=4", "--config.data.num_folds=2", f"--config.data.cache_dir={tmp_path}/demo",
        f"--config.render.cache_dir={tmp_path}/render", "--config.render.workers=1", f"--config.store.root={tmp_path}/stores",
        *[f"--config.approaches.{name}.{field}" for name in APPROACHES for field in steps],
    ])
    assert run_demo(config, str(tmp_path / "runs")) == 0
    report = (tmp_path / "runs" / "report.md").read_text()
    for name in APPROACHES:  # every approach trained, evaluated and in the summary with its accuracy
        assert f"| {name} | 0." in report
        assert (tmp_path / "runs" / name / "report.md").is_file() and (tmp_path / "runs" / name / "metrics.json").is_file()
    total = 2 + 2 * len(APPROACHES)  # extract, (train, evaluate) per approach, summary
    assert "vs known truth" in report and f"[demo {total}/{total}] summary report" in capsys.readouterr().out
    assert run_demo(config, str(tmp_path / "runs")) == 0  # a rerun finds the store and the trained folds
    # 4 groups x (3 performers + Score) x 2 soundfonts, all already stored
    assert "done 0 / skipped 32 (already stored) / failed 0" in capsys.readouterr().out

