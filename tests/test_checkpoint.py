"""Checkpoint files: atomic writes, pruning, safe loading, RNG round trip, checksums, finiteness, full disks."""

import errno
import os
import pickle
import random
import tempfile

import numpy as np
import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.errors import CheckpointError, StorageError, TrainingDivergedError


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


# ----------------------------------------------------------------------------- integrity (issue 16)
def real_payload(step: int = 100) -> dict:
    """A payload with the shapes of a real one: weights, an optimizer state, RNG states, counters."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(3, 4)).sum().backward()
    opt.step()
    return {"format_version": ckpt.FORMAT_VERSION, "policy": net.state_dict(), "opt": opt.state_dict(),
            "rng": ckpt.rng_state(), "counters": {"global_step": step, "recent_returns": [1.5, 2.0]}}  # fmt: skip


def test_checksum_detects_every_bit_flip_that_changes_the_content(tmp_path):
    """100 random single-bit flips: each either fails to load or loads exactly the saved content.
    (Without a checksum most flips in tensor data loaded silently with changed weights.)"""
    path = ckpt.save_checkpoint(real_payload(), tmp_path, 100, keep_last=1)
    original = path.read_bytes()
    digest = ckpt.load_checkpoint(path)["sha256"]
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "unchanged": 0}
    for bit in rng.choice(len(original) * 8, size=100, replace=False):
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        try:
            loaded = ckpt.load_checkpoint(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            outcomes["refused"] += 1
        else:
            assert ckpt.content_digest(loaded) == digest  # a flip in zip padding/metadata changes nothing
            outcomes["unchanged"] += 1
    assert outcomes["refused"] >= 50, outcomes  # most of the file is tensor data and pickled values


def test_a_modified_tensor_fails_the_checksum(tmp_path):
    path = ckpt.save_checkpoint(real_payload(), tmp_path, 100, keep_last=1)
    tampered = torch.load(path, weights_only=True)
    tampered["policy"]["0.weight"][0, 0] += 1e-3
    torch.save(tampered, path)
    with pytest.raises(CheckpointError, match=r"does not match its sha256 checksum.*Fix"):
        ckpt.load_checkpoint(path)


def test_an_older_format_is_refused_with_its_version(tmp_path):
    path = tmp_path / "ckpt_000000000001.pt"
    torch.save({"format_version": 1, "policy": {}}, path)
    with pytest.raises(CheckpointError, match=r"format 1, written by an older rl_relax"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("where", ["policy", "optimizer", "float"])
def test_non_finite_state_is_never_written(tmp_path, where):
    ckpt.save_checkpoint(real_payload(100), tmp_path, 100, keep_last=3)
    bad = real_payload(200)
    if where == "policy":
        bad["policy"]["2.bias"][1] = float("nan")
    elif where == "optimizer":
        bad["opt"]["state"][0]["exp_avg_sq"][0, 0] = float("inf")
    else:
        bad["counters"]["recent_returns"].append(float("-inf"))
    with pytest.raises(TrainingDivergedError, match="non-finite") as info:
        ckpt.save_checkpoint(bad, tmp_path, 200, keep_last=3)
    assert {"policy": "policy.2.bias", "optimizer": "opt.state.0.exp_avg_sq", "float": "counters.recent_returns.2"}[
        where
    ] in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_000000000100.pt"]  # nothing written, nothing left


def test_rotation_never_deletes_a_checkpoint_of_a_higher_step(tmp_path):
    """Files above the step just written belong to another run: keep_last rotation must not let them win."""
    for step in (1000, 2000):
        ckpt.save_checkpoint(payload(step), tmp_path, step, keep_last=2)
    for step in (100, 200, 300):
        ckpt.save_checkpoint(payload(step), tmp_path, step, keep_last=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt_000000000200.pt", "ckpt_000000000300.pt", "ckpt_000000001000.pt", "ckpt_000000002000.pt"]


def test_temporary_names_are_unique_per_write(tmp_path, monkeypatch):
    sources = []
    real_replace = os.replace

    def recording_replace(src, dst):
        sources.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    for _ in range(3):
        ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=2)
    assert len(set(sources)) == 3 and all(s.startswith(".ckpt_000000000100.pt.") for s in sources)


# ----------------------------------------------------------------------------- full disk, unwritable directory
def _assert_one_line_storage_error(exc: StorageError, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and "Fix:" in text, text
    for needle in needles:
        assert needle in text, text


def test_a_full_disk_leaves_no_partial_file_and_the_last_checkpoint_intact(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=2)
    good_bytes = good.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        """A file object that writes half of the data, then fails as a full disk does."""

        def __init__(self, fd, mode):
            self.fh = real_fdopen(fd, mode)

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(StorageError) as info:
        ckpt.save_checkpoint(payload(200), tmp_path, 200, keep_last=2)
    _assert_one_line_storage_error(info.value, "ckpt_000000000200.pt", "No space left on device", "ENOSPC",
                                   str(good), "free disk space")  # fmt: skip
    assert info.value.exit_code == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000100.pt"]  # no temporary file left
    assert good.read_bytes() == good_bytes


def test_a_failing_fsync_is_a_storage_error_too(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left on device"):
        ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=2)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_directory_is_a_one_line_error(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(StorageError) as info:
        ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=2)
    _assert_one_line_storage_error(info.value, "Permission denied", "writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; the monkeypatched test covers it")
def test_a_read_only_directory_is_a_one_line_error(tmp_path):
    good = ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=2)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageError) as info:
            ckpt.save_checkpoint(payload(200), tmp_path, 200, keep_last=2)
    finally:
        tmp_path.chmod(0o700)
    _assert_one_line_storage_error(info.value, "Permission denied", str(good))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_000000000100.pt"]


def test_fallback_skips_a_corrupt_newest_checkpoint(tmp_path):
    ckpt.save_checkpoint(payload(100), tmp_path, 100, keep_last=3)
    newest = ckpt.save_checkpoint(payload(200), tmp_path, 200, keep_last=3)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    path, loaded = ckpt.load_latest_valid(tmp_path)
    assert path.name == "ckpt_000000000100.pt" and loaded["step"] == 100
    assert (tmp_path / "ckpt_000000000200.pt.corrupt").read_bytes() == bytes(data)
    assert ckpt.load_latest_valid(tmp_path / "nothing_here") is None


def test_a_forged_checkpoint_with_a_valid_checksum_but_non_finite_weights_is_refused(tmp_path):
    forged = real_payload()
    forged["policy"]["0.weight"][0, 0] = float("nan")
    forged["sha256"] = ckpt.content_digest(forged)
    path = tmp_path / "ckpt_000000000100.pt"
    torch.save(forged, path)
    with pytest.raises(CheckpointError, match=r"non-finite values \(policy\.0\.weight\)"):
        ckpt.load_checkpoint(path)
