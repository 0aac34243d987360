"""What the History records besides Keras's logs, computed one way for both loops:
after each epoch the loss on the whole training set (and `w`, `b` where the
model has them), and before training the loss on the validation data.

These are forward passes outside the training steps; `record_full_loss=False`
leaves the losses out, for a model whose full pass is costly or has effects.
"""

from collections.abc import Callable

import keras
import tensorflow as tf

from linfit import compat
from linfit.callbacks import EpochRecorder
from linfit.history import History
from linfit import pipeline
from linfit.pipeline import FitData


compat.quiet_linfit_retracing()


class Recording:
    """The record of one model and loss.

    Args:
      model: the model trained.
      loss: the Keras loss, unchecked (the recorder reports a non-finite value).
      full_loss: whether to record the losses on whole data sets.
    """

    def __init__(self, model, loss: keras.losses.Loss, full_loss: bool = True):
        self._model = model
        self._loss = loss
        self.full_loss = full_loss
        line = hasattr(model, "w") and hasattr(model, "b")
        self.names = [*(["full_loss"] if full_loss else []), *(["w", "b"] if line else [])]
        self._compiled: dict = {}
        self._batch_loss = None  # traced for the validation data's shapes, once

    def record(self, data: tuple) -> dict:
        """The values now, from the data variables (x, y, ...): in a graph, or eagerly."""
        values = {}
        if self.full_loss:
            values["full_loss"] = self._full_loss(data[0], data[1])
        return {**values, **self._weights()}

    def _weights(self) -> dict:
        if "w" not in self.names:
            return {}
        return {"w": tf.identity(self._model.w), "b": tf.identity(self._model.b)}

    def _full_loss(self, x, y):
        """The loss on (x, y): at once, or above FULL_PASS_ROWS rows summed over chunks
        of that many, as a streamed pass sums it (`record_pass`), to the bit."""
        rows, size = int(y.shape[0]), pipeline.FULL_PASS_ROWS
        if rows <= size:
            return self._loss(y, self._model(x))
        total = tf.constant(0.0, tf.float64)
        for start in tf.range(0, rows, size):
            total += self._weighted(x[start:start + size], y[start:start + size])
        return tf.cast(total / rows, tf.float32)

    def _weighted(self, x, y):
        """A chunk's loss times its rows, in float64."""
        return tf.cast(self._loss(y, self._model(x)), tf.float64) * \
            tf.cast(tf.shape(y)[0], tf.float64)

    def record_pass(self, chunks, count: int, rows: int, over_workers=None) -> dict:
        """`record` for streamed data: the full loss summed over its `count` chunks
        (an iterator: a dataset given to a tf.function would be copied into its graph),
        and, on a worker of a cluster reading its share, `over_workers` (the sum of every
        worker's)."""
        values = {}
        if self.full_loss:
            total = tf.constant(0.0, tf.float64)
            for _ in tf.range(count):
                x, y = next(chunks)  # a worker's share of a chunk may be no rows
                total += tf.cond(tf.size(y) > 0, lambda: self._weighted(x, y),
                                 lambda: tf.constant(0.0, tf.float64))
            if over_workers is not None:
                total = over_workers(total)
            values["full_loss"] = tf.cast(total / rows, tf.float32)
        return {**values, **self._weights()}

    def function(self, eager: bool) -> Callable[[tuple], dict]:
        """`record`, compiled unless `eager` (one trace per kind of data)."""
        if eager not in self._compiled:
            self._compiled[eager] = self.record if eager else tf.function(self.record)
        return self._compiled[eager]

    def validation_loss(self, data: FitData, eager: bool) -> float:
        """The loss on the validation batches, as an evaluation computes it."""
        if getattr(data, "worker", None) is not None:  # its rows' share, added over the workers
            total = tf.constant(0.0, tf.float64)
            for x, y, _ in data.validation_batches():
                total += self._weighted(x, y) if tf.size(y) > 0 else 0.0
            return float(data.sum_over_workers(total)) / data.validation_files.num_examples
        loss = self._loss if eager else self._batch_loss_function(data)
        mean = keras.metrics.Mean()
        for x, y in data.validation_batches():
            mean.update_state(loss(y, self._model(x)) if eager else loss(x, y),
                              sample_weight=tf.shape(y)[0])
        return float(mean.result())

    def _batch_loss_function(self, data: FitData) -> Callable:
        """The loss of a batch, traced once for batches of any size: TensorFlow warns
        of "retracing" when the runs of an experiment trace it for each size."""
        if self._batch_loss is None:
            x, y = next(iter(data.validation_batches()))
            specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in (x, y)]
            self._batch_loss = tf.function(self._loss_of_batch, input_signature=specs)
        return self._batch_loss

    def _loss_of_batch(self, x, y):
        return self._loss(y, self._model(x))

    def recorder(self, history: History, data: FitData, eager: bool, metrics: list[str],
                 **options) -> EpochRecorder:
        """The EpochRecorder of a fit on `data` (options: to_data_units, record_start,
        check_finite)."""
        validation = ["val_loss", *(f"val_{name}" for name in metrics)] if data.validation else []
        start = (lambda: self.validation_loss(data, eager)) \
            if data.validation and self.full_loss else None
        return EpochRecorder(history, self._values_of(data, eager), self.names, validation,
                             start, **options)

    def _values_of(self, data: FitData, eager: bool) -> Callable[[], dict]:
        """What the recorder calls after each epoch for `data`."""
        if data.arrays:
            record = self.function(eager)
            return lambda: record(data.arrays)
        if ("pass", eager) not in self._compiled:
            self._compiled["pass", eager] = self.record_pass if eager else \
                tf.function(self.record_pass)
        record_pass = self._compiled["pass", eager]
        over_workers = data.sum_over_workers if data.worker is not None else None
        return lambda: record_pass(iter(data.full_pass()) if self.full_loss else None,
                                   data.full_pass_chunks, data.num_examples, over_workers)
