"""What both loops record, as Keras callbacks, so `fit` and the manual loop share them.

- `EpochRecorder` (first in the list): the History's rows, on the whole
  training set before training and after each epoch, put in the epoch's
  logs too, so the callbacks after it (CSVLogger, EarlyStopping, ...) see them.
- `HistoryLogger` (after the user's callbacks, like Keras's History): the
  epoch's logs, as the callbacks left them.
- `CallbackProgress` (after them too): the progress of stateful Keras
  callbacks (EarlyStopping's patience, ...), kept for checkpoints and put
  back when a run resumes.
- `PeriodicCheckpoint`: a training checkpoint every N epochs (and every N
  batches inside an epoch); `RestoreEpochProgress` puts an epoch's loss and
  metric variables back when a run resumes inside it.
"""

import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from linfit.checkpoint import checkpoint_name, list_checkpoints
from linfit.errors import ConfigError
from linfit.history import History, line_values
from linfit.interrupts import StopRequest
from linfit.losses import NonFiniteRecord


class EpochRecorder(keras.callbacks.Callback):
    """Records whole-dataset values (`full_loss`, and `w`, `b` where the model has
    them) per epoch, with the epoch's validation results.

    The first row is the state before training, then one row after each
    epoch: E epochs give E + 1 rows, the numbers the guide prints.

    Args:
      history: where the rows go (a resumed run's holds its earlier rows).
      record: record() -> the values now, under `names`. A loop that computed
        them in its graph passes them in the epoch's logs instead.
      names: the names `record` returns.
      validation: the validation logs to keep per row (`val_loss`, `val_mae`,
        ...), taken from the epoch's logs (None for an epoch not validated).
      start_validation: () -> the validation loss before training, or None.
      to_data_units: (w, b) -> (w, b) in the data's units, for a model
        trained on standardised features; None when they are the same.
      record_start: False when resuming: the history has that row.
      check_finite: raise NonFiniteRecord for a non-finite value (False:
        record it, for a fit that ends as Keras's does, with TerminateOnNaN).
    """

    def __init__(self, history: History, record: Callable[[], dict], names: list[str],
                 validation: list[str] = (), start_validation: Callable[[], float] | None = None,
                 to_data_units=None, record_start: bool = True, check_finite: bool = True):
        super().__init__()
        self.history = history
        self._record = record
        self._names = list(names)
        self._validation = list(validation)
        self._start_validation = start_validation
        self._to_data_units = to_data_units
        self._record_start = record_start
        self._check_finite = check_finite

    def on_train_begin(self, logs=None):
        # Where training ends is not known yet: a checkpoint written during this fit
        # goes on from its own weights, not from where a fit it resumed had ended.
        self.history.end_weights = None
        if self._record_start:
            before = {name: None for name in self._validation}
            if self._start_validation is not None:
                before["val_loss"] = self._start_validation()
            self._append({**self._record(), **before}, epochs_completed=0)

    def on_train_end(self, logs=None):
        # First of all callbacks: the weights training reached, before any
        # other callback (EarlyStopping) gives the model others.
        self.history.end_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        given = all(name in logs for name in self._names)
        values = {name: logs.pop(name) for name in self._names} if given else self._record()
        row = self._append({**values, **{name: logs.get(name) for name in self._validation}},
                           epochs_completed=epoch + 1)
        logs.update({name: row[name] for name in self._names if name not in ("w", "b")})
        if "w" in row:  # as scalars, for CSVLogger and TensorBoard
            logs.update(line_values(row["w"], row["b"]))

    def _append(self, values: dict, epochs_completed: int) -> dict:
        row = {name: None if values[name] is None else float(values[name])
               for name in [*self._names, *self._validation] if name not in ("w", "b")}
        if self._check_finite and not all(np.isfinite(value) for value in row.values()
                                          if value is not None):
            raise NonFiniteRecord(epochs_completed, row)
        if "w" in self._names:
            w, b = np.asarray(values["w"]), np.asarray(values["b"])
            if self._to_data_units is not None:
                w, b = self._to_data_units(w, b)
            # Both NumPy float32 arrays, 0-d for one value (History.w, History.b).
            row.update(w=np.array(w, dtype=np.float32), b=np.array(b, dtype=np.float32))
        self.history.append_row(row)
        return row


class BatchPosition(keras.callbacks.Callback):
    """Where training is: the epoch and the first batch of the current call."""

    epoch: int = 0
    batch: int = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.batch = epoch, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = batch


