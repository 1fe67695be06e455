"""`crescend-jax` command line: extract, merge, train, evaluate, demo, sweep, analyze.

    crescend-jax COMMAND [--config=FILE] [--config.field=value ...] [--workdir=DIR] [--shard=i/N] [--baseline=DIR]

Flags are absl flags and configs ``ml_collections.config_flags`` (see `crescend_jax.config`). ``evaluate`` takes no
config file: its ``--config.field=value`` overrides apply to the finished run's saved config (e.g.
``--config.eval.min_gap=0.1``; fields that change the model are refused).

Exit codes, the same in every command: 0 done; 1 the run failed on its input or data (a bad store, a split that
cannot be ranked, a NaN loss, a workdir trained on other data, a failed extraction item); 2 a usage or config
mistake (nothing was started).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Sequence

import ml_collections

from crescend_jax.config import ConfigError, parse_config_flags

COMMANDS = {
    "extract": "render and encode a corpus into the embedding store (--config, optional --shard=i/N)",
    "merge": "merge the shards written by `extract --shard i/N` into one dataset (--config)",
    "train": "train an approach by composition folds into --workdir (--config)",
    "evaluate": "evaluate a trained --workdir: metrics.json, report.md, plots (optional --baseline=DIR)",
    "demo": "the main job: demo corpus -> store -> every approach -> report (--config=configs/demo.py --workdir)",
    "sweep": "train and evaluate every point of a sweep, then one table (--config=configs/sweeps/NAME.py --workdir, "
             "--all.field=value on every point)",
    "analyze": "per-dimension gains over the baseline and fractions of ceiling (--workdir=SWEEPDIR or --runs DIR ...)",
}
FLAGS_OF = {"extract": ("shard",), "merge": (), "train": ("workdir",), "evaluate": ("workdir", "baseline"),
            "demo": ("workdir",)}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _usage() -> str:
    lines = [__doc__.splitlines()[2].strip(), "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """``--name=value`` or ``--name value`` from ``argv`` (before absl parses it)."""
    for index, item in enumerate(argv):
        if item.startswith(f"--{name}="):
            return item.split("=", 1)[1]
        if item == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def train_command(config: ml_collections.ConfigDict, workdir: str) -> int:
    """``train``: every fold of ``config`` into ``workdir``; prints each fold's steps and selected step."""
    from crescend_jax.data.splits import SplitError
    from crescend_jax.data.store import StoreError
    from crescend_jax.train.trainer import TrainingError, train

    try:
        records = train(config, workdir)
    except ConfigError as err:
        return _error(str(err), EXIT_USAGE)
    except (TrainingError, SplitError, StoreError) as err:
        return _error(str(err), EXIT_FAILED)
    for record in records:
        print(f"fold {record['fold']}: {record['steps']} steps, selected step {record['best_step']} "
              f"({record.get('selection', 'validation')})")
    return EXIT_OK


def evaluate_command(workdir: str, baseline: str | None = None, overrides: Sequence[str] = ()) -> int:
    """``evaluate``: metrics.json, report.md and plots of a trained ``workdir``."""
    from crescend_jax.data.fingerprint import FingerprintMismatch
    from crescend_jax.data.store import StoreError
    from crescend_jax.evaluate.predict import EvaluationError, read_config
    from crescend_jax.evaluate.run import evaluate_workdir
    from crescend_jax.models.functions import NON_MODEL_FIELDS, flatten

    try:
        config = None
        if overrides:
            saved = read_config(Path(workdir))
            config, _, _ = parse_config_flags(list(overrides), config=ml_collections.ConfigDict(saved.to_dict()))
            before, after = flatten(saved.to_dict()), flatten(config.to_dict())
            changed = [n for n in after if after[n] != before.get(n) and not n.startswith(NON_MODEL_FIELDS)]
            if changed:
                raise ConfigError(f"evaluate can only override fields that do not change the model (eval.*, "
                                  f"experiment.*), not {', '.join('--config.' + n for n in changed)}")
        metrics = evaluate_workdir(workdir, baseline=baseline, config=config)
    except ConfigError as err:
        return _error(str(err), EXIT_USAGE)
    except (EvaluationError, FingerprintMismatch, StoreError, ValueError) as err:
        return _error(str(err), EXIT_FAILED)
    accuracy = metrics["pooled"]["pairwise_accuracy"]["mean"]
    fraction = metrics["fraction_of_ceiling"]["pairwise_accuracy"]["mean"]
    print(f"held-out pairwise accuracy {accuracy:.3f}"
          + (f" ({100 * fraction:.0f}% of the way to the noise ceiling)" if fraction is not None else ""))
    print(f"report: {metrics['report']}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # console users need the message, not the source line that raised it
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return EXIT_OK if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}\n{_usage()}", EXIT_USAGE)
    if "-h" in rest or "--help" in rest:
        print(f"crescend-jax {command}: {COMMANDS[command]}")
        return EXIT_OK
    if command in ("sweep", "analyze"):  # their own flags (--all.*, --runs DIR ...): crescend_jax.sweep parses them
        from crescend_jax.sweep import analyze_main, sweep_main

        return sweep_main(rest) if command == "sweep" else analyze_main(rest)
    extra = {name: None for name in FLAGS_OF[command]}
    try:
        if command == "evaluate":
            overrides = [a for a in rest if a.startswith("--config.")]
            _, values, positional = parse_config_flags([a for a in rest if not a.startswith("--config.")],
                                                       extra=extra)
            config = None
        else:
            config_file = _flag_value(rest, "config")
            if config_file is None:
                raise ConfigError(f"{command} needs --config=FILE (e.g. configs/percepiano.py)")
            config, values, positional = parse_config_flags(rest, config_file=config_file, extra=extra)
        if positional:
            raise ConfigError(f"unexpected argument {positional[0]!r}; see `crescend-jax {command} --help`")
        for name in ("workdir",):
            if name in extra and not values.get(name):
                raise ConfigError(f"{command} needs --{name}=DIR")
    except ConfigError as err:
        return _error(str(err), EXIT_USAGE)

    if command == "extract":
        from crescend_jax.data.extract import parse_shard, run_extract

        try:
            shard = parse_shard(values["shard"])
        except ConfigError as err:
            return _error(str(err), EXIT_USAGE)
        return run_extract(config, shard=shard)
    if command == "merge":
        from crescend_jax.data.extract import run_merge

        return run_merge(config)
    if command == "train":
        return train_command(config, values["workdir"])
    if command == "evaluate":
        return evaluate_command(values["workdir"], baseline=values["baseline"], overrides=overrides)
    from crescend_jax.demo import run_demo

    return run_demo(config, values["workdir"])


if __name__ == "__main__":
    sys.exit(main())
