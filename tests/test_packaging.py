"""Install: the configs ship inside the wheel, the README's test command is CI's, and the CPU set-up picks
torch's CPU build over PyPI's CUDA build."""

from __future__ import annotations

import json
import os
import re
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


def readme_setup_commands() -> list[str]:
    blocks = (ROOT / "README.md").read_text().split("```bash\n")
    return [block.split("\n```")[0].strip() for block in blocks[1:3]]


def test_both_readme_set_up_commands_install_torchs_cpu_build_first():
    for command in readme_setup_commands():
        steps = command.split(" && ")
        assert steps[2] == "pip install --no-deps -r torch-cpu.txt"
        assert steps[3].startswith('pip install -e ".[') and "-c " not in steps[3]


def _fake_wheel(directory: Path, version: str) -> Path:
    """A minimal pure-Python wheel named torch, enough for pip's resolver."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"torch-{version}.dist-info"
    path = directory / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        whl.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist_info}/RECORD", "")
    return path


def _simple_index(root: Path, wheel: Path) -> str:
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "index.html").write_text(f'<html><body><a href="{wheel.as_uri()}">{wheel.name}</a></body></html>')
    return root.as_uri()


def test_torch_cpu_file_prefers_the_cpu_index_build_over_pypis_build_of_the_same_version(tmp_path):
    """pip with torch-cpu.txt, its CPU index and PyPI replaced by local stand-ins, installs the +cpu build."""
    text = (ROOT / "torch-cpu.txt").read_text()
    (cpu_index,) = re.findall(r"^--extra-index-url (\S+)$", text, re.M)
    (pin,) = re.findall(r"^torch==(\S+)$", text, re.M)
    assert cpu_index == "https://download.pytorch.org/whl/cpu" and "+" not in pin
    pypi = _simple_index(tmp_path / "pypi", _fake_wheel(tmp_path / "pypi_files", pin))  # PyPI: the CUDA build
    cpu = _simple_index(tmp_path / "cpu", _fake_wheel(tmp_path / "cpu_files", f"{pin}+cpu"))
    requirements = tmp_path / "torch-cpu.txt"
    requirements.write_text(text.replace(cpu_index, cpu))
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this machine's own indexes and wheels out of it
    env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--index-url", pypi,
         "--report", str(tmp_path / "report.json"), "-r", str(requirements)],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (install,) = json.loads((tmp_path / "report.json").read_text())["install"]
    assert install["metadata"]["version"] == f"{pin}+cpu"
    assert "/cpu_files/" in install["download_info"]["url"]