class StopAtSafePoint(keras.callbacks.Callback):
    """Ends training after the epoch under way when the process is asked to stop
    (see `linfit.interrupts`): a whole epoch, so its checkpoint is whole too."""

    def __init__(self, history: History, stop: StopRequest):
        super().__init__()
        self.history = history
        self._stop = stop

    def on_epoch_end(self, epoch, logs=None):
        if self._stop.requested:
            self.history.interrupted = True
            self.model.stop_training = True


class HistoryLogger(keras.callbacks.Callback):
    """Appends each epoch's logs to `history.logs`, as keras.callbacks.History does."""

    def __init__(self, history: History):
        super().__init__()
        self.history = history

    def on_epoch_end(self, epoch, logs=None):
        self.history.append_logs(logs or {})


# The state of Keras callbacks that carry progress from epoch to epoch, and
# which their on_train_begin resets.
STATEFUL = {"EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch", "best_weights"),
            "ReduceLROnPlateau": ("wait", "cooldown_counter", "best")}


def stateful(callbacks) -> list:
    """The callbacks among `callbacks` whose progress `CallbackProgress` keeps."""
    return [callback for callback in callbacks if _kind(callback) is not None]


def _kind(callback) -> str | None:
    return next((name for name in STATEFUL
                 if isinstance(callback, getattr(keras.callbacks, name))), None)


class CallbackProgress(keras.callbacks.Callback):
    """Keeps the progress of the stateful callbacks in `history.callback_progress`
    after each epoch (JSON-ready), and, given a checkpoint's, puts it back when
    training starts (after their own on_train_begin has reset it).

    Args:
      history: where the progress is kept.
      callbacks: the stateful callbacks (see `stateful`), in order.
      restore: the progress to put back, or None.
    """

    def __init__(self, history: History, callbacks: list, restore: list | None = None):
        super().__init__()
        self.history = history
        self._callbacks = callbacks
        self._restore = restore

    def on_train_begin(self, logs=None):
        # A second fit on the same callbacks (see `RestoreEpochProgress`) puts back
        # the progress made in the first.
        restore = self._restore if self._restore is not None else self.history.callback_progress
        self._restore = None
        for callback, progress in zip(self._callbacks, restore or []):
            if progress.get("class") == _kind(callback):
                for name in STATEFUL[progress["class"]]:
                    setattr(callback, name, _from_json(progress[name]))
        self.on_epoch_end(None)

    def on_epoch_end(self, epoch, logs=None):
        self.history.callback_progress = [
            {"class": _kind(callback), **{name: _to_json(getattr(callback, name))
                                          for name in STATEFUL[_kind(callback)]}}
            for callback in self._callbacks]


def _to_json(value):
    """A callback's state as JSON: arrays as lists, non-finite floats as strings."""
    if isinstance(value, (list, tuple)):  # a model's weights: a 0-d one stays an array
        return [_to_json(np.asarray(item) if isinstance(item, np.generic) else item)
                for item in value]
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return {"float": str(float(value))}
    return value.item() if isinstance(value, np.generic) else value


