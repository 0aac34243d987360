"""The hand-written loop: one GradientTape `train_step`, driven epoch by epoch.

As in Keras's own trainer, `train_step` is the only GradientTape code and a
separate factory wraps it in `tf.function`; as in Orbit, running N steps is
a plain loop over that step, and everything else (recording, progress,
stopping, checkpoints) lives in the callbacks the outer loop drives.

Two ways to run it:
- step by step: one call runs `steps_per_call` batches, and the callbacks'
  batch hooks run between calls, as with Keras's `steps_per_execution`;
- fused: one call runs whole epochs, and records inside the graph what the
  History needs after each one (the epoch's loss, full_loss, val_loss, w,
  b), so no row is lost; the epoch hooks then run for each epoch in turn.
  It is used when no callback needs to act during training.
"""

import keras
import tensorflow as tf

from linfit.config import COMPILE_MODES  # noqa: F401  (re-exported for the Trainer)

NON_FINITE_LOSS = "linfit: non-finite loss"  # the message the Trainer recognises


def make_train_step(model, variables, loss_fn, optimizer):
    """One update: the loss before it, its gradient, one optimizer step.

    Returns:
      train_step(x, y) -> the batch's loss, computed before the update.
    """

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    return train_step


def make_distributed_step(model, variables, loss_fn, optimizer, strategy):
    """`make_train_step` for a tf.distribute strategy: each replica takes the
    gradient of its examples' loss summed and divided by the *global* batch
    size (tf.nn.compute_average_loss), so the gradients the optimizer sums
    across replicas are one device's gradient of the mean.

    Returns:
      step(x, y) on distributed values -> (the global batch's mean loss, the
      global batch size, counted over every replica of every worker).
    """
    per_example = loss_fn.wrapped  # the Keras loss; its reduction is replaced here

    def replica_step(x, y, global_batch_size):
        with tf.GradientTape() as tape:
            prediction = model(x)
            # A trailing axis, so a loss that averages over the last axis stays per example.
            if len(y.shape) == 1:
                y, prediction = y[:, None], tf.reshape(prediction, [-1, 1])
            losses = per_example.call(y, prediction)
            loss = tf.debugging.check_numerics(
                tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size),
                NON_FINITE_LOSS)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    def step(x, y):
        sizes = strategy.run(lambda y: tf.shape(y)[0], args=(y,))
        global_batch_size = strategy.reduce("SUM", sizes, axis=None)
        losses = strategy.run(replica_step, args=(x, y, global_batch_size))
        return strategy.reduce("SUM", losses, axis=None), global_batch_size

    return step


class TrainFunctions:
    """`train_step` compiled as asked, in the two shapes the loop calls.

    Args:
      train_step: from `make_train_step`.
      loss_tracker: keeps the epoch's mean loss, weighted by batch size
        exactly as Keras's `fit` keeps its `loss`.
      record: record(data) returns the dict of float32 tensors the History
        records per epoch (full_loss, val_loss, w, b), where `data` is the
        fit's tuple of data variables (x, y[, x_val, y_val]). The data is an
        argument, not a capture, so a later fit on other data reuses the trace.
      record_names: the keys `record` returns.
      compile: "eager" (no tf.function: for debugging), "function", or
        "xla" (the step compiled with XLA).
    """

    def __init__(self, train_step, loss_tracker: keras.metrics.Mean, record,
                 record_names: list[str], compile="function", distributed: bool = False):
        self.compile = compile
        step = tf.function(train_step, jit_compile=True) if compile == "xla" else train_step

        def write_epoch(epoch, losses, records, loss, data):
            values = record(data)
            return (losses.write(epoch, loss),
                    {name: records[name].write(epoch, values[name]) for name in record_names})

        def empty(epochs):
            return (tf.TensorArray(tf.float32, size=epochs),
                    {name: tf.TensorArray(tf.float32, size=epochs) for name in record_names})

        def stacked(losses, records):
            return losses.stack(), {name: array.stack() for name, array in records.items()}

        def run_steps(iterator, steps):
            for _ in tf.range(steps):
                x, y = next(iterator)
                if distributed:  # the step counts the global batch
                    loss, size = step(x, y)
                else:
                    loss, size = step(x, y), tf.shape(y)[0]
                loss_tracker.update_state(loss, sample_weight=size)
            return loss_tracker.result()

        def run_epochs(iterator, epochs, steps, data):
            losses, records = empty(epochs)
            for epoch in tf.range(epochs):
                loss_tracker.reset_state()
                losses, records = write_epoch(epoch, losses, records,
                                              run_steps(iterator, steps), data)
            return stacked(losses, records)

        def run_full_batch_epochs(epochs, data):
            # One batch, the whole data set, in its order: read straight from the
            # data variables, with no tf.data in the loop (the same tensor, so the
            # same numbers as through the dataset).
            losses, records = empty(epochs)
            x, y = data[0], data[1]
            for epoch in tf.range(epochs):
                losses, records = write_epoch(epoch, losses, records, step(x, y), data)
            return stacked(losses, records)

        if compile == "eager":
            self.run_steps, self.run_epochs, self.run_full_batch_epochs = run_steps, None, None
        else:
            # The iterator, the counts and the data are graph inputs: one trace
            # serves every call.
            self.run_steps = tf.function(run_steps)
            self.run_epochs = tf.function(run_epochs)
            self.run_full_batch_epochs = tf.function(run_full_batch_epochs)

    def tracing_count(self) -> int:
        """How many times the functions were traced (1 each once used, whatever follows)."""
        functions = (self.run_steps, self.run_epochs, self.run_full_batch_epochs)
        return sum(f.experimental_get_tracing_count() for f in functions
                   if hasattr(f, "experimental_get_tracing_count"))


