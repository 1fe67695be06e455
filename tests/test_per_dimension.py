"""Per-dimension analysis: real gains are the dimensions whose paired interval excludes 0, fractions come from the
metrics, the table, figure and loaders."""

import json

import numpy as np
import pytest

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.evaluate import per_dimension


def fake_metrics(fraction, gain=None, low=None, high=None):
    """A metrics.json-shaped dict: accuracy = 0.5 + 0.3 * fraction under a 0.8 ceiling, optional comparison."""
    fraction = np.asarray(fraction, float)
    metrics = {
        "dimensions": list(DIMENSIONS),
        "pooled": {"pairwise_accuracy": {"per_dimension": (0.5 + 0.3 * fraction).tolist()}},
        "ceiling": {"per_dimension": [0.8] * NUM_DIMENSIONS},
        "fraction_of_ceiling": {"pairwise_accuracy": {"per_dimension": [None if np.isnan(f) else f
                                                                        for f in fraction]}},
    }
    if gain is not None:
        metrics["versus_baseline"] = {"per_dimension": {"estimate": list(gain), "low": list(low), "high": list(high)}}
    return metrics


@pytest.fixture
def runs():
    fraction_base = np.full(NUM_DIMENSIONS, 0.2)
    fraction_a = np.full(NUM_DIMENSIONS, 0.3)
    fraction_a[7] = np.nan  # undefined ceiling on one dimension
    gain = np.full(NUM_DIMENSIONS, 0.01)
    low, high = gain - 0.02, gain + 0.02  # intervals straddle 0 ...
    low[[0, 3]] = [0.01, 0.002]  # ... except two real gains
    gain[5], low[5], high[5] = -0.05, -0.08, -0.01  # and one real loss
    high[11] = None  # an undefined interval marks nothing
    return {"baseline": fake_metrics(fraction_base),
            "approach_a": fake_metrics(fraction_a, gain, low.tolist(), [None if np.isnan(h) else h for h in high])}


def test_real_gains_are_the_dimensions_whose_interval_excludes_zero(runs):
    analysis = per_dimension.analyze_dimensions(runs)
    assert analysis.names == ("baseline", "approach_a")
    assert np.flatnonzero(analysis.real_gain[1]).tolist() == [0, 3]
    assert np.flatnonzero(analysis.real_loss[1]).tolist() == [5]
    assert not analysis.real_gain[0].any() and not analysis.real_loss[0].any()
    assert analysis.compared.tolist() == [False, True]
    assert analysis.fraction[0] == pytest.approx(np.full(NUM_DIMENSIONS, 0.2))
    assert np.isnan(analysis.fraction[1, 7]) and analysis.fraction[1, 0] == pytest.approx(0.3)
    assert analysis.accuracy[1, 0] == pytest.approx(0.59) and analysis.ceiling[0, 0] == 0.8


def test_table_and_figure(runs, tmp_path):
    analysis = per_dimension.analyze_dimensions(runs)
    table = per_dimension.markdown_table(analysis)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows[DIMENSIONS[0]] == f"| {DIMENSIONS[0]} | 0.800 | 0.20 | 0.30▲ | approach_a (0.30) |"
    assert "0.30▼" in rows[DIMENSIONS[5]]
    assert "n/a" in rows[DIMENSIONS[7]] and "baseline (0.20)" in rows[DIMENSIONS[7]]
    assert "| **real gains** |  | (no baseline) | 2 / 19 |  |" in table
    assert f"really improves over the baseline: {DIMENSIONS[0]}, {DIMENSIONS[3]}." in table
    paths = per_dimension.write_analysis(analysis, tmp_path, title="test")
    assert paths["figure"].stat().st_size > 10_000
    saved = json.loads(paths["json"].read_text())
    assert saved["real_gain"][1][:4] == [True, False, False, True] and saved["fraction"][1][7] is None
    assert paths["markdown"].read_text().startswith("# Per-dimension analysis: test")


def test_loaders_and_refusals(runs, tmp_path):
    for name, metrics in runs.items():
        (tmp_path / "sweep" / name / "seed_0").mkdir(parents=True)
        (tmp_path / "sweep" / name / "seed_0" / "metrics.json").write_text(json.dumps(metrics))
    loaded = per_dimension.load_runs([tmp_path / "sweep" / n / "seed_0" for n in runs])
    assert list(loaded) == ["baseline/seed_0", "approach_a/seed_0"]  # same folder names: the parent tells them apart
    with pytest.raises(ValueError, match="metrics.json does not exist"):
        per_dimension.load_runs([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="results.json does not exist"):
        per_dimension.load_sweep(tmp_path / "sweep")
    (tmp_path / "sweep" / "results.json").write_text(json.dumps(
        {"points": {"baseline": {"pooled": runs["baseline"]}, "failed": {"pooled": None}}}))
    assert list(per_dimension.load_sweep(tmp_path / "sweep")) == ["baseline"]
    with pytest.raises(ValueError, match="no runs"):
        per_dimension.analyze_dimensions({})
    with pytest.raises(ValueError, match="other dimensions"):
        per_dimension.analyze_dimensions({"x": {**runs["baseline"], "dimensions": ["a"]}})
    short = fake_metrics(np.zeros(NUM_DIMENSIONS))
    short["fraction_of_ceiling"]["pairwise_accuracy"]["per_dimension"] = [0.1, 0.2]
    with pytest.raises(ValueError, match="has 2 values; expected 19"):
        per_dimension.analyze_dimensions({"short": short})
