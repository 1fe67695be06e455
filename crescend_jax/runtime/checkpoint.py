"""Orbax checkpoints of one fold: the two latest and the two best (by validation pairwise accuracy) are kept.

A checkpoint holds named state items -- the training core saves "model" (the NNX state: parameters, dropout RNG) and
"optimizer" (the optax state) -- and a JSON record (the step and the sampler's state), so a resumed run draws exactly
the batches an uninterrupted run would have seen, and the evaluation restores the "model" item alone.

Failures are one line each. A checkpoint that cannot be written (a full disk: orbax reports ``RESOURCE_EXHAUSTED``
from its writer threads, or an ``OSError``) is a `CheckpointWriteError` (an ``OSError`` and a `DataError`) naming the
directory; orbax's own log lines for that error (tracebacks from its threads) are left out, the caller reports it
once. A kept checkpoint that cannot be read (a damaged file, a missing manifest or item, bad JSON) is said on stderr,
naming it, and the next kept checkpoint is restored instead (one more of each kind is kept for this); when none
reads, a `CheckpointError` names the fold's directory and the way out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from crescend_jax.errors import DataError

VALIDATION_METRIC = "val_accuracy"
KEEP = 2  # latest and best kept each: the one in use and one to fall back to when it is damaged
_DISK_FULL = ("RESOURCE_EXHAUSTED", "No space left on device", "Disk quota exceeded")


class CheckpointError(DataError):
    """No kept checkpoint of a fold can be read; the message names the directory and the way out."""


class CheckpointWriteError(OSError, DataError):
    """A checkpoint that cannot be written (disk full, read-only): ``strerror`` says why, ``filename`` where."""

    def __str__(self) -> str:
        return (f"cannot write a checkpoint under {self.filename} ({self.strerror}); free space there or choose "
                "another --workdir, then resume with --config.train.resume=True")


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _write_failure(err: BaseException) -> str | None:
    """"no space left on device" (or the OS's reason) when ``err`` or an exception it was raised from is a write
    failure of the disk, else None."""
    for item in _chain(err):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return (item.strerror or str(item)).lower()
        if any(marker in str(item) for marker in _DISK_FULL):
            return "no space left on device"
    return None


class _DiskFullLogFilter(logging.Filter):
    """Drops orbax's log records of a disk write failure (several tracebacks from its threads per failed save):
    `CheckpointWriteError` reports it once, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        return not ((failure is not None and _write_failure(failure)) or any(m in text for m in _DISK_FULL)
                    or "Save Finalize thread" in text)


_LOG_FILTER = _DiskFullLogFilter()


def _closed_loop_callback(unraisable) -> bool:
    """Whether an unraisable exception is tensorstore calling back into the event loop orbax closed after a failed
    read or write (harmless: the failure itself is reported once, as one line)."""
    value = unraisable.exc_value
    return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def _install_unraisable_filter() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "_crescend_filter", False):
        return

    def hook(unraisable) -> None:
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    hook._crescend_filter = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _writes(directory: Path) -> Iterator[None]:
    """Turns a disk write failure raised inside into a one-line `CheckpointWriteError` naming ``directory``."""
    try:
        yield
    except CheckpointWriteError:
        raise
    except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise ValueError/OSError/RuntimeError for it
        reason = _write_failure(err)
        if reason is None:
            raise
        raise CheckpointWriteError(errno.ENOSPC if "space" in reason else errno.EIO, reason, str(directory)) from None


class _Manager(ocp.CheckpointManager):
    """orbax's manager whose waits (also inside save and close) report a failed background write as a
    `CheckpointWriteError`."""

    def wait_until_finished(self) -> None:
        with _writes(Path(str(self.directory))):
            super().wait_until_finished()


