"""Keras callbacks in both loops, for both model variants; TensorBoard; any user model."""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from linfit import (DivergenceError, LinearModel, LinearModule, Trainer, load_weights,
                    save_weights)
from linfit.agreement import compare_histories
from linfit.callbacks import EpochRecorder
from linfit.history import History
from linfit.train import main

VARIANTS = list(itertools.product([LinearModule, LinearModel], ["manual", "keras"]))
IDS = [f"{cls.__name__}-{loop}" for cls, loop in VARIANTS]


def fit(guide_data, cls, loop, callbacks, epochs=4, learning_rate=0.1, **kwargs):
    model = cls()
    trainer = Trainer(model, learning_rate=learning_rate)
    history = trainer.fit(guide_data.x, guide_data.y, epochs=epochs, loop=loop,
                          callbacks=callbacks, **kwargs)
    return trainer, history


@pytest.mark.parametrize("cls, loop", VARIANTS, ids=IDS)
class TestStockCallbacks:
    def test_history(self, guide_data, cls, loop):
        user_history = keras.callbacks.History()
        _, history = fit(guide_data, cls, loop, [user_history])
        assert user_history.history["loss"] == history.loss
        assert user_history.history["full_loss"] == history.full_loss[1:]

    def test_progress_bar(self, guide_data, cls, loop, capsys):
        fit(guide_data, cls, loop, [], epochs=2, verbose=1, batch_size=50)
        out = capsys.readouterr().out
        assert "Epoch 1/2" in out and "Epoch 2/2" in out and "5/5" in out
        assert "full_loss:" in out and "loss:" in out

    def test_csv_logger(self, guide_data, cls, loop, tmp_path):
        _, history = fit(guide_data, cls, loop, [keras.callbacks.CSVLogger(tmp_path / "l.csv")])
        lines = (tmp_path / "l.csv").read_text().splitlines()
        # Keras adds (empty) val_ columns when there is no validation data.
        assert lines[0].split(",")[:5] == ["epoch", "b", "full_loss", "loss", "w"]
        last = dict(zip(lines[0].split(","), lines[-1].split(",")))
        assert len(lines) == 5 and float(last["full_loss"]) == pytest.approx(history.full_loss[-1])
        assert float(last["w"]) == pytest.approx(float(history.w[-1]))

    def test_tensorboard_writes_event_files(self, guide_data, cls, loop, tmp_path):
        fit(guide_data, cls, loop, [keras.callbacks.TensorBoard(tmp_path / "tb")])
        assert {"epoch_loss", "epoch_full_loss", "epoch_w", "epoch_b",
                "epoch_learning_rate"} <= set(read_scalars(tmp_path / "tb"))

    def test_early_stopping_restores_the_best_weights(self, guide_data, cls, loop):
        # b climbs from 0 towards 2 every epoch: "min" never improves after epoch 1.
        stop = keras.callbacks.EarlyStopping(monitor="b", mode="min", patience=2,
                                             restore_best_weights=True)
        trainer, history = fit(guide_data, cls, loop, [stop], epochs=10)
        assert history.epochs == 3 and stop.stopped_epoch == 2
        assert float(trainer.model.b.numpy()) == history.b[1]  # after the best epoch
        assert float(trainer.model.b.numpy()) != history.b[-1]

    def test_model_checkpoint_best_only(self, guide_data, cls, loop, tmp_path):
        path = tmp_path / "best.weights.h5"
        checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True,
                                                     save_best_only=True, monitor="full_loss",
                                                     mode="min")
        trainer, history = fit(guide_data, cls, loop, [checkpoint])
        restored = LinearModule()
        load_weights(restored, path)
        assert float(restored.w.numpy()) == float(trainer.model.w.numpy())
        assert checkpoint.best == history.full_loss[-1]

    def test_terminate_on_nan_ends_as_keras_does_without_applying_the_update(
            self, guide_data, cls, loop, tmp_path):
        # At learning rate 5 the loss on the data overflows after 17 epochs, so the
        # 18th epoch's (only) batch has an infinite loss. Plain Keras applies that
        # update and stops after the epoch; linfit stops at the same point, with the
        # same logs, but never applies it: the weights stay the last finite ones.
        model = LinearModel()
        model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
        keras_history = model.fit(guide_data.x, guide_data.y, epochs=100,
                                  batch_size=len(guide_data.x), shuffle=False, verbose=0,
                                  callbacks=[keras.callbacks.TerminateOnNaN()])
        log = tmp_path / "log.csv"
        trainer, history = fit(guide_data, cls, loop, [keras.callbacks.TerminateOnNaN(),
                                                       keras.callbacks.CSVLogger(log)],
                               epochs=100, learning_rate=5.0)
        assert history.epochs == len(keras_history.history["loss"]) == 18
        assert not np.isfinite(history.loss[-1])
        assert np.all(np.isfinite(history.loss[:-1]))
        assert trainer.model.w.numpy() == history.w[-2] == history.w[-1]
        assert np.isfinite(history.w[-1]) and np.isfinite(history.b[-1])
        assert float(model.get_weights()[0]) != history.w[-1]  # Keras applied it
        assert history.stopped
        assert log.read_text().splitlines()[-1].split(",")[0] == "17"  # the stopped epoch's row
        with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 0"):
            fit(guide_data, cls, loop, [keras.callbacks.TerminateOnNaN(raise_error=True)],
                epochs=100, learning_rate=5.0)

    def test_without_terminate_on_nan_a_divergence_is_an_error(self, guide_data, cls, loop):
        with pytest.raises(DivergenceError) as error:
            fit(guide_data, cls, loop, [], epochs=100, learning_rate=5.0)
        # After epoch 16 (0-based) the loss on the data overflows: epoch 17 never runs.
        assert error.value.epoch == 16 and error.value.batch is None
        assert np.isfinite(error.value.history.full_loss).all()

    def test_learning_rate_scheduler(self, guide_data, cls, loop):
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)
        trainer, history = fit(guide_data, cls, loop, [schedule])
        np.testing.assert_allclose(history.logs["learning_rate"], [0.1, 0.05, 0.025, 0.0125],
                                   rtol=1e-6)
        assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(0.0125)
        # The schedule took effect: the first update is the full-rate one, later ones smaller.
        steps = np.abs(np.diff(history.b))
        assert steps[1] / steps[0] < 0.75

    def test_reduce_lr_on_plateau(self, guide_data, cls, loop):
        reduce = keras.callbacks.ReduceLROnPlateau(monitor="b", mode="min", patience=0,
                                                   factor=0.5, min_lr=0.0)
        trainer, history = fit(guide_data, cls, loop, [reduce])
        # Epoch 0 sets the best b; each later epoch is worse, and halves the rate
        # (the logs hold the rate the epoch was trained with).
        np.testing.assert_allclose(history.logs["learning_rate"], [0.1, 0.1, 0.05, 0.025],
                                   rtol=1e-6)
        assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(0.0125)

    def test_a_users_own_callback(self, guide_data, cls, loop):
        class Counter(keras.callbacks.Callback):
            calls = []

            def on_train_begin(self, logs=None):
                self.calls.append("begin")

            def on_epoch_begin(self, epoch, logs=None):
                self.calls.append(f"epoch {epoch}")

            def on_train_batch_end(self, batch, logs=None):
                self.calls.append(f"batch {batch}")
                assert "loss" in logs

            def on_epoch_end(self, epoch, logs=None):
                assert {"loss", "full_loss", "w", "b"} <= set(logs)
                if epoch == 1:
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                self.calls.append("end")

        counter = Counter()
        _, history = fit(guide_data, cls, loop, [counter], epochs=5, batch_size=100)
        assert counter.calls == ["begin", "epoch 0", "batch 0", "batch 1", "batch 2",
                                 "epoch 1", "batch 0", "batch 1", "batch 2", "end"]
        assert history.epochs == 2


