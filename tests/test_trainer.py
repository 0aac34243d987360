"""Trainer: both models × both loops, against float64 gradient descent."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers.references import assert_matches_reference, gradient_descent_reference
from linfit import ConfigError, DataError, LinearModel, LinearModule, ModelError, Trainer
from linfit.agreement import compare_histories

COMBINATIONS = list(itertools.product([LinearModule, LinearModel], ["manual", "keras"]))
IDS = [f"{cls.__name__}-{loop}" for cls, loop in COMBINATIONS]


@pytest.fixture(scope="module")
def guide_histories(guide_data):
    """The guide's run (lr 0.1, 10 full-batch epochs) for all four combinations."""
    return {(cls, loop): Trainer(cls(), learning_rate=0.1).fit(
        guide_data.x, guide_data.y, epochs=10, loop=loop) for cls, loop in COMBINATIONS}


@pytest.mark.parametrize("cls, loop", COMBINATIONS, ids=IDS)
def test_guide_trajectory_matches_float64_gradient_descent(guide_histories, guide_data, cls, loop):
    history = guide_histories[(cls, loop)]
    reference = gradient_descent_reference(guide_data.x, guide_data.y, 5.0, 0.0, 0.1, 10)
    assert history.epochs == 10 and len(history.full_loss) == 11
    assert_matches_reference(history, reference)


def test_four_combinations_agree(guide_histories):
    agreement = compare_histories(list(guide_histories.values()), rtol=1e-5)
    assert agreement.agree, agreement
    assert set(agreement.max_abs) == {"loss", "full_loss", "w", "b"}


def test_keras_loop_really_trains(guide_histories):
    # The guide's broken Keras run had the same loss for ten epochs.
    losses = guide_histories[(LinearModel, "keras")].loss
    assert len(set(losses)) == 10 and losses[-1] < losses[0] / 5


def test_full_batch_loss_is_the_loss_before_the_update(guide_histories):
    history = guide_histories[(LinearModule, "manual")]
    np.testing.assert_allclose(history.loss, history.full_loss[:-1], rtol=1e-6)


@pytest.mark.parametrize("cls, loop", COMBINATIONS, ids=IDS)
def test_minibatches_with_partial_last_batch_match_reference(cls, loop):
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, size=(50, 3)).astype(np.float32)
    y = (x @ np.array([0.5, -1.2, 2.0]) + 0.3 + rng.normal(0, 0.1, 50)).astype(np.float32)
    history = Trainer(cls(features=3, init_w=0.0), learning_rate=0.05).fit(
        x, y, epochs=4, loop=loop, batch_size=16)  # batches 16, 16, 16, 2
    reference = gradient_descent_reference(x, y, [0.0] * 3, 0.0, 0.05, 4, batch_size=16)
    assert_matches_reference(history, reference, rtol=1e-5)


@pytest.mark.parametrize("loop", ["manual", "keras"])
def test_adam_loops_agree(loop, guide_data):
    histories = [Trainer(cls(), optimizer="adam", learning_rate=0.2).fit(
        guide_data.x, guide_data.y, epochs=5, loop=loop) for cls in (LinearModule, LinearModel)]
    assert compare_histories(histories).agree
    assert histories[0].full_loss[-1] < histories[0].full_loss[0] / 2


def test_evaluate_is_the_mse(guide_data):
    model = LinearModule(init_w=2.5, init_b=-1.0)
    expected = np.mean((2.5 * guide_data.x.astype(float) - 1.0 - guide_data.y) ** 2)
    assert Trainer(model).evaluate(guide_data.x, guide_data.y) == pytest.approx(expected, rel=1e-6)


