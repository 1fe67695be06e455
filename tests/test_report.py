"""k-fold aggregation, the written report, and `evaluate_workdir` with a stand-in for the trainer."""

import json
import re
import types

import ml_collections
import numpy as np
import pytest

from crescend_jax.config import config_to_json
from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax import commands
from crescend_jax.data import fingerprint as fingerprint_lib
from crescend_jax.evaluate import run as run_lib
from crescend_jax.evaluate.predict import EvaluationError
from crescend_jax.evaluate.report import write_report
from crescend_jax.evaluate.summary import evaluate_predictions
from crescend_jax.models.contract import Predictions


def evaluate_workdir(workdir, baseline=None):
    """The CLI's evaluate (exit code, messages on stdout/stderr)."""
    return commands.evaluate_command(workdir, baseline=baseline)


def simulated_table(num_compositions=6, groups_per_composition=4, performers=5, raters=6, seed=0, truth=True):
    """Groups of performances (the first one a Score rendition) with noisy rater panels around a known truth."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(num_compositions):
        for g in range(groups_per_composition):
            for p in range(performers):
                rows.append((f"comp{c}", f"comp{c}_8bars", "Score" if p == 0 else str(p), f"comp{c}_8bars_{g}"))
    n = len(rows)
    label_truth = rng.uniform(0.2, 0.8, size=(n, NUM_DIMENSIONS)).astype(np.float32)
    noise = rng.normal(0, 0.15, size=(n, raters, NUM_DIMENSIONS))
    ratings = [np.clip(t + e, 0, 1).astype(np.float32) for t, e in zip(label_truth, noise)]
    compositions, pieces, performer_ids, groups = (np.array(column) for column in zip(*rows))
    table = EmbeddingTable(
        keys=np.array([f"{grp}_{perf}" for grp, perf in zip(groups, performer_ids)]),
        compositions=compositions, pieces=pieces, performers=performer_ids, groups=groups,
        renders=np.array(["FluidR3_GM"] * n),
        label_mean=np.stack([r.mean(axis=0) for r in ratings]),
        label_std=np.stack([r.std(axis=0) for r in ratings]),
        label_truth=label_truth if truth else np.full_like(label_truth, np.nan),
        ratings=ratings, pooled=np.zeros((n, 4), np.float32), frames=None, encoder="librosa", frame_rate=10.0,
    )
    fold = np.unique(compositions, return_inverse=True)[1] % 3
    return table, fold


@pytest.fixture(scope="module")
def evaluated():
    table, fold = simulated_table()
    rng = np.random.default_rng(1)
    scores = table.label_truth + rng.normal(0, 0.03, size=table.label_truth.shape)
    return table, fold, scores, evaluate_predictions(table, scores, fold, ceiling_splits=10)


def test_evaluate_predictions_pooled_folds_and_json(evaluated):
    table, fold, scores, result = evaluated
    json.dumps(result, allow_nan=False)  # plain JSON, NaN already mapped to null
    assert result["dimensions"] == list(DIMENSIONS)
    assert result["folds"] == [0, 1, 2] and result["num_deadpan_rows"] == 6 * 4
    direct = metrics_lib.pairwise_accuracy(scores, table.label_mean, table.groups)
    assert result["pooled"]["pairwise_accuracy"]["per_dimension"] == pytest.approx(direct.accuracy)
    assert result["pooled"]["num_pairs"]["per_dimension"] == direct.num_pairs.tolist()
    # groups lie inside one fold, so pooled pairs are the union of the folds' pairs
    per_fold_pairs = np.sum([f["metrics"]["num_pairs"]["per_dimension"] for f in result["per_fold"]], axis=0)
    assert per_fold_pairs.tolist() == direct.num_pairs.tolist()
    fold_accuracy = np.array([f["metrics"]["pairwise_accuracy"]["per_dimension"] for f in result["per_fold"]])
    assert result["fold_mean"]["pairwise_accuracy"]["per_dimension"] == pytest.approx(fold_accuracy.mean(axis=0))
    assert result["fold_std"]["pairwise_accuracy"]["per_dimension"] == pytest.approx(fold_accuracy.std(axis=0))
    assert result["fold_mean"]["pairwise_accuracy"]["mean"] == pytest.approx(fold_accuracy.mean(axis=1).mean())
    ceiling = np.array(result["ceiling"]["per_dimension"])
    accuracy = np.array(result["pooled"]["pairwise_accuracy"]["per_dimension"])
    assert result["fraction_of_ceiling"]["pairwise_accuracy"]["per_dimension"] == pytest.approx(
        (accuracy - 0.5) / (ceiling - 0.5))
    assert 0.5 < result["ceiling"]["mean"] < 1.0
    assert result["ceiling_no_score"]["num_pairs"] == [6 * 4 * 6] * NUM_DIMENSIONS  # 4 non-Score rows per group
    no_score = np.array(result["pooled"]["pairwise_accuracy_no_score"]["per_dimension"])
    assert result["fraction_of_ceiling"]["pairwise_accuracy_no_score"]["per_dimension"] == pytest.approx(
        (no_score - 0.5) / (np.array(result["ceiling_no_score"]["per_dimension"]) - 0.5))
    # truth-aware metrics: scores close to the truth beat the noisy labels' own agreement with it
    assert result["pooled"]["truth_accuracy"]["mean"] > result["pooled"]["label_truth_accuracy"]["mean"] > 0.6
    # the estimated ceiling is the simulated labels' own agreement with the truth
    assert result["ceiling"]["mean"] == pytest.approx(result["pooled"]["label_truth_accuracy"]["mean"], abs=0.03)


def test_perfect_and_constant_predictions():
    table, fold = simulated_table(truth=False, num_compositions=3)
    perfect = evaluate_predictions(table, table.label_mean, fold, ceiling_splits=2)
    assert perfect["pooled"]["pairwise_accuracy"]["mean"] == pytest.approx(1.0)
    assert perfect["pooled"]["kendall_tau_b"]["mean"] == pytest.approx(1.0)
    assert "truth_accuracy" not in perfect["pooled"]
    constant = evaluate_predictions(table, np.zeros_like(table.label_mean), fold, ceiling_splits=2)
    assert constant["pooled"]["pairwise_accuracy"]["mean"] == pytest.approx(0.5)
    assert constant["pooled"]["intra_group_std"]["mean"] == pytest.approx(0.0)
    assert constant["pooled"]["kendall_tau_b"]["mean"] is None  # constant predictions: tau-b undefined


def test_bad_predictions_are_rejected():
    table, fold = simulated_table(num_compositions=1)
    with pytest.raises(ValueError, match="expected"):
        evaluate_predictions(table, table.label_mean[:, :5], fold)
    scores = table.label_mean.copy()
    scores[3, 2] = np.nan
    with pytest.raises(ValueError, match=table.keys[3]):
        evaluate_predictions(table, scores, fold)


def _row(report: str, name: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_write_report_files_and_numbers(evaluated, tmp_path):
    table, fold, scores, result = evaluated
    config = {"experiment": {"name": "ranknet-test", "hypothesis": "Pairwise loss separates performers."},
              "model": {"hidden": 64}, "seed": 3}
    baseline = json.loads(json.dumps(result))
    baseline["pooled"]["pairwise_accuracy"]["per_dimension"] = [0.55] * NUM_DIMENSIONS
    baseline["pooled"]["pairwise_accuracy"]["mean"] = 0.55
    path = write_report(tmp_path, result, json.dumps(config), baseline)
    for name in ("metrics.json", "report.md", "accuracy_vs_ceiling.png", "within_group.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "accuracy_vs_ceiling.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    report = path.read_text()
    assert report.startswith("# ranknet-test")
    assert "Pairwise loss separates performers." in report
    assert "- `model.hidden`: `64`" in report and '"hypothesis": "Pairwise loss separates performers."' in report
    pooled = result["pooled"]
    for k in (0, 7, 18):
        cells = _row(report, DIMENSIONS[k])
        assert cells[0] == f"{pooled['pairwise_accuracy']['per_dimension'][k]:.3f}"
        assert cells[1] == f"{pooled['pairwise_accuracy_gap']['per_dimension'][k]:.3f}"
        assert cells[2] == f"{pooled['pairwise_accuracy_no_score']['per_dimension'][k]:.3f}"
        assert cells[3] == f"{result['ceiling']['per_dimension'][k]:.3f}"
        assert cells[5] == f"{result['ceiling_no_score']['per_dimension'][k]:.3f}"
        assert cells[7] == f"{pooled['kendall_tau_b']['per_dimension'][k]:.3f}"
        assert cells[-3] == "0.550"
        assert cells[-2] == f"{pooled['pairwise_accuracy']['per_dimension'][k] - 0.55:+.3f}"
        assert cells[-1] == (f"{result['fold_mean']['pairwise_accuracy']['per_dimension'][k]:.3f} ± "
                             f"{result['fold_std']['pairwise_accuracy']['per_dimension'][k]:.3f}")
    assert _row(report, "**Mean**")[0] == f"{pooled['pairwise_accuracy']['mean']:.3f}"
    observations = report.split("## Observations")[1]
    assert f"Mean within-group pairwise accuracy is {pooled['pairwise_accuracy']['mean']:.3f}" in observations
    delta = np.array(pooled["pairwise_accuracy"]["per_dimension"]) - 0.55
    assert f"higher on {(delta > 0).sum()} of {NUM_DIMENSIONS} dimensions" in observations
    assert f"{pooled['truth_accuracy']['mean']:.3f}" in observations


def test_write_report_without_baseline_or_hypothesis(evaluated, tmp_path):
    result = evaluated[3]
    report = write_report(tmp_path, result, json.dumps({"seed": 0}), None).read_text()
    assert "(none given" in report and "Baseline acc." not in report
    assert report.startswith(f"# {tmp_path.name}")
    with pytest.raises(ValueError, match="other dimensions"):
        write_report(tmp_path, result, "{}", {**result, "dimensions": ["x"]})


def _fake_predictions(monkeypatch, tmp_path, table, scores, fold, config):
    """`predict_heldout` stood in for by fixed predictions; workdirs "base" and "run" share data and folds."""
    heldout = types.SimpleNamespace(table=table, predictions=Predictions(scores=scores), fold=fold, config=config,
                                    train_rows={}, train_embeddings={}, source=table)
    for name in ("base", "run"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config_to_json(config))
        fingerprint_lib.write_record(tmp_path / name, fingerprint_lib.table_fingerprint(table),
                                     fingerprint_lib.folds_record(table, [fold == k for k in np.unique(fold)]))

    def predict_heldout(workdir, training_embeddings=False):
        if not str(workdir).endswith(("base", "run")):
            raise EvaluationError(f"{workdir} has no config.json: it is not a training workdir")
        return heldout

    monkeypatch.setattr(run_lib, "predict_heldout", predict_heldout)


def test_evaluate_workdir_with_and_without_baseline(monkeypatch, tmp_path, capsys):
    table, fold = simulated_table(num_compositions=3)
    config = ml_collections.ConfigDict({"experiment": {"name": "run", "hypothesis": "h"},
                                        "eval": {"min_gap": 0.1, "ceiling_splits": 3, "ceiling_seed": 1,
                                                 "baseline_workdir": ""}})
    _fake_predictions(monkeypatch, tmp_path, table, table.label_truth, fold, config)
    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    assert evaluate_workdir(str(run_dir), baseline=str(base_dir)) == 1
    assert "run `crescend-jax evaluate --workdir" in capsys.readouterr().err

    assert evaluate_workdir(str(base_dir)) == 0
    assert f"report: {base_dir / 'report.md'}" in capsys.readouterr().out
    saved = json.loads((base_dir / "metrics.json").read_text())
    assert saved["min_gap"] == 0.1 and saved["ceiling"]["num_splits"] == 3
    assert evaluate_workdir(str(run_dir), baseline=str(base_dir)) == 0
    report = (run_dir / "report.md").read_text()
    assert "Baseline acc." in report and config_to_json(config).splitlines()[1].strip() in report
    assert re.search(r"higher on 0 of 19 dimensions, mean \+0\.000", report)
    assert evaluate_workdir(str(tmp_path / "elsewhere")) == 1
    assert "not a training workdir" in capsys.readouterr().err
    # a baseline named in the run's config is used when --baseline is not given
    config.eval.baseline_workdir = str(base_dir)
    (run_dir / "config.json").write_text(config_to_json(config))
    (run_dir / "report.md").unlink()
    assert evaluate_workdir(str(run_dir)) == 0
    assert "Baseline acc." in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_evaluate_workdir_on_a_real_training_run(monkeypatch, tmp_path, capsys):
    """End to end with engineer 7's trainer: train two tiny folds, then evaluate the workdir it wrote."""
    from _distributed_worker import synthetic_table, tiny_config

    import crescend_jax.data.store as store
    from crescend_jax.train.trainer import train

    table = synthetic_table(performers=5)
    rng = np.random.default_rng(0)
    table.ratings = [np.clip(m + rng.normal(0, 0.1, (6, NUM_DIMENSIONS)), 0, 1).astype(np.float32)
                     for m in table.label_mean]
    table.performers = np.where(table.performers == "0", "Score", table.performers)
    train(tiny_config(num_steps=20), tmp_path / "run", table=table)
    monkeypatch.setattr(store, "load_table", lambda config: table)
    assert evaluate_workdir(str(tmp_path / "run")) == 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["num_rows"] == len(table) and saved["folds"] == [0, 1]
    assert saved["num_deadpan_rows"] == 12 and saved["ceiling"]["num_segments"] == len(table)
    assert f"held-out pairwise accuracy {saved['pooled']['pairwise_accuracy']['mean']:.3f}" in capsys.readouterr().out