def _is_key(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _savable(state: Any) -> Any:
    """Typed PRNG keys -> their raw uint32 data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


class FoldCheckpoints:
    """A `CheckpointManager` in ``directory`` keeping the `KEEP` latest steps and, with ``by_validation``, the `KEEP`
    best steps by ``val_accuracy`` (without, no metric is tracked: a fold without a validation split)."""

    def __init__(self, directory: str | Path, by_validation: bool = True):
        self.directory = Path(directory).absolute()
        kept = [checkpoint_managers.LatestN(KEEP)]
        if by_validation:
            kept.append(checkpoint_managers.BestN(get_metric_fn=lambda m: m[VALIDATION_METRIC], n=KEEP,
                                                  keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(kept),
            best_fn=(lambda m: m[VALIDATION_METRIC]) if by_validation else None, best_mode="max")
        logging.getLogger("absl").addFilter(_LOG_FILTER)  # idempotent: one filter object
        _install_unraisable_filter()
        self.manager = _Manager(self.directory, options=options)

    def save(self, step: int, items: dict[str, Any], record: dict[str, Any], val_accuracy: float | None) -> None:
        """Saves each state item (pytrees of jax arrays) and ``record`` (JSON) at ``step``."""
        metrics = None if val_accuracy is None or not np.isfinite(val_accuracy) else {
            VALIDATION_METRIC: float(val_accuracy)}
        # Host copies: replicated arrays are written once, without orbax slicing every device's replica.
        args = {name: ocp.args.StandardSave(jax.device_get(_savable(state))) for name, state in items.items()}
        if not self.manager._track_best:  # noqa: SLF001 - a fold without validation tracks no metric
            metrics = None
        if step in self.manager.all_steps():  # left by a run resumed from an earlier step (it was unreadable)
            self.manager.delete(step)
        with _writes(self.directory):
            self.manager.save(step, args=ocp.args.Composite(record=ocp.args.JsonSave(record), **args),
                              metrics=metrics, force=True)

    def wait_until_finished(self) -> None:
        """Waits for the last save to be on disk; a failed write is a `CheckpointWriteError`."""
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy; None when no checkpoint has a metric."""
        return self.manager.best_step()

    def selected_step(self, fold_dir: Path) -> int | None:
        """The fold's selected step: ``fold_dir/done.json``'s best_step (by validation, or the last step without a
        validation split) when that checkpoint is kept, else the best by validation, else the latest; None when the
        fold has no checkpoint."""
        done = Path(fold_dir) / "done.json"
        if done.exists() and (step := json.loads(done.read_text()).get("best_step")) is not None:
            if step in self.manager.all_steps():
                return int(step)
        step = self.best_step()
        return step if step is not None else self.latest_step()

    def restore(self, step: int, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the items named in ``templates``, each shaped, typed and sharded like its template (replicated arrays),
        JSON record) of ``step``; items not asked for are not read. When ``step`` cannot be read, stderr says so and
        the other kept steps are tried (newest first); the record's "step" is the one restored. `CheckpointError`
        when none reads."""
        candidates = [step] + sorted((s for s in self.manager.all_steps() if s != step), reverse=True)
        failures = []
        for candidate in candidates:
            try:
                restored = self._restore(candidate, templates)
            except (OSError, ValueError, KeyError) as err:  # tensorstore (DATA_LOSS, NOT_FOUND), orbax, json
                failures.append(f"step {candidate}: {type(err).__name__}: {_first_line(err)}")
                print(f"warning: checkpoint {self.directory / str(candidate)} cannot be read "
                      f"({_first_line(err)})" + (f"; trying step {candidates[len(failures)]}"
                                                  if len(failures) < len(candidates) else ""), file=sys.stderr)
                continue
            items, record = restored
            if isinstance(record, dict):
                record = {**record, "step": record.get("step", candidate)}
            return items, record
        raise CheckpointError(f"no checkpoint under {self.directory} can be read ({'; '.join(failures)}); delete "
                              f"{self.directory.parent} and train this fold again (--config.train.resume=True keeps "
                              "the other folds)")

    def _restore(self, step: int, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        args = {name: ocp.args.StandardRestore(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                                                            jax.eval_shape(_savable, template)))
                for name, template in templates.items()}
        restored = self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore(), **args))
        if not isinstance(restored["record"], dict) or "step" not in restored["record"]:
            raise ValueError("its record is not the JSON object a save writes")

        def place(t: jax.Array, x: np.ndarray) -> jax.Array:
            array = jax.make_array_from_process_local_data(t.sharding, np.asarray(x), np.shape(x))
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(t)) if _is_key(t) else array

        items = {name: jax.tree.map(place, template, restored[name]) for name, template in templates.items()}
        return items, restored["record"]

    def close(self) -> None:
        """Waits for the last save (a failed write is a `CheckpointWriteError`) and closes the manager."""
        try:
            self.manager.wait_until_finished()
        finally:
            with _writes(self.directory):
                self.manager.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
