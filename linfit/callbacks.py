"""What both loops record: Keras callbacks, so `fit` and the manual loop share them."""

import re
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from linfit.compare import weight_names


class NonFiniteRecord(FloatingPointError):
    """A recorded loss is not finite (raised where no check inside the graph ran,
    e.g. under XLA, which drops tf.debugging.check_numerics)."""


class TrajectoryRecorder(keras.callbacks.Callback):
    """Records whole-dataset losses (and `w`, `b` where the model has them) per epoch.

    The first row is the state before training, then one row after each
    epoch: E epochs give E + 1 rows, the numbers the guide prints. Each
    epoch's losses are also put in the epoch logs, so callbacks after this
    one (History, CSVLogger, EarlyStopping, ...) see them.

    Args:
      losses: name -> a function computing that loss now, e.g. `full_loss`
        on the whole training set and `val_loss` on the validation set.
      model: the model being trained (a tf.Module or a keras.Model).
    """

    def __init__(self, losses: dict[str, Callable[[], float]], model, record_start: bool = True):
        super().__init__()
        self._losses = losses
        self._trained = model
        self._record_start = record_start
        self._pending = None
        self.trajectory: dict[str, list] = {name: [] for name in losses}
        self._has_line = hasattr(model, "w") and hasattr(model, "b")
        if self._has_line:
            self.trajectory.update(w=[], b=[])

    def on_train_begin(self, logs=None):
        if self._record_start:  # not when resuming: the checkpoint has that row
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        values = self._record()
        if logs is not None:
            logs.update(values)
            if self._has_line:  # as scalars, for CSVLogger and TensorBoard
                w = np.atleast_1d(self.trajectory["w"][-1])
                logs.update(zip(weight_names(len(w)), map(float, w)))
                logs["b"] = self.trajectory["b"][-1]

    def set_pending(self, values: dict) -> None:
        """Values recorded inside a fused training call, for the next epoch end."""
        self._pending = values

    def _record(self) -> dict[str, float]:
        pending, self._pending = self._pending, None
        if pending is not None:
            values = {name: float(pending[name]) for name in self._losses}
            w, b = pending.get("w"), pending.get("b")
        else:
            values = {name: float(loss()) for name, loss in self._losses.items()}
            w = self._trained.w.numpy() if self._has_line else None
            b = self._trained.b.numpy() if self._has_line else None
        if not all(np.isfinite(value) for value in values.values()):
            raise NonFiniteRecord(f"a recorded loss is not finite: {values}")
        for name, value in values.items():
            self.trajectory[name].append(value)
        if self._has_line:
            self.trajectory["w"].append(np.array(w))
            self.trajectory["b"].append(float(b))
        return values


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves a training checkpoint every `every` epochs, keeping the newest `keep`.

    Files are `directory/epoch-NNNN.weights.h5` (epochs completed), each
    written atomically by `save(path)` (e.g. `Trainer.save_checkpoint`).
    A failed or diverged epoch never reaches `on_epoch_end`, so the newest
    checkpoint always holds finite weights.
    """

    def __init__(self, save: Callable[[Path, int], None], directory: Path, every: int,
                 keep: int = 0):
        super().__init__()
        self._save = save
        self.directory = Path(directory)
        self.every = every
        self.keep = keep

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        completed = epoch + 1
        if completed % self.every:
            return
        self._save(self.directory / checkpoint_name(completed), completed)
        if self.keep:
            for old in list_checkpoints(self.directory)[:-self.keep]:
                old.unlink(missing_ok=True)


def checkpoint_name(epochs_completed: int) -> str:
    return f"epoch-{epochs_completed:04d}.weights.h5"


def list_checkpoints(directory: Path) -> list[Path]:
    """The periodic checkpoints in `directory`, oldest first (temporary files excluded)."""
    pattern = re.compile(r"epoch-(\d+)\.weights\.h5")
    found = [(int(m.group(1)), path) for path in Path(directory).glob("epoch-*.weights.h5")
             if (m := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found)]
