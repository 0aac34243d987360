"""What both loops record: Keras callbacks, so `fit` and the manual loop share them."""

from collections.abc import Callable

import keras
import numpy as np


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

    def __init__(self, losses: dict[str, Callable[[], float]], model):
        super().__init__()
        self._losses = losses
        self._trained = model
        self.trajectory: dict[str, list] = {name: [] for name in losses}
        self._has_line = hasattr(model, "w") and hasattr(model, "b")
        if self._has_line:
            self.trajectory.update(w=[], b=[])

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        values = self._record()
        if logs is not None:
            logs.update(values)

    def _record(self) -> dict[str, float]:
        values = {name: float(loss()) for name, loss in self._losses.items()}
        for name, value in values.items():
            self.trajectory[name].append(value)
        if self._has_line:
            self.trajectory["w"].append(np.array(self._trained.w.numpy()))
            self.trajectory["b"].append(float(self._trained.b.numpy()))
        return values