def read_scalars(log_dir):
    """tag -> [values by step] of the scalars in the event files under log_dir/train."""
    from tensorflow.core.util import event_pb2

    scalars = {}
    for path in sorted((log_dir / "train").glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor)))
    return scalars


@pytest.mark.parametrize("cls", [LinearModule, LinearModel])
def test_tensorboard_scalars_are_the_same_from_both_loops(guide_data, cls, tmp_path):
    runs = {}
    for loop in ("manual", "keras"):
        fit(guide_data, cls, loop, [keras.callbacks.TensorBoard(tmp_path / loop)], epochs=3,
            batch_size=64)
        runs[loop] = read_scalars(tmp_path / loop)
    assert runs["manual"].keys() == runs["keras"].keys()
    for tag in ("epoch_loss", "epoch_full_loss", "epoch_w", "epoch_b", "epoch_learning_rate"):
        assert len(runs["manual"][tag]) == 3
        np.testing.assert_allclose(runs["manual"][tag], runs["keras"][tag], rtol=1e-6)


def test_cli_tensorboard_early_stopping_and_history_as_it_goes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--set", "train.tensorboard=true", "--set", "data.validation_split=0.2",
                 "--set", "data.shuffle=true", "--set", "train.epochs=50", "--set",
                 "train.learning_rate=0.7", "--set",
                 'train.early_stopping={monitor="val_loss", patience=1, min_delta=0.001}',
                 "--out", out]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = {len(run["loss"]) for run in metrics["runs"]}
    assert len(epochs) == 1 and epochs.pop() < 50  # all four stopped, at the same epoch
    assert metrics["agreement"]["agree"]
    for label in ("module-manual", "module-keras", "keras-manual", "keras-keras"):
        assert {"epoch_loss", "epoch_full_loss", "epoch_w", "epoch_b"} <= set(
            read_scalars(out / "tb" / label))


