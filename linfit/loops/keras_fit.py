"""Keras's own loop: `compile` then `fit`, on linfit's dataset."""

import contextlib

import keras
import tensorflow as tf

from linfit import compat


def run_fit(keras_model: keras.Model, data, span: tuple[range, int], callbacks, plan,
            compile_args: dict, verbose: int = 0, strategy=None) -> None:
    """Compile as the plan says, with `compile_args` (the training loss and the
    metrics), then fit on linfit's data (`linfit.pipeline.FitData`).

    The batches are linfit's: every epoch's, in linfit's order, read through
    one iterator across epochs as the manual loop reads them; `shuffle` is off
    so Keras never reorders them. Validation data goes to `fit` as batches, so
    Keras evaluates it after the epochs `validation_freq` says, with its hooks.
    While `fit` runs, a `.keras` file saved of the model names the compile
    config it had before (the user's loss), not the training loss.

    `span` is (the epochs, the batch the first one starts at). A run resumed in
    the middle of an epoch fits that epoch's last batches first, then the
    epochs after it: two fits on the same callbacks (`callbacks` is a
    CallbackList whose batch hooks are told the epoch's own batch numbers).
    """
    epochs, first_batch = span
    with compat.compile_config_kept(keras_model):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            keras_model.compile(optimizer=keras_model.optimizer,
                                jit_compile=compat.keras_jit_compile(keras_model,
                                                                     plan.mode == "xla"),
                                run_eagerly=plan.mode == "eager",
                                steps_per_execution=plan.steps_per_execution, **compile_args)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            compat.use_train_function(keras_model, _multi_worker_train_function(keras_model,
                                                                                strategy))
        scope = compat.strategy_from_scope(keras_model, strategy) if strategy is not None \
            else contextlib.nullcontext()
        validation = {} if not data.validation else {
            "validation_data": data.validation_batches(), "validation_freq": data.validation_freq,
            # Counted, as the training steps are: Keras warns of a dataset it must run out.
            "validation_steps": data.validation_steps}
        with scope:
            if first_batch or strategy is not None:
                # Built now, as fit builds it on its first step: a resumed epoch's logs
                # are restored into the compiled metrics' variables when it begins, and
                # under a strategy fit would build them inside a replica's step, where
                # the graph cannot use them (keras-team/keras#19246).
                compat.symbolic_build(keras_model, *_first_batch(data, epochs.start, strategy))
            if first_batch:
                with _batches_from(callbacks, first_batch):
                    keras_model.fit(data.batches(epochs.start, first_batch),
                                    epochs=epochs.start + 1, initial_epoch=epochs.start,
                                    steps_per_epoch=data.steps_per_epoch - first_batch,
                                    callbacks=callbacks, verbose=verbose, shuffle=False,
                                    **validation)
                epochs = range(epochs.start + 1, epochs.stop)
                if not epochs or keras_model.stop_training:
                    return
            keras_model.fit(data.batches(epochs.start), epochs=epochs.stop,
                            initial_epoch=epochs.start, steps_per_epoch=data.steps_per_epoch,
                            callbacks=callbacks, verbose=verbose, shuffle=False, **validation)


def _first_batch(data, epoch: int, strategy) -> tuple:
    """The first batch of `epoch`: under a strategy, the first replica's part of it."""
    batch = next(iter(data.batches(epoch)))
    if strategy is None:
        return batch
    return tuple(strategy.experimental_local_results(part)[0] for part in batch)


@contextlib.contextmanager
def _batches_from(callbacks, first: int):
    """The CallbackList's train batch hooks told batch numbers `first` higher: those
    of the epoch, not of a fit that starts in its middle."""
    begin, end = callbacks.on_train_batch_begin, callbacks.on_train_batch_end
    callbacks.on_train_batch_begin = lambda batch, logs=None: begin(batch + first, logs)
    callbacks.on_train_batch_end = lambda batch, logs=None: end(batch + first, logs)
    try:
        yield
    finally:
        del callbacks.on_train_batch_begin, callbacks.on_train_batch_end


def _multi_worker_train_function(keras_model: keras.Model, strategy):
    """Keras's one-step train function, with logs that can be reduced across workers.

    Keras 3's own reduces each log with `strategy.reduce("MEAN", log, axis=0)`
    under MultiWorkerMirroredStrategy, which fails on its scalar logs ("Invalid
    reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). Only the logs of each batch come from here:
    at the end of an epoch Keras reads its metrics, aggregated over all workers.
    """

    @tf.function
    def train_function(iterator):
        logs = strategy.run(keras_model.train_step, args=(next(iterator),))
        return tf.nest.map_structure(lambda log: strategy.reduce("MEAN", log, axis=None), logs)

    return train_function
