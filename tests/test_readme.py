"""The README generator (scripts/generate_readme.py): blocks rewritten from result files, --check, and the
README's own blocks all known."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from _distributed_worker import synthetic_table

from crescend_jax.evaluate import seed_pooling
from crescend_jax.evaluate.summary import to_json
from crescend_jax.models.contract import Predictions

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("generate_readme", REPO / "scripts" / "generate_readme.py")
generate_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate_readme)

README = """# Title

Hand-written text stays.

<!-- generated:percepiano_table -->
old table
<!-- /generated -->

More text.

<!-- generated:ablations -->
<!-- /generated -->
"""


def pooled(table, runs, reference, baseline=None):
    """A sweep point's pooled dict (the keys the generator reads), from real seed pooling."""
    boot = {"num_replicates": 200}
    result = {"seeds": list(range(len(runs))), "interval": seed_pooling.pooled_interval(runs, table, **boot),
              "ceiling": {"mean": 0.7981},
              "reference": {"interval": seed_pooling.pooled_interval([reference], table, **boot),
                            "difference": seed_pooling.pooled_difference(runs, [reference], table, **boot)}}
    if baseline is not None:
        result["versus_baseline"] = seed_pooling.pooled_difference(runs, baseline, table, **boot)
    return to_json(result)


def write_results(runs_root: Path, compositions: int) -> None:
    """percepiano_table (one encoder: the baseline, a far better A) and ablations results.json files."""
    table = synthetic_table(compositions=compositions, groups_per_composition=3, performers=5)
    table.performers = np.where(table.performers == "0", "Score", table.performers)
    rng = np.random.default_rng(0)

    def runs(noise):
        return [Predictions(scores=table.label_mean + rng.normal(0, noise, table.label_mean.shape)) for _ in range(2)]

    base, good, reference = runs(1.0), runs(0.02), Predictions(scores=rng.normal(size=table.label_mean.shape))
    points = {"baseline-features": {"encoder": "features", "approach": "baseline", "baseline": "",
                                    "status": "done", "pooled": pooled(table, base, reference)},
              "approach_a-features": {"encoder": "features", "approach": "approach_a", "baseline": "baseline-features",
                                      "status": "done", "pooled": pooled(table, good, reference, base)},
              "approach_b-features": {"encoder": "features", "approach": "approach_b", "status": "not run",
                                      "pooled": None}}
    for name, points_of in (("percepiano_table", points),
                            ("ablations", {"baseline": points["baseline-features"],
                                           "approach_a": {**points["approach_a-features"], "baseline": "baseline"}})):
        (runs_root / name).mkdir(parents=True)
        (runs_root / name / "results.json").write_text(json.dumps(
            {"name": name, "command": f"crescend-jax sweep --config=configs/sweeps/{name}.py", "seeds": [0, 1],
             "swept": [], "points": points_of}))


def test_blocks_are_rewritten_from_result_files_and_checked(tmp_path, capsys):
    readme, runs_root = tmp_path / "README.md", tmp_path / "runs"
    readme.write_text(README)
    write_results(runs_root, compositions=6)
    args = ["--readme", str(readme), "--runs", str(runs_root)]
    assert generate_readme.main(args + ["--check"]) == 1  # stale
    assert generate_readme.main(args) == 0
    text = readme.read_text()
    assert "Hand-written text stays." in text and "More text." in text and "old table" not in text
    table = text.split("<!-- generated:percepiano_table -->")[1].split("<!-- /generated -->")[0]
    results = json.loads((runs_root / "percepiano_table" / "results.json").read_text())
    a = results["points"]["approach_a-features"]["pooled"]
    accuracy, no_score = a["interval"]["mean"], a["interval"]["no_score"]["mean"]
    row = next(line for line in table.splitlines() if "| A: contrastive |" in line)
    assert f"{accuracy['estimate']:.3f} [{accuracy['low']:.3f}, {accuracy['high']:.3f}]" in row
    assert f"{no_score['estimate']:.3f} [{no_score['low']:.3f}, {no_score['high']:.3f}]" in row
    assert row.endswith(" * |")  # A is really better than the baseline on 6 compositions
    assert "really higher than the baseline: A: contrastive" in table
    assert "Not finished: approach_b-features (not run)." in table and "eval.bootstrap='two_stage'" in table
    assert "| audio features (librosa) | ridge reference |" in table and "(mean over dimensions): 0.798;" in table
    assert "Regenerate: `crescend-jax sweep --config=configs/sweeps/percepiano_table.py`" in table
    assert "| approach_a | approach_a | 2 |" in text.split("<!-- generated:ablations -->")[1]
    assert generate_readme.main(args + ["--check"]) == 0  # idempotent
    capsys.readouterr()
    assert "Not run here" not in table
    path = runs_root / "percepiano_table" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "left_out": ["approach_c-midi"]}))
    assert ("Not run here (left out of this run with `--config.only` to fit this 2-core machine): approach_c-midi."
            in generate_readme.percepiano_table(runs_root))
    path.write_text(json.dumps(results))

    # a hand edit inside a block is caught by --check and undone by a rewrite
    readme.write_text(text.replace(f"{accuracy['estimate']:.3f}", "0.999", 1))
    assert generate_readme.main(args + ["--check"]) == 1
    assert "generated blocks are stale" in capsys.readouterr().err
    assert generate_readme.main(args) == 0 and readme.read_text() == text

    # missing result files: the block is kept, and both modes say so
    assert generate_readme.main(["--readme", str(readme), "--runs", str(tmp_path / "none")]) == 1
    assert "percepiano_table: not regenerated" in capsys.readouterr().err and readme.read_text() == text
    assert generate_readme.main(["--readme", str(readme), "--runs", str(tmp_path / "none"), "--check"]) == 1
    assert generate_readme.main(args + ["--only", "demo", "--check"]) == 1
    assert "no <!-- generated:demo --> block" in capsys.readouterr().err


