"""Errors that lmx reports to the user as one clear message (the CLI prints them without a traceback)."""


class LmxError(Exception):
    """Base class: an error whose message is meant for the user, not a stack trace."""


class ConfigError(LmxError):
    """A config file, key or value is invalid. The message names the key and the value."""


class DataError(LmxError):
    """Input data is missing or malformed. The message names the file (and line where known)."""


class CheckpointError(LmxError):
    """A checkpoint cannot be saved or restored. The message names the directory and step."""


class LossError(LmxError):
    """A loss function broke lmx's loss contract: ``(params, batch[, frozen]) -> (loss_sum, stats)``
    with ``stats["weight"]`` the loss's denominator. The message says what was returned."""


class NonFiniteError(LmxError):
    """Training met a non-finite loss or gradient under ``train.nonfinite=stop``. Names the step."""


class FitError(LmxError):
    """A scaling-law fit cannot be made: too few points for the fit, or points that do not
    determine it (an IsoFLOP profile without a minimum). The message says what is missing."""


class ClusterError(LmxError):
    """A multi-process run cannot start or go on: a process cannot join it, or the devices and
    processes do not fit the mesh. The message names the processes and counts."""
