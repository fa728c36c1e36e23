"""Checkpoint files: atomic writes, pruning, safe loading, RNG round trip."""

import pickle
import random

import numpy as np
import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.errors import CheckpointError


def payload(step: int) -> dict:
    return {"format_version": ckpt.FORMAT_VERSION, "step": step, "weights": torch.arange(4.0) * step,
            "rng": ckpt.rng_state()}  # fmt: skip


def test_round_trip_is_atomic_and_keeps_the_newest(tmp_path):
    for step in (100, 200, 300):
        ckpt.save_checkpoint(payload(step), tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_000000000200.pt", "ckpt_000000000300.pt"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert loaded["step"] == 300
    torch.testing.assert_close(loaded["weights"], torch.arange(4.0) * 300)


def test_latest_is_by_step_not_by_name_order(tmp_path):
    ckpt.save_checkpoint(payload(9_000), tmp_path, 9_000, keep_last=5)
    ckpt.save_checkpoint(payload(10_000), tmp_path, 10_000, keep_last=5)
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt_000000010000.pt"


def test_corrupt_file_raises_a_clear_error(tmp_path):
    bad = tmp_path / "ckpt_000000000100.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"corrupt.*Fix"):
        ckpt.load_checkpoint(bad)
    assert bad.read_bytes() == b"not a checkpoint at all"  # nothing deleted or rewritten


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/rl_relax_pwned", "w"))


def test_loading_never_executes_code(tmp_path):
    evil = tmp_path / "ckpt_000000000001.pt"
    with open(evil, "wb") as fh:
        torch.save({"format_version": 1, "x": _Exploit()}, fh, pickle_module=pickle)
    marker = "/tmp/rl_relax_pwned"
    import os

    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(evil)
    assert not os.path.exists(marker)


def test_foreign_format_is_refused(tmp_path):
    path = tmp_path / "ckpt_000000000001.pt"
    torch.save({"format_version": 999}, path)
    with pytest.raises(CheckpointError, match="format"):
        ckpt.load_checkpoint(path)


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


def test_compatibility_check_names_the_difference(tmp_path):
    meta = {"env_id": "CartPole-v1", "architecture": {"policy.w": [64, 4]}}
    ckpt.check_compatible({"meta": meta}, meta, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="env id"):
        ckpt.check_compatible({"meta": meta}, {**meta, "env_id": "Acrobot-v1"}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"policy\.w has shape \[64, 4\] in the checkpoint, \[32, 4\]"):
        ckpt.check_compatible({"meta": meta}, {**meta, "architecture": {"policy.w": [32, 4]}}, tmp_path / "x.pt")
