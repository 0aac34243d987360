"""The steps the manual loop runs (`manual_steps`), each one update or evaluation:
`make_train_step` (the GradientTape code for a batch), `make_accumulating_step`
(a full batch read in chunks), `make_test_step`, `distribute` (a step on every
replica), and a worker's share of streamed batches (`make_worker_update`,
`make_worker_test_step`).
"""

import keras
import tensorflow as tf

from linfit import compat
from linfit.losses import NON_FINITE_LOSS, ReplicaLoss


def training_loss(model, loss_fn):
    """(x, y) -> (the predictions, the loss) of a batch, as Keras's `train_step`
    computes them: a Keras model is called with training=True (Dropout drops,
    BatchNormalization learns), and its `losses` (regularizers, `add_loss`) are
    added to the loss, as `compute_loss` adds them."""
    if not isinstance(model, keras.Layer):
        def module_loss(x, y):
            prediction = model(x)
            return prediction, loss_fn(y, prediction)
        return module_loss

    def keras_loss(x, y):
        prediction = model(x, training=True)
        losses = [loss_fn(y, prediction), *(tf.reduce_sum(tf.cast(extra, prediction.dtype))
                                            for extra in model.losses)]
        return prediction, losses[0] if len(losses) == 1 else tf.reduce_sum(tf.stack(losses))

    return keras_loss


def make_train_step(model, variables, loss_fn, optimizer, metrics=None):
    """One update: the loss before it, its gradient, one optimizer step.

    Returns:
      train_step(x, y) -> (the batch's loss, computed before the update, as
      Keras's `loss` tracker takes it; the batch size). Under a strategy, run
      it on each replica (see `distribute`). `metrics` (a `CompiledMetrics`)
      are updated with the batch's predictions, as `fit` updates them.
    """
    forward = training_loss(model, loss_fn)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            prediction, loss = forward(x, y)
            scaled = optimizer.scale_loss(loss)  # a LossScaleOptimizer's, as fit scales it
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        if metrics is not None:
            metrics.update(x, y, prediction)
        return compat.tracked_loss(loss), tf.shape(y)[0]

    return train_step


def manual_steps(model, variables, loss_fn, optimizer, metrics, strategy=None,
                 worker: bool = False) -> tuple:
    """The manual loop's (train_step, test_step, update of a batch read in chunks):
    one device's; under a multi-replica `strategy`, the first two run on every
    replica (`distribute`); on a `worker` of a cluster reading streamed data,
    its shares of every batch (`make_worker_update`, `make_worker_test_step`)."""
    if worker:  # every update is `make_worker_update`'s: no train step
        return (None, make_worker_test_step(model, loss_fn, metrics, strategy),
                make_worker_update(model, variables, loss_fn, optimizer, metrics, strategy))
    train = make_train_step(model, variables, loss_fn, optimizer, metrics)
    test = make_test_step(model, ReplicaLoss(loss_fn.wrapped), metrics)
    if strategy is None:
        return train, test, make_accumulating_step(model, variables, loss_fn, optimizer, metrics)
    return distribute(train, strategy), distribute(test, strategy), None


def make_accumulating_step(model, variables, loss_fn, optimizer, metrics=None):
    """One update of a full batch read in chunks: each chunk's gradient, weighted by
    its share of the rows, summed over the chunks, then one optimizer step.

    Returns:
      update(iterator, chunks, rows) -> (the batch's loss, before the update;
      its size), reading `chunks` chunks of `rows` rows in all from `iterator`.
      A chunk whose loss is not finite stops it before the update.
    """

    forward = training_loss(model, loss_fn)

    def chunk(x, y, rows):
        """The chunk's gradient, as its share of the update's, and its loss times its rows."""
        size = tf.shape(y)[0]
        with tf.GradientTape() as tape:
            prediction, loss = forward(x, y)
            share = optimizer.scale_loss(
                loss * (tf.cast(size, loss.dtype) / tf.cast(rows, loss.dtype)))
        if metrics is not None:  # as its share of the batch, whose metrics fit takes whole
            metrics.update_share(y, prediction, tf.cast(size, tf.float32) / tf.cast(rows,
                                                                                  tf.float32))
        return tape.gradient(share, variables), \
            tf.cast(compat.tracked_loss(loss), tf.float64) * tf.cast(size, tf.float64)

    def local_update(iterator, chunks, rows):
        sums = [tf.zeros_like(variable) for variable in variables]
        total = tf.constant(0.0, tf.float64)
        for _ in tf.range(chunks):
            gradients, weighted = chunk(*next(iterator), rows)
            sums = [a + g for a, g in zip(sums, gradients)]
            total += weighted
        optimizer.apply_gradients(zip(sums, variables))
        return total

    def update(iterator, chunks, rows):
        total = local_update(iterator, chunks, rows)
        return tf.cast(total / tf.cast(rows, tf.float64), tf.float32), rows

    return update