def test_callbacks_see_the_full_loss_and_can_stop_training(guide_data):
    class StopAfterTwo(keras.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(dict(logs))
            if epoch == 1:
                self.model.stop_training = True

    callback = StopAfterTwo()
    history = Trainer(LinearModule()).fit(guide_data.x, guide_data.y, epochs=10,
                                          callbacks=[callback])
    assert history.epochs == 2 and len(history.full_loss) == 3
    assert [logs["full_loss"] for logs in callback.seen] == history.full_loss[1:]


class GuideKerasModel(keras.Model):
    """The guide's MyModelKeras, verbatim: plain tf.Variables Keras 3 does not track."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

    def call(self, x):
        return self.w * x + self.b


def test_guides_untracked_keras_model_is_refused():
    with pytest.raises(ModelError, match=r"w, b .*not track.*add_weight"):
        Trainer(GuideKerasModel())


def test_models_without_trainable_variables_are_refused():
    class Empty(keras.Model):
        def call(self, x):
            return x

    class Frozen(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(1.0, trainable=False)

    with pytest.raises(ModelError, match="no trainable weights.*add_weight"):
        Trainer(Empty()).fit(np.zeros(3, np.float32), np.zeros(3, np.float32), epochs=1)
    with pytest.raises(ModelError, match="no trainable tf.Variable"):
        Trainer(Frozen())
    with pytest.raises(ModelError, match="tf.Module .* or a keras.Model"):
        Trainer(lambda x: x)


def test_plain_tf_variables_in_a_list_are_refused_too():
    class Listed(keras.Model):
        def __init__(self):
            super().__init__()
            self.w = self.add_weight(shape=(), initializer="ones")
            self.extra = [tf.Variable(3.0)]  # untracked: it trained nothing

        def call(self, x):
            return x * self.w + self.extra[0]

    with pytest.raises(ModelError, match="keeps extra as plain tf.Variable"):
        Trainer(Listed())


def test_what_is_no_model_saves_no_empty_file(tmp_path):
    """An empty `vars` group is the file the guide's broken model writes."""
    from linfit import save_weights

    for model, message in (("hello", "str has no variables to save"),
                           (tf.Module(), "Module has no variables to save"),
                           (keras.Sequential([keras.layers.Dense(1)]), "is not built")):
        with pytest.raises(ModelError, match=message):
            save_weights(model, tmp_path / "m.weights.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_plain_tf_module_like_the_guides_trains():
    class MyModel(tf.Module):  # the guide's tf.Module, verbatim
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.w = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def __call__(self, x):
            return self.w * x + self.b

    x = np.linspace(-2, 2, 21, dtype=np.float32)
    history = Trainer(MyModel()).fit(x, 3 * x + 2, epochs=3, loop="keras")
    reference = gradient_descent_reference(x, 3 * x + 2, 5.0, 0.0, 0.1, 3)
    assert_matches_reference(history, reference)


@pytest.mark.parametrize("arguments, message", [
    ({"loop": "tape"}, "loop='tape' is not a training loop"),
    ({"epochs": 0}, "epochs=0"),
    ({"batch_size": 0}, "batch_size=0"),
    # A hostile review's: -1 crashed the process (a segfault in tf.data's rebatch).
    ({"batch_size": 2, "shuffle_seed": 1, "shuffle_buffer": -1}, "shuffle_buffer=-1"),
    ({"shuffle_seed": 1.5}, "shuffle_seed=1.5"),
    ({"shuffle_seed": True}, "shuffle_seed=True"),
    # The manual loop trained nothing with -1; keep_checkpoints=-1 deleted every one.
    ({"checkpoint_dir": "unused", "checkpoint_every_batches": -1},
     "checkpoint_every_batches=-1"),
    ({"checkpoint_dir": "unused", "keep_checkpoints": -1}, "keep_checkpoints=-1"),
    ({"checkpoint_every": 1.5}, "checkpoint_every=1.5"),
    ({"initial_epoch": -2}, "initial_epoch=-2"),
    ({"verbose": 5}, "verbose=5"),
    ({"validation_data": (np.zeros(4), np.zeros(4), np.ones(4))},
     r"validation_data must be \(x_val, y_val\), got 3 items"),
    ({"callbacks": ["x"]}, "callbacks: 'x' is not a keras.callbacks.Callback"),
    # Nothing was written, and nothing said.
    ({"checkpoint_every": 2}, "give checkpoint_dir, where to write them"),
    ({"checkpoint_every_batches": 2}, "give checkpoint_dir, where to write them"),
])
def test_bad_fit_arguments(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written, not even a checkpoint_dir
    x = np.zeros(4, np.float32)
    kwargs = {"epochs": 1, **arguments}
    with pytest.raises(ConfigError, match=message):
        Trainer(LinearModule()).fit(x, x, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_one_callback_is_taken_as_keras_takes_it():
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    seen = []
    Trainer(LinearModule()).fit(x, 2 * x, epochs=2, callbacks=keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(epoch)))
    assert seen == [0, 1]


def test_numpy_numbers_are_numbers():
    """np.int64 epochs and batch size, a np.float32 learning rate: taken as fit takes
    them (they were refused as "it must be at least 1")."""
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    plain = Trainer(LinearModule(), learning_rate=0.5).fit(x, 2 * x, epochs=3, batch_size=4)
    numpy = Trainer(LinearModule(), learning_rate=np.float32(0.5)).fit(
        x, 2 * x, epochs=np.int64(3), batch_size=np.int64(4), validation_freq=np.int64(1))
    assert numpy.loss == plain.loss and numpy.w == plain.w


@pytest.mark.parametrize("x, message", [
    ([[1.0, 2.0], [3.0]], "x must be a table of numbers, every row as long"),
    (["a", "b"], "x must be real numbers"),
    (3.0, r"x must have shape \[N\] or \[N, d\], got shape \[\]"),
    ([np.nan, 1.0], "x has a non-finite value in row 0"),
    ([1.0, 1e39], r"x in row 1: 1e\+39 overflows float32 \(largest 3.4e\+38\): rescale it"),
    (np.arange(2).astype("timedelta64[s]"), "x must be real numbers, got an array of timedelta"),
])
def test_predict_checks_x_as_fit_does(x, message):
    """It took strings and NaN (predicting nan), and raised NumPy's errors."""
    with pytest.raises(DataError, match=message):
        Trainer(LinearModule()).predict(x)


def test_bad_trainer_arguments():
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        Trainer(LinearModule(), optimizer="sgdd")
    for optimizer in (None, 3, keras.optimizers.Adam):  # an AttributeError ('lower')
        with pytest.raises(ConfigError, match="optimizer=.*: use a Keras optimizer name"):
            Trainer(LinearModule(), optimizer=optimizer)
    with pytest.raises(ConfigError, match="unknown loss 'mse2'"):
        Trainer(LinearModule(), loss="mse2")
    with pytest.raises(ConfigError, match="learning_rate=-0.1"):
        Trainer(LinearModule(), learning_rate=-0.1)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((4, 2)), np.zeros(4), r"scalar .* build it with features=2"),
    (np.zeros(4), np.zeros(3), "N = len\\(y\\) = 3"),
    (np.array([1.0, np.nan, 0.0]), np.zeros(3), "x has a non-finite value in row 1"),
    (np.zeros(3), np.array([0.0, 0.0, np.inf]), "y has a non-finite value in row 2"),
])
def test_bad_data_is_refused_before_training(x, y, message):
    model = LinearModule()
    with pytest.raises(DataError, match=message):
        Trainer(model).fit(x, y, epochs=1)
    assert model.w.numpy() == 5.0


