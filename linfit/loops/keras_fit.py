"""Keras's own loop: `compile` then `fit`, on linfit's dataset."""

import contextlib

import keras
import tensorflow as tf


def run_fit(keras_model: keras.Model, dataset, initial_epoch: int, epochs: int,
            steps_per_epoch: int, callbacks: list, loss, optimizer, verbose: int = 0,
            steps_per_execution: int = 1, jit_compile: bool = False,
            run_eagerly: bool = False, strategy=None) -> None:
    """Compile with the shared loss and optimizer objects, then fit.

    The dataset is linfit's: every epoch's batches in linfit's order. With
    `steps_per_epoch` set, Keras reads it through one iterator across epochs,
    as the manual loop does; `shuffle` is off so Keras never reorders it.
    """
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        keras_model.compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile,
                            run_eagerly=run_eagerly,
                            steps_per_execution=min(steps_per_execution, steps_per_epoch))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_model.train_function = _multi_worker_train_function(keras_model, strategy)
    with _without_symbolic_build(keras_model, strategy):
        keras_model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                        shuffle=False)


@contextlib.contextmanager
def _without_symbolic_build(keras_model: keras.Model, strategy):
    """Fit inside the strategy's scope with the model's own strategy unset.

    A model created in a strategy's scope remembers it, and then Keras's fit
    first builds it symbolically on the MEAN over replicas of the first
    batch's shards, which fails when they differ in size (201 rows over 2
    replicas: "Inputs to operation AddN ... must have the same size").
    Everything that build would build is built already (the Trainer builds
    the model and the optimizer), so it is skipped by taking the strategy
    from the scope instead, as Keras does for a model created outside one.
    """
    if strategy is None:
        yield
        return
    remembered = keras_model._distribute_strategy
    keras_model._distribute_strategy = None
    try:
        with strategy.scope():
            yield
    finally:
        keras_model._distribute_strategy = remembered


def _multi_worker_train_function(keras_model: keras.Model, strategy):
    """Keras's one-step train function, with logs that can be reduced across workers.

    Keras 3's own reduces each log with `strategy.reduce("MEAN", log, axis=0)`
    under MultiWorkerMirroredStrategy, which fails on its scalar logs ("Invalid
    reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). `fit` uses a `train_function` already set.
    Only the logs of each batch come from here: at the end of an epoch Keras
    reads its metrics, aggregated over all workers.
    """

    @tf.function
    def train_function(iterator):
        logs = strategy.run(keras_model.train_step, args=(next(iterator),))
        return tf.nest.map_structure(lambda log: strategy.reduce("MEAN", log, axis=None), logs)

    return train_function