def make_worker_update(model, variables, loss_fn, optimizer, metrics, strategy):
    """`make_accumulating_step` on a worker of a multi-worker `strategy` reading
    streamed data (`linfit.streaming.StreamData.worker`), for mini-batches and
    full batches alike: update(iterator, chunks, rows) -> (the update's loss, its rows).

    Each chunk is (x, y, chunk_rows): the worker's rows of a chunk of
    `chunk_rows` rows, every worker's (maybe none of them its own). An update
    is one chunk (a batch: its rows are the chunk's) or `chunks` chunks of a
    full batch of `rows` rows. The worker sums its rows' losses and their
    gradient over the update's chunks, in its own replica (no collective per
    chunk), and divides by the update's rows; the optimizer adds the workers'
    gradients.
    """
    summed_loss = _worker_loss(model, loss_fn, metrics)

    def local_update(iterator, chunks, rows):
        sums = [tf.zeros_like(variable) for variable in variables]
        total, rows = tf.constant(0.0, tf.float64), tf.cast(rows, tf.int64)
        for _ in tf.range(chunks):
            x, y, chunk_rows = next(iterator)
            if chunks == 1:
                rows = chunk_rows
            with tf.GradientTape() as tape:
                summed = summed_loss(x, y, chunk_rows)
                scaled = optimizer.scale_loss(summed)
            sums = [a + g for a, g in zip(sums, tape.gradient(scaled, variables))]
            total += summed
        # Checked summed over the workers, so that all stop at a non-finite loss
        # together (a worker's rows of the batch may be none of those that made it),
        # and before the update, which waits for the check.
        total = tf.debugging.check_numerics(
            tf.distribute.get_replica_context().all_reduce("SUM", total), NON_FINITE_LOSS)
        with tf.control_dependencies([total]):
            sums = [a / tf.cast(rows, a.dtype) for a in sums]
        optimizer.apply_gradients(zip(sums, variables))
        return total, rows

    def update(iterator, chunks, rows):
        # Each worker has one replica: its local results are the values.
        total, rows = (strategy.experimental_local_results(value)[0] for value in
                       strategy.run(lambda: local_update(iterator, chunks, rows)))
        return tf.cast(total / tf.cast(rows, tf.float64), tf.float32), rows

    return update


def make_worker_test_step(model, loss_fn, metrics, strategy):
    """`make_test_step` on a worker reading streamed data: test_step(x, y, rows) of
    its rows of a batch of `rows` rows -> (the batch's loss, added over the
    workers; rows)."""
    summed_loss = _worker_loss(model, loss_fn, metrics)

    def test_step(x, y, rows):
        total = strategy.reduce("SUM", strategy.run(lambda: summed_loss(x, y, rows)), axis=None)
        return tf.cast(total / tf.cast(rows, total.dtype), tf.float32), rows

    return test_step


def _worker_loss(model, loss_fn, metrics):
    """(x, y, chunk_rows) -> the loss summed over a worker's rows (x, y) of a chunk
    of `chunk_rows` rows (maybe none), in its own replica. The metrics take the
    rows as their share of the chunk, so that added over the workers (Keras adds
    a metric's variables) they are the chunk's."""
    def summed_loss(x, y, chunk_rows):
        prediction = model(x, training=True) if isinstance(model, keras.Layer) else model(x)
        losses = loss_fn.per_example(y, prediction)  # unreduced: `ReplicaLoss` would share it
        summed = tf.reduce_sum(tf.cast(losses, tf.float64))  # a sum of many rows: no overflow
        if metrics is not None:
            size = tf.cast(tf.shape(y)[0], tf.float32)
            share = size / tf.cast(chunk_rows, tf.float32)
            metrics.update_share(y, prediction, share)  # none, for a worker with no rows
        return summed

    return summed_loss


def make_test_step(model, loss_fn, metrics=None):
    """`train_step`'s evaluation twin, as Keras's `test_step`: the loss, no update."""

    def test_step(x, y):
        prediction = model(x)
        loss = loss_fn(y, prediction)
        if metrics is not None:
            metrics.update(x, y, prediction)
        return compat.tracked_loss(loss), tf.shape(y)[0]

    return test_step


def distribute(step, strategy):
    """`step` on every replica of `strategy`, for distributed batches.

    The loss (`linfit.losses.FiniteLoss`) makes each replica's gradient its
    share of the global mean's, so the optimizer's sum over replicas is one
    device's gradient. Returns the global batch's mean loss and its size.
    """

    def distributed_step(x, y):
        means, sizes = strategy.run(step, args=(x, y))
        totals = strategy.run(lambda mean, size: mean * tf.cast(size, mean.dtype),
                              args=(means, sizes))
        size = strategy.reduce("SUM", sizes, axis=None)
        return strategy.reduce("SUM", totals, axis=None) / tf.cast(size, tf.float32), size

    return distributed_step
