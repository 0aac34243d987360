"""Each private Keras detail linfit relies on (linfit/compat.py), pinned against the
installed Keras: an upgrade that breaks one fails here, by name.

The multiplication `tracked_loss` undoes under several replicas is pinned by
the distributed tests (tests/helpers/mirrored_check.py: the Keras loop's
`loss` log equals one device's).
"""

import keras
import numpy as np
import tensorflow as tf

from linfit import LinearModel, LinearModule, Trainer, compat


def test_loss_from_function_reduces_as_compile_does(guide_data):
    # Keras compiles a plain function into a mean over the batch: with the same
    # function, the manual loop (through the wrapper) and fit give the same bits.
    histories = [Trainer(LinearModule(), loss=keras.losses.mean_squared_error).fit(
        guide_data.x, guide_data.y, epochs=3, loop=loop, batch_size=64)
        for loop in ("manual", "keras")]
    assert histories[0].to_json() == histories[1].to_json()
    wrapped = compat.loss_from_function(keras.losses.mean_absolute_error, "mae")
    y, prediction = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 2.0])
    assert float(wrapped(y, prediction)) == 1.0


def test_tracked_loss_is_the_loss_on_one_device():
    loss = tf.constant(2.5)
    assert float(compat.tracked_loss(loss)) == 2.5
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert float(compat.tracked_loss(loss)) == 2.5


def test_a_model_remembers_the_strategy_it_was_created_in():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = LinearModel()
    assert model.distribute_strategy is strategy
    other = tf.distribute.OneDeviceStrategy("/cpu:0")
    with compat.strategy_from_scope(model, other):
        assert model.distribute_strategy is other  # taken from the scope
    assert model.distribute_strategy is strategy


def test_fit_uses_a_train_function_set_after_compile():
    model = LinearModel()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.make_train_function()
    made = model.train_function
    calls = []

    def counting(iterator):
        calls.append(1)
        return made(iterator)

    compat.use_train_function(model, counting)
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    model.fit(x, 2 * x, epochs=2, batch_size=8, verbose=0)
    assert len(calls) == 2 and float(model.w.numpy()) != 5.0