def test_degenerate_intervals_are_marked_and_never_called_real(tmp_path):
    readme, runs_root = tmp_path / "README.md", tmp_path / "runs"
    readme.write_text(README)
    write_results(runs_root, compositions=3)  # 3 held-out compositions
    assert generate_readme.main(["--readme", str(readme), "--runs", str(runs_root)]) == 0
    table = readme.read_text().split("<!-- generated:percepiano_table -->")[1].split("<!-- /generated -->")[0]
    row = next(line for line in table.splitlines() if "| A: contrastive |" in line)
    assert " * " not in row and row.endswith(" (!) |")
    assert "no verdict against the baseline (degenerate interval): A: contrastive" in table
    assert "- 3 held-out compositions: this interval cannot speak for new music" in table


def test_every_block_of_the_readme_has_a_generator():
    names = [m["name"] for m in generate_readme.BLOCK.finditer((REPO / "README.md").read_text())]
    assert names and set(names) <= set(generate_readme.BLOCKS)
    assert len(names) == len(set(names))


def test_demo_block_from_metrics_files(tmp_path):
    table = synthetic_table(compositions=6, groups_per_composition=3, performers=5)
    rng = np.random.default_rng(1)
    run = [Predictions(scores=table.label_mean + rng.normal(0, 0.1, table.label_mean.shape))]
    for name, extra in (("baseline", {}), ("approach_a", {"versus_baseline": seed_pooling.pooled_difference(
            run, run, table, num_replicates=50)})):
        (tmp_path / "demo" / name).mkdir(parents=True)
        metrics = {"interval": seed_pooling.pooled_interval(run, table, num_replicates=50),
                   "pooled": {"truth_accuracy": {"mean": 0.75}}, **extra}
        (tmp_path / "demo" / name / "metrics.json").write_text(json.dumps(to_json(metrics)))
    block = generate_readme.demo(tmp_path)
    lines = block.splitlines()
    assert lines[2].startswith("| baseline |") and lines[3].startswith("| approach_a |")
    assert "+0.000 [+0.000, +0.000] (!)" in lines[3] and "| 0.750 |" in lines[2]
    assert "One seed per approach" in block and "zero-width interval" in block
    with pytest.raises(generate_readme.MissingResults):
        generate_readme.demo(tmp_path / "elsewhere")


