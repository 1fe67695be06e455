"""What a fold's training cost: steady-state examples per second and peak memory (recorded in ``done.json``).

* ``examples_per_second``: rows per second over steps 2..N (step 1 compiles), wall time with the validation and
  checkpoint time taken out, i.e. the rate the step and its input path sustain.
* ``peak_rss_bytes``: the process's resident-set high-water mark (Linux ``VmHWM``) since the fold started: the
  kernel's counter is reset at the start (writing 5 to ``/proc/self/clear_refs``), so a sweep running points one
  after another in one process reports each point's own peak. None where the platform does not offer it.
* ``device_peak_bytes``: the accelerator allocator's ``peak_bytes_in_use`` (GPU/TPU); None on CPU, where the host
  peak is the measure.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Resets the resident-set high-water mark; False where that cannot be done (then the peak is the process's)."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """The resident-set high-water mark in bytes (``VmHWM``), or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_peak_bytes() -> int | None:
    """The first local accelerator's peak allocation in bytes, or None (CPU, or no allocator statistics)."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None


class StepClock:
    """Steady-state throughput of a training loop: ``started()`` after step 1 finished (compiled), ``pause()`` /
    ``resume()`` around validation and checkpoints, ``summary(steps, batch)`` at the end."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.paused = 0.0
        self._pause_at: float | None = None
        self.first_step = 0

    def started(self, step: int) -> None:
        self.start, self.first_step = time.perf_counter(), step

    def pause(self) -> None:
        self._pause_at = time.perf_counter()

    def resume(self) -> None:
        if self._pause_at is not None:
            self.paused += time.perf_counter() - self._pause_at
            self._pause_at = None

    def summary(self, last_step: int, batch_size: int) -> dict[str, float | int | None]:
        """{"measured_steps", "examples_per_second", "peak_rss_bytes", "device_peak_bytes"}."""
        steps = last_step - self.first_step
        seconds = None if self.start is None else time.perf_counter() - self.start - self.paused
        rate = steps * batch_size / seconds if seconds and steps > 0 else None
        return {"measured_steps": max(steps, 0), "examples_per_second": rate, "peak_rss_bytes": peak_rss_bytes(),
                "device_peak_bytes": device_peak_bytes()}
