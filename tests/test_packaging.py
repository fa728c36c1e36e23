"""Install layout: the configs ship inside the wheel, and the README's test command is CI's."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configs_are_found_from_a_non_editable_wheel_install(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir),
         str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = wheel_dir.glob("rl_relax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rl_relax/configs/train.yaml" in names and "rl_relax/configs/env/CartPole.yaml" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    probe = (
        "import rl_relax, pathlib; "
        "from hydra import compose, initialize_config_module; "
        "from rl_relax.envs import shipped_env_options; "
        "initialize_config_module('rl_relax.configs', version_base='1.3').__enter__(); "
        "cfg = compose('train', overrides=['env=InvertedPendulum']); "
        "print(pathlib.Path(rl_relax.__file__).parent); print(cfg.env.id); print(','.join(shipped_env_options()))"
    )
    # Run from an empty directory with the wheel's copy first on the path: no source checkout in sight.
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    where, env_id, options = proc.stdout.split()
    assert Path(where).is_relative_to(target)
    assert env_id == "InvertedPendulum-v5"
    assert "CartPole" in options.split(",") and "LunarLander" in options.split(",")


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = readme.split("```bash\n")
    test_command = blocks[2].split("\n```")[0].strip()  # the README's second command
    assert "pytest" in test_command
    assert test_command in ci