def _from_json(value):
    if isinstance(value, list):  # a model's weights (a 0-d one saved before as a float)
        return [np.asarray(item, np.float32) if isinstance(item, float) else _from_json(item)
                for item in value]
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=value["dtype"])
    if isinstance(value, dict) and "float" in value:
        return float(value["float"])
    return value


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves a training checkpoint every `every` epochs and, with `every_batches`,
    after every that many batches inside an epoch; keeps the newest `keep`.

    Files are `directory/epoch-NNNN.weights.h5` (epochs completed), or
    `epoch-NNNN-batch-NNNNNN.weights.h5` (and batches of the next one), each
    written atomically by `save(path, epochs_completed, batches)` (e.g. through
    `Trainer.save_checkpoint`). A failed or diverged step never reaches the
    hooks, so the newest checkpoint always holds finite weights.

    No checkpoint is written of an epoch at whose end a callback stops training
    (EarlyStopping: it acts again when training ends, restoring the best weights,
    and the run's final checkpoint holds what it leaves): a run killed before that
    one resumes from an earlier checkpoint, and stops where it stopped.

    Args:
      steps_per_epoch: the batches of an epoch (its end is an epoch's checkpoint).
      interrupted: () -> whether a signal stops training (its epoch is checkpointed).
    """

    def __init__(self, save: Callable[[Path, int, int], None], directory: Path, every: int,
                 keep: int = 0, every_batches: int = 0, steps_per_epoch: int = 0,
                 interrupted: Callable[[], bool] = lambda: False):
        super().__init__()
        self._save = save
        self._interrupted = interrupted
        self.directory = Path(directory)
        self.every = every
        self.keep = keep
        self.every_batches = every_batches
        self._steps = steps_per_epoch
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        if self.every_batches and done % self.every_batches == 0 and done < self._steps:
            self._write(checkpoint_name(self._epoch, done), self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        completed = epoch + 1
        stopping = self.model.stop_training and not self._interrupted()
        if self.every and completed % self.every == 0 and not stopping:
            self._write(checkpoint_name(completed), completed, 0)

    def _write(self, name: str, epochs: int, batches: int) -> None:
        self._save(self.directory / name, epochs, batches)
        if self.keep:
            for old in list_checkpoints(self.directory)[:-self.keep]:
                old.unlink(missing_ok=True)


def output_callbacks(save, history: History, checkpoints: tuple, steps_per_epoch: int,
                     on_epoch_end) -> list:
    """linfit's callbacks after the user's (they see each epoch as recorded):
    periodic checkpoints, where `checkpoints` = (directory or None, every N
    epochs, every N batches, keep the newest N), and `on_epoch_end(history)`."""
    directory, every, every_batches, keep = checkpoints
    callbacks = []
    if directory is not None:
        if every_batches >= steps_per_epoch:
            warnings.warn(f"checkpoints every {every_batches} batches (train."
                          f"checkpoint_every_batches) but an epoch has {steps_per_epoch}: "
                          "none is written inside an epoch", stacklevel=3)
        callbacks.append(PeriodicCheckpoint(save, directory, every, keep, every_batches,
                                            steps_per_epoch, lambda: history.interrupted))
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: on_epoch_end(history),
            on_epoch_end=lambda epoch, logs: on_epoch_end(history)))
    return callbacks


class RestoreEpochProgress(keras.callbacks.Callback):
    """For a run resumed in the middle of an epoch: at that epoch's beginning (after
    the loop has reset its metrics), the metric variables as the checkpoint saved
    them, so the epoch's logs are those of a run never stopped.

    Args:
      variables: () -> the variables to restore, in the order saved.
      values: their saved values.
    """

    def __init__(self, variables: Callable[[], list], values: list):
        super().__init__()
        self._variables = variables
        self._values = values

    def on_epoch_begin(self, epoch, logs=None):
        if self._values is None:
            return
        for variable, value in zip(self._variables(), self._values):
            variable.assign(np.asarray(value).astype(variable.dtype))
        self._values = None


def overridden_hooks(callbacks) -> frozenset[str]:
    """The hooks (`on_epoch_end`, ...) that any of `callbacks` overrides, in its
    class or on the instance (as LambdaCallback sets them).

    What a callback overrides is what it may do during training: the loops
    choose their fast paths by it, as Keras chooses asynchronous dispatch.
    """
    base = keras.callbacks.Callback
    hooks = [name for name in dir(base) if name.startswith("on_")]
    return frozenset(name for callback in callbacks for name in hooks
                     if getattr(type(callback), name) is not getattr(base, name)
                     or name in vars(callback))


def progress_callbacks(history: History, callbacks: list, progress: list) -> list:
    """Keeping (and, resuming, putting back) the stateful callbacks' progress."""
    kept = stateful(callbacks)
    return [CallbackProgress(history, kept, progress)] if kept else []


def user_callbacks(callbacks) -> list:
    """`fit`'s callbacks as a list: None, one callback (as Keras takes it) or several.

    Raises:
      ConfigError: for anything that is not a keras.callbacks.Callback.
    """
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    callbacks = list(callbacks or [])
    wrong = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    if wrong:
        raise ConfigError(f"callbacks: {wrong[0]!r} is not a keras.callbacks.Callback")
    return callbacks


def note_stopping(history: History, callbacks: list, epochs: int) -> None:
    """Record whether a callback stopped training, and what EarlyStopping decided (a
    run asked to stop after its last epoch was not interrupted)."""
    history.interrupted = history.interrupted and history.epochs < epochs
    history.stopped = history.stopped or (history.epochs < epochs and not history.interrupted)
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.EarlyStopping):
            history.early_stopping = {
                "monitor": callback.monitor,
                "best_after": None if callback.best is None else callback.best_epoch + 1,
                "restored": bool(callback.restore_best_weights
                                 and callback.best_weights is not None)}
