"""Shared fixtures: composing the real Hydra config, and fast training runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import tests.toy_envs  # noqa: F401  (registers RlRelaxTest/* envs)

FAST = ["logging.progress=never", "logging.interval_steps=200"]


def compose_config(*overrides: str) -> DictConfig:
    """The config ``python -m rl_relax.train <overrides>`` would run with (minus hydra's node)."""
    with initialize_config_module("rl_relax.configs", version_base="1.3"):
        return compose("train", overrides=[*FAST, *overrides])


@pytest.fixture
def make_cfg() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture
def run_training(tmp_path: Path) -> Callable[..., dict]:
    """Train in-process with the given overrides; returns summary.json as a dict."""
    from rl_relax.train import train

    def _run(*overrides: str, run_dir: Path | None = None) -> dict:
        run_dir = run_dir or tmp_path / "run"
        summary = train(compose_config(*overrides), run_dir)
        assert json.loads((run_dir / "summary.json").read_text()) == summary
        return summary

    return _run


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All TensorBoard scalars in a run directory: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_scalars_as_served(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The same, read as the TensorBoard server reads a run (its plugin event accumulator, whose purging of a
    crashed process's points differs from the legacy reader's: it ignores the first SessionLog.START)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny tensors: a second intra-op thread only adds synchronisation (several times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
