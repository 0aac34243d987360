"""The hand-written loop: one GradientTape `train_step`, driven epoch by epoch.

As in Keras's own trainer, `train_step` is the only GradientTape code and
`ManualLoop` wraps it in `tf.function`; as in Orbit, running N steps is a
plain loop over that step, and everything else (recording, progress,
stopping, checkpoints) lives in the callbacks the loop drives, with the hooks
`fit` calls.

Two ways to run (see `linfit.loops.plan`):
- batch by batch: one call runs `steps_per_call` batches, and the callbacks'
  batch hooks run between calls, as with Keras's `steps_per_execution`;
- fused: one call runs whole epochs and computes, inside the graph, what
  the History records after each one (the epoch's loss, full_loss,
  val_loss, w, b), so no row is lost; the epoch hooks then run for each
  epoch in turn. Used when no callback needs to act during training.

Fused epochs hand their recorded values to the callbacks in the epoch's logs,
where `linfit.callbacks.EpochRecorder` takes them; otherwise the recorder
computes them after the epoch, as it does for the Keras loop.
"""

import keras
import numpy as np
import tensorflow as tf

from linfit import compat
from linfit.callbacks import overridden_hooks
from linfit.losses import NonFiniteBatch, is_non_finite_loss


def make_train_step(model, variables, loss_fn, optimizer):
    """One update: the loss before it, its gradient, one optimizer step.

    Returns:
      train_step(x, y) -> (the batch's loss, computed before the update, as
      Keras's `loss` tracker takes it; the batch size). Under a strategy, run
      it on each replica (see `distribute`).
    """

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return compat.tracked_loss(loss), tf.shape(y)[0]

    return train_step


def distribute(train_step, strategy):
    """`train_step` on every replica of `strategy`, for distributed batches.

    The loss (`linfit.losses.FiniteLoss`) makes each replica's gradient its
    share of the global mean's, so the optimizer's sum over replicas is one
    device's gradient. Returns the global batch's mean loss and its size.
    """

    def step(x, y):
        means, sizes = strategy.run(train_step, args=(x, y))
        totals = strategy.run(lambda mean, size: mean * tf.cast(size, mean.dtype),
                              args=(means, sizes))
        size = strategy.reduce("SUM", sizes, axis=None)
        return strategy.reduce("SUM", totals, axis=None) / tf.cast(size, tf.float32), size

    return step