def test_evaluate_says_degenerate_intervals_and_seeds_in_the_report_and_on_the_console(monkeypatch, tmp_path,
                                                                                        capsys):
    """3 held-out compositions: every interval is flagged (report and console), no difference is called real, the
    single-run report says seed variation is not in the interval, and the console prints the comparison."""
    table, fold = simulated_table(num_compositions=3)
    config = ml_collections.ConfigDict({"experiment": {"name": "run", "hypothesis": "h"},
                                        "eval": run_lib.default_eval_config()})
    config.eval.update({"ceiling_splits": 2, "bootstrap_replicates": 200, "reference": False,
                        "disentanglement": False})
    rng = np.random.default_rng(0)
    _fake_predictions(monkeypatch, tmp_path, table, table.label_truth + rng.normal(0, 0.5, table.label_truth.shape),
                      fold, config)
    assert evaluate_workdir(str(tmp_path / "base")) == 0
    capsys.readouterr()
    # the run is far better than the baseline: the numbers exclude 0, but 3 compositions cannot speak for new music
    better = Predictions(scores=table.label_truth)
    monkeypatch.setattr(run_lib, "predict_heldout", lambda workdir, training_embeddings=False: types.SimpleNamespace(
        table=table, predictions=better, fold=fold, config=config, train_rows={}, train_embeddings={}, source=table))
    assert evaluate_workdir(str(tmp_path / "run"), baseline=str(tmp_path / "base")) == 0
    printed = capsys.readouterr()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["versus_baseline"]["excludes_zero"] and not metrics["versus_baseline"]["real"]
    warning = "3 held-out compositions: this interval cannot speak for new music"
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"> **Warning:** {warning}" in report.split("## Hypothesis")[0]  # at the top of the report
    assert f"warning: {warning}" in printed.err
    assert re.search(r"this run − baseline: \+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\]: degenerate interval, no verdict",
                     printed.out)
    assert "one seed: seed-to-seed variation is not in these intervals" in printed.out
    observations = report.split("## Observations")[1]
    assert "really higher" not in observations and "no verdict" in observations
    assert "seed-to-seed variation of training is not in these intervals" in observations
    assert "two-stage bootstrap (eval.bootstrap='two_stage', 3 compositions" in report
    assert "no Score renditions [95% interval]" in report and metrics["interval"]["no_score"]["mean"]["low"] < 1

    # the fixed-set question on the same run: labelled, no few-compositions warning, and the difference is real there
    (tmp_path / "run" / "report.md").unlink()
    assert commands.evaluate_command(str(tmp_path / "run"), baseline=str(tmp_path / "base"),
                                overrides=["--config.eval.bootstrap=within_composition"]) == 0
    printed = capsys.readouterr()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "fixed set of compositions" in report and "> **Warning:**" not in report and "warning:" not in printed.err
    assert "this run is really higher (for these runs: seed variation is not in the interval)" in report
    assert "this run − baseline" in printed.out and "really higher" in printed.out
    assert commands.evaluate_command(str(tmp_path / "run"), overrides=["--config.eval.bootstrap=pairs"]) == 2
    assert "eval.bootstrap='pairs' is not one of" in capsys.readouterr().err
