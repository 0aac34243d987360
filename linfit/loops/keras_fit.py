"""Keras's own loop: `compile` then `fit`, on linfit's dataset."""

import contextlib

import keras


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
    keras_model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                    steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                    shuffle=False)
