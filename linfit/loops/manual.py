"""The hand-written loop: one GradientTape `train_step`, driven epoch by epoch.

As in Keras's own trainer, `train_step` is the only GradientTape code and a
separate factory wraps it in `tf.function`; as in Orbit, running the epochs
is a plain loop over that function, and everything else (recording,
progress, stopping) lives in the callbacks it drives.
"""

import keras
import tensorflow as tf


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


def make_train_function(train_step, loss_tracker: keras.metrics.Mean):
    """`train_step` in a tf.function that also keeps the epoch's mean loss.

    The mean is weighted by batch size, exactly as Keras's `fit` keeps its
    `loss`, so both loops report the same number for a partial last batch.
    """

    @tf.function(reduce_retracing=True)
    def train_function(x, y):
        loss = train_step(x, y)
        loss_tracker.update_state(loss, sample_weight=tf.shape(y)[0])
        return loss_tracker.result()

    return train_function


def run_epochs(train_function, loss_tracker, dataset, epochs: range, steps_per_epoch: int,
               callbacks: keras.callbacks.CallbackList, keras_model: keras.Model) -> None:
    """Train the `epochs` (e.g. range(initial_epoch, E)), `steps_per_epoch` batches
    each, calling the hooks `fit` calls.

    `dataset` holds every epoch's batches in order (see `linfit.data.make_dataset`)
    and is read through one iterator, as `fit` reads it.
    """
    keras_model.stop_training = False
    batches = iter(dataset)
    callbacks.on_train_begin()
    logs = {}
    for epoch in epochs:
        loss_tracker.reset_state()
        callbacks.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            x, y = next(batches)
            callbacks.on_train_batch_begin(step)
            running_loss = train_function(x, y)
            callbacks.on_train_batch_end(step, {"loss": running_loss})
            if keras_model.stop_training:
                break
        logs = {"loss": float(loss_tracker.result())}
        callbacks.on_epoch_end(epoch, logs)
        if keras_model.stop_training:
            break
    callbacks.on_train_end(logs)
