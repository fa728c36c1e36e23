"""TensorBoard scalars under SB3's conventional names, and a progress line for humans.

Scalars (x-axis: environment steps summed over all envs):

- ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``: mean raw return / length of the last
  ``env.solved_window`` episodes (as RecordEpisodeStatistics reports them, before normalisation);
- ``rollout/episodes``: completed episodes; ``rollout/solved``: 1 once the solved criterion holds;
- ``train/policy_loss``, ``train/value_loss``, ``train/entropy``, ``train/grad_norm`` (global norm
  before clipping): means over the updates since the last write;
- ``train/explained_variance`` (last update), ``train/learning_rate``, ``train/std`` (Gaussian);
- ``time/fps``: env steps per second of training since this process started (the seconds spent in
  variance probes and evaluation left out); ``time/probe_s``, ``time/anatomy_s``, ``time/eval_s``: the
  seconds one sampled-variance probe, variance anatomy or evaluation took, at the step it ran;
- ``eval/mean_reward``, ``eval/mean_ep_length``: periodic deterministic evaluation (``eval.*`` keys);
- whatever the estimator reports (e.g. ``cv/loss``), under the names it chooses;
- ``hparams/final_return``, ``hparams/episodes_to_solve``, ``hparams/variance_ratio``: once, at the
  final step, the metrics of TensorBoard's HParams tab (next to the run's hparams, :func:`run_hparams`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

log = logging.getLogger("rl_relax")

# Overrides that do not change the experiment (the same list as hydra.job.config.override_dirname.exclude_keys
# in configs/train.yaml, which names sweep job directories; a test keeps them equal): not hparams.
NOT_HPARAMS = ("device", "logging.progress", "logging.progress_interval_s", "logging.interval_steps",
               "checkpoint.interval_steps", "checkpoint.keep_last", "checkpoint.resume")  # fmt: skip
# Config groups: their override value is the option's name (env=CartPole), not a config value.
CONFIG_GROUPS = ("env", "estimator", "experiment")


#: TensorBoard's Custom Scalars tab: the sparse same-policy measurements in charts of their own, the
#: estimator next to the baseline estimator at the same policy (the Scalars tab smooths sparse points away).
CUSTOM_SCALARS = {
    "Same-policy gradient variance (sampled probe)": {
        "log-variance: this run's estimator vs the baseline estimator, same policy": [
            "Multiline",
            [r"grad/log_variance_sampled$", r"grad/log_variance_sampled_baseline$"],
        ],
        "variance ratio, estimator / baseline estimator (same policy)": [
            "Multiline",
            [r"grad/variance_ratio_sampled$"],
        ],
    },
    "Variance anatomy (same policy)": {
        "shares of the per-step variance": ["Multiline", [r"variance/share_.*"]],
        "action part removed by each baseline": ["Multiline", [r"variance/action_removed_by_.*"]],
    },
}


def run_hparams(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """The hyperparameters that define a run, for TensorBoard's HParams tab.

    Always ``env.id``, ``estimator.name`` and ``seed``; then every override of the run (Hydra's task
    overrides, e.g. ``estimator=relax learner.lr=1e-3``) except Hydra's own and :data:`NOT_HPARAMS`.
    A group override keeps its option name; a key override takes the config's (typed) value, so a
    sweep's numbers sort as numbers. Booleans and other values become strings (the tab's types).
    """
    found: dict[str, Any] = {"env.id": cfg.env.id, "estimator.name": cfg.estimator.name, "seed": int(cfg.seed)}
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra") or key in NOT_HPARAMS:
            continue
        value: Any = text
        if key not in CONFIG_GROUPS:
            try:
                value = OmegaConf.select(cfg, key, default=text)
            except OmegaConfBaseException:
                value = text
            if isinstance(value, DictConfig | ListConfig):
                value = OmegaConf.to_yaml(value, resolve=True).strip().replace("\n", ", ")
        found[key] = value
    return {key: _hparam_value(value) for key, value in found.items()}


def _hparam_value(value: Any) -> float | int | str:
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    return value if isinstance(value, int | float | str) else str(value)


class TensorBoardLogger:
    """A SummaryWriter in the run directory; ``purge_step`` hides events a crash left past a resume."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def config(self, cfg: DictConfig, yaml: str | None = None) -> None:
        """Once per run: the resolved config as text (``yaml`` if already rendered), and the Custom Scalars layout."""
        yaml = OmegaConf.to_yaml(cfg, resolve=True) if yaml is None else yaml
        self.writer.add_text("config", "```yaml\n" + yaml + "\n```", global_step=0)
        self.writer.add_custom_scalars(CUSTOM_SCALARS)

    def hparams_start(self, hparams: dict[str, Any]) -> None:
        """The HParams plugin's session-start record (the run's hparams), in the run's own event file.

        Only the session records are written, no experiment record: TensorBoard then builds the
        HParams tab from every run's session (the union of their hparams, the metrics from their
        scalar tags). An experiment record, as ``add_hparams`` writes one, would make one run's hparam
        list stand for all runs under the log directory.
        """
        _, session_start, _ = hparams_summaries(hparams, {})
        self._record(session_start, step=0)

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        """The metric values (scalars under their tags) and the session-end record, at the final step."""
        self.scalars(metrics, step)
        _, _, session_end = hparams_summaries({}, {})
        self._record(session_end, step)

    def _record(self, summary: Any, step: int) -> None:
        """Write a summary SummaryWriter has no method for (an HParams session record) into the run's event file.

        Through the writer's ``file_writer`` attribute, as stable-baselines3 and torch's own ``add_hparams``
        do: no public method takes a built summary, and a second event file (torch's public ``FileWriter``)
        would stop a live TensorBoard, which polls only the newest file of a run, from showing the scalars.
        """
        self.writer.file_writer.add_summary(summary, global_step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One ``add_scalar`` per tag. (Writing them as one event, through the writer's internal
        ``file_writer``, saved ~0.3 ms per log: under 1% of a CartPole run that logs every 50 updates, not
        worth leaning on an internal.)"""
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

    While the line is live, a log record never lands on it (as tqdm's ``logging_redirect_tqdm``):
    every logging handler that writes to a terminal (Hydra's console handler, the Python API's
    stderr handler, ...) first clears the line (carriage return + erase to the end of the line),
    writes its record, and the line is drawn again below it. :meth:`close` puts the handlers back.
    """

    CLEAR = "\r\x1b[K"  # carriage return, then ANSI "erase to end of line"

    def __init__(self, total_steps: int, mode: str = "auto", interval_s: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.total = total_steps
        self.live = mode == "always" or (mode == "auto" and _is_terminal(self.stream))
        self.enabled = mode != "never"
        self.interval = 0.5 if self.live else float(interval_s)
        self._last = time.monotonic()
        self._line = ""  # the line on screen ("" while none is drawn)
        self._wrapped: list[tuple[logging.Handler, Any]] = []
        if self.live and self.enabled:
            for handler in self._terminal_handlers():
                self._wrap(handler)

    def due(self) -> bool:
        """Whether :meth:`update` would draw or log now (callers skip computing its arguments otherwise)."""
        return self.enabled and time.monotonic() - self._last >= self.interval

    def update(self, step: int, fps: float, mean_return: float | None, force: bool = False) -> None:
        if not self.enabled or not (force or self.due()):
            return
        self._last = time.monotonic()
        eta = (self.total - step) / fps if fps > 0 and step < self.total else 0.0
        ret = "n/a" if mean_return is None else f"{mean_return:.1f}"
        pct = 100.0 * min(step / self.total, 1.0)
        line = f"step {step:,}/{self.total:,} ({pct:.0f}%) | fps {fps:,.0f} | return {ret} | eta {_hms(eta)}"
        if self.live:
            self._line = line.ljust(80)
            self._draw()
        else:
            log.info(line)

    def close(self) -> None:
        for handler, previous in self._wrapped:
            if previous is None:
                del handler.emit  # the class's emit again
            else:
                handler.emit = previous
        self._wrapped = []
        if self.live and self.enabled:
            self.stream.write("\n")
            self.stream.flush()
            self._line = ""

    def _draw(self) -> None:
        self.stream.write("\r" + self._line)
        self.stream.flush()

    def _terminal_handlers(self) -> list[logging.Handler]:
        """Stream handlers (not files) of every logger that write to this stream or to a terminal."""
        loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                          if isinstance(x, logging.Logger))]  # fmt: skip
        found: list[logging.Handler] = []
        for logger in loggers:
            for handler in logger.handlers:
                if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                    continue
                stream = getattr(handler, "stream", None)
                if handler not in found and (stream is self.stream or _is_terminal(stream)):
                    found.append(handler)
        return found

    def _wrap(self, handler: logging.Handler) -> None:
        """``handler.emit`` becomes: clear the live line, emit, draw the line again."""
        previous = handler.__dict__.get("emit")  # an instance-level emit (another wrapper) is restored as is
        emit = handler.emit

        def emit_below_progress(record: logging.LogRecord) -> None:
            if not self._line:
                emit(record)
                return
            self.stream.write(self.CLEAR)
            self.stream.flush()
            try:
                emit(record)
            finally:
                self._draw()

        handler.emit = emit_below_progress  # type: ignore[method-assign]
        self._wrapped.append((handler, previous))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
