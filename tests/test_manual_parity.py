"""The manual loop drives a Keras model as Keras's `fit` does, beyond a linear model.

Each case trains the same Keras model (same layers, same starting weights) with plain
`keras.Model.fit` and with `Trainer.fit(loop="manual")` on the same data and batches,
and asserts the same losses per epoch and the same final weights. Found by a hostile
review: the manual loop called the model without training=True, left out its
regularization losses, the optimizer's loss scale and moving average, BackupAndRestore's
epoch, and failed on a metric given a full batch.
"""

import keras
import numpy as np
import pytest

import linfit

X = np.linspace(-2, 2, 20, dtype=np.float32)[:, None]
Y = 3 * X[:, 0] + 2


class TrainingOnly(keras.layers.Layer):
    """Doubles its input while training: a model whose training=True matters."""

    def call(self, x, training=None):
        return x * 2.0 if training else x


def model(*layers, regularizer=None):
    return keras.Sequential([keras.Input((1,)), *layers, keras.layers.Dense(
        1, kernel_initializer=keras.initializers.Constant(0.5), kernel_regularizer=regularizer)])


def plain_fit(new_model, optimizer, epochs=3, batch_size=10, metrics=(), callbacks=()):
    trained = new_model()
    trained.compile(optimizer=optimizer, loss="mse", metrics=list(metrics))
    history = trained.fit(X, Y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0,
                          callbacks=list(callbacks))
    return history.history, trained.get_weights()


def manual_fit(new_model, optimizer, epochs=3, batch_size=10, metrics=(), callbacks=()):
    trained = new_model()
    history = linfit.Trainer(trained, optimizer=optimizer, metrics=list(metrics)).fit(
        X, Y, epochs=epochs, batch_size=batch_size, loop="manual", callbacks=list(callbacks))
    return history, trained.get_weights()


def assert_same(plain, manual, names=("loss",)):
    (logs, weights), (history, manual_weights) = plain, manual
    for name in names:
        np.testing.assert_allclose(history.logs[name], logs[name], rtol=1e-6, err_msg=name)
    for got, want in zip(manual_weights, weights):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("layers, regularizer, optimizer", [
    # Dropout drops and BatchNormalization learns only when called with training=True.
    ((TrainingOnly(),), None, lambda: keras.optimizers.SGD(0.05)),
    # fit adds model.losses to the loss it minimises and logs.
    ((), keras.regularizers.L2(0.5), lambda: keras.optimizers.SGD(0.1)),
    # fit scales the loss by the optimizer's loss scale, which divides the gradients back.
    ((), None, lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))),
    ((), None, lambda: keras.optimizers.SGD(0.1, loss_scale_factor=64.0)),
    # fit ends by writing the optimizer's moving average into the model.
    ((), None, lambda: keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)),
], ids=["training-flag", "regularizer", "loss-scale-optimizer", "loss-scale-factor", "ema"])
def test_the_manual_loop_trains_a_keras_model_as_fit_does(layers, regularizer, optimizer):
    def new_model():
        return model(*layers, regularizer=regularizer)

    assert_same(plain_fit(new_model, optimizer()), manual_fit(new_model, optimizer()))


def test_a_metric_of_a_full_batch_reads_tensors_as_in_fit():
    """accuracy on a full batch of a LinearModule raised AttributeError
    ('ResourceVariable' object has no attribute 'ndim')."""
    x = X[:, 0]
    plain = linfit.LinearModel()
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["accuracy"])
    logs = plain.fit(x, Y, epochs=2, batch_size=20, shuffle=False, verbose=0).history
    history = linfit.Trainer(linfit.LinearModule(), metrics=["accuracy"]).fit(
        x, Y, epochs=2, loop="manual")
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(history.logs[name], logs[name], rtol=1e-6)


class StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_a_fit_after_backup_and_restore_starts_at_its_epoch(tmp_path):
    """A first fit stops at the end of epoch 1; the second, with the same
    BackupAndRestore, runs epochs 2 and 3 only, from the backed-up weights (the manual
    loop ran all four again)."""
    results = []
    for fit, folder in ((plain_fit, tmp_path / "plain"), (manual_fit, tmp_path / "manual")):
        def backup():
            return keras.callbacks.BackupAndRestore(str(folder))

        shared = model()

        def same_model():
            return shared

        with pytest.raises(RuntimeError, match="interrupted"):
            fit(same_model, keras.optimizers.SGD(0.1), epochs=4,
                callbacks=[backup(), StopAtEpoch(1)])
        results.append(fit(same_model, keras.optimizers.SGD(0.1), epochs=4,
                           callbacks=[backup()]))
    (plain_logs, plain_weights), (history, manual_weights) = results
    assert len(plain_logs["loss"]) == len(history.logs["loss"]) == 2
    assert_same(results[0], results[1])
