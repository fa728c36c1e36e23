"""TensorBoard scalars under SB3's conventional names, and a progress line for humans.

Scalars (x-axis: environment steps summed over all envs):

- ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``: mean raw return / length of the last
  ``env.solved_window`` episodes (as RecordEpisodeStatistics reports them, before normalisation);
- ``rollout/episodes``: completed episodes; ``rollout/solved``: 1 once the solved criterion holds;
- ``train/policy_loss``, ``train/value_loss``, ``train/entropy``, ``train/grad_norm`` (global norm
  before clipping): means over the updates since the last write;
- ``train/explained_variance`` (last update), ``train/learning_rate``, ``train/std`` (Gaussian);
- ``time/fps``: env steps per second of wall time since this process started training;
- whatever the estimator reports (e.g. ``cv/loss``), under the names it chooses.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("rl_relax")


class TensorBoardLogger:
    """A SummaryWriter in the run directory; ``purge_step`` hides events a crash left past a resume."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def config(self, cfg: DictConfig) -> None:
        yaml = OmegaConf.to_yaml(cfg, resolve=True)
        self.writer.add_text("config", "```yaml\n" + yaml + "\n```", global_step=0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One ``add_scalar`` per tag. (Writing them as one event through the writer's internal
        ``file_writer`` was ~8x cheaper, but that is ~0.4 ms per log, about 1% of a CartPole run that logs
        every 50 updates: not worth leaning on an internal.)"""
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), global_step=step)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flush and close, giving up after ``timeout_s`` (the writer's thread may be stuck, e.g. on a
        hung network file system): a run's exit, and a cluster job's requeue, never wait forever on
        TensorBoard. Returns whether it closed."""

        def _close() -> None:
            try:
                self.writer.flush()
                self.writer.close()
            except Exception as exc:  # a full disk must not turn the run's exit into a crash
                log.warning("TensorBoard's writer failed to close: %s: %s", type(exc).__name__, exc)

        closer = threading.Thread(target=_close, name="tensorboard-close", daemon=True)
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("TensorBoard's writer did not close within %.0f s; its last events may be missing", timeout_s)
            return False
        return True


class Progress:
    """Live single-line progress on a terminal; periodic plain log lines otherwise.

    Shows env steps, fps, the mean return and the time left at the current speed.
    """

    def __init__(self, total_steps: int, mode: str = "auto", interval_s: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.total = total_steps
        is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = mode == "always" or (mode == "auto" and is_tty)
        self.enabled = mode != "never"
        self.interval = 0.5 if self.live else float(interval_s)
        self._last = time.monotonic()

    def update(self, step: int, fps: float, mean_return: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        eta = (self.total - step) / fps if fps > 0 and step < self.total else 0.0
        ret = "n/a" if mean_return is None else f"{mean_return:.1f}"
        pct = 100.0 * min(step / self.total, 1.0)
        line = f"step {step:,}/{self.total:,} ({pct:.0f}%) | fps {fps:,.0f} | return {ret} | eta {_hms(eta)}"
        if self.live:
            self.stream.write("\r" + line.ljust(80))
            self.stream.flush()
        else:
            log.info(line)

    def close(self) -> None:
        if self.live and self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
