"""The steps the manual loop runs, each one update or evaluation: `make_train_step`
(the only GradientTape code for a batch), `make_accumulating_step` (a full batch
read in chunks), `make_test_step`, and `distribute` (a step on every replica).
"""

import tensorflow as tf

from linfit import compat
from linfit.losses import NON_FINITE_LOSS


def make_train_step(model, variables, loss_fn, optimizer, metrics=None):
    """One update: the loss before it, its gradient, one optimizer step.

    Returns:
      train_step(x, y) -> (the batch's loss, computed before the update, as
      Keras's `loss` tracker takes it; the batch size). Under a strategy, run
      it on each replica (see `distribute`). `metrics` (a `CompiledMetrics`)
      are updated with the batch's predictions, as `fit` updates them.
    """

    def train_step(x, y):
        with tf.GradientTape() as tape:
            prediction = model(x)
            loss = loss_fn(y, prediction)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        if metrics is not None:
            metrics.update(x, y, prediction)
        return compat.tracked_loss(loss), tf.shape(y)[0]

    return train_step


def make_accumulating_step(model, variables, loss_fn, optimizer, metrics=None, strategy=None):
    """One update of a full batch read in chunks: each chunk's gradient, weighted by
    its share of the rows, summed over the chunks, then one optimizer step.

    Returns:
      update(iterator, chunks, rows) -> (the batch's loss, before the update;
      its size), reading `chunks` chunks of `rows` rows in all from `iterator`.
      A chunk whose loss is not finite stops it before the update. With a
      multi-worker `strategy`, each worker reads its share of the chunks and the
      optimizer adds the workers' gradients (and the loss is summed too).
    """

    tracked = compat.tracked_loss
    if strategy is not None:  # each worker's own chunks: no collective per chunk
        wrapped, tracked = loss_fn.wrapped, tf.identity  # the loss is the chunk's own mean
        loss_fn = lambda y, p: tf.debugging.check_numerics(  # noqa: E731
            wrapped(y, p), NON_FINITE_LOSS)

    def local_update(iterator, chunks, rows):
        sums = [tf.zeros_like(variable) for variable in variables]
        total = tf.constant(0.0, tf.float64)
        for _ in tf.range(chunks):
            x, y = next(iterator)
            size = tf.shape(y)[0]
            with tf.GradientTape() as tape:
                prediction = model(x)
                loss = loss_fn(y, prediction)
                share = loss * (tf.cast(size, loss.dtype) / tf.cast(rows, loss.dtype))
            sums = [a + g for a, g in zip(sums, tape.gradient(share, variables))]
            total += tf.cast(tracked(loss), tf.float64) * tf.cast(size, tf.float64)
            if metrics is not None:
                metrics.update(x, y, prediction)
        # Under a strategy, in each replica: the optimizer sums the replicas' gradients.
        optimizer.apply_gradients(zip(sums, variables))
        return total

    def update(iterator, chunks, rows):
        if strategy is None:
            total = local_update(iterator, chunks, rows)
        else:
            total = strategy.reduce("SUM", strategy.run(
                lambda: local_update(iterator, chunks, rows)), axis=None)
        return tf.cast(total / tf.cast(rows, tf.float64), tf.float32), rows

    return update


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