def test_feature_count_must_match_the_model():
    with pytest.raises(DataError, match=r"takes 3 features .* got x of shape \[4, 2\]"):
        Trainer(LinearModel(features=3)).fit(np.zeros((4, 2)), np.zeros(4), epochs=1)


@pytest.mark.parametrize("compile", ["auto", "eager", "function", "xla"])
def test_compile_modes_give_the_same_trajectory(guide_data, compile):
    history = Trainer(LinearModule(), compile=compile).fit(guide_data.x, guide_data.y, epochs=5)
    reference = gradient_descent_reference(guide_data.x, guide_data.y, 5.0, 0.0, 0.1, 5)
    assert_matches_reference(history, reference)
    keras_history = Trainer(LinearModel(), compile=compile).fit(
        guide_data.x, guide_data.y, epochs=5, loop="keras")
    assert_matches_reference(keras_history, reference)


@pytest.mark.parametrize("optimizer, batch_size", [("sgd", None), ("adam", 32)])
def test_eager_and_compiled_runs_are_bitwise_identical(optimizer, batch_size):
    # "auto" runs short runs eagerly and long ones compiled: a run resumed across
    # that line must not change a bit.
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(100, 3)).astype(np.float32)
    y = (x @ np.array([0.5, -1.2, 2.0]) + rng.normal(0, 0.1, 100)).astype(np.float32)
    histories = [Trainer(LinearModel(features=3), compile=mode, optimizer=optimizer,
                         learning_rate=0.05).fit(x, y, epochs=6, batch_size=batch_size)
                 for mode in ("eager", "function")]
    assert histories[0].to_json() == histories[1].to_json()


