"""`crescend-jax` command line, the one entry point: extract, merge, train, evaluate, demo, sweep, analyze.

    crescend-jax COMMAND [--config=FILE] [--config.field=value ...] [--workdir=DIR] [--shard=i/N] [--baseline=DIR]

Flags are absl flags and configs ``ml_collections.config_flags`` (see `crescend_jax.config`). ``evaluate`` takes no
config file: its ``--config.field=value`` overrides apply to the finished run's saved config (e.g.
``--config.eval.min_gap=0.1``; fields that change the model are refused). ``crescend-jax COMMAND --help`` lists the
command's flags and the main fields of its default config (or of ``--config=FILE`` when given).

Exit codes, the same in every command (`crescend_jax.errors`): 0 done; 1 the run failed on its input, data or disk
(a bad or damaged store or checkpoint, a full disk, a split that cannot be ranked, a NaN loss, a workdir trained on
other data, a failed extraction item, an extraction that stored nothing); 2 a usage or config mistake (nothing was
started).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Sequence

import ml_collections

from crescend_jax.commands import check_sections, evaluate_command, train_command
from crescend_jax.config import ConfigError, load_config, parse_config_flags, split_config_file
from crescend_jax.console import EXIT_OK, EXIT_USAGE, fail, guarded, help_text, one_line_warning

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the checkout's configs (help shows their fields)
HELP_FLAGS = ("-h", "--help", "--helpfull", "--helpshort", "help")

CONFIG_FLAG = "--config=FILE[:ARG]"
OVERRIDE_FLAG = "--config.FIELD=VALUE"
OVERRIDE_HELP = ("override one field of the config, type kept (a misspelled field is an error naming the closest "
                 "ones), e.g. --config.train.batch_size=64; repeat for several")


@dataclasses.dataclass(frozen=True)
class Command:
    """One command: its one-line summary, usage, flags (-> meaning) and the config file its help lists."""

    summary: str
    usage: str
    flags: dict[str, str]
    default_config: str = ""  # a file under configs/ ("" = none)
    extra: tuple[str, ...] = ()  # absl string flags besides --config (parsed by `parse_config_flags`)


COMMANDS = {
    "extract": Command(
        "render and encode a corpus into the embedding store (resumable; --shard i/N to split the work)",
        "crescend-jax extract --config=FILE [--config.FIELD=VALUE ...] [--shard=i/N]",
        {CONFIG_FLAG: "a data config: configs/percepiano.py, configs/asap.py, configs/demo.py (or any training "
                      "config: its data sections are used)",
         OVERRIDE_FLAG: OVERRIDE_HELP,
         "--shard=i/N": "extract only shard i of N (0 <= i < N) into part files; then `crescend-jax merge`"},
        "percepiano.py", ("shard",)),
    "merge": Command(
        "merge the shards written by `extract --shard i/N` into one dataset (also rebuilds a damaged merge)",
        "crescend-jax merge --config=FILE [--config.FIELD=VALUE ...]",
        {CONFIG_FLAG: "the config the shards were extracted with (same overrides)", OVERRIDE_FLAG: OVERRIDE_HELP},
        "percepiano.py"),
    "train": Command(
        "train an approach by composition folds into --workdir",
        "crescend-jax train --config=FILE --workdir=DIR [--config.FIELD=VALUE ...]",
        {CONFIG_FLAG: "an approach config: configs/baseline.py, approach_a.py, approach_b.py, approach_c.py (their "
                      "store must be extracted first)",
         OVERRIDE_FLAG: OVERRIDE_HELP,
         "--workdir=DIR": "the run's directory; a killed run continues with --config.train.resume=True"},
        "baseline.py", ("workdir",)),
    "evaluate": Command(
        "evaluate a trained --workdir on its held-out compositions: metrics.json, report.md, plots",
        "crescend-jax evaluate --workdir=DIR [--baseline=DIR] [--config.eval.FIELD=VALUE ...]",
        {"--workdir=DIR": "a trained run (crescend-jax train)",
         "--baseline=DIR": "another evaluated run on the same data and folds: paired differences to it",
         "--config.eval.FIELD=VALUE": "override a field of the run's saved config that does not change the model "
                                      "(eval.*, experiment.*)"},
        "", ("workdir", "baseline")),
    "demo": Command(
        "the main job: demo corpus -> store -> every approach -> report",
        "crescend-jax demo --config=configs/demo.py --workdir=DIR [--config.FIELD=VALUE ...]",
        {CONFIG_FLAG: "configs/demo.py", OVERRIDE_FLAG: OVERRIDE_HELP,
         "--workdir=DIR": "where every approach's run and the summary report go (a rerun continues)"},
        "demo.py", ("workdir",)),
    "sweep": Command(
        "train and evaluate every point of a sweep, then one table",
        "crescend-jax sweep --config=configs/sweeps/NAME.py --workdir=DIR [--config.FIELD=VALUE ...] "
        "[--all.FIELD=VALUE ...]",
        {CONFIG_FLAG: "a sweep config: configs/sweeps/*.py",
         OVERRIDE_FLAG: "override a field of the sweep config itself, e.g. --config.seeds='(0,1)' or "
                        "--config.only=\"('approach_a',)\"",
         "--all.FIELD=VALUE": "override a training-config field on every point that has it, e.g. "
                              "--all.train.num_steps=300 (a field no point has is an error)",
         "--workdir=DIR": "the sweep's directory: one run per point and seed, results.md/.csv, plots; rerun the "
                          "same command to resume"}),
    "analyze": Command(
        "per-dimension gains over the baseline and fractions of ceiling",
        "crescend-jax analyze --workdir=SWEEPDIR | --runs DIR1 DIR2 ... [--out=DIR]",
        {"--workdir=SWEEPDIR": "a sweep's directory (its results.json)",
         "--runs DIR1 DIR2 ...": "evaluated runs instead (also --runs=DIR1,DIR2)",
         "--out=DIR": "where dimensions.md/.png/.json go (default: the sweep's directory, or the runs' parent)"}),
}


def _usage() -> str:
    lines = [__doc__.splitlines()[2].strip(), "", "commands:"]
    lines += [f"  {name:9s} {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "`crescend-jax COMMAND --help` lists a command's flags and config fields. Exit codes: 0 done, 1 the "
              "run failed on its data, 2 a usage or config mistake."]
    return "\n".join(lines)


def _help_config(name: str, argv: Sequence[str]) -> tuple[ml_collections.ConfigDict | None, str]:
    """(the config whose fields the help lists, where it comes from): ``--config=FILE`` when given, else the
    command's default config file, the sweep's defaults, or the saved-config fields evaluate may override."""
    config_file = split_config_file([a for a in argv if a not in HELP_FLAGS])[0] if name != "evaluate" else None
    if config_file:
        return load_config(config_file), config_file
    if name == "sweep":
        from crescend_jax.sweeps import default_sweep_config

        return default_sweep_config(), "crescend_jax.sweeps.default_sweep_config()"
    if name == "evaluate":
        from crescend_jax.evaluate.run import default_eval_config

        return ml_collections.ConfigDict({"eval": default_eval_config()}), "the eval section of the run's config"
    default = COMMANDS[name].default_config
    if default and (CONFIGS / default).is_file():
        return load_config(CONFIGS / default), f"configs/{default}"
    return None, ""


def command_help(name: str, argv: Sequence[str] = ()) -> str:
    """The ``--help`` text of command ``name``."""
    command = COMMANDS[name]
    config, source = _help_config(name, argv)
    return help_text(name, command.summary, command.usage, command.flags, config, source,
                     notes=["Exit codes: 0 done, 1 the run failed on its input, data or disk, 2 a usage or config "
                            "mistake (nothing was started)."])


def _run(name: str, argv: Sequence[str]) -> int:
    """Parses ``argv`` for command ``name`` (not sweep/analyze) and runs it; raises `ConfigError` for a mistake."""
    command = COMMANDS[name]
    extra = {flag: None for flag in command.extra}
    overrides: list[str] = []
    if name == "evaluate":
        overrides = [a for a in argv if a.startswith("--config.")]
        _, values, positional = parse_config_flags([a for a in argv if not a.startswith("--config.")], extra=extra)
        config = None
    else:
        config_file, _ = split_config_file(argv)
        if config_file is None:
            raise ConfigError(f"{name} needs --config=FILE (e.g. configs/{command.default_config})")
        config, values, positional = parse_config_flags(argv, config_file=config_file, extra=extra)
        check_sections(name, config, config_file)
    if positional:
        raise ConfigError(f"unexpected argument {positional[0]!r}; see `crescend-jax {name} --help`")
    if "workdir" in extra and not values.get("workdir"):
        raise ConfigError(f"{name} needs --workdir=DIR")

    if name == "extract":
        from crescend_jax.data.extract import parse_shard, run_extract

        return run_extract(config, shard=parse_shard(values["shard"]))
    if name == "merge":
        from crescend_jax.data.extract import run_merge

        return run_merge(config)
    if name == "train":
        return train_command(config, values["workdir"])
    if name == "evaluate":
        return evaluate_command(values["workdir"], baseline=values["baseline"], overrides=overrides)
    from crescend_jax.demo import run_demo

    return run_demo(config, values["workdir"])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(_usage())
        return EXIT_OK if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return fail(f"unknown command {name!r}\n{_usage()}", EXIT_USAGE)
    previous = warnings.formatwarning
    warnings.formatwarning = one_line_warning  # console users need the message, not the source line that raised it
    try:
        if any(item in HELP_FLAGS for item in rest):
            return guarded(lambda: print(command_help(name, rest)) or EXIT_OK)
        if name in ("sweep", "analyze"):
            from crescend_jax.sweeps.main import analyze_main, sweep_main

            return sweep_main(rest) if name == "sweep" else analyze_main(rest)
        return guarded(lambda: _run(name, rest))
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
