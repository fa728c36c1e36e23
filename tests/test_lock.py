"""One process per run directory: an exclusive lock, a one-line error naming the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl_relax.errors import RunDirectoryInUseError
from rl_relax.rundir import RunDirectoryLock

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid(tmp_path):
    in_use = rf"in use by another training process \(pid {os.getpid()} on"
    with RunDirectoryLock(tmp_path), pytest.raises(RunDirectoryInUseError, match=in_use):
        RunDirectoryLock(tmp_path).acquire()
    with RunDirectoryLock(tmp_path):  # released: the next process gets it
        pass


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    code = f"from rl_relax.rundir import RunDirectoryLock; RunDirectoryLock({str(tmp_path)!r}).acquire(); " \
           "import time; print('locked', flush=True); time.sleep(60)"  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirectoryInUseError, match=rf"pid {holder.pid} on"):
        RunDirectoryLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    with RunDirectoryLock(tmp_path):  # the kernel released the dead process's lock
        pass


def test_a_second_training_process_in_the_same_directory_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    args = ["total_timesteps=100000000", "logging.progress=never", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "summary.json").exists() and not any(run_dir.glob("events.*")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=300, check=False)  # fmt: skip
        out = second.stdout + second.stderr
        assert second.returncode == 2 and "Traceback" not in out, out
        (line,) = [x for x in out.splitlines() if "in use by another training process" in x]
        assert f"(pid {first.pid} on" in line and "Fix:" in line
        assert first.poll() is None  # the first run is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_run(run_training, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [run_dir / "checkpoints" / ".ckpt_000000000400.pt.k2j3h4.tmp", run_dir / ".summary.json.x8y7.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")  # what kill -9 during a write leaves
    run_training("total_timesteps=400", run_dir=run_dir)
    assert not any(path.exists() for path in stale)
    assert not list(run_dir.rglob("*.tmp"))