@pytest.mark.parametrize("steps_per_call", [0, 1, 3, 4, 12])
def test_steps_per_call_and_fused_epochs_lose_no_row(steps_per_call):
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, size=(50, 3)).astype(np.float32)
    y = (x @ np.array([0.5, -1.2, 2.0]) + 0.3).astype(np.float32)
    # 4 batches per epoch: 3 is step by step, 4 fuses one epoch a call, 12 three.
    history = Trainer(LinearModel(features=3, init_w=0.0), learning_rate=0.05,
                      steps_per_call=steps_per_call).fit(x, y, epochs=7, batch_size=16,
                                                         validation_data=(x[:10], y[:10]))
    reference = gradient_descent_reference(x, y, [0.0] * 3, 0.0, 0.05, 7, batch_size=16)
    assert_matches_reference(history, reference)
    np.testing.assert_allclose(
        history.trajectory["val_loss"],
        [np.mean((x[:10] @ w + b - y[:10]) ** 2) for w, b in zip(reference["w"],
                                                                  reference["b"])], rtol=1e-5)


def test_no_retracing_after_the_first_call(guide_data):
    trainer = Trainer(LinearModule(), compile="function")
    trainer.fit(guide_data.x, guide_data.y, epochs=40)  # fused: one call
    trainer.fit(guide_data.x, guide_data.y, epochs=2500)  # three calls of up to 1024 epochs
    trainer.fit(guide_data.x, guide_data.y, epochs=70)  # new data variables, same shapes
    functions = trainer.manual_loop
    assert functions.run_epochs.experimental_get_tracing_count() == 1
    assert functions.tracing_count() == 1
    trainer.fit(guide_data.x[::2], guide_data.y[::2], epochs=50)  # another shape: one trace
    trainer.fit(guide_data.x[::2], guide_data.y[::2], epochs=60)  # and no more
    assert functions.tracing_count() == 2
    stepwise = Trainer(LinearModule(), steps_per_call=1, compile="function")
    for epochs in (2, 5):
        stepwise.fit(guide_data.x, guide_data.y, epochs=epochs, batch_size=50)
    # The last batch (201 = 4 x 50 + 1) has another shape, but a batch count is a tensor:
    # the step function was traced once.
    assert stepwise.manual_loop.run_steps.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("batch_size", [None, 16])
def test_a_second_fit_on_other_data_records_that_data(batch_size):
    # The compiled functions are reused across fits: the data must be an input,
    # not a capture of the first fit's.
    rng = np.random.default_rng(8)
    trainer = Trainer(LinearModule(), compile="function")
    for scale in (1.0, 0.5):
        x = rng.uniform(-2, 2, 60).astype(np.float32) * scale
        y = (3 * x + 1).astype(np.float32)
        x_val, y_val = x[:7] + 1, y[:7]
        history = trainer.fit(x, y, epochs=40, batch_size=batch_size,
                              validation_data=(x_val, y_val), shuffle_seed=None)
        w, b = float(trainer.model.w.numpy()), float(trainer.model.b.numpy())
        assert history.full_loss[-1] == pytest.approx(np.mean((w * x + b - y) ** 2), rel=1e-4)
        assert history.trajectory["val_loss"][-1] == pytest.approx(
            np.mean((w * x_val + b - y_val) ** 2), rel=1e-4)