def test_dimensions_block_compares_each_input_with_the_audio_features(tmp_path):
    dims = ["Timing", "Dynamic_range", "Pedal"]

    def point(encoder, accuracy, ridge):
        return {"encoder": encoder, "approach": "contrastive", "status": "done", "pooled": {
            "dimensions": dims, "ceiling": {"per_dimension": [0.8, 0.75, 0.7]},
            "pooled": {"pairwise_accuracy": {"per_dimension": accuracy}},
            "reference": {"pairwise_accuracy": {"per_dimension": ridge}}, "interval": {"num_units": 3}}}

    points = {"approach_a-features": point("features", [0.60, 0.55, 0.50], [0.58, 0.56, 0.52]),
              "approach_a-aligned, group-relative": point("aligned, group-relative", [0.62, 0.53, 0.50],
                                                          [0.61, 0.54, 0.49]),
              "baseline-features": {"encoder": "features", "pooled": None}}
    (tmp_path / "percepiano_table").mkdir()
    (tmp_path / "percepiano_table" / "results.json").write_text(json.dumps({"points": points}))
    block = generate_readme.percepiano_dimensions(tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line for line in block.splitlines() if line.startswith("| ")}
    assert rows["Timing"] == "| Timing | 0.800 | 0.580 | 0.600 | 0.610 | 0.620 | +0.020 |"
    assert rows["Dynamic range"].endswith("| -0.020 |") and rows["Pedal"].endswith("| +0.000 |")
    assert "largest gains Timing (+0.020); largest losses Dynamic range (-0.020)" in block
    assert "on 3 held-out compositions: per-dimension intervals on so few compositions cannot speak" in block
    (tmp_path / "percepiano_table" / "results.json").write_text(json.dumps({"points": {
        "baseline-features": {"encoder": "features", "pooled": None}}}))
    with pytest.raises(generate_readme.MissingResults):
        generate_readme.percepiano_dimensions(tmp_path)


def test_best_ridge_of_the_table_is_chosen_and_reported(tmp_path):
    spec = importlib.util.spec_from_file_location("versus_best_ridge", REPO / "scripts" / "versus_best_ridge.py")
    versus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(versus)
    ridge = lambda value: {"pooled": {"reference": {"interval": {"mean": {"estimate": value}}}}}
    assert versus.best_ridge({"points": {"a-features": ridge(0.54), "a-midi": ridge(0.637),
                                         "b-midi": {"pooled": None}}}) == "a-midi"
    assert versus.best_ridge({"points": {"b": {"pooled": {}}}}) is None

    def difference(estimate, low, high, warnings=()):
        return {"mean": {"estimate": estimate, "low": low, "high": high}, "excludes_zero": low > 0 or high < 0,
                "real": (low > 0 or high < 0) and not warnings, "warnings": list(warnings),
                "degenerate": bool(warnings)}

    (tmp_path / "versus_best_ridge.json").write_text(json.dumps({
        "best": {"point": "a-midi", "encoder": "midi", "interval": {"mean": {"estimate": 0.637, "low": 0.62,
                                                                              "high": 0.65}}},
        "points": {"c-aligned": difference(0.02, 0.01, 0.03), "a-features": difference(-0.09, -0.1, -0.08),
                   "b-other": {"error": "held-out keys differ"}},
        "fixed_set": {"c-aligned": difference(0.02, 0.01, 0.03), "a-features": difference(-0.09, -0.1, 0.01)}}))
    lines = generate_readme._best_ridge_lines(tmp_path)
    assert lines[0].startswith("- Against the best ridge of the whole table (the ridge on MIDI features, 0.637 "
                               "[0.620, 0.650]), paired")
    assert "c-aligned +0.020 [+0.010, +0.030] *" in lines[0]
    assert lines[1] == ("- Beating the best ridge: really higher than the best ridge: c-aligned; really lower than "
                        "the best ridge: a-features.")
    assert lines[2] == ("- On these held-out compositions only (eval.bootstrap='within_composition': the set of "
                        "compositions fixed, groups resampled inside each; it says nothing about new music): really "
                        "higher than the best ridge: c-aligned; no real difference from the best ridge shown: "
                        "a-features.")
    assert lines[3] == "- Not comparable with it (other held-out rows): b-other."
    assert generate_readme._best_ridge_lines(tmp_path / "none") == []


def test_asap_report_cells_mark_degenerate_intervals_and_never_call_them_real():
    spec = importlib.util.spec_from_file_location("asap_report", REPO / "scripts" / "asap_report.py")
    asap_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(asap_report)
    assert asap_report._cell(0.013, 0.001, 0.022, real=True, signed=True) == "+0.013 [+0.001, +0.022]*"
    assert asap_report._cell(0.013, 0.001, 0.022, real=True, signed=True, degenerate=True) == \
        "+0.013 [+0.001, +0.022] (!)"
    assert asap_report._degenerate({"warnings": ["3 held-out compositions"]})
    assert not asap_report._degenerate({"degenerate": False, "warnings": []}) and not asap_report._degenerate(None)
