"""The flags of `crescend-jax sweep` and `crescend-jax analyze`, parsed with absl (`crescend_jax.config`), and the
two commands as functions returning exit codes (`crescend_jax.cli` dispatches to them).

``sweep``: ``--config=SWEEP.py`` (ml_collections config flags: ``--config.field=value`` overrides the sweep config),
``--workdir=DIR``, and ``--all.<field>=value``: a ``--config.<field>=value`` override of every point's training
config (handed to each point's config flags by `crescend_jax.sweeps.expand`, which refuses a field no point has).
``analyze``: ``--workdir=SWEEPDIR``, or ``--runs=DIR1,DIR2`` (further run directories may follow as arguments:
``--runs DIR1 DIR2 ...``), and ``--out=DIR``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from absl import flags

from crescend_jax.config import ConfigError, parse_config_flags, split_config_file
from crescend_jax.console import EXIT_OK, guarded
from crescend_jax.errors import DataError

ALL_PREFIX = "--all."
SWEEP_FLAGS = {"workdir": None}
ANALYZE_FLAGS = ("workdir", "out", "runs")


def parse_sweep_flags(argv: Sequence[str]):
    """(sweep config, workdir, ``--config.<field>=value`` overrides of every point, config file) from the
    command line; `ConfigError` for a mistake."""
    argv = list(argv)
    every = [a for a in argv if a.startswith(ALL_PREFIX)]
    rest = [a for a in argv if not a.startswith(ALL_PREFIX)]
    bad = [a for a in every if "=" not in a]
    if bad:
        raise ConfigError(f"cannot read {bad[0]!r}: write --all.field=value")
    config_file, _ = split_config_file(rest)
    if config_file is None:
        raise ConfigError("sweep needs --config=FILE (e.g. configs/sweeps/ablations.py)")
    sweep, values, positional = parse_config_flags(rest, config_file=config_file, extra=SWEEP_FLAGS)
    if positional:
        raise ConfigError(f"unexpected argument {positional[0]!r}; see `crescend-jax sweep --help`")
    if "points" not in sweep or "seeds" not in sweep:
        raise ConfigError(f"config file {config_file} is not a sweep config (its get_config() must return "
                          "crescend_jax.sweeps.default_sweep_config() filled in); see configs/sweeps/*.py")
    if not values.get("workdir"):
        raise ConfigError("sweep needs --workdir=DIR")
    return sweep, values["workdir"], ["--config." + a[len(ALL_PREFIX):] for a in every], config_file


def sweep_main(argv: Sequence[str]) -> int:
    """``crescend-jax sweep --config=SWEEP.py --workdir=DIR [--config.x=y ...] [--all.field=value ...]``."""
    from crescend_jax.sweeps.run import run_sweep

    def run() -> int:
        sweep, workdir, overrides, config_file = parse_sweep_flags(argv)
        if not sweep.get("name"):
            with sweep.unlocked():
                sweep.name = Path(config_file).stem
        command = " ".join(["crescend-jax", "sweep", *(shlex.quote(a) for a in argv)])
        return run_sweep(sweep, workdir, overrides, command=command)

    return guarded(run)


def parse_analyze_flags(argv: Sequence[str]) -> tuple[str | None, list[str], str | None]:
    """(sweep workdir, run directories, output directory) from ``analyze``'s flags; `ConfigError` for a mistake."""
    values = flags.FlagValues()
    workdir = flags.DEFINE_string("workdir", None, "a sweep's workdir", flag_values=values)
    out = flags.DEFINE_string("out", None, "where to write", flag_values=values)
    runs = flags.DEFINE_list("runs", [], "evaluated run directories", flag_values=values)
    try:
        positional = values(["crescend-jax analyze", *argv])[1:]
    except flags.Error as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    if positional and not runs.value:
        raise ConfigError(f"unexpected argument {positional[0]!r}; analyze takes --workdir=SWEEPDIR or --runs DIR ... "
                          "[--out=DIR]")
    run_dirs = [*runs.value, *positional]
    if bool(workdir.value) == bool(run_dirs):
        raise ConfigError("analyze needs either --workdir=SWEEPDIR or --runs DIR1 DIR2 ...")
    return workdir.value, run_dirs, out.value


def analyze_main(argv: Sequence[str]) -> int:
    """``crescend-jax analyze --workdir=SWEEPDIR`` or ``--runs DIR1 DIR2 ... [--out=DIR]``: the per-dimension table
    and figure (`crescend_jax.evaluate.per_dimension`)."""
    from crescend_jax.evaluate import per_dimension

    def run() -> int:
        workdir, runs, out = parse_analyze_flags(argv)
        loaded = per_dimension.load_sweep(workdir) if workdir else per_dimension.load_runs(runs)
        analysis = per_dimension.analyze_dimensions(loaded)
        target = Path(out or workdir or Path(runs[0]).parent)
        try:
            paths = per_dimension.write_analysis(analysis, target, title=Path(workdir).name if workdir else "")
        except OSError as err:
            raise DataError(f"cannot write the analysis into {target} ({err.strerror or err}); free space there or "
                            "pass another --out") from None
        gains = analysis.real_gain.sum(axis=1)
        for name, count, compared in zip(analysis.names, gains, analysis.compared):
            print(f"{name}: " + (f"{int(count)} of 19 dimensions really above the baseline" if compared
                                 else "no baseline comparison"))
        print(f"table: {paths['markdown']}\nfigure: {paths['figure']}")
        return EXIT_OK

    return guarded(run)
