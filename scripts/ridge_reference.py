"""The ridge reference alone, on the inputs of the PercePiano table's encoders, with paired differences.

    python scripts/ridge_reference.py [--config configs/baseline.py] [--out ridge.json] [NAME ...] [--config.X=V ...]

NAME: entries of ``ENCODERS`` in configs/sweeps/percepiano_table.py (default: midi aligned aligned_group_relative),
or of ``EXTRA_INPUTS`` here (inputs not in the table, e.g. ``midi_aligned``: the MIDI features and the aligned pooled
vector side by side, which needs the aligned store without frames: ``crescend-jax extract --config
configs/percepiano.py --config.encoder.name=aligned``); ``--config.*`` overrides apply to every one (e.g. ``--config.data.root=...``). For each, the table a run of that config
trains on (`crescend_jax.data.store.load_table`: group-relative when the entry says so) and the run's folds
(`crescend_jax.train.trainer.fold_masks`, leave-one-composition-out by default) feed
`crescend_jax.evaluate.reference.reference_predictions`, the same ridge every run's evaluation reports (alpha by inner
cross-validation over training compositions only). Printed: held-out pairwise accuracy with its bootstrap interval
(`crescend_jax.evaluate.comparison`), and the paired difference of every entry to the first one on the same pairs
(* = real: the interval excludes 0 and is not degenerate; (!) = degenerate, with the bootstrap's warnings below).
No model is trained: a few seconds per entry. Every store must be extracted first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crescend_jax.config import load_config  # noqa: E402
from crescend_jax.data.dimensions import DIMENSIONS  # noqa: E402
from crescend_jax.data.fingerprint import folds_record  # noqa: E402
from crescend_jax.data.splits import first_render_mask, kept_rows  # noqa: E402
from crescend_jax.data.store import load_table  # noqa: E402
from crescend_jax.evaluate import comparison  # noqa: E402
from crescend_jax.evaluate.reference import reference_predictions  # noqa: E402
from crescend_jax.train.trainer import fold_masks  # noqa: E402

DEFAULT_NAMES = ("midi", "aligned", "aligned_group_relative")
EXTRA_INPUTS = {"midi_aligned": {"encoder.name": "midi", "store.fuse": ("midi", "aligned")}}


def table_encoders() -> dict[str, dict]:
    """``ENCODERS`` of configs/sweeps/percepiano_table.py: name -> dotted config fields."""
    path = ROOT / "configs" / "sweeps" / "percepiano_table.py"
    spec = importlib.util.spec_from_file_location("percepiano_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {**module.ENCODERS, **EXTRA_INPUTS}


def ridge_of(config_path: str, overrides: list[str], fields: dict):
    """(held-out table, ridge `Predictions`, summary) of the config with ``fields`` and ``overrides``."""
    config = load_config(config_path, overrides)
    for dotted, value in fields.items():
        section, name = dotted.rsplit(".", 1)
        target = config
        for part in section.split("."):
            target = target[part]
        target[name] = value
    table = load_table(config)
    table = table.subset(kept_rows(table.compositions, config.data, config.get("corpus", ""), table.works))
    masks, _ = fold_masks(table, config)
    folds = folds_record(table, masks)
    heldout = table.subset(first_render_mask(table.renders) & np.any(masks, axis=0))
    predictions, summary = reference_predictions(table, folds, heldout)
    return heldout, predictions, summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_NAMES))
    parser.add_argument("--config", default=str(ROOT / "configs" / "baseline.py"))
    parser.add_argument("--out", default="")
    args, overrides = parser.parse_known_args(argv)
    encoders = table_encoders()
    unknown = [name for name in args.names if name not in encoders]
    if unknown:
        parser.error(f"unknown inputs {unknown}; known: {sorted(encoders)}")
    results, first, warnings = {}, None, set()
    for name in args.names:
        heldout, predictions, summary = ridge_of(args.config, overrides, encoders[name])
        interval = comparison.accuracy_interval(predictions, heldout)
        mean = interval["mean"]
        line = (f"{name:24s} ridge {mean['estimate']:.3f} [{mean['low']:.3f}, {mean['high']:.3f}]"
                f"{' (!)' if interval.get('degenerate') else ''}")
        warnings.update(interval.get("warnings", ()))
        result = {"fields": encoders[name], "rows": len(heldout), "input_dim": summary["input_dim"],
                  "accuracy": interval}
        if first is None:
            first = (name, heldout, predictions)
        elif np.array_equal(first[1].keys, heldout.keys):
            difference = comparison.paired_difference(predictions, first[2], heldout)
            gap = difference["mean"]
            real = difference.get("real", difference["excludes_zero"])  # "real": not excluding 0 on a degenerate one
            line += (f"   minus {first[0]}: {gap['estimate']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
                     f"{' *' if real else ''}{' (!)' if difference.get('degenerate') else ''}")
            warnings.update(difference.get("warnings", ()))
            result["difference_to_" + first[0]] = difference
        print(line, flush=True)
        results[name] = result
    for warning in sorted(warnings):
        print(f"(!) {warning}")
    print("per dimension (held-out pairwise accuracy of the ridge):")
    print(f"{'dimension':50s}" + "".join(f"{name[:22]:>23s}" for name in results))
    for k, dimension in enumerate(DIMENSIONS):
        print(f"{dimension:50s}" + "".join(f"{r['accuracy']['per_dimension']['estimate'][k]:23.3f}"
                                           for r in results.values()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=lambda v: np.asarray(v).tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