def guide_tensors():
    """The guide's own inputs: tf.linspace and a tf noise tensor (seeded here)."""
    x = tf.linspace(-2.0, 2.0, 201)
    return x, x * 3.0 + 2.0 + tf.random.stateless_normal([201], seed=[1, 2])


def read_only_memmap(tmp_path):
    x, y = (np.asarray(t) for t in guide_tensors())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return (np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"))


INPUTS = {
    "tf-tensors": lambda tmp_path: guide_tensors(),
    "read-only-memmap": read_only_memmap,
    "broadcast-non-contiguous": lambda tmp_path: (
        np.broadcast_to(np.linspace(-2, 2, 201, dtype=np.float32)[:, None], (201, 2))[:, 0],
        np.asarray(guide_tensors()[1])),
    "float64": lambda tmp_path: tuple(np.asarray(t, dtype=np.float64) for t in guide_tensors()),
    "lists": lambda tmp_path: tuple(np.asarray(t).tolist() for t in guide_tensors()),
}


@pytest.mark.parametrize("loop", ["manual", "keras"])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_the_inputs_people_pass(tmp_path, kind, loop):
    """Issue 13.2: the guide's tensors, read-only and non-contiguous arrays, float64
    and lists train (both loops), evaluate and predict, as their float32 values do."""
    x, y = INPUTS[kind](tmp_path)
    trainer = Trainer(LinearModule())
    history = trainer.fit(x, y, epochs=10, loop=loop)
    x32, y32 = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    assert_matches_reference(history, gradient_descent_reference(x32, y32, 5.0, 0.0, 0.1, 10))
    w, b = float(trainer.model.w.numpy()), float(trainer.model.b.numpy())
    assert trainer.evaluate(x, y) == pytest.approx(np.mean((w * x32 + b - y32) ** 2), rel=1e-5)
    np.testing.assert_allclose(trainer.predict(x), w * x32 + b, rtol=1e-6)


def test_run_comparison_takes_the_guides_tensors():
    import linfit

    x, y = guide_tensors()
    comparison = linfit.run_comparison(x, y, epochs=3, validation_data=(x[:20], y[:20]))
    assert comparison.agreement.agree and len(comparison.runs) == 4


def test_data_is_copied_at_most_once_and_shared_with_tensorflow():
    from linfit.arrays import float32_array
    from linfit.pipeline import to_variable

    ready = float32_array(np.arange(100, dtype=np.float64))  # one aligned float32 copy
    assert ready.dtype == np.float32 and float32_array(ready) is ready  # then no more
    read_only = np.arange(100, dtype=np.float32)
    read_only.flags.writeable = False
    assert not np.shares_memory(float32_array(read_only), read_only)  # DLPack needs writeable
    variable = to_variable(ready)  # shared, not copied: a write shows through
    ready[7] = -1.0
    assert float(variable[7].numpy()) == -1.0


def test_the_keras_loop_with_calls_that_do_not_divide_an_epoch_keeps_its_epochs(recwarn):
    """steps_per_call = 3 of 16 batches: Keras would run its last execution of an epoch
    into the next one's batches ("Your input ran out of data"); the executions divide
    the epoch instead, and the run is bitwise the one-step-a-call run."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 2)).astype(np.float32)
    y = (x @ [1.5, -0.5] + 0.3).astype(np.float32)
    histories = []
    for steps_per_call in (1, 3):
        keras.utils.set_random_seed(0)
        trainer = Trainer(LinearModule(features=2), steps_per_call=steps_per_call)
        histories.append(trainer.fit(x, y, epochs=3, batch_size=64, shuffle_seed=1,
                                     loop="keras").columns())
    for name in histories[0]:
        np.testing.assert_array_equal(histories[0][name], histories[1][name], err_msg=name)
    assert not [w for w in recwarn if "ran out of data" in str(w.message)]
