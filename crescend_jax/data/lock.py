"""One extraction per store at a time: ``fcntl.flock`` locks on files inside the store directory.

    <store_dir>/extract.lock               held *exclusively* by a whole-corpus extraction (writer "all") and *shared*
                                           by shard workers (``extract --shard i/N``), so the N workers of one
                                           store run side by side while a whole-corpus run excludes them all
    <store_dir>/extract-<writer id>.lock   held exclusively by the worker of that shard (e.g. ``shard-0-of-4``), so
                                           two workers of one shard do not both do its work

A second extraction **waits** for the first (saying so once, with the holder's pid and host when the lock file
names them), then continues: it re-reads which keys are stored and skips what the first one wrote. It waits at most
``timeout`` seconds (``config.store.lock_timeout``) and then refuses with a `StoreLockedError`; a timeout of 0
refuses at once. The kernel drops a flock when its process dies, so a killed extraction never leaves a stale lock.
Workers of different shard counts (``--shard 0/2`` beside ``--shard 0/4``) do not exclude each other: their
overlapping keys are stored twice and merged once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO

from crescend_jax.data.store import StoreError, cannot_write

STORE_LOCK = "extract.lock"
POLL_SECONDS = 0.2


class StoreLockedError(StoreError):
    """Another extraction still holds a store's lock after the allowed wait."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
        holder = json.loads(text) if text else None
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        return "another `crescend-jax extract`"
    return f"`crescend-jax extract` pid {holder.get('pid')} on {holder.get('host')} (writer {holder.get('writer')})"


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool, writer_id: str, deadline: float, timeout: float,
           out: TextIO) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        waiting = False
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise cannot_write(path, err) from None
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"{path} is still held by {_holder(path)} after {timeout:g} s: wait for that extraction to "
                    f"finish (a rerun then skips everything it stored), or raise --config.store.lock_timeout")
            if not waiting:
                print(f"waiting for {path}: {_holder(path)} is writing this store; this run continues when it is "
                      f"done and skips what it stored (at most {timeout:g} s, --config.store.lock_timeout)",
                      file=out, flush=True)
                waiting = True
            time.sleep(max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
        if exclusive:
            holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "writer": writer_id})
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        try:
            yield
        finally:
            if exclusive:
                os.ftruncate(fd, 0)  # the file names a holder only while one holds it
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def extraction_lock(store_dir: Path, writer_id: str = "all", timeout: float = 3600.0,
                    out: TextIO | None = None) -> Iterator[None]:
    """Holds the extraction lock of ``store_dir`` for ``writer_id`` ("all" or "shard-i-of-N"); see the module
    docstring. Creates ``store_dir`` if needed; a directory that cannot be written raises `StoreError` naming it."""
    store_dir = Path(store_dir)
    out = sys.stderr if out is None else out
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(store_dir, err) from None
    deadline = time.monotonic() + max(0.0, float(timeout))
    whole = writer_id == "all"
    with _flock(store_dir / STORE_LOCK, whole, writer_id, deadline, timeout, out):
        if whole:
            yield
            return
        with _flock(store_dir / f"extract-{writer_id}.lock", True, writer_id, deadline, timeout, out):
            yield
