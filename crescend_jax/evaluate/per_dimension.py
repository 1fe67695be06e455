"""Per-dimension analysis over approaches: which of the 19 dimensions an approach really improves over the baseline,
and how close it gets to the raters' noise ceiling on each ("which dimensions can be disentangled at all").

Input: one metrics dict per approach, named (``crescend-jax evaluate``'s ``metrics.json``, or a sweep point's
seed-pooled entry in ``results.json``, which has the same keys). Read per dimension k (K = 19):

* ``fraction_of_ceiling.pairwise_accuracy.per_dimension`` f_k = (acc_k - 0.5) / (ceiling_k - 0.5): 0 at chance,
  1 at the split-half noise ceiling (NaN where the ceiling is at or below chance);
* ``pooled.pairwise_accuracy.per_dimension`` acc_k and ``ceiling.per_dimension`` ceiling_k;
* ``versus_baseline.per_dimension`` {estimate, low, high}: the paired bootstrap difference acc_k - baseline_k on
  the same pairs (`comparison.paired_difference`); a degenerate one (``warnings``, e.g. fewer than 5 held-out
  compositions) gives no verdict on any dimension. A dimension is a **real gain** when low_k > 0 and a **real loss**
  when high_k < 0 (the 95% interval excludes 0). A run without ``versus_baseline`` (the baseline itself, or a run
  evaluated without ``--baseline``) has fractions but no marks.

The intervals are per dimension and per approach, *not* corrected for the 19 x A comparisons: with no true effect
about one dimension in twenty per approach is still marked. Read a mark as "worth a closer look", a column of marks
as a pattern.

Outputs (`write_analysis`): ``dimensions.md`` (the table), ``dimensions.png`` (a dimensions x approaches heatmap of
the fraction of ceiling, ▲ on real gains, ▼ on real losses) and ``dimensions.json`` (the arrays).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.errors import DataError
from crescend_jax.evaluate.nested import nested_get as _get
from crescend_jax.evaluate.summary import to_json

GAIN_MARK, LOSS_MARK = "▲", "▼"
METRICS_FILE = "metrics.json"
SWEEP_RESULTS_FILE = "results.json"


class AnalysisError(DataError, ValueError):
    """Runs or a sweep that cannot be analysed (not evaluated yet, unreadable, nothing finished)."""


def _vector(value: Any, what: str) -> np.ndarray:
    """float [K] from a JSON list (null -> NaN); NaN [K] when ``value`` is None."""
    if value is None:
        return np.full(NUM_DIMENSIONS, np.nan)
    array = np.array([np.nan if v is None else v for v in value], np.float64)
    if array.shape != (NUM_DIMENSIONS,):
        raise AnalysisError(f"{what} has {array.shape[0] if array.ndim else 0} values; expected {NUM_DIMENSIONS} "
                         "(one per dimension)")
    return array


@dataclasses.dataclass(frozen=True)
class DimensionAnalysis:
    """A approaches x K dimensions. ``fraction``, ``accuracy``, ``ceiling``, ``gain``, ``gain_low``, ``gain_high``:
    float [A, K] (NaN where unknown; gains NaN for a run without a baseline comparison); ``compared`` bool [A]:
    whether the run was compared with a baseline; ``baselines``: what each was compared with (or None)."""

    names: tuple[str, ...]
    dimensions: tuple[str, ...]
    fraction: np.ndarray
    accuracy: np.ndarray
    ceiling: np.ndarray
    gain: np.ndarray
    gain_low: np.ndarray
    gain_high: np.ndarray
    compared: np.ndarray
    baselines: tuple[str | None, ...]

    @property
    def real_gain(self) -> np.ndarray:
        """bool [A, K]: the interval of acc - baseline lies above 0."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.gain_low, nan=0.0) > 0

    @property
    def real_loss(self) -> np.ndarray:
        """bool [A, K]: the interval of acc - baseline lies below 0."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.gain_high, nan=0.0) < 0

    def as_dict(self) -> dict[str, Any]:
        return to_json({"names": list(self.names), "dimensions": list(self.dimensions), "fraction": self.fraction,
                        "accuracy": self.accuracy, "ceiling": self.ceiling, "gain": self.gain,
                        "gain_low": self.gain_low, "gain_high": self.gain_high, "compared": self.compared,
                        "baselines": list(self.baselines), "real_gain": self.real_gain,
                        "real_loss": self.real_loss})


def analyze_dimensions(runs: Mapping[str, Mapping[str, Any]]) -> DimensionAnalysis:
    """The analysis of ``runs`` (name -> metrics dict, in column order). Raises ValueError for no runs or a run
    whose dimensions are not the 19 PercePiano ones."""
    if not runs:
        raise AnalysisError("no runs to analyse")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("fraction", "accuracy", "ceiling", "gain", "low", "high")}
    compared, baselines = [], []
    for name, metrics in runs.items():
        dims = metrics.get("dimensions")
        if dims is not None and tuple(dims) != DIMENSIONS:
            raise AnalysisError(f"run {name!r} is scored on other dimensions than the 19 PercePiano ones")
        rows["fraction"].append(_vector(_get(metrics, "fraction_of_ceiling.pairwise_accuracy.per_dimension"),
                                        f"{name}: fraction_of_ceiling"))
        rows["accuracy"].append(_vector(_get(metrics, "pooled.pairwise_accuracy.per_dimension"),
                                        f"{name}: pooled.pairwise_accuracy"))
        rows["ceiling"].append(_vector(_get(metrics, "ceiling.per_dimension"), f"{name}: ceiling"))
        versus = _get(metrics, "versus_baseline.per_dimension")
        compared.append(versus is not None)
        baselines.append(metrics.get("baseline_name") if versus is not None else None)
        degenerate = bool(_get(metrics, "versus_baseline.warnings"))  # e.g. too few compositions: no verdict
        for key, field in (("gain", "estimate"), ("low", "low"), ("high", "high")):
            kept = versus is not None and (key == "gain" or not degenerate)
            rows[key].append(_vector(versus.get(field) if kept else None, f"{name}: versus_baseline"))
    stack = {k: np.stack(v) for k, v in rows.items()}
    return DimensionAnalysis(names=tuple(runs), dimensions=DIMENSIONS, fraction=stack["fraction"],
                             accuracy=stack["accuracy"], ceiling=stack["ceiling"], gain=stack["gain"],
                             gain_low=stack["low"], gain_high=stack["high"], compared=np.array(compared, bool),
                             baselines=tuple(baselines))


def _cell(value: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(analysis: DimensionAnalysis) -> str:
    """Rows: dimensions; per approach the fraction of ceiling with ▲ (real gain over the baseline) / ▼ (real
    loss); the ceiling; the best approach. Then the count of real gains per approach."""
    ceiling = np.nanmean(analysis.ceiling, axis=0) if np.isfinite(analysis.ceiling).any() else analysis.ceiling[0]
    spread = np.nanmax(analysis.ceiling, axis=0) - np.nanmin(analysis.ceiling, axis=0) \
        if np.isfinite(analysis.ceiling).any() else np.zeros(NUM_DIMENSIONS)
    header = ["dimension", "ceiling", *analysis.names, "best"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    gains, losses = analysis.real_gain, analysis.real_loss
    for k, dimension in enumerate(analysis.dimensions):
        cells = [dimension, _cell(ceiling[k], 3)]
        for a in range(len(analysis.names)):
            mark = GAIN_MARK if gains[a, k] else LOSS_MARK if losses[a, k] else ""
            cells.append(_cell(analysis.fraction[a, k]) + mark)
        column = analysis.fraction[:, k]
        best = (f"{analysis.names[int(np.nanargmax(column))]} ({_cell(np.nanmax(column))})"
                if np.isfinite(column).any() else "n/a")
        cells.append(best)
        lines.append("| " + " | ".join(cells) + " |")
    counts = ["**real gains**", ""]
    for a in range(len(analysis.names)):
        counts.append(f"{int(gains[a].sum())} / {NUM_DIMENSIONS}" if analysis.compared[a] else "(no baseline)")
    lines.append("| " + " | ".join(counts + [""]) + " |")
    notes = [
        "",
        f"Cells: fraction of the way from chance (0) to the split-half noise ceiling (1) of the held-out pairwise "
        f"accuracy; {GAIN_MARK} = higher than the run's baseline (a sweep table's baseline column) on that dimension "
        f"with a 95% paired bootstrap interval (same-music groups resampled within compositions) above 0, "
        f"{LOSS_MARK} = below 0. Intervals are not "
        "corrected for the many comparisons (about 1 in 20 marks per approach is expected by chance alone).",
    ]
    if np.nanmax(spread, initial=0.0) > 1e-6:
        notes.append(f"The runs' ceilings differ by up to {np.nanmax(spread):.3f} (different held-out rows); the "
                     "ceiling column is their mean.")
    disentangled = [analysis.dimensions[k] for k in range(NUM_DIMENSIONS) if gains[:, k].any()]
    notes.append(f"Dimensions some approach really improves over the baseline: "
                 f"{', '.join(disentangled) if disentangled else 'none'}.")
    return "\n".join(lines + notes) + "\n"


def plot_heatmap(analysis: DimensionAnalysis, path: str | Path) -> Path:
    """dimensions (rows) x approaches (columns) heatmap of the fraction of ceiling, ▲/▼ on real gains/losses."""
    import matplotlib  # noqa: PLC0415 (only the picture needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    values = analysis.fraction.T  # [K, A]
    finite = values[np.isfinite(values)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    width = 3.5 + 1.1 * len(analysis.names)
    fig, ax = plt.subplots(figsize=(width, 8.5))
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", vmin=low, vmax=high)
    gains, losses = analysis.real_gain.T, analysis.real_loss.T
    for k in range(values.shape[0]):
        for a in range(values.shape[1]):
            text = _cell(values[k, a]) + (GAIN_MARK if gains[k, a] else LOSS_MARK if losses[k, a] else "")
            shade = (values[k, a] - low) / (high - low) if np.isfinite(values[k, a]) else 0.0
            ax.text(a, k, text, ha="center", va="center", fontsize=7, color="black" if shade > 0.6 else "white")
    ax.set_xticks(range(len(analysis.names)), analysis.names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(analysis.dimensions)), analysis.dimensions, fontsize=7)
    fig.colorbar(image, ax=ax, label="fraction of the noise ceiling (0 = chance)")
    ax.set_title(f"Held-out pairwise accuracy per dimension, fraction of ceiling\n({GAIN_MARK} / {LOSS_MARK}: "
                 "real gain / loss vs its baseline, 95% paired interval)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the colour bar label stays in
    plt.close(fig)
    return path


def write_analysis(analysis: DimensionAnalysis, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Writes dimensions.md, dimensions.png and dimensions.json into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "dimensions.md", "figure": out / "dimensions.png", "json": out / "dimensions.json"}
    heading = f"# Per-dimension analysis{': ' + title if title else ''}\n\n![per-dimension fractions]" \
              f"({paths['figure'].name})\n\n"
    paths["markdown"].write_text(heading + markdown_table(analysis))
    plot_heatmap(analysis, paths["figure"])
    paths["json"].write_text(json.dumps(analysis.as_dict(), indent=1))
    return paths


# ----------------------------------------------------------------------------------------------------- inputs


def load_runs(workdirs: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """name -> metrics.json of each evaluated workdir; the name is the folder's name (with its parent's when two
    names collide, e.g. ``approach_a/seed_0``). Raises ValueError for a workdir without metrics.json."""
    paths = [Path(w) for w in workdirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    runs = {}
    for name, path in zip(names, paths):
        metrics = path / METRICS_FILE
        if not metrics.is_file():
            raise AnalysisError(f"{metrics} does not exist: run `crescend-jax evaluate --workdir {path} --baseline "
                             "<baseline workdir>` first")
        runs[name] = _read_json(metrics)
    return runs


def load_sweep(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """point name -> its seed-pooled metrics from a sweep's results.json (finished points only, in table order).
    Raises ValueError when the sweep has no results yet."""
    path = Path(sweep_dir) / SWEEP_RESULTS_FILE
    if not path.is_file():
        raise AnalysisError(f"{path} does not exist: run `crescend-jax sweep --config=<sweep> --workdir={sweep_dir}` "
                         "first")
    results = _read_json(path)
    runs = {name: point["pooled"] for name, point in results["points"].items() if point.get("pooled")}
    if not runs:
        raise AnalysisError(f"{path} holds no finished point yet")
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AnalysisError(f"{path} is unreadable ({err}); evaluate the run again") from None
