"""What both loops record: Keras callbacks, so `fit` and the manual loop share them."""

from collections.abc import Callable

import keras
import numpy as np


class TrajectoryRecorder(keras.callbacks.Callback):
    """Records `full_loss` (and `w`, `b` where the model has them) per epoch.

    The first row is the state before training, then one row after each
    epoch: E epochs give E + 1 rows, the numbers the guide prints. The
    epoch's `full_loss` is also put in the epoch logs, so callbacks after
    this one (History, CSVLogger, EarlyStopping, ...) see it.

    Args:
      full_loss: computes the loss on the whole training set, now.
      model: the model being trained (a tf.Module or a keras.Model).
    """

    def __init__(self, full_loss: Callable[[], float], model):
        super().__init__()
        self._full_loss = full_loss
        self._trained = model
        self.trajectory: dict[str, list] = {"full_loss": []}
        self._has_line = hasattr(model, "w") and hasattr(model, "b")
        if self._has_line:
            self.trajectory.update(w=[], b=[])

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        full_loss = self._record()
        if logs is not None:
            logs["full_loss"] = full_loss

    def _record(self) -> float:
        full_loss = float(self._full_loss())
        self.trajectory["full_loss"].append(full_loss)
        if self._has_line:
            self.trajectory["w"].append(np.array(self._trained.w.numpy()))
            self.trajectory["b"].append(float(self._trained.b.numpy()))
        return full_loss
