"""TensorBoard scalars as TensorBoard reads them; the progress display: live on a terminal, periodic
log lines otherwise, silent when asked."""

import io
import logging
from pathlib import Path

import pytest

from rl_relax.logger import Progress, TensorBoardLogger
from tests.conftest import read_scalars


def test_scalars_read_back_per_tag_and_step(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    tb.scalars({"train/value_loss": 0.25, "rollout/ep_rew_mean": 21.5, "time/fps": 1e4}, step=40)
    tb.scalars({"train/value_loss": 0.125, "rollout/ep_rew_mean": 30.0}, step=80)
    tb.close()
    scalars = read_scalars(tmp_path)
    assert scalars.keys() == {"train/value_loss", "rollout/ep_rew_mean", "time/fps"}
    assert scalars["train/value_loss"] == [(40, 0.25), (80, 0.125)]
    assert scalars["rollout/ep_rew_mean"] == [(40, 21.5), (80, 30.0)]
    assert scalars["time/fps"] == [(40, pytest.approx(1e4))]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line():
    stream = FakeTerminal()
    progress = Progress(1000, "auto", stream=stream)
    progress.update(500, fps=100.0, mean_return=12.5, force=True)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r") and "step 500/1,000 (50%)" in text and "fps 100" in text
    assert "return 12.5" in text and "eta 0:00:05" in text and text.endswith("\n")


def test_progress_off_a_terminal_logs_plain_lines(caplog):
    stream = io.StringIO()
    progress = Progress(1000, "auto", interval_s=3600, stream=stream)
    with caplog.at_level(logging.INFO, logger="rl_relax"):
        progress.update(100, fps=50.0, mean_return=None)  # within the interval: quiet
        progress.update(200, fps=50.0, mean_return=None, force=True)
    progress.close()
    assert stream.getvalue() == ""  # no carriage returns in logs
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["step 200/1,000 (20%) | fps 50 | return n/a | eta 0:00:16"]


def test_progress_never_is_silent(caplog):
    stream = FakeTerminal()
    with caplog.at_level(logging.INFO, logger="rl_relax"):
        Progress(10, "never", stream=stream).update(5, 1.0, 1.0, force=True)
    assert stream.getvalue() == "" and not caplog.records


def test_closing_never_hangs_on_a_stuck_writer(tmp_path, caplog):
    """A requeue signal once left TensorBoard's writer stuck and tb.close() blocked the job forever."""
    import threading
    import time

    tb = TensorBoardLogger(tmp_path)
    release = threading.Event()
    real_close = tb.writer.close
    tb.writer.close = lambda: release.wait()  # stuck like a writer thread that never drains its queue
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rl_relax"):
        assert tb.close(timeout_s=0.2) is False
    assert time.monotonic() - start < 5
    assert "did not close within" in caplog.text
    release.set()
    real_close()


def test_hparams_leave_out_what_the_sweep_directory_names_leave_out():
    """NOT_HPARAMS is the list of overrides that do not change the experiment in configs/train.yaml."""
    import yaml

    from rl_relax.logger import NOT_HPARAMS

    text = (Path(__file__).resolve().parents[1] / "configs" / "train.yaml").read_text()
    excluded = yaml.safe_load(text)["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert set(NOT_HPARAMS) == set(excluded)


def test_a_log_record_clears_the_live_line_and_the_line_is_drawn_again_below_it():
    stream = FakeTerminal()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    files = logging.StreamHandler(io.StringIO())  # not a terminal: left alone
    logger = logging.getLogger("rl_relax")
    logger.addHandler(handler)
    logger.addHandler(files)
    try:
        progress = Progress(1000, "always", stream=stream)
        logger.warning("before the first draw")  # no line on screen yet: nothing to clear
        progress.update(500, fps=100.0, mean_return=None, force=True)
        line = "\r" + "step 500/1,000 (50%) | fps 100 | return n/a | eta 0:00:05".ljust(80)
        drawn = stream.getvalue()
        logger.warning("solved")
        assert stream.getvalue()[len(drawn) :] == Progress.CLEAR + "solved\n" + line
        assert "emit" not in files.__dict__
        progress.close()
        assert "emit" not in handler.__dict__  # the handler's own emit is back
        logger.warning("after")
        assert stream.getvalue().endswith(line + "\nafter\n")
        assert stream.getvalue().startswith("before the first draw\n" + line)
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(files)


def test_a_run_writes_a_custom_scalars_layout_for_the_sparse_same_policy_measurements(tmp_path):
    """The sampled probe's scalars get charts of their own (TensorBoard's Custom Scalars tab)."""
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from rl_relax.logger import CUSTOM_SCALARS, TensorBoardLogger

    tb = TensorBoardLogger(tmp_path)
    tb.config(OmegaConf.create({"seed": 0}))
    tb.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    titles = {category.title: [chart.title for chart in category.chart] for category in layout.category}
    assert titles == {category: list(charts) for category, charts in CUSTOM_SCALARS.items()}
    tags = [tag for category in layout.category for chart in category.chart for tag in chart.multiline.tag]
    assert r"grad/log_variance_sampled_baseline$" in tags and r"grad/variance_ratio_sampled$" in tags
