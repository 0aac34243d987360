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


class DivergenceError(LinfitError, FloatingPointError):
    """Training produced a non-finite loss and stopped.

    Either a batch's loss was not finite (that update was not applied), or
    the loss on the whole training set was not finite after an epoch (or
    before training).

    Attributes:
      epoch: the epoch (0-based) in which it diverged; None when the loss was
        not finite before training.
      batch: the batch (0-based) whose loss was not finite; None when it was
        the loss on the whole training set.
      history: the `linfit.History` recorded until then (every finite row), or None.
      completed: runs that finished before this one (set by `run_experiment`).
    """

    def __init__(self, message: str, epoch: int, batch: int, history=None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history
        self.completed = []


class WriteError(LinfitError, OSError):
    """A file could not be written: a full disk, a file-size limit, no permission.
    What was complete stays complete, and no temporary file is left behind."""


class TrainingInterrupted(Exception):
    """Training stopped at a safe point (the end of an epoch) because the process was
    asked to stop (SIGINT, SIGTERM). Not a LinfitError: nothing was wrong.

    Attributes:
      signal: the signal's number.
      completed: runs that finished before (set by `run_experiment`).
      run: the run that was stopped, its history up to the last finished epoch.
    """

    def __init__(self, signal: int, completed: list, run):
        super().__init__(f"interrupted by signal {signal}")
        self.signal = signal
        self.completed = completed
        self.run = run


class WorkerLostError(LinfitError, RuntimeError):
    """A worker of a multi-worker cluster stopped responding; the run stopped."""
