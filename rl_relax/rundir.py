"""The run directory: one process at a time (an exclusive lock), and starting over without loss.

Two processes training in one directory corrupt each other's checkpoints and curves; on a cluster
it happens when a requeued job starts while the old one still runs, or when two array tasks resolve
to one directory. :class:`RunDirectoryLock` holds ``fcntl.flock`` on ``<run dir>/.lock`` for the
whole run (the kernel releases it when the process dies, even by SIGKILL, so a stale lock file never
blocks); a second process stops at once with a one-line error naming the holder's pid and host.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rl_relax import checkpoint as ckpt
from rl_relax.errors import RunDirectoryInUseError

log = logging.getLogger("rl_relax")

LOCK_NAME = ".lock"
PREVIOUS_RUNS = "previous_runs"


class RunDirectoryLock:
    """Exclusive, non-blocking ``flock`` on ``run_dir/.lock``; the file records the holder."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ckpt.storage_error(self.path, exc, "lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirectoryInUseError(
                f"run directory {self.run_dir} is in use by another training process ({holder}). "
                "Fix: wait for it to finish or stop it, or choose another run directory (hydra.run.dir=...)."
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError:
            pass  # the lock itself holds; only the holder's description is missing
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_holder(fd: int, wait_s: float = 2.0) -> str:
    """The holder's "pid N on host" line; it writes it right after locking, so wait briefly for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        if text or time.monotonic() > deadline:
            return text or "pid unknown"
        time.sleep(0.02)


def remove_stale_temporary_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files (``.ckpt_*.pt.*.tmp``, ``.summary.json.*.tmp``) a process killed
    mid-write (SIGKILL, power loss) left behind. Only safe under the run directory's lock: no other
    process is writing them."""
    run_dir = Path(run_dir)
    stale = [*run_dir.glob(".summary.json.*.tmp"), *(run_dir / "checkpoints").glob(".ckpt_*.pt.*.tmp")]
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


def previous_run_files(run_dir: Path) -> list[Path]:
    """What a run leaves in its directory besides Hydra's files: checkpoints, events, summary."""
    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("events.out.tfevents.*"))
    for name in ("checkpoints", "summary.json"):
        if (run_dir / name).exists():
            found.append(run_dir / name)
    return found


def move_previous_run_aside(run_dir: Path) -> Path | None:
    """Move an earlier run's checkpoints, TensorBoard events and summary.json to
    ``run_dir/previous_runs/<time>/`` (so they are neither deleted nor mixed with the new run's;
    TensorBoard shows them as a run of their own). Returns the new location, or None if there was
    nothing to move."""
    files = previous_run_files(run_dir)
    if not files:
        return None
    base = Path(run_dir) / PREVIOUS_RUNS / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest, n = base, 1
    while dest.exists():
        dest, n = base.with_name(f"{base.name}_{n}"), n + 1
    try:
        dest.mkdir(parents=True)
        for path in files:
            shutil.move(str(path), str(dest / path.name))
    except OSError as exc:
        raise ckpt.storage_error(dest, exc, "the previous run's files to") from None
    return dest


def check_writable(directory: Path) -> None:
    """Create ``directory`` and write (then delete) a file in it; a one-line :class:`StorageError` if not."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ckpt.storage_error(directory, exc, "to the run directory", fix_dir=directory) from None


class RunDirectoryCheck(Callback):
    """Hydra callback (``hydra.callbacks`` in configs/train.yaml): before Hydra writes ``.hydra/`` into
    the run (or sweep) directory, check that it can be written, so a read-only or full file system
    gives one line and exit code 4 instead of a traceback from inside Hydra."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)

    @staticmethod
    def _check(directory: str) -> None:
        try:
            check_writable(Path(str(directory)))
        except ckpt.StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
