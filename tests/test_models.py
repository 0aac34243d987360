"""Both model variants: the guide's drop-ins, with and without features."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from linfit import LinearModel, LinearModule, ModelError

VARIANTS = [LinearModule, LinearModel]


@pytest.mark.parametrize("cls", VARIANTS)
def test_no_arguments_is_the_guides_scalar_model(cls):
    model = cls()
    assert model.w.shape == () and model.b.shape == ()
    assert model(3.0).numpy() == 15.0
    assert f"{model.w.numpy():1.2f}" == "5.00" and f"{model.b.numpy():1.2f}" == "0.00"
    x = tf.linspace(-2.0, 2.0, 201)
    np.testing.assert_allclose(model(x).numpy(), 5.0 * x.numpy(), rtol=1e-6)
    assert model(x).shape == (201,)


@pytest.mark.parametrize("cls", VARIANTS)
def test_features_take_a_matrix_and_give_a_vector(cls):
    model = cls(features=3, init_w=[0.5, -1.0, 2.0], init_b=0.25)
    x = np.random.default_rng(1).normal(size=(7, 3))
    expected = x @ np.array([0.5, -1.0, 2.0]) + 0.25
    prediction = model(x.astype(np.float32)).numpy()
    assert prediction.shape == (7,)
    np.testing.assert_allclose(prediction, expected, rtol=1e-5)


@pytest.mark.parametrize("cls", VARIANTS)
def test_scalar_init_w_is_broadcast_and_list_sets_features(cls):
    np.testing.assert_array_equal(cls(features=4, init_w=1.5).w.numpy(), [1.5] * 4)
    assert cls(init_w=[1.0, 2.0]).features == 2
    with pytest.raises(ModelError, match="init_w has 2 values but the model has 3 features"):
        cls(features=3, init_w=[1.0, 2.0])
    with pytest.raises(ModelError, match="features must be None"):
        cls(features=0)


def test_keras_variant_tracks_w_then_b():
    model = LinearModel(features=2)
    assert [v.path.split("/")[-1] for v in model.trainable_weights] == ["w", "b"]
    assert model.built


def test_module_lists_variables_like_the_guide():
    # The guide prints the tf.Module's variables: b before w (sorted by name).
    assert [float(v.numpy()) for v in LinearModule().variables] == [0.0, 5.0]


@pytest.mark.parametrize("cls", VARIANTS)
def test_the_guides_code_runs_with_linfit_classes(cls, tmp_path):
    """Every line of the guide, with linfit's class in place of MyModel/MyModelKeras."""
    x = tf.cast(tf.linspace(-2, 2, 201), tf.float32)
    y = x * 3.0 + 2.0 + tf.random.stateless_normal([201], seed=[1, 2])

    def loss(target_y, predicted_y):
        return tf.reduce_mean(tf.square(target_y - predicted_y))

    def train(model, x, y, learning_rate):
        with tf.GradientTape() as t:
            current_loss = loss(y, model(x))
        dw, db = t.gradient(current_loss, [model.w, model.b])
        model.w.assign_sub(learning_rate * dw)
        model.b.assign_sub(learning_rate * db)

    def report(model, loss):
        return f"W = {model.w.numpy():1.2f}, b = {model.b.numpy():1.2f}, loss={loss:2.5f}"

    model = cls()
    print("Variables:", model.variables)
    assert model(3.0).numpy() == 15.0
    weights, losses = [], [loss(y, model(x)).numpy()]
    for _ in range(10):
        train(model, x, y, learning_rate=0.1)
        weights.append(model.w.numpy())
        losses.append(loss(y, model(x)).numpy())
        report(model, losses[-1])
    assert losses[-1] < losses[0] / 5
    if cls is LinearModel:
        # The guide's Keras half: compile, fit with one batch, save_weights.
        keras_model = cls()
        keras_model.compile(run_eagerly=False, optimizer=keras.optimizers.SGD(learning_rate=0.1),
                            loss=keras.losses.MeanSquaredError())
        history = keras_model.fit(x, y, epochs=10, batch_size=1000, verbose=0)
        # The guide's run was frozen at its first loss; this one trains, and
        # from the same start gives the same weights as the hand-written loop.
        assert history.history["loss"][-1] < history.history["loss"][0] / 3
        np.testing.assert_allclose(keras_model.w.numpy(), model.w.numpy(), rtol=1e-5)
        keras_model.save_weights(tmp_path / "my_checkpoint.weights.h5")
        restored = cls()
        restored.load_weights(tmp_path / "my_checkpoint.weights.h5")
        assert restored.w.numpy() == keras_model.w.numpy()
