"""Per-step metrics to ``metrics.jsonl`` (pandas: ``pd.read_json(path, lines=True)``) and TensorBoard events,
plus a tqdm progress bar with the loss and steps/s. Only process 0 writes. A write that fails (a full disk) is one
`MetricsWriteError` naming the file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import jax
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from crescend_jax.errors import DataError


class MetricsWriteError(DataError):
    """The metrics of a fold cannot be written (disk full, read-only)."""


def _cannot_write(path: Path, err: OSError) -> MetricsWriteError:
    return MetricsWriteError(f"cannot write {path} ({err.strerror or err}); free space there or choose another "
                             "--workdir, then resume with --config.train.resume=True")


class MetricsWriter:
    """Appends one JSON line per logged step to ``<directory>/metrics.jsonl`` and mirrors scalars to TensorBoard.

    Opened at ``initial_step`` > 0 (a resumed run), it first drops the lines of steps after ``initial_step`` (logged
    by the killed run past its last checkpoint, and about to be logged again), so each step appears once."""

    def __init__(self, directory: str | Path, total_steps: int, initial_step: int = 0, description: str = ""):
        self.enabled = jax.process_index() == 0
        self.directory = Path(directory)
        self._last_time = time.perf_counter()
        self._last_step = initial_step
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "metrics.jsonl"
        if path.exists():  # a resumed run: drop what the killed run logged after its last checkpoint
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= initial_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._jsonl = open(path, "a")
        self._tensorboard = SummaryWriter(str(self.directory / "tensorboard"))
        self._bar = tqdm(total=total_steps, initial=initial_step, desc=description, unit="step", dynamic_ncols=True)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Records ``metrics`` (floats) at ``step`` and advances the bar; adds "steps_per_s" for train logs."""
        if not self.enabled:
            return
        now = time.perf_counter()
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        if step > self._last_step:
            record["steps_per_s"] = (step - self._last_step) / max(now - self._last_time, 1e-9)
            self._bar.update(step - self._last_step)
            self._last_time, self._last_step = now, step
        try:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        except OSError as err:
            raise _cannot_write(self.directory / "metrics.jsonl", err) from None
        for name, value in record.items():
            if name != "step":
                self._tensorboard.add_scalar(name, value, step)
        shown = {k: f"{record[k]:.4g}" for k in ("loss", "val_accuracy", "steps_per_s") if k in record}
        if shown:
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        """Closes the bar, the TensorBoard events and metrics.jsonl; a failed final write is a `MetricsWriteError`
        (after everything was closed)."""
        if not self.enabled:
            return
        self._bar.close()
        failures = []
        for path, close in ((self.directory / "tensorboard", self._tensorboard.close),
                            (self.directory / "metrics.jsonl", self._jsonl.close)):
            try:
                close()
            except OSError as err:
                failures.append(_cannot_write(path, err))
        if failures:
            raise failures[0]
