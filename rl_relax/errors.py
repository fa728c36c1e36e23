"""User-facing errors: each says what is wrong and how to fix it.

Entry points catch :class:`RlRelaxError`, print its message without a traceback and exit non-zero.
"""


class RlRelaxError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""

    exit_code = 2


class ConfigError(RlRelaxError):
    """An invalid configuration value."""


class MissingExtraError(RlRelaxError):
    """An optional dependency (pip extra) is not installed."""


class CheckpointError(RlRelaxError):
    """A checkpoint is unreadable or does not match the run."""


class TrainingDivergedError(RlRelaxError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3