# Callbacks with no on_epoch_begin and nothing to do but record an epoch's logs.
PLAIN_CALLBACKS = ("TrajectoryRecorder", "History")


def run_epochs(functions: TrainFunctions, loss_tracker, dataset, epochs: range,
               steps_per_epoch: int, callbacks: keras.callbacks.CallbackList,
               keras_model: keras.Model, steps_per_call: int = 1,
               fused_epochs: int = 0, recorder=None, data: tuple = (),
               full_batch: bool = False) -> None:
    """Train `epochs` (e.g. range(initial_epoch, E)), `steps_per_epoch` batches each,
    calling the hooks `fit` calls.

    `dataset()` makes the dataset of every epoch's batches in order (see
    `linfit.data.make_dataset`)
    and is read through one iterator, as `fit` reads it. With `fused_epochs`
    > 0, up to that many epochs run per call (see the module docstring) and
    `recorder` (a TrajectoryRecorder) is handed what was recorded in the graph;
    with `full_batch` too, the fused epochs read `data` directly.
    """
    keras_model.stop_training = False
    # Built here, and only when needed: the fused full-batch path reads `data`.
    batches = None if fused_epochs and full_batch else iter(dataset())
    callbacks.on_train_begin()
    logs = {}
    if fused_epochs and functions.run_epochs is not None:
        for start in range(epochs.start, epochs.stop, fused_epochs):
            block = range(start, min(start + fused_epochs, epochs.stop))
            if full_batch:
                losses, records = functions.run_full_batch_epochs(tf.constant(len(block)), data)
            else:
                losses, records = functions.run_epochs(batches, tf.constant(len(block)),
                                                       tf.constant(steps_per_epoch), data)
            losses, records = losses.numpy(), {k: v.numpy() for k, v in records.items()}
            # With only the recorder and History listening (the usual case), call them
            # directly: the CallbackList's per-call bookkeeping would cost more than
            # the epoch itself at the guide's size.
            plain = all(type(cb).__name__ in PLAIN_CALLBACKS for cb in callbacks.callbacks)
            for index, epoch in enumerate(block):
                recorder.set_pending({name: value[index] for name, value in records.items()})
                logs = {"loss": float(losses[index])}
                if plain:
                    for callback in callbacks.callbacks:
                        callback.on_epoch_end(epoch, logs)
                else:
                    callbacks.on_epoch_begin(epoch)
                    callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end(logs)
        return
    for epoch in epochs:
        loss_tracker.reset_state()
        callbacks.on_epoch_begin(epoch)
        for step in range(0, steps_per_epoch, steps_per_call):
            count = min(steps_per_call, steps_per_epoch - step)
            callbacks.on_train_batch_begin(step)
            running_loss = functions.run_steps(batches, tf.constant(count))
            callbacks.on_train_batch_end(step + count - 1, {"loss": running_loss})
            if keras_model.stop_training:
                break
        logs = {"loss": float(loss_tracker.result())}
        callbacks.on_epoch_end(epoch, logs)
        if keras_model.stop_training:
            break
    callbacks.on_train_end(logs)
