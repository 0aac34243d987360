"""The hand-written loop: the steps of `linfit.loops.steps`, driven epoch by epoch.

As in Keras's own trainer, the GradientTape code is in the steps and
`ManualLoop` wraps them in `tf.function`; as in Orbit, running N steps is a
plain loop over that step, and everything else (recording, progress,
stopping, checkpoints) lives in the callbacks the loop drives, with the hooks
`fit` calls: training batches, then (with validation data) an evaluation
with its own `on_test_*` hooks, then the epoch's end.

Two ways to run (see `linfit.loops.plan`):
- batch by batch: one call runs `steps_per_call` batches, and the callbacks'
  batch hooks run between calls, as with Keras's `steps_per_execution`;
- fused: one call runs whole epochs, their evaluations, and computes inside
  the graph what the History records after each one, so no row is lost;
  the epoch hooks then run for each epoch in turn. Used when no callback
  needs to act during training.

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


class CompiledMetrics:
    """The metrics the user compiled (`Trainer(metrics=...)`), kept by the Keras model
    as `fit` keeps them: updated by each step, read and reset per epoch."""

    def __init__(self, keras_model: keras.Model):
        self._model = keras_model
        self.names = [name for name in keras_model.get_metrics_result() if name != "loss"]

    def update(self, x, y, prediction) -> None:
        if self.names and not compat.update_metrics_of_replica(self._model, y, prediction):
            # tensors, as fit gives them (a full batch's data are variables)
            self._model.compute_metrics(tf.convert_to_tensor(x), tf.convert_to_tensor(y),
                                        prediction)

    def update_share(self, y, prediction, share) -> None:
        """Update with a worker's rows of a batch, `share` of its rows: the
        workers' updates add up to the batch's (`compat.update_metric_share`)."""
        if self.names:
            compat.update_metric_share(self._model, y, prediction, share)

    def reset(self) -> None:
        for metric in self._model.metrics:
            metric.reset_state()

    def results(self) -> dict:
        results = self._model.get_metrics_result() if self.names else {}
        return {name: results[name] for name in self.names}


class ManualLoop:
    """The manual loop of one Trainer: its compiled functions, and the epochs it runs.

    Args:
      steps: (train_step, test_step, update), from
        `linfit.loops.steps.manual_steps`: an update reads a batch in chunks.
      chunks: (chunks per update, rows per update) for the updates: a full
        batch read in chunks (see `linfit.pipeline.FULL_PASS_ROWS`), or on a
        worker reading streamed data every batch (`make_worker_update`: (1, _)
        takes a batch's rows from the batch); None: train_step per batch.
      record: record(data) -> the dict of float32 tensors the History records
        per epoch (full_loss, w, b), where `data` is the fit's tuple of data
        variables. The data is an argument, not a capture, so a later fit on
        other data reuses the trace.
      record_names: the keys `record` returns.
      loss_tracker: keeps the epoch's mean loss, weighted by batch size
        exactly as Keras's `fit` keeps its `loss`.
      metrics: the compiled metrics (a `CompiledMetrics`).
      mode: "eager" (no tf.function: for debugging), "function", or "xla"
        (the step compiled with XLA).
      state: every variable a step changes (the model's and the optimizer's):
        a fused call is all or nothing, so a call that meets a non-finite
        loss is undone and its epochs run again one by one, recording each.
      finalize: what fit does to the variables after the last epoch
        (`optimizer.finalize_variable_values`).
    """

    def __init__(self, steps, record, record_names: list[str], loss_tracker: keras.metrics.Mean,
                 metrics: CompiledMetrics, mode: str = "function", state: list | None = None,
                 chunks: tuple[int, int] | None = None, finalize=lambda: None):
        self.mode = mode
        self._finalize = finalize
        self.record = record
        self._record_names = list(record_names)
        self._tracker = loss_tracker
        self._metrics = metrics
        self._state = list(state or [])
        train_step, test_step, *accumulate = steps
        self._accumulate, self._chunks = (accumulate or [None])[0], chunks
        self._step = tf.function(train_step, jit_compile=True) if mode == "xla" else train_step
        self._test_step = test_step
        compiled = (lambda f: f) if mode == "eager" else tf.function
        # The iterators, the counts and the data are graph inputs: one trace
        # serves every call.
        self.run_steps = compiled(self._run_steps)
        self.run_test_steps = compiled(self._run_test_steps)
        self.run_epochs = compiled(self._run_epochs)

    def tracing_count(self) -> int:
        """How many times the training functions were traced (1 each once used)."""
        functions = (self.run_steps, self.run_test_steps, self.run_epochs)
        return sum(f.experimental_get_tracing_count() for f in functions
                   if hasattr(f, "experimental_get_tracing_count"))

    def run(self, plan, data, epochs: range, callbacks: keras.callbacks.CallbackList,
            first_batch: int = 0) -> None:
        """Train `epochs` (e.g. range(initial_epoch, E)), calling the hooks `fit` calls.

        Args:
          plan: the fit's `ExecutionPlan`.
          data: the fit's `linfit.pipeline.FitData`.
          first_batch: the first epoch starts at this batch (a resumed run).
        """
        callbacks.model.stop_training = False
        callbacks.on_train_begin()
        # As in fit: a BackupAndRestore restores its epoch in on_train_begin.
        epochs = range(getattr(callbacks.model, "_initial_epoch", None) or epochs.start,
                       epochs.stop)
        if first_batch:
            logs = self._batch_by_batch(plan, data, epochs, callbacks, first_batch)
        elif plan.epochs_per_call:
            logs = self._fused(plan, data, epochs, callbacks)
        else:
            logs = self._batch_by_batch(plan, data, epochs, callbacks)
        self._finalize()  # as fit does: an optimizer's moving average (use_ema) applied
        callbacks.on_train_end(logs)

    def _fused(self, plan, data, epochs, callbacks) -> dict:
        batches = None if plan.full_batch else iter(data.batches(epochs.start))
        epoch_begin = "on_epoch_begin" in overridden_hooks(callbacks.callbacks)
        logs = {}
        for block in plan.epoch_blocks(epochs):
            before = self._snapshot()
            values = self._fused_call(plan, data, batches, block)
            if values is None:  # a loss was not finite: redo these epochs one by one
                self._restore(before)
                return self._batch_by_batch(plan, data, range(block.start, epochs.stop),
                                            callbacks)
            for index, epoch in enumerate(block):
                if epoch_begin:
                    callbacks.on_epoch_begin(epoch)
                logs = {name: value[index] for name, value in values.items()
                        if data.validates_after(epoch) or not name.startswith("val_")}
                callbacks.on_epoch_end(epoch, logs)
            if callbacks.model.stop_training:  # asked during the call: after its epochs
                break
        return {name: value for name, value in logs.items() if name not in self._record_names}

    def _fused_call(self, plan, data, batches, block: range) -> dict | None:
        """Each epoch's logs and records of the `block`, as NumPy, or None when a loss
        in them was not finite (the guard stopped the call, or, under XLA, which
        drops the guard, a recorded loss is not finite)."""
        try:
            values = self.run_epochs(batches, tf.constant(block.start), tf.constant(len(block)),
                                     data.arrays, self._shape(plan, data))
        except tf.errors.InvalidArgumentError as error:
            if not is_non_finite_loss(error):
                raise
            return None
        values = {name: value.numpy() for name, value in values.items()}
        due = np.array([data.validates_after(epoch) for epoch in block])
        finite = all(np.isfinite(values[name][due] if name.startswith("val_") else values[name])
                     .all() for name in ("loss", "val_loss", "full_loss") if name in values)
        return values if finite else None

    @staticmethod
    def _shape(plan, data) -> dict:
        """What a fused call needs to know of the data, as graph inputs."""
        return {"full_batch": plan.full_batch,  # a Python bool: one branch is traced
                "steps": tf.constant(data.steps_per_epoch),
                "validation_size": tf.constant(
                    data.validation_size or (int(data.arrays[2].shape[0]) if data.validation
                                             else 1)),
                "validation_freq": tf.constant(data.validation_freq)}

    def _batch_by_batch(self, plan, data, epochs, callbacks, first_batch: int = 0) -> dict:
        if first_batch:  # the first epoch's first batches were trained before
            batches = iter(data.update_batches(epochs.start, first_batch))
        else:
            batches = data.eager_batches(epochs.start) if plan.mode == "eager" else \
                iter(data.update_batches(epochs.start))
        logs = {}
        for epoch in epochs:
            self._reset()
            callbacks.on_epoch_begin(epoch)
            start, first_batch = first_batch, 0
            for step in range(start, data.steps_per_epoch, plan.steps_per_call):
                count = min(plan.steps_per_call, data.steps_per_epoch - step)
                callbacks.on_train_batch_begin(step)
                self._steps(batches, count, data, (epoch, step))
                callbacks.on_train_batch_end(step + count - 1, self._results())
                if callbacks.model.stop_training:
                    break
            logs = {name: float(value) for name, value in self._results().items()}
            if data.validates_after(epoch):
                logs.update({f"val_{name}": value
                             for name, value in self.evaluate(data, callbacks).items()})
            callbacks.on_epoch_end(epoch, logs)
            if callbacks.model.stop_training:
                break
        return logs

    def evaluate(self, data, callbacks) -> dict:
        """Keras's evaluation within `fit`: the validation batches, with their hooks
        (a callback can end it early with `model.stop_evaluating`, as in Keras)."""
        callbacks.model.stop_evaluating = False
        callbacks.on_test_begin()
        self._reset()
        batches = iter(data.validation_batches())
        for step in range(data.validation_steps):
            callbacks.on_test_batch_begin(step)
            self.run_test_steps(batches, tf.constant(1))
            callbacks.on_test_batch_end(step, self._results())
            if callbacks.model.stop_evaluating:
                break
        logs = {name: float(value) for name, value in self._results().items()}
        callbacks.on_test_end(logs)
        return logs

    def _steps(self, batches, count: int, data, position: tuple[int, int]):
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
            again = iter(data.update_batches(epoch))
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

    def _reset(self) -> None:
        self._tracker.reset_state()
        self._metrics.reset()

    def _results(self) -> dict:
        return {"loss": self._tracker.result(), **self._metrics.results()}

    def _run_steps(self, iterator, steps):
        if self._chunks is None:
            return self._each_batch(self._step, iterator, steps)
        for _ in tf.range(steps):
            loss, size = self._accumulate(iterator, *self._chunks)
            self._tracker.update_state(loss, sample_weight=size)
        return self._tracker.result()

    def _run_test_steps(self, iterator, steps):
        return self._each_batch(self._test_step, iterator, steps)

    def _each_batch(self, step, iterator, steps):
        """`step` on the next `steps` batches, each batch's loss into the tracker."""
        for _ in tf.range(steps):
            loss, size = step(*next(iterator))  # (x, y), or a worker's (x, y, rows)
            self._tracker.update_state(loss, sample_weight=size)
        return self._tracker.result()

    def _run_epochs(self, iterator, first, epochs, data, shape):
        """`epochs` epochs from epoch `first`, each: its steps, its evaluation (when
        due), its records; every value written per epoch."""
        names = ["loss", *self._metrics.names, *self._record_names]
        if len(data) > 2:
            names += ["val_loss", *(f"val_{name}" for name in self._metrics.names)]
        written = {name: tf.TensorArray(tf.float32, size=epochs) for name in names}
        for index in tf.range(epochs):
            self._reset()
            if shape["full_batch"]:
                # One batch, the whole data set, in its order: read straight from
                # the data variables (the same tensor, so the same numbers).
                loss, size = self._step(data[0], data[1])
                self._tracker.update_state(loss, sample_weight=size)
            else:
                self._run_steps(iterator, shape["steps"])
            values = {**self._results(), **self.record(data)}
            if len(data) > 2:
                values.update(self._validate(data, first + index, shape))
            written = {name: array.write(index, tf.cast(values[name], tf.float32))
                       for name, array in written.items()}
        return {name: array.stack() for name, array in written.items()}

    def _validate(self, data, epoch, shape) -> dict:
        """In the graph: the evaluation of epoch `epoch` when it is due, else NaN."""
        names = ["loss", *self._metrics.names]

        def evaluate():
            self._reset()
            rows = tf.shape(data[3])[0]
            size = shape["validation_size"]
            for start in tf.range(0, rows, size):
                loss, count = self._test_step(data[2][start:start + size],
                                              data[3][start:start + size])
                self._tracker.update_state(loss, sample_weight=count)
            results = self._results()
            return [tf.cast(results[name], tf.float32) for name in names]

        def skip():
            return [tf.constant(np.nan, tf.float32) for _ in names]

        due = tf.equal(tf.math.floormod(epoch + 1, shape["validation_freq"]), 0)
        return dict(zip((f"val_{name}" for name in names), tf.cond(due, evaluate, skip)))
