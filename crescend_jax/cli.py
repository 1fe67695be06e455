"""`crescend-jax` command line: extract, merge, train, evaluate, demo.

Every subcommand that takes ``--config FILE`` also takes ``--config.field=value`` overrides.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from crescend_jax.config import ConfigError, load_config


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    return rest, overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crescend-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="render and encode a corpus into the embedding store")
    p.add_argument("--config", required=True, help="config file, e.g. configs/percepiano.py")
    p.add_argument("--shard", default=None, help="i/N: process only shard i of N (0-based); merge afterwards")

    p = sub.add_parser("merge", help="merge the shards written by `extract --shard i/N` into one dataset")
    p.add_argument("--config", required=True)

    p = sub.add_parser("train", help="train an approach by composition folds into WORKDIR")
    p.add_argument("--config", required=True, help="config file, e.g. configs/baseline.py")
    p.add_argument("--workdir", required=True)

    p = sub.add_parser("evaluate", help="evaluate a trained WORKDIR: metrics.json, report.md, plots")
    p.add_argument("--workdir", required=True)
    p.add_argument("--baseline", default=None, help="workdir of the baseline to compare against")

    p = sub.add_parser("demo", help="the main job: demo corpus -> store -> every approach -> report")
    p.add_argument("--config", required=True, help="configs/demo.py")
    p.add_argument("--workdir", required=True)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # console users need the message, not the source line that raised it
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    args = _parser().parse_args(rest)
    if overrides and not hasattr(args, "config"):
        print(f"error: {args.command} takes no --config overrides", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, overrides) if hasattr(args, "config") else None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.command == "extract":
        from crescend_jax.data.extract import parse_shard, run_extract

        try:
            shard = parse_shard(args.shard)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return run_extract(config, shard=shard)
    if args.command == "merge":
        from crescend_jax.data.extract import run_merge

        return run_merge(config)
    if args.command == "train":
        from crescend_jax.train.trainer import run_training

        return run_training(config, args.workdir)
    if args.command == "evaluate":
        from crescend_jax.evaluate.run import evaluate_workdir

        return evaluate_workdir(args.workdir, baseline=args.baseline)
    if args.command == "demo":
        from crescend_jax.demo import run_demo

        return run_demo(config, args.workdir)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
