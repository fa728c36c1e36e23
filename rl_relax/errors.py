"""User-facing errors: each says what is wrong and how to fix it.

Entry points catch :class:`RlRelaxError`, print its message on one line without a traceback and
exit with its ``exit_code``:

==========  ===========================================================================
exit code   meaning
==========  ===========================================================================
2           bad input: config value, checkpoint, run directory in use by another process
3           training diverged (a NaN or infinite loss or state); the last good checkpoint is kept
4           the run directory cannot be written (disk full, read-only, permissions)
128 + N     stopped by signal N after writing a checkpoint (130 SIGINT, 143 SIGTERM, 129 SIGHUP,
            138 SIGUSR1, 140 SIGUSR2 on Linux); re-run the same command to resume
==========  ===========================================================================
"""

from __future__ import annotations

import signal


class RlRelaxError(Exception):
    """Base class for errors caused by the user's input or the run's surroundings rather than by a bug."""

    exit_code = 2


class ConfigError(RlRelaxError):
    """An invalid configuration value."""


class MissingExtraError(RlRelaxError):
    """An optional dependency (pip extra) is not installed."""


class CheckpointError(RlRelaxError):
    """A checkpoint is unreadable or does not match the run."""


class RunDirectoryInUseError(RlRelaxError):
    """Another process holds the run directory's lock."""


class TrainingDivergedError(RlRelaxError):
    """A loss or a saved state became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class StorageError(RlRelaxError):
    """The run directory cannot be written (disk full, read-only file system, permissions)."""

    exit_code = 4


class TrainingInterrupted(RlRelaxError):
    """A stop signal arrived; the run wrote a checkpoint and stopped. Exit code 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 128 + int(self.signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name