def test_history_csv_is_written_as_training_goes(tmp_path):
    """A run killed part-way keeps the history of the epochs it finished."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "linfit.train", "--set",
                                "train.epochs=100000", "--model", "module", "--loop", "manual",
                                "--out", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not history.exists() or history.read_text().count("\n") < 20):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows = history.read_text().splitlines()
    assert rows[0] == "model,loop,epoch,loss,full_loss,w,b"
    epochs = [int(row.split(",")[2]) for row in rows[1:] if row.count(",") == 6]
    assert len(epochs) >= 19 and epochs[:19] == list(range(19))


# Any model: a two-layer MLP on a noisy sine, as a tf.Module and as a keras.Model.

class SineMLP(tf.Module):
    def __init__(self, hidden=16, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = tf.Variable(rng.normal(0, 1, (1, hidden)).astype(np.float32))
        self.b1 = tf.Variable(np.zeros(hidden, np.float32))
        self.w2 = tf.Variable(rng.normal(0, hidden ** -0.5, (hidden, 1)).astype(np.float32))
        self.b2 = tf.Variable(np.zeros(1, np.float32))

    def __call__(self, x):
        hidden = tf.tanh(tf.reshape(x, [-1, 1]) @ self.w1 + self.b1)
        return tf.squeeze(hidden @ self.w2 + self.b2, axis=-1)


def keras_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(1)])


@pytest.fixture(scope="module")
def noisy_sine():
    rng = np.random.default_rng(7)
    x = rng.uniform(-3, 3, size=(256, 1)).astype(np.float32)
    y = (np.sin(x[:, 0]) + rng.normal(0, 0.1, 256)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("make", [SineMLP, keras_mlp], ids=["tf.Module", "keras.Model"])
def test_an_mlp_trains_with_both_loops_and_they_agree(noisy_sine, make, tmp_path):
    x, y = noisy_sine
    histories, trainers = [], []
    for loop in ("manual", "keras"):
        trainer = Trainer(make(), optimizer="adam", learning_rate=0.02)
        histories.append(trainer.fit(x, y, epochs=40, loop=loop, batch_size=64,
                                     shuffle_seed=1))
        trainers.append(trainer)
    agreement = compare_histories(histories, ["manual", "keras"], rtol=1e-4)
    assert agreement.agree, agreement.summary_lines()
    assert set(agreement.max_abs) == {"loss", "full_loss"}  # no w or b rows for an MLP
    assert histories[0].full_loss[-1] < 0.2 * histories[0].full_loss[0]
    # Checkpoints of such models round-trip, with the optimizer state for resuming.
    trainer = trainers[0]
    path = save_weights(trainer.model, tmp_path / "mlp.weights.h5")
    restored = make(seed=5)
    load_weights(restored, path)
    np.testing.assert_array_equal(restored(x), trainer.model(x))
    trainer.save_checkpoint(tmp_path / "state.weights.h5", histories[0])
    again = Trainer(make(seed=9), optimizer="adam", learning_rate=0.02)
    more = again.fit(x, y, epochs=42, batch_size=64, shuffle_seed=1,
                     resume_from=tmp_path / "state.weights.h5")
    assert more.epochs == 42 and more.loss[:40] == histories[0].loss


def test_a_keras_model_that_is_not_built_yet_is_built_on_the_data(noisy_sine):
    x, y = noisy_sine
    model = keras.Sequential([keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    history = Trainer(model, optimizer="adam", learning_rate=0.05).fit(x, y, epochs=3)
    assert model.built and history.full_loss[-1] < history.full_loss[0]


def test_layered_checkpoint_that_does_not_fit_is_refused(noisy_sine, tmp_path):
    from linfit import CheckpointError

    small = keras_mlp()
    small.save_weights(tmp_path / "small.weights.h5")
    big = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="tanh"),
                            keras.layers.Dense(1)])
    before = [w.copy() for w in big.get_weights()]
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(big, tmp_path / "small.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(before, big.get_weights()))


def test_recorder_logs_vector_weights_as_scalars(guide_data):
    model = LinearModel(features=2)
    recorder = EpochRecorder(History(), lambda: {"full_loss": 1.0, "w": model.w.numpy(),
                                                 "b": model.b.numpy()}, ["full_loss", "w", "b"])
    logs = {}
    recorder.on_train_begin()
    recorder.on_epoch_end(0, logs)
    assert logs == {"full_loss": 1.0, "w_0": 5.0, "w_1": 5.0, "b": 0.0}


def test_early_stoppings_best_weights_survive_a_checkpoint_as_arrays():
    """A Keras model's scalar b comes from get_weights as a NumPy scalar, which the
    checkpoint's JSON once kept as a float: on --resume, set_weights then failed
    (when no epoch after the resume improved, so the restored weights were used)."""
    from linfit.callbacks import CallbackProgress

    model = LinearModel(features=2, init_w=[1.5, -0.5], init_b=0.7)
    stopping = keras.callbacks.EarlyStopping(restore_best_weights=True)
    stopping.set_model(model)
    stopping.on_train_begin()
    stopping.best_weights = model.get_weights()
    assert any(isinstance(w, np.generic) for w in stopping.best_weights)  # b, 0-d
    saved = History()
    CallbackProgress(saved, [stopping]).on_epoch_end(0)
    progress = json.loads(json.dumps(saved.callback_progress))  # as a checkpoint keeps it
    resumed = keras.callbacks.EarlyStopping(restore_best_weights=True)
    resumed.on_train_begin()  # resets it, as fit does, before the progress comes back
    CallbackProgress(History(), [resumed], restore=progress).on_train_begin()
    # And a checkpoint written before, whose b is a float, resumes too.
    older = [dict(progress[0], best_weights=[progress[0]["best_weights"][0],
                                             float(model.get_weights()[1])])]
    assert isinstance(older[0]["best_weights"][1], float)
    from_older = keras.callbacks.EarlyStopping(restore_best_weights=True)
    from_older.on_train_begin()
    CallbackProgress(History(), [from_older], restore=older).on_train_begin()
    for weights in (resumed.best_weights, from_older.best_weights):
        other = LinearModel(features=2, init_w=[0.0, 0.0], init_b=0.0)
        other.set_weights(weights)
        for restored, original in zip(other.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(restored, original)
