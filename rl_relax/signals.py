"""Stop signals set a flag; the training loop checks it once per update, checkpoints and stops.

SIGTERM, SIGINT, SIGUSR1, SIGUSR2 and SIGHUP (what schedulers and terminals send to stop or preempt
a job) never raise inside whatever line happens to run: that is how a signal used to interrupt
TensorBoard's writer mid-event, or an optimizer step. A second SIGINT (Ctrl-C twice) exits at once
with code 130; the last checkpoint is intact because checkpoints are written atomically.

Cooperation with submitit (Hydra's submitit launcher): submitit installs its own handlers before the
job runs: SIGUSR2 checkpoints the job and requeues it, SIGTERM is deliberately ignored ("bypassed").
While training, submitit's requeue handler is deferred: the loop first writes a checkpoint, closes
TensorBoard and the environments, and then hands the signal to it (:meth:`StopSignals.hand_over`),
which requeues the job; the requeued job resumes from that checkpoint. Handlers that submitit
bypasses stay bypassed (they do not stop training).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)

Handler = Callable[[int, Any], Any] | int | None


def _is_submitit_bypass(handler: Handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return (
        owner is not None
        and type(owner).__module__.startswith("submitit")
        and getattr(handler, "__name__", "") == "bypass"
    )


def _is_foreign(handler: Handler) -> bool:
    """A Python-level handler someone else installed (not default, ignore, or Python's KeyboardInterrupt)."""
    return callable(handler) and handler is not signal.default_int_handler


class StopSignals:
    """While active (``with StopSignals() as stop:``), stop signals only set ``stop.signum``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Handler] = {}
        self.active = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only; nothing to install here
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self.active = True
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.active = False

    def _handle(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        if _is_submitit_bypass(previous):
            previous(signum, frame)  # submitit ignores this one on purpose (SLURM sends it at preemption)
            return
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT:
            os.write(2, b"\nsecond SIGINT: exiting now without a checkpoint (the last one is intact)\n")
            os._exit(128 + signal.SIGINT)

    def successor(self) -> Handler:
        """The handler that was installed before ours for the signal received, if it must run next
        (submitit's requeue handler); None otherwise."""
        if self.signum is None:
            return None
        previous = self._previous.get(self.signum)
        return previous if _is_foreign(previous) else None

    def hand_over(self) -> None:
        """Call the previous handler for the received signal (after the checkpoint is written)."""
        handler = self.successor()
        if handler is not None:
            handler(self.signum, None)
