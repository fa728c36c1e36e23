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


def test_an_env_that_cannot_be_restored_is_reported_and_nothing_empty_is_written(tmp_path, monkeypatch, capsys):
    import pytest
    from omegaconf import OmegaConf

    import rl_relax.anatomy  # noqa: F401  (imported before the patch: it binds the real make_restorable_env)
    import tests.toy_envs  # noqa: F401  (registers RlRelaxTest/GlobalNoise-v0)
    from rl_relax import env_state
    from scripts import variance_anatomy

    # Every env option is a restorable one, so the env the script builds is swapped for one replay cannot restore.
    real = env_state.make_restorable_env
    monkeypatch.setattr(env_state, "make_restorable_env",
                        lambda cfg: real(OmegaConf.create({"id": "RlRelaxTest/GlobalNoise-v0"})))  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["variance_anatomy.py", "--envs", "CartPole", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        variance_anatomy.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "CartPole: skipped: RlRelaxTest/GlobalNoise-v0 cannot be restored" in err and "no measurements" in err
    assert not (tmp_path / "out").exists()
