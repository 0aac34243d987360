"""linfit's errors: each names the problem and what to do about it.

Every bad input (config, data, checkpoint, model, CLI argument) raises a
`LinfitError` subclass; the CLI prints `error: <message>` and exits 2.
The kinds also derive from `ValueError`, so code that already catches
`ValueError` around a training call keeps working.
"""


class LinfitError(Exception):
    """Base class of every error linfit raises for a user's input."""


class ConfigError(LinfitError, ValueError):
    """A config file, a `--set` override or a Trainer argument is wrong."""


class DataError(LinfitError, ValueError):
    """Training data is missing, unreadable or unusable."""


class ModelError(LinfitError, ValueError):
    """A model cannot be trained as given (e.g. Keras does not track its variables)."""


class CheckpointError(LinfitError, ValueError):
    """A checkpoint path or file does not fit the model."""


class RunDirError(LinfitError, ValueError):
    """The run directory cannot be used (e.g. it exists and is not empty)."""
