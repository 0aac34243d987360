"""A Keras model trained by linfit is the user's Keras model: it saves whole, loads with
plain Keras and trains on identically; it is built and called as `fit` builds and calls it;
its compiled metrics are logged as `fit` logs them (issue 15, items 2, 4 and 5)."""

import keras
import numpy as np
import pytest

from linfit import LinearModel, LinearModule, Trainer
from linfit.errors import DivergenceError, ModelError

LOOPS = ["manual", "keras"]
X = np.linspace(-1.0, 1.0, 24, dtype=np.float32)
Y = (3.0 * X + 2.0 + 0.1 * np.sin(7.0 * X)).astype(np.float32)


def sequential():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])


def linear():
    return LinearModel()


def features(model):
    """The data for `model`: the Sequential takes [N, 1] and gives [N, 1]."""
    return (X, Y) if isinstance(model, (LinearModel, LinearModule)) else (X[:, None], Y[:, None])


@pytest.mark.parametrize("make", [linear, sequential])
@pytest.mark.parametrize("loop", LOOPS)
def test_a_trained_model_saves_whole_loads_with_plain_keras_and_trains_on_bitwise(
        tmp_path, loop, make):
    model = make()
    x, y = features(model)
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(0.05), metrics=["mae"])
    trainer.fit(x, y, epochs=3, loop=loop, batch_size=8,
                callbacks=[keras.callbacks.ModelCheckpoint(tmp_path / "during.keras")])
    model.save(tmp_path / "after.keras")
    for name in ("during.keras", "after.keras"):
        loaded = keras.saving.load_model(tmp_path / name)  # no custom objects
        assert loaded.get_compile_config()["loss"] == "mse"
        for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The optimizer's state came along: Keras's fit goes on identically from both,
    # and so does linfit's, from the loaded model and its optimizer.
    ours = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    theirs = loaded.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert ours.history == theirs.history
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    again = keras.saving.load_model(tmp_path / "after.keras")
    # Compiled, as `fit` is: TensorFlow fuses a Dense layer's ops in graphs only.
    history = Trainer(again, optimizer=again.optimizer, metrics=["mae"], compile="function").fit(
        x, y, epochs=2, batch_size=8, loop=loop)
    assert history.loss == ours.history["loss"] and history.logs["mae"] == ours.history["mae"]
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


class CountingLinear(keras.Model):
    """A model that counts its calls on data (a variable: counted in graphs too)."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.calls = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                     trainable=False)

    def call(self, x):
        self.calls.assign_add(1)
        return self.dense(x)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("compile", ["eager", "function"])
def test_the_model_is_called_as_fit_calls_it(loop, compile):
    """Issue 15.4: plain `fit` calls the model once per batch (and once per validation
    batch); so does linfit without the full-loss record, which is the only other call."""
    x, y = X[:16, None], Y[:16, None]
    plain = CountingLinear()
    plain.compile(optimizer="sgd", loss="mse", run_eagerly=compile == "eager")
    plain.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0)
    assert int(plain.calls.numpy()) == 2 * (4 + 4)
    model = CountingLinear()
    Trainer(model, compile=compile, record_full_loss=False).fit(
        x, y, batch_size=4, epochs=2, loop=loop, validation_data=(x, y))
    assert int(model.calls.numpy()) == int(plain.calls.numpy())
    recorded = CountingLinear()
    history = Trainer(recorded, compile=compile).fit(x, y, batch_size=4, epochs=2, loop=loop,
                                                     validation_data=(x, y))
    # With the record: the full loss before training and after each epoch (3 passes),
    # and the validation loss before training (1 pass of its 4 batches... as one call).
    assert len(history.full_loss) == 3
    assert int(recorded.calls.numpy()) == 16 + 3 + 4


@pytest.mark.parametrize("loop", LOOPS)
def test_metrics_are_logged_as_fit_logs_them(loop):
    """Issue 15.5: the same names and values as `fit`, `val_` prefixed, in History."""
    def compiled(model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                      metrics=["mae", keras.metrics.RootMeanSquaredError()])
        return model

    plain = compiled(LinearModel())
    expected = plain.fit(X, Y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                         validation_data=(X[:10], Y[:10])).history
    trainer = Trainer(LinearModel(), metrics=["mae", keras.metrics.RootMeanSquaredError()])
    history = trainer.fit(X, Y, batch_size=8, epochs=3, loop=loop,
                          validation_data=(X[:10], Y[:10]))
    assert history.metrics == ["mae", "root_mean_squared_error"]
    for name, values in expected.items():
        assert history.logs[name] == values, name
    columns = history.columns()
    assert list(columns)[:3] == ["loss", "mae", "root_mean_squared_error"]
    np.testing.assert_array_equal(columns["val_mae"][1:], expected["val_mae"])
    assert np.isnan(columns["mae"][0])


def test_a_loss_not_finite_before_any_update_is_said_so():
    """Issue 15.3: not "epoch 0, batch 0 ... that update was not applied"."""
    model = LinearModule(init_w=1e30)
    with pytest.raises(DivergenceError, match="training cannot start: the loss of the first "
                                              "batch is already not finite"):
        Trainer(model, record_full_loss=False).fit(X, Y, epochs=2)
    assert model.w.numpy() == np.float32(1e30)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tf_module_is_not_saved_whole_and_says_what_to_do_instead(tmp_path, loop):
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "m.keras")
    with pytest.raises(ModelError, match="cannot be saved whole as a .keras file: save its "
                                         "weights instead"):
        Trainer(LinearModule()).fit(X, Y, epochs=1, loop=loop, callbacks=[checkpoint])
    assert not (tmp_path / "m.keras").exists()
