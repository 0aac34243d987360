"""Keras's own loop: `compile` then `fit`, on linfit's dataset."""

import contextlib

import keras
import tensorflow as tf

from linfit import compat


def run_fit(keras_model: keras.Model, dataset, epochs: range, steps_per_epoch: int,
            callbacks: list, plan, verbose: int = 0, strategy=None) -> None:
    """Compile with the model's loss and optimizer (the Trainer's shared objects)
    as the plan says, then fit.

    The dataset is linfit's: every epoch's batches in linfit's order. With
    `steps_per_epoch` set, Keras reads it through one iterator across epochs,
    as the manual loop does; `shuffle` is off so Keras never reorders it.
    """
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        keras_model.compile(optimizer=keras_model.optimizer, loss=keras_model.loss,
                            jit_compile=plan.mode == "xla", run_eagerly=plan.mode == "eager",
                            steps_per_execution=plan.steps_per_execution)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        compat.use_train_function(keras_model, _multi_worker_train_function(keras_model,
                                                                            strategy))
    scope = compat.strategy_from_scope(keras_model, strategy) if strategy is not None \
        else contextlib.nullcontext()
    with scope:
        keras_model.fit(dataset, epochs=epochs.stop, initial_epoch=epochs.start,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                        shuffle=False)


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
