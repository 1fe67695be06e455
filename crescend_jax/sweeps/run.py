"""Running a sweep: points one after another, each seed trained (resuming) and evaluated unless finished, a failed
point reported while the points that do not depend on it go on, then the table (`crescend_jax.sweeps.results`)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

import ml_collections

from crescend_jax.config import ConfigError
from crescend_jax.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from crescend_jax.errors import DataError
from crescend_jax.sweeps.expand import expand_sweep
from crescend_jax.sweeps.finished import finished
from crescend_jax.sweeps.language import SweepPoint, data_key, run_config, seed_workdir
from crescend_jax.sweeps.results import write_results

SWEEP_FILE = "sweep.json"


def run_point(item: SweepPoint, seed: int, root: str | Path, points: Mapping[str, SweepPoint]) -> str:
    """Trains (resuming) and evaluates one point for one seed unless it is finished; returns "skipped" or "ran"."""
    from crescend_jax.evaluate.run import evaluate_workdir
    from crescend_jax.train import trainer

    workdir = seed_workdir(root, item, seed)
    baseline = seed_workdir(root, points[item.baseline], seed) if item.baseline else None
    config = run_config(item, seed, root, points)
    if finished(workdir, baseline, config):
        return "skipped"
    trainer.train(config, workdir)
    evaluate_workdir(str(workdir), baseline=None if baseline is None else str(baseline), config=config)
    return "ran"


def extract_stores(points: Sequence[SweepPoint]) -> int:
    """Extracts (`crescend_jax.data.extract.extract`) every store the points read (each encoder of a fusion) once;
    returns the number of items that failed to render or encode (a store with failed items still trains on the
    rest: reported, not fatal). A whole-run failure raises its `ConfigError` / `DataError`."""
    from crescend_jax.data.extract import extract

    seen: set[str] = set()
    failed = 0
    for item in points:
        names = tuple(item.config.store.get("fuse", ()) or ()) or (item.config.encoder.name,)
        for name in names:
            config = ml_collections.ConfigDict(item.config.to_dict())
            config.encoder.name = name
            config.store.fuse = ()
            key = data_key(config)
            if key in seen:
                continue
            seen.add(key)
            print(f"[sweep] extract encoder {name!r} for point {item.name}", flush=True)
            failed += extract(config)
    return failed


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str | Path, all_overrides: Sequence[str] = (), *,
              command: str = "") -> int:
    """Runs every unfinished point of ``sweep`` into ``workdir`` and writes the table; returns an exit code (0 all
    finished, 1 some point failed, 2 a sweep config mistake). `TrainingStopped` and KeyboardInterrupt propagate
    (a killed sweep): rerun the same command to resume."""
    try:
        points = expand_sweep(sweep, all_overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    by_name = {item.name: item for item in points}
    seeds = tuple(int(s) for s in sweep.seeds)
    _write_plan(root, sweep, points, all_overrides, command)
    for note in sweep.get("notes", ()) or ():
        print(f"[sweep] note: {note}")
    print(f"[sweep] {len(points)} points x {len(seeds)} seeds into {root}", flush=True)
    if sweep.get("table_only", False):  # the finished runs' table, nothing trained (module doc of crescend_jax.sweeps)
        write_results(sweep, points, root, {}, re.sub(r"\s*'?--config\.table_only=\S+", "", command))
        print(f"[sweep] table of the finished runs only: {root / 'results.md'}")
        return EXIT_OK
    if sweep.get("extract", False):
        try:
            extract_stores(points)
        except (ConfigError, DataError) as err:
            print(f"error: extraction failed: {err}", file=sys.stderr)
            return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED
    failures: dict[str, str] = {}
    errors = (ConfigError, DataError)  # the project's own failures; anything else is a bug and stops the sweep
    for index, item in enumerate(points, 1):
        if item.same_as:
            print(f"[sweep {index}/{len(points)}] {item.name}: same config as {item.same_as} (shares its runs)")
            if item.same_as in failures:
                failures[item.name] = f"same as failed point {item.same_as}"
            continue
        blocked = [d for d in item.depends if d in failures]
        if blocked:
            failures[item.name] = f"not run: it depends on failed point(s) {', '.join(blocked)}"
            print(f"[sweep {index}/{len(points)}] {item.name}: {failures[item.name]}", file=sys.stderr)
            continue
        for seed in seeds:
            print(f"[sweep {index}/{len(points)}] {item.name} seed {seed} -> {seed_workdir(root, item, seed)}",
                  flush=True)
            try:
                status = run_point(item, seed, root, by_name)
            except errors as err:  # a simulated kill (`TrainingStopped`) is not one: the sweep stops, a rerun resumes
                failures[item.name] = f"seed {seed}: {err}"
                print(f"error: sweep point {item.name} seed {seed}: {err}", file=sys.stderr)
                break
            if status == "skipped":
                print("  finished earlier: skipped")
    write_results(sweep, points, root, failures, command)
    print(f"[sweep] table: {root / 'results.md'}")
    if failures:
        print(f"[sweep] {len(failures)} point(s) failed: {', '.join(failures)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _write_plan(root: Path, sweep: ml_collections.ConfigDict, points: Sequence[SweepPoint],
                all_overrides: Sequence[str], command: str) -> None:
    import jax

    if jax.process_index() != 0:
        return
    plan = {"command": command, "sweep": sweep.to_dict(), "all_overrides": list(all_overrides),
            "points": [{"name": p.name, "base": p.base, "fields": p.fields, "baseline": p.baseline,
                        "depends": list(p.depends), "same_as": p.same_as, "learning_rate": p.learning_rate}
                       for p in points]}
    (root / SWEEP_FILE).write_text(json.dumps(plan, indent=1, default=str))