class ManualLoop:
    """The manual loop of one Trainer: its compiled functions, and the epochs it runs.

    Args:
      step: from `make_train_step` (or `distribute` of it).
      record: record(data) -> the dict of float32 tensors the History records
        per epoch (full_loss, val_loss, w, b), where `data` is the fit's tuple
        of data variables (x, y[, x_val, y_val]). The data is an argument, not
        a capture, so a later fit on other data reuses the trace.
      loss_tracker: keeps the epoch's mean loss, weighted by batch size
        exactly as Keras's `fit` keeps its `loss`.
      record_names: the keys `record` returns.
      mode: "eager" (no tf.function: for debugging), "function", or "xla"
        (the step compiled with XLA).
      state: every variable a step changes (the model's and the optimizer's):
        a fused call is all or nothing, so a call that meets a non-finite
        loss is undone and its epochs run again one by one, recording each.
    """

    def __init__(self, step, record, record_names: list[str], loss_tracker: keras.metrics.Mean,
                 mode: str = "function", state: list | None = None):
        self.mode = mode
        self.record = record
        self._record_names = list(record_names)
        self._state = list(state or [])
        self._tracker = loss_tracker
        self._step = tf.function(step, jit_compile=True) if mode == "xla" else step
        compiled = (lambda f: f) if mode == "eager" else tf.function
        # The iterator, the counts and the data are graph inputs: one trace
        # serves every call.
        self.run_steps = compiled(self._run_steps)
        self.run_epochs = compiled(self._run_epochs)
        self.run_full_batch_epochs = compiled(self._run_full_batch_epochs)

    def tracing_count(self) -> int:
        """How many times the training functions were traced (1 each once used)."""
        functions = (self.run_steps, self.run_epochs, self.run_full_batch_epochs)
        return sum(f.experimental_get_tracing_count() for f in functions
                   if hasattr(f, "experimental_get_tracing_count"))

    def run(self, plan, data: tuple, dataset, epochs: range, steps_per_epoch: int,
            callbacks: keras.callbacks.CallbackList) -> None:
        """Train `epochs` (e.g. range(initial_epoch, E)), calling the hooks `fit` calls.

        Args:
          plan: the fit's `ExecutionPlan`.
          data: the data variables (x, y[, x_val, y_val]).
          dataset: dataset(start) makes the batches of every epoch from
            `start` on, in order, read through one iterator as `fit` reads it
            (built only if needed).
        """
        callbacks.model.stop_training = False
        callbacks.on_train_begin()
        if plan.epochs_per_call:
            logs = self._fused(plan, data, dataset, epochs, steps_per_epoch, callbacks)
        else:
            logs = self._batch_by_batch(plan, dataset, epochs, steps_per_epoch, callbacks)
        callbacks.on_train_end(logs)

    def _fused(self, plan, data, dataset, epochs, steps_per_epoch, callbacks) -> dict:
        batches = None if plan.full_batch else iter(dataset(epochs.start))
        epoch_begin = "on_epoch_begin" in overridden_hooks(callbacks.callbacks)
        logs = {}
        for start in range(epochs.start, epochs.stop, plan.epochs_per_call):
            block = range(start, min(start + plan.epochs_per_call, epochs.stop))
            before = self._snapshot()
            results = self._fused_call(plan, data, batches, len(block), steps_per_epoch)
            if results is None:  # a loss was not finite: redo these epochs one by one
                self._restore(before)
                return self._batch_by_batch(plan, dataset, range(start, epochs.stop),
                                            steps_per_epoch, callbacks)
            losses, records = results
            for index, epoch in enumerate(block):
                if epoch_begin:
                    callbacks.on_epoch_begin(epoch)
                logs = {"loss": float(losses[index]),
                        **{name: value[index] for name, value in records.items()}}
                callbacks.on_epoch_end(epoch, logs)
            if callbacks.model.stop_training:  # asked during the call: after its epochs
                break
        return logs

    def _fused_call(self, plan, data, batches, epochs: int, steps_per_epoch: int):
        """(losses, records) of `epochs` fused epochs as NumPy, or None when a loss in
        them was not finite (the guard stopped the call, or, under XLA, which drops
        the guard, a recorded loss is not finite)."""
        try:
            if plan.full_batch:
                losses, records = self.run_full_batch_epochs(tf.constant(epochs), data)
            else:
                losses, records = self.run_epochs(batches, tf.constant(epochs),
                                                  tf.constant(steps_per_epoch), data)
        except tf.errors.InvalidArgumentError as error:
            if not is_non_finite_loss(error):
                raise
            return None
        losses, records = losses.numpy(), {k: v.numpy() for k, v in records.items()}
        losses_recorded = [records[name] for name in ("full_loss", "val_loss") if name in records]
        finite = all(np.isfinite(values).all() for values in [losses, *losses_recorded])
        return (losses, records) if finite else None

    def _batch_by_batch(self, plan, dataset, epochs, steps_per_epoch, callbacks) -> dict:
        batches = iter(dataset(epochs.start))
        logs = {}
        for epoch in epochs:
            self._tracker.reset_state()
            callbacks.on_epoch_begin(epoch)
            for step in range(0, steps_per_epoch, plan.steps_per_call):
                count = min(plan.steps_per_call, steps_per_epoch - step)
                callbacks.on_train_batch_begin(step)
                running_loss = self._steps(batches, count, dataset, (epoch, step))
                callbacks.on_train_batch_end(step + count - 1, {"loss": running_loss})
                if callbacks.model.stop_training:
                    break
            logs = {"loss": float(self._tracker.result())}
            callbacks.on_epoch_end(epoch, logs)
            if callbacks.model.stop_training:
                break
        return logs

    def _steps(self, batches, count: int, dataset, position: tuple[int, int]):
        """`count` steps in one call. When a batch's loss is not finite, raise
        NonFiniteBatch with its exact position: a call of several batches is
        undone and its batches run again one at a time to find it."""
        before = self._snapshot() if count > 1 else None
        try:
            return self.run_steps(batches, tf.constant(count))
        except tf.errors.InvalidArgumentError as error:
            if not is_non_finite_loss(error):
                raise
        epoch, step = position
        if before is not None:
            self._restore(before)
            again = iter(dataset(epoch))
            for _ in range(step):
                next(again)
            for offset in range(count):
                try:
                    self.run_steps(again, tf.constant(1))
                except tf.errors.InvalidArgumentError:
                    step += offset
                    break
        raise NonFiniteBatch(epoch, step)

    def _snapshot(self) -> list:
        return [variable.numpy() for variable in self._state]

    def _restore(self, values: list) -> None:
        for variable, value in zip(self._state, values):
            variable.assign(value)

    def _run_steps(self, iterator, steps):
        for _ in tf.range(steps):
            x, y = next(iterator)
            loss, size = self._step(x, y)
            self._tracker.update_state(loss, sample_weight=size)
        return self._tracker.result()

    def _run_epochs(self, iterator, epochs, steps, data):
        losses, records = self._empty(epochs)
        for epoch in tf.range(epochs):
            self._tracker.reset_state()
            losses, records = self._write_epoch(epoch, losses, records,
                                                self._run_steps(iterator, steps), data)
        return self._stacked(losses, records)

    def _run_full_batch_epochs(self, epochs, data):
        # One batch, the whole data set, in its order: read straight from the
        # data variables, with no tf.data in the loop (the same tensor, so the
        # same numbers as through the dataset).
        losses, records = self._empty(epochs)
        for epoch in tf.range(epochs):
            loss, _ = self._step(data[0], data[1])
            losses, records = self._write_epoch(epoch, losses, records, loss, data)
        return self._stacked(losses, records)

    def _empty(self, epochs):
        return (tf.TensorArray(tf.float32, size=epochs),
                {name: tf.TensorArray(tf.float32, size=epochs) for name in self._record_names})

    def _write_epoch(self, epoch, losses, records, loss, data):
        values = self.record(data)
        return (losses.write(epoch, loss),
                {name: records[name].write(epoch, values[name]) for name in records})

    @staticmethod
    def _stacked(losses, records):
        return losses.stack(), {name: array.stack() for name, array in records.items()}

