"""The train and evaluate commands as functions returning exit codes (`crescend_jax.cli` parses their flags;
`crescend_jax.demo` calls them for every approach), and the check that a config file suits the command it is given to.

Each catches the project's two error kinds only (`crescend_jax.errors`): a `ConfigError` is exit 2, a `DataError`
exit 1, both printed as one line; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ml_collections

from crescend_jax.config import ConfigError, parse_config_flags
from crescend_jax.console import EXIT_OK, guarded

# The sections a command reads, and the config files that have them (named in the error for a file without them).
NEEDS = {
    "extract": (("corpus", "data", "render", "encoder", "store"), "configs/percepiano.py, configs/asap.py"),
    "merge": (("corpus", "data", "render", "encoder", "store"), "configs/percepiano.py, configs/asap.py"),
    "train": (("data", "model", "train"),
              "configs/baseline.py, configs/approach_a.py, configs/approach_b.py, configs/approach_c.py, "
              "configs/asap_pretrain.py"),
    "demo": (("corpus", "data", "render", "encoder", "store", "approaches", "baseline"), "configs/demo.py"),
}


def check_sections(command: str, config: ml_collections.ConfigDict, config_file: str = "") -> None:
    """`ConfigError` when ``config`` lacks a section ``command`` reads (e.g. a data-only config given to train),
    naming the config files that suit the command."""
    sections, examples = NEEDS[command]
    missing = [name for name in sections if name not in config]
    if missing:
        what = f"config file {config_file}" if config_file else "the config"
        raise ConfigError(f"{what} has no {', '.join(missing)} section(s), which {command} needs; {command} takes "
                          f"{examples}")


def train_command(config: ml_collections.ConfigDict, workdir: str, config_file: str = "") -> int:
    """``train``: every fold of ``config`` into ``workdir``; prints each fold's steps and selected step."""
    from crescend_jax.train.trainer import train

    def run() -> int:
        check_sections("train", config, config_file)
        records = train(config, workdir)
        for record in records:
            print(f"fold {record['fold']}: {record['steps']} steps, selected step {record['best_step']} "
                  f"({record.get('selection', 'validation')})")
        return EXIT_OK

    return guarded(run)


def override_saved_config(workdir: str | Path, overrides: Sequence[str]) -> ml_collections.ConfigDict | None:
    """The finished run's saved config with ``--config.eval.*``-style ``overrides`` applied (None without
    overrides); `ConfigError` for an override of a field that changes the model."""
    from crescend_jax.evaluate.predict import read_config
    from crescend_jax.models.functions import NON_MODEL_FIELDS, flatten

    if not overrides:
        return None
    saved = read_config(Path(workdir))
    config, _, _ = parse_config_flags(list(overrides), config=ml_collections.ConfigDict(saved.to_dict()))
    before, after = flatten(saved.to_dict()), flatten(config.to_dict())
    changed = [n for n in after if after[n] != before.get(n) and not n.startswith(NON_MODEL_FIELDS)]
    if changed:
        raise ConfigError(f"evaluate can only override fields that do not change the model (eval.*, experiment.*), "
                          f"not {', '.join('--config.' + n for n in changed)}")
    return config


def evaluate_command(workdir: str, baseline: str | None = None, overrides: Sequence[str] = ()) -> int:
    """``evaluate``: metrics.json, report.md and plots of a trained ``workdir``; prints the accuracy and where the
    report is (the intervals and each comparison with its verdict are printed by `evaluate.run.evaluate_workdir`)."""
    from crescend_jax.evaluate.run import evaluate_workdir

    def run() -> int:
        config = override_saved_config(workdir, overrides)
        metrics = evaluate_workdir(workdir, baseline=baseline, config=config)
        accuracy = metrics["pooled"]["pairwise_accuracy"]["mean"]
        fraction = metrics["fraction_of_ceiling"]["pairwise_accuracy"]["mean"]
        print(f"held-out pairwise accuracy {accuracy:.3f}"
              + (f" ({100 * fraction:.0f}% of the way to the noise ceiling)" if fraction is not None else ""))
        print(f"report: {metrics['report']}")
        return EXIT_OK

    return guarded(run)

