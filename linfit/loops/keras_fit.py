"""Keras's own loop: `compile` then `fit`, on linfit's dataset."""

import keras


def run_fit(keras_model: keras.Model, dataset, epochs: int, callbacks: list,
            loss, optimizer, verbose: int = 0) -> None:
    """Compile with the shared loss and optimizer objects, then fit.

    The dataset is linfit's, already batched in linfit's order; `shuffle`
    is off so Keras never reorders it.
    """
    keras_model.compile(optimizer=optimizer, loss=loss)
    keras_model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=verbose,
                    shuffle=False)
