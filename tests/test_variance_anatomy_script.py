"""scripts/variance_anatomy.py follows the output convention: committed results only with --update-committed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(ROOT.glob("results/variance_anatomy*"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/variance_anatomy.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def digests() -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in COMMITTED}


def test_writing_into_results_needs_update_committed():
    before = digests()
    proc = run("--envs", "CartPole", "--out", str(ROOT / "results"))
    assert proc.returncode == 2 and "--update-committed" in proc.stderr
    assert digests() == before and len(before) >= 5


def test_an_env_that_cannot_be_restored_is_reported_and_nothing_empty_is_written(tmp_path):
    proc = run("--envs", "LunarLander", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "LunarLander: skipped: LunarLander-v3 is a Box2D env" in proc.stderr and "no measurements" in proc.stderr
    assert not (tmp_path / "out").exists()
