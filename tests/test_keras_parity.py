"""Keras's own callback tests, adapted to run through linfit's `Trainer.fit` with both loops.

Each test takes a scenario from a test of Keras 3 (in its repository, keras-team/keras; cited
in the test's docstring as `keras/src/...::test_name`) and runs it four ways: a
`linfit.LinearModule` and a small `keras.Sequential`, each trained with `loop="manual"` and
with `loop="keras"`. Where Keras's test asserts a fixed outcome, the test asserts it too; and
every test runs plain Keras `fit` on the same model, data and batches with the same callbacks
and asserts that linfit agrees with it: the same hook calls with the same log keys, the same
logs (rtol 1e-5), the same files with the same contents, the same printed messages.

The plain-`fit` baseline:
- for a LinearModule, `linfit.LinearModel` (the same function and starting weights, as a
  keras.Model); for the Sequential, the same Sequential built with the same seed;
- `compile(optimizer=SGD(0.1), loss="mse", run_eagerly=True)`, and `fit` on the data as a
  tf.data.Dataset batched in order, which Keras reads exactly as it reads
  `fit(x, y, batch_size=B, shuffle=False)` (`test_the_baseline_is_fit_on_arrays` checks it),
  only faster; eager execution gives the numbers compiled execution gives, without tracing;
- computed once per model kind and scenario (`functools.cache`), shared by the two loops.

To keep the file fast, scenarios share fits where their callbacks can run together: those
that only watch (recorders, CSVLogger, TensorBoard, ModelCheckpoint, ...) share
`watched_run` (with validation data, verbose=1) and `quiet_run` (without, verbose=0); those
about reusing a callback in a second fit share `reused_run`; those about TerminateOnNaN share
`linfit_overflow`. Each test still checks its own scenario, against plain `fit` with the same
callbacks.

linfit's documented differences are asserted as differences, not ignored:
1. its epoch logs also carry `full_loss` and, for a model with `w` and `b`, `w` and `b`
   (`w_0`, `w_1`, ... for several weights): logs are compared on the keys plain `fit`
   produces, and any other key must be one of those;
2. it never applies an update whose loss is not finite: with TerminateOnNaN, training stops
   as in Keras but the model keeps its last finite weights; without it, DivergenceError.

Everything is tiny (32 training rows, 24 validation rows, at most 10 steps a fit), so every
fit runs eagerly (linfit's compile="auto" does so for such short runs).
"""

import collections
import contextlib
import csv
import functools
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import linfit

LEARNING_RATE = 0.1
BATCH_SIZE = 16  # two batches an epoch
EPOCHS = 2
RTOL, ATOL = 1e-5, 1e-6


def _data(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, rows).astype(np.float32)
    return x, (3.0 * x + 2.0 + 0.3 * rng.normal(size=rows)).astype(np.float32)


X_TRAIN, Y_TRAIN = _data(1, 32)
X_VAL, Y_VAL = _data(2, 24)  # two validation batches, of 16 and 8 rows
# At batch size 8, batch 1 (rows 8-15) holds a target whose squared error overflows float32:
# that batch's loss is inf, the loss of batch 0 is finite.
OVERFLOW = dict(y=np.where(np.arange(32) == 9, np.float32(1e30), Y_TRAIN).astype(np.float32),
                batch_size=8)
# The loss on the whole training set is not finite with those targets: linfit does not
# record it (its recorder would stop training before any callback could).
NO_FULL_LOSS = {"record_full_loss": False}

TRAIN_HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin",
               "on_train_batch_end", "on_test_begin", "on_test_batch_begin",
               "on_test_batch_end", "on_test_end", "on_epoch_end", "on_train_end")
HOOKS_WITHOUT_INDEX = ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end")


# ------------------------------------------------------------------ models, data, the two fits

@dataclass(frozen=True)
class Case:
    """One of the four ways a scenario runs: a model kind and a linfit loop."""

    kind: str  # "module" (linfit.LinearModule) or "sequential" (a small keras.Sequential)
    loop: str  # "manual" or "keras"


CASES = [Case(kind, loop) for kind in ("module", "sequential") for loop in ("manual", "keras")]


@pytest.fixture(params=CASES, ids=lambda case: f"{case.kind}-{case.loop}")
def case(request) -> Case:
    return request.param


@pytest.fixture(params=[c for c in CASES if c.kind == "sequential"], ids=lambda c: c.loop)
def sequential_case(request) -> Case:
    return request.param


def make_model(kind: str, *, for_plain_fit: bool = False):
    """A new model of `kind`, always with the same starting weights.

    For "module", linfit trains a LinearModule and plain `fit` its keras.Model twin,
    LinearModel (w = 5, b = 0 both); "sequential" is the same seeded Sequential for both.
    """
    if kind == "module":
        return linfit.LinearModel() if for_plain_fit else linfit.LinearModule()
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(1)])


def inputs(kind: str, x: np.ndarray) -> np.ndarray:
    """x as the model takes it: [N] for LinearModule, [N, 1] for the Sequential."""
    return x if kind == "module" else x[:, None]


def batches(x, y, batch_size: int) -> tf.data.Dataset:
    """(x, y) in order, in batches of `batch_size` (the last one partial)."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def new_trainer(case: Case, **options) -> linfit.Trainer:
    options = {"loss": "mse", "optimizer": "sgd", "learning_rate": LEARNING_RATE, **options}
    return linfit.Trainer(make_model(case.kind), **options)


def linfit_fit(case: Case, callbacks=(), *, trainer=None, trainer_options=None, y=Y_TRAIN,
               epochs=EPOCHS, batch_size=BATCH_SIZE, validation=False, **fit_options):
    """Train with linfit (a new Trainer unless `trainer` is given): (trainer, History)."""
    trainer = trainer or new_trainer(case, **(trainer_options or {}))
    validation_data = (inputs(case.kind, X_VAL), Y_VAL) if validation else None
    history = trainer.fit(inputs(case.kind, X_TRAIN), y, epochs=epochs, loop=case.loop,
                          batch_size=batch_size, validation_data=validation_data,
                          callbacks=list(callbacks), **fit_options)
    return trainer, history


def plain_model(kind: str, *, metrics=(), optimizer="sgd", learning_rate=LEARNING_RATE):
    model = make_model(kind, for_plain_fit=True)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = keras.optimizers.get({"class_name": optimizer,
                                          "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=optimizer, loss="mse", metrics=list(metrics) or None,
                  run_eagerly=True)
    return model


def plain_fit(kind: str, callbacks=(), *, model=None, y=Y_TRAIN, epochs=EPOCHS,
              batch_size=BATCH_SIZE, validation=False, validation_batch_size=None,
              **fit_options):
    """Plain Keras `fit` (see the module's docstring): (model, keras History)."""
    model = model or plain_model(kind)
    validation_data = None
    if validation:
        validation_data = batches(inputs(kind, X_VAL), Y_VAL, validation_batch_size or batch_size)
    fit_options.setdefault("verbose", 0)
    history = model.fit(batches(inputs(kind, X_TRAIN), y, batch_size), epochs=epochs,
                        shuffle=False, validation_data=validation_data,
                        callbacks=list(callbacks), **fit_options)
    return model, history


# ------------------------------------------------------------------ comparing

def is_linfit_extra(key: str) -> bool:
    """Whether `key` is one of the keys linfit adds to the epoch logs (documented)."""
    return key in ("full_loss", "w", "b") or re.fullmatch(r"w_\d+", key) is not None


def linfit_extras(kind: str) -> set[str]:
    return {"full_loss", "w", "b"} if kind == "module" else {"full_loss"}


def keras_logs(logs) -> dict:
    """`logs` without linfit's extra keys."""
    return {key: value for key, value in (logs or {}).items() if not is_linfit_extra(key)}


def assert_close(got, want, message=""):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=message)


def assert_logs_match(got: dict, want: dict) -> None:
    """linfit's per-epoch logs have plain fit's keys (and otherwise only linfit's extras)
    with the same values."""
    assert set(keras_logs(got)) == set(want)
    for key, values in want.items():
        assert_close(got[key], values, key)


def weights_of(model) -> list[np.ndarray]:
    """The model's weights in order (w then b for the linear models)."""
    if isinstance(model, keras.Model):
        return [np.asarray(weight) for weight in model.get_weights()]
    return [model.w.numpy(), model.b.numpy()]


def assert_same_weights(got, want) -> None:
    assert len(got) == len(want)
    for index, (got_weight, want_weight) in enumerate(zip(got, want)):
        assert_close(got_weight, want_weight, f"weight {index}")


def weights_in_file(kind: str, path) -> list[np.ndarray]:
    """The weights in a checkpoint, as plain Keras loads them: `keras.saving.load_model` for
    a `.keras` file, `load_weights` into a new model for a `.weights.h5` one."""
    if str(path).endswith(".keras"):
        return weights_of(keras.saving.load_model(path))
    model = reader_model(kind)
    model.load_weights(path)
    return weights_of(model)


@functools.cache
def reader_model(kind: str):
    """The model `weights_in_file` loads `.weights.h5` files into (each load sets every
    weight)."""
    return make_model(kind, for_plain_fit=True)


def learning_rate_of(callback: keras.callbacks.Callback) -> float:
    """The learning rate of the optimizer of the model the callback was given."""
    return float(np.asarray(callback.model.optimizer.learning_rate))


def printed(function) -> str:
    """What `function()` writes to stdout (Keras's messages and progress bars)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        function()
    return buffer.getvalue()


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def assert_same_messages(got: str, want: str) -> None:
    """The same printed text, with each number equal to the precision it was printed to."""
    assert NUMBER.sub("#", got) == NUMBER.sub("#", want)
    for got_number, want_number in zip(NUMBER.findall(got), NUMBER.findall(want)):
        assert float(got_number) == pytest.approx(float(want_number), rel=RTOL, abs=1.1e-5)


def warning_messages(function) -> list[str]:
    """The messages of the warnings `function()` emits, every one of them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function()
    return [str(warning.message) for warning in caught]


def starting_with(messages, prefix: str) -> list[str]:
    return [message for message in messages if message.startswith(prefix)]


# ------------------------------------------------------------------ watching callbacks

@dataclass(frozen=True)
class Hooks:
    """What a HookRecorder saw: each call, the logs' values, and `params` at the start."""

    calls: tuple  # (hook, epoch or batch index or None, sorted keys of the logs)
    values: tuple
    params: dict


class HookRecorder(keras.callbacks.Callback):
    """Records each hook call as (hook, index, sorted log keys), without linfit's extra keys,
    and the logs' values. With `stop_at`, sets `model.stop_training` at that hook's first
    call."""

    def __init__(self, stop_at: str | None = None):
        super().__init__()
        self.stop_at = stop_at
        self.calls, self.values = [], []
        self.params_at_start = None

    def result(self) -> Hooks:
        return Hooks(tuple(self.calls), tuple(self.values), self.params_at_start)

    def record(self, hook: str, index, logs) -> None:
        logs = keras_logs(logs)
        self.calls.append((hook, index, tuple(sorted(logs))))
        self.values.append(logs)
        if hook == self.stop_at:
            self.model.stop_training = True
            self.stop_at = None

    def on_train_begin(self, logs=None):
        self.params_at_start = dict(self.params)
        self.record("on_train_begin", None, logs)

    def on_train_end(self, logs=None):
        self.record("on_train_end", None, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.record("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.record("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.record("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.record("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self.record("on_test_begin", None, logs)

    def on_test_end(self, logs=None):
        self.record("on_test_end", None, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.record("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.record("on_test_batch_end", batch, logs)


def assert_same_hooks(got: Hooks, want: Hooks) -> None:
    """The same calls in the same order with the same log keys, values and params."""
    assert got.calls == want.calls
    for index, (got_logs, want_logs) in enumerate(zip(got.values, want.values)):
        for key, value in want_logs.items():
            assert_close(got_logs[key], value, f"call {index} {want.calls[index][0]}: {key}")
    assert got.params == want.params


def hooks_called(hooks: Hooks, name: str) -> list:
    return [index for hook, index, _ in hooks.calls if hook == name]


class BatchState(keras.callbacks.Callback):
    """The optimizer's step count and the model's weights at each batch's end; with
    `shrink`, then halves every weight (a callback changing the model between batches)."""

    def __init__(self, shrink: bool = False):
        super().__init__()
        self.shrink = shrink
        self.iterations, self.weights = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.iterations.append(int(self.model.optimizer.iterations.numpy()))
        self.weights.append(self.model.get_weights())
        if self.shrink:
            self.model.set_weights([0.5 * weight for weight in self.model.get_weights()])


class LogTypes(keras.callbacks.Callback):
    """The types of the values of every logs dict the hooks get (Keras's keys only)."""

    def __init__(self):
        super().__init__()
        self.types = set()

    def _note(self, logs):
        self.types.update(type(value) for value in keras_logs(logs).values())

    def on_train_batch_end(self, batch, logs=None):
        self._note(logs)

    def on_test_batch_end(self, batch, logs=None):
        self._note(logs)

    def on_test_end(self, logs=None):
        self._note(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._note(logs)


def recording_lambda(calls: list, hooks) -> keras.callbacks.LambdaCallback:
    """A LambdaCallback that appends (hook, index) to `calls` for each of `hooks`."""
    def recorder(hook):
        if hook in HOOKS_WITHOUT_INDEX:
            return lambda logs: calls.append((hook, None))
        return lambda index, logs: calls.append((hook, index))

    return keras.callbacks.LambdaCallback(**{hook: recorder(hook) for hook in hooks})


# ------------------------------------------------------------------ the watched and quiet runs

# ModelCheckpoints of the runs, each in its own directory: (file name, options).
WATCHED_CHECKPOINTS = {
    "val_loss_in_name": ("checkpoint.{epoch:02d}-{val_loss:.4f}.weights.h5",
                         dict(monitor="val_loss", save_weights_only=True)),
    "batch_in_name": ("checkpoint.epoch{epoch:02d}batch{batch:02d}.weights.h5",
                      dict(monitor="val_loss", save_freq=1, save_weights_only=True)),
    "best_val_loss": ("checkpoint.{epoch:02d}.weights.h5",
                      dict(monitor="val_loss", mode="min", save_best_only=True,
                           save_weights_only=True)),
    "best_loss_max": ("checkpoint.{epoch:02d}.weights.h5",
                      dict(monitor="loss", mode="max", save_best_only=True,
                           save_weights_only=True)),
    "threshold_auto_none": ("checkpoint.weights.h5",
                            dict(monitor="val_loss", mode="auto", save_best_only=True,
                                 save_weights_only=True, initial_value_threshold=None)),
    "threshold_min_0": ("checkpoint.weights.h5",
                        dict(monitor="val_loss", mode="min", save_best_only=True,
                             save_weights_only=True, initial_value_threshold=0.0)),
    "threshold_auto_0": ("checkpoint.weights.h5",
                         dict(monitor="val_loss", mode="auto", save_best_only=True,
                              save_weights_only=True, initial_value_threshold=0.0)),
}
# A whole model in a `.keras` file, in a directory ModelCheckpoint makes: the Sequential only.
KERAS_FILE_CHECKPOINT = {"keras_file": (os.path.join("subdir", "checkpoint.model.keras"),
                                        dict(monitor="val_loss", mode="auto",
                                             save_best_only=True))}
QUIET_CHECKPOINTS = {
    "each_epoch": ("checkpoint.epoch{epoch:02d}.weights.h5", dict(save_weights_only=True)),
    "every_3_batches": ("checkpoint.epoch{epoch:02d}batch{batch:02d}.weights.h5",
                        dict(save_freq=3, save_weights_only=True)),
    "missing_monitor": ("checkpoint.weights.h5",
                        dict(monitor="unknown", mode="min", save_best_only=True,
                             save_weights_only=True)),
}


@dataclass(frozen=True)
class Run:
    """What one fit with the watching callbacks left behind."""

    hooks: Hooks
    batch_state: BatchState
    log_types: frozenset
    user_history: keras.callbacks.History
    lambda_calls: tuple
    logs: dict  # plain: History.history; linfit: History.logs
    weights: list  # the model's, at the end
    full_losses: tuple  # plain only: the loss on the whole training set after each epoch
    output: str
    warnings: tuple
    checkpoints: dict  # directory -> {file name: weights}
    csv_text: str
    scalars: dict
    event_directories: frozenset


def run_watched(kind: str, fit, validation: bool, full_loss=None) -> Run:
    """Call fit(callbacks) -> (logs, final weights) with the watching callbacks of the
    watched run (validation) or of the quiet run, and collect what they saw and wrote."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        checkpoints = dict(WATCHED_CHECKPOINTS if validation else QUIET_CHECKPOINTS)
        if kind == "sequential" and validation:
            checkpoints.update(KERAS_FILE_CHECKPOINT)
        recorder, state, types, user_history, calls = (HookRecorder(), BatchState(), LogTypes(),
                                                       keras.callbacks.History(), [])
        callbacks = [recorder, state, types, user_history, recording_lambda(calls, TRAIN_HOOKS),
                     *(keras.callbacks.ModelCheckpoint(root / name / pattern, **options)
                       for name, (pattern, options) in checkpoints.items())]
        if validation:
            callbacks += [keras.callbacks.CSVLogger(root / "log.tsv", separator="\t"),
                          keras.callbacks.TensorBoard(root / "tb", update_freq=1)]
        else:
            callbacks += [keras.callbacks.TensorBoard(root / "tb"),
                          keras.callbacks.EarlyStopping(monitor="val_loss", mode="min"),
                          keras.callbacks.TerminateOnNaN(raise_error=False),
                          keras.callbacks.TerminateOnNaN(raise_error=True)]
        full_losses = []
        if full_loss is not None:
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: full_losses.append(full_loss())))
        results = []
        output = printed(lambda: results.append(warning_messages(
            lambda: results.append(fit(callbacks)))))
        (logs, weights), messages = results
        files = {name: {path.name: loaded_weights(kind, path)
                        for path in sorted((root / name).rglob("*")) if path.is_file()}
                 for name in checkpoints}
        return Run(recorder.result(), state, frozenset(types.types), user_history, tuple(calls),
                   logs, weights, tuple(full_losses), output.replace(directory, "DIR"),
                   tuple(messages), files,
                   (root / "log.tsv").read_text() if validation else "",
                   read_scalars(root / "tb"), frozenset(event_file_directories(root / "tb")))


def loaded_weights(kind: str, path) -> list | str:
    """The weights in a checkpoint, or why it cannot be loaded (for the one test to fail)."""
    try:
        return weights_in_file(kind, path)
    except Exception as error:  # noqa: BLE001 - reported by the test that reads this file
        return f"{path.name} cannot be loaded: {type(error).__name__}: {error}"


def read_scalars(logdir) -> dict:
    """{(run directory, tag): [(step, value), ...]} of the scalars in the event files."""
    scalars = collections.defaultdict(list)
    for path in sorted(Path(logdir).rglob("events.out.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    scalars[(path.parent.name, value.tag)].append((event.step, number))
    return dict(scalars)


def event_file_directories(logdir) -> set[str]:
    return {path.parent.name for path in Path(logdir).rglob("events.out.*")}


@functools.cache
def plain_run(kind: str, validation: bool) -> Run:
    model = plain_model(kind)

    def fit(callbacks):
        _, history = plain_fit(kind, callbacks, model=model, validation=validation,
                               verbose=1 if validation else 0)
        return history.history, weights_of(model)

    def full_loss():
        return float(keras.losses.MeanSquaredError()(Y_TRAIN, model(inputs(kind, X_TRAIN))))

    return run_watched(kind, fit, validation, full_loss)


@functools.cache
def linfit_run(case: Case, validation: bool) -> Run:
    def fit(callbacks):
        trainer, history = linfit_fit(case, callbacks, validation=validation,
                                      verbose=1 if validation else 0)
        return history.logs, weights_of(trainer.model)

    return run_watched(case.kind, fit, validation)


def watched_run(case: Case) -> tuple[Run, Run]:
    """(linfit's, plain fit's) fit with validation data and verbose=1."""
    return linfit_run(case, True), plain_run(case.kind, True)


def quiet_run(case: Case) -> tuple[Run, Run]:
    """(linfit's, plain fit's) fit without validation data, verbose=0."""
    return linfit_run(case, False), plain_run(case.kind, False)


# ------------------------------------------------------------------ the hook protocol

@functools.cache
def plain_hooks(kind: str, stop_at=None, extra_callbacks=(), metrics=(), **fit_options) -> Hooks:
    recorder = HookRecorder(stop_at)
    callbacks = [recorder, *(make() for make in extra_callbacks)]
    plain_fit(kind, callbacks, model=plain_model(kind, metrics=metrics), **fit_options)
    return recorder.result()


def linfit_hooks(case: Case, stop_at=None, extra_callbacks=(), metrics=(),
                 **fit_options) -> Hooks:
    recorder = HookRecorder(stop_at)
    trainer_options = {"metrics": list(metrics)} if metrics else {}
    linfit_fit(case, [recorder, *(make() for make in extra_callbacks)],
               trainer_options=trainer_options, **fit_options)
    return recorder.result()


@pytest.mark.parametrize("kind", ["module", "sequential"])
def test_the_baseline_is_fit_on_arrays(kind):
    """The baseline itself: plain `fit` on batched tf.data reads the data exactly as
    `fit(x, y, batch_size=B, shuffle=False, validation_data=(x_val, y_val))` does
    (keras/src/trainers/trainer_test.py::test_fit_with_data_adapter: arrays and datasets)"""
    on_arrays, model = HookRecorder(), plain_model(kind)
    printed(lambda: model.fit(inputs(kind, X_TRAIN), Y_TRAIN, batch_size=BATCH_SIZE,
                              epochs=EPOCHS, shuffle=False, verbose=1, callbacks=[on_arrays],
                              validation_data=(inputs(kind, X_VAL), Y_VAL)))
    on_datasets = plain_run(kind, True)  # the watched run's baseline
    assert_same_hooks(on_arrays.result(), on_datasets.hooks)
    assert_same_weights(weights_of(model), on_datasets.weights)


def test_hooks_as_fit_calls_them(case):
    """keras/src/callbacks/callback_list_test.py::CallbackListTest::test_on_train_lifecycle
    and ::CallbackListAdvancedTest::test_multi_epoch_batch_sequence"""
    got, want = quiet_run(case)
    assert_same_hooks(got.hooks, want.hooks)
    assert hooks_called(got.hooks, "on_train_batch_begin") == [0, 1, 0, 1]
    assert hooks_called(got.hooks, "on_epoch_end") == [0, 1]
    assert got.hooks.params == {"verbose": 0, "epochs": EPOCHS, "steps": 2}


def test_hooks_with_validation(case):
    """keras/src/callbacks/callback_list_test.py::CallbackListTest::test_on_test_lifecycle
    and ::CallbackListAdvancedTest::test_train_and_test_nested_begin_end_count"""
    got, want = watched_run(case)
    assert_same_hooks(got.hooks, want.hooks)
    assert hooks_called(got.hooks, "on_test_batch_end") == [0, 1, 0, 1]
    assert got.hooks.calls[-1] == ("on_train_end", None, ("loss", "val_loss"))


def test_hook_log_keys_and_history_with_metrics(case):
    """keras/src/trainers/trainer_test.py::test_callback_methods_keys and
    keras/src/callbacks/callback_list_test.py::HistoryAdvancedTest::
    test_history_loss_values_match_logged, with a compiled metric"""
    metrics = ("mean_absolute_error",)
    recorder = HookRecorder()
    _, history = linfit_fit(case, [recorder], trainer_options={"metrics": list(metrics)},
                            validation=True)
    got, want = recorder.result(), plain_hooks(case.kind, metrics=metrics, validation=True)
    assert_same_hooks(got, want)
    epoch_ends = [logs for (hook, _, _), logs in zip(want.calls, want.values)
                  if hook == "on_epoch_end"]
    assert_logs_match(history.logs, {key: [logs[key] for logs in epoch_ends]
                                     for key in epoch_ends[0]})
    keys = {hook: keys for hook, _, keys in got.calls}
    for hook in ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_test_begin",
                 "on_test_batch_begin"):
        assert keys[hook] == ()
    for hook in ("on_train_batch_end", "on_test_batch_end", "on_test_end"):
        assert keys[hook] == ("loss", "mean_absolute_error")
    for hook in ("on_epoch_end", "on_train_end"):
        assert keys[hook] == ("loss", "mean_absolute_error", "val_loss",
                              "val_mean_absolute_error")


# Each hook once, with validation data for a stop during validation and without for the
# others (shorter runs; a stop in mid-epoch followed by validation is in
# test_terminate_on_nan_graceful_stop).
STOPS = [("on_epoch_begin", False), ("on_train_batch_begin", False),
         ("on_train_batch_end", False), ("on_test_end", True), ("on_epoch_end", False)]


@pytest.mark.parametrize("hook, validation", STOPS)
def test_stop_training_at_each_hook(case, hook, validation):
    """keras/src/trainers/trainer_test.py::test_stop_loop (fit): `model.stop_training` set by
    a callback at each hook in turn"""
    got = linfit_hooks(case, stop_at=hook, validation=validation)
    assert_same_hooks(got, plain_hooks(case.kind, stop_at=hook, validation=validation))
    assert len(got.calls) < len(plain_run(case.kind, validation).hooks.calls)


class StopEvaluating(keras.callbacks.Callback):
    """Ends each validation after its first batch, as `evaluate` allows."""

    def on_test_batch_end(self, batch, logs=None):
        self.model.stop_evaluating = True


def test_stop_evaluating_during_validation(case):
    """keras/src/trainers/trainer_test.py::test_stop_loop (evaluate: `stop_evaluating`)"""
    options = dict(extra_callbacks=(StopEvaluating,), validation=True)
    got = linfit_hooks(case, **options)
    assert_same_hooks(got, plain_hooks(case.kind, **options))
    assert hooks_called(got, "on_test_batch_end") == [0, 0]


@functools.cache
def plain_validation_freq(kind: str) -> tuple[Hooks, str, dict]:
    with tempfile.TemporaryDirectory() as directory:
        recorder, path = HookRecorder(), os.path.join(directory, "log.csv")
        _, history = plain_fit(kind, [recorder, keras.callbacks.CSVLogger(path)],
                               validation=True, validation_freq=3, epochs=4)
        return recorder.result(), Path(path).read_text(), history.history


@functools.cache
def linfit_validation_freq(case: Case) -> tuple[Hooks, str, dict]:
    with tempfile.TemporaryDirectory() as directory:
        recorder, path = HookRecorder(), os.path.join(directory, "log.csv")
        _, history = linfit_fit(case, [recorder, keras.callbacks.CSVLogger(path)],
                                validation=True, validation_freq=3, epochs=4)
        return recorder.result(), Path(path).read_text(), history.logs


def test_validation_freq(case):
    """keras/src/callbacks/csv_logger_test.py::test_CSVLogger (validation_freq=3): validation
    only every `validation_freq` epochs"""
    got, want = linfit_validation_freq(case)[0], plain_validation_freq(case.kind)[0]
    assert_same_hooks(got, want)
    epoch_keys = [keys for hook, _, keys in got.calls if hook == "on_epoch_end"]
    assert epoch_keys == [("loss",), ("loss",), ("loss", "val_loss"), ("loss",)]
    assert_logs_match(linfit_validation_freq(case)[2], plain_validation_freq(case.kind)[2])


def test_validation_batch_size(case):
    """keras/src/trainers/trainer_test.py::test_callbacks_can_update_state_at_batch_boundary
    (train and test batch counts), with `validation_batch_size`"""
    options = dict(validation=True, validation_batch_size=8)
    got = linfit_hooks(case, **options)
    assert_same_hooks(got, plain_hooks(case.kind, **options))
    assert len(hooks_called(got, "on_train_batch_end")) == 4
    assert hooks_called(got, "on_test_batch_end") == [0, 1, 2] * 2


def test_initial_epoch(case):
    """keras/src/callbacks/callback_list_test.py::CallbackListAdvancedTest::
    test_epoch_index_passed_correctly, with `initial_epoch`"""
    options = dict(epochs=3, initial_epoch=1)
    got = linfit_hooks(case, **options)
    assert_same_hooks(got, plain_hooks(case.kind, **options))
    assert hooks_called(got, "on_epoch_begin") == [1, 2]


def test_model_state_is_current_at_batch_end(case):
    """keras/src/callbacks/callback_test.py::test_model_state_is_current_on_epoch_end"""
    got, want = (run.batch_state for run in watched_run(case))
    assert got.iterations == want.iterations == [1, 2, 3, 4]
    for got_weights, want_weights in zip(got.weights, want.weights, strict=True):
        assert_same_weights(got_weights, want_weights)


@functools.cache
def plain_shrinking_batches(kind: str):
    model, history = plain_fit(kind, [BatchState(shrink=True)])
    return weights_of(model), history.history


def test_callbacks_can_change_the_model_between_batches(case):
    """keras/src/trainers/trainer_test.py::test_callbacks_can_update_state_at_batch_boundary"""
    trainer, history = linfit_fit(case, [BatchState(shrink=True)])
    want_weights, want_logs = plain_shrinking_batches(case.kind)
    assert_same_weights(weights_of(trainer.model), want_weights)
    assert_logs_match(history.logs, want_logs)


def test_logs_hold_python_floats(case):
    """keras/src/callbacks/callback_list_test.py::CallbackListAdvancedTest::
    test_logs_pythonified_numpy_to_float"""
    got, want = watched_run(case)
    assert got.log_types == want.log_types == {float}


# ------------------------------------------------------------------ History

def test_history_records_each_epochs_logs(case):
    """keras/src/callbacks/callback_list_test.py::HistoryCallbackTest::
    test_on_epoch_end_records_logs"""
    got, want = watched_run(case)
    assert_logs_match(got.logs, want.logs)
    assert got.user_history.epoch == want.user_history.epoch == [0, 1]
    assert_logs_match(got.user_history.history, want.logs)
    # Difference (2): the extra keys, and full_loss is the loss on the whole training set.
    assert set(got.logs) - set(want.logs) == linfit_extras(case.kind)
    assert_close(got.logs["full_loss"], want.full_losses)


# ------------------------------------------------------------------ EarlyStopping

def stopping_state(stopper: keras.callbacks.EarlyStopping) -> dict:
    return {"stopped_epoch": stopper.stopped_epoch, "wait": stopper.wait,
            "best_epoch": stopper.best_epoch, "best": stopper.best}


def assert_same_stopping(got: dict, want: dict) -> None:
    assert {k: v for k, v in got.items() if k != "best"} == \
        {k: v for k, v in want.items() if k != "best"}
    assert_close(got["best"], want["best"], "best")


@functools.cache
def plain_early_stopping(kind: str, fits: int = 1, extra_callbacks=(), epochs=4,
                         **stopper_options):
    """Plain fit(s) of one model with one EarlyStopping: its state and the History's logs
    after each fit, the weights at the end, and what was printed."""
    stopper = keras.callbacks.EarlyStopping(**stopper_options)
    model, results = plain_model(kind), []

    def fit_all():
        for _ in range(fits):
            _, history = plain_fit(kind, [stopper, *(make() for make in extra_callbacks)],
                                   model=model, epochs=epochs)
            results.append((stopping_state(stopper), history.history))

    output = printed(fit_all)
    return results, weights_of(model), output


def linfit_early_stopping(case: Case, fits: int = 1, extra_callbacks=(), epochs=4,
                          **stopper_options):
    stopper = keras.callbacks.EarlyStopping(**stopper_options)
    trainer, results = new_trainer(case), []

    def fit_all():
        for _ in range(fits):
            _, history = linfit_fit(case, [stopper, *(make() for make in extra_callbacks)],
                                    trainer=trainer, epochs=epochs)
            results.append((stopping_state(stopper), history.logs))

    output = printed(fit_all)
    return results, weights_of(trainer.model), output


def assert_same_early_stopping(got, want) -> None:
    got_results, got_weights, got_output = got
    want_results, want_weights, want_output = want
    assert len(got_results) == len(want_results)
    for (got_state, got_logs), (want_state, want_logs) in zip(got_results, want_results):
        assert_same_stopping(got_state, want_state)
        assert_logs_match(got_logs, want_logs)
    assert_same_weights(got_weights, want_weights)
    assert_same_messages(got_output, want_output)


# With mode="max" on the loss, which falls every epoch here, the first epoch stays the best.
NEVER_IMPROVES = dict(monitor="loss", mode="max")

# (mode, monitor, the direction Keras gives it): "auto" finds it from the name or from the
# compiled metric.
EARLY_STOPPING_MODES = [("max", "val_mean_absolute_error", "max"), ("min", "val_loss", "min"),
                        ("auto", "val_mean_absolute_error", "min"), ("auto", "loss", "min"),
                        ("auto", "mean_absolute_error", "min")]


def monitor_operations(fit) -> list:
    """fit(callbacks) with an EarlyStopping for each of EARLY_STOPPING_MODES: the comparison
    each one chose."""
    stoppers = [keras.callbacks.EarlyStopping(monitor=monitor, mode=mode)
                for mode, monitor, _ in EARLY_STOPPING_MODES]
    fit(stoppers)
    return [stopper.monitor_op for stopper in stoppers]


@functools.cache
def plain_monitor_operations(kind: str) -> list:
    model = plain_model(kind, metrics=("mean_absolute_error",))
    return monitor_operations(lambda callbacks: plain_fit(kind, callbacks, model=model,
                                                          validation=True, epochs=1))


def test_early_stopping_mode(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping (the direction of each
    mode and monitor)"""
    got = monitor_operations(lambda callbacks: linfit_fit(
        case, callbacks, trainer_options={"metrics": ["mean_absolute_error"]},
        validation=True, epochs=1))
    expected = {"max": keras.ops.greater, "min": keras.ops.less}
    for mode_monitor_direction, got_operation, want_operation in zip(
            EARLY_STOPPING_MODES, got, plain_monitor_operations(case.kind), strict=True):
        direction = mode_monitor_direction[2]
        assert got_operation is want_operation is expected[direction], mode_monitor_direction


def test_early_stopping_unknown_monitor_raises(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping (monitor="unknown")"""
    with pytest.raises(ValueError, match="isn't able to automatically determine") as plain:
        plain_fit(case.kind, [keras.callbacks.EarlyStopping(monitor="unknown")])
    with pytest.raises(ValueError, match="isn't able to automatically determine") as error:
        linfit_fit(case, [keras.callbacks.EarlyStopping(monitor="unknown")])
    assert str(error.value) == str(plain.value)


def test_early_stopping_patience(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping_patience (patience 0;
    1 and 2 are in test_early_stopping_reuse and test_early_stopping_restores_the_best_weights)"""
    got = linfit_early_stopping(case, patience=0, **NEVER_IMPROVES)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, patience=0,
                                                         **NEVER_IMPROVES))
    (state, logs), = got[0]
    # Keras's test: the best epoch, then `max(patience, 1)` epochs without improvement.
    assert state["stopped_epoch"] == 1 and len(logs["loss"]) == 2


def test_early_stopping_with_baseline(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping_with_baseline"""
    options = dict(patience=2, baseline=100.0, **NEVER_IMPROVES)
    got = linfit_early_stopping(case, **options)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, **options))
    (state, logs), = got[0]
    # No epoch beats the baseline, so the wait counts from the first epoch: stopped after 2.
    assert len(logs["loss"]) == 2 >= options["patience"]


class EpochWeights(keras.callbacks.Callback):
    """The model's weights after each epoch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_early_stopping_restores_the_best_weights(case):
    """keras/src/callbacks/early_stopping_test.py::
    test_early_stopping_final_weights_when_restoring_model_weights, with verbose=1"""
    options = dict(patience=2, restore_best_weights=True, verbose=1, **NEVER_IMPROVES)
    epoch_weights = EpochWeights()
    got = linfit_early_stopping(case, extra_callbacks=(lambda: epoch_weights,), **options)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, **options))
    (state, _), = got[0]  # patience 2: the best epoch, then 2 without improvement
    assert state["best_epoch"] == 0 and state["stopped_epoch"] == 2
    assert len(epoch_weights.weights) == 3
    assert_same_weights(got[1], epoch_weights.weights[0])
    assert not np.allclose(got[1][-1], epoch_weights.weights[-1][-1])
    assert got[2] == ("Epoch 3: early stopping\n"
                      "Restoring model weights from the end of the best epoch: 1.\n")


class StopAfterEpoch(keras.callbacks.Callback):
    """Another callback that asks training to stop, at the end of epoch 1."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True


def test_early_stopping_restores_when_another_callback_stops(case):
    """keras/src/callbacks/early_stopping_test.py::
    test_early_stopping_final_weights_when_restoring_model_weights (another callback
    requests a stop)"""
    options = dict(patience=5, baseline=100.0, restore_best_weights=True,
                   extra_callbacks=(StopAfterEpoch,), **NEVER_IMPROVES)
    got = linfit_early_stopping(case, **options)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, **options))
    (state, logs), = got[0]
    assert len(logs["loss"]) == 2 and state["stopped_epoch"] == 0 and state["best_epoch"] == 0


def test_early_stopping_with_start_from_epoch(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping_with_start_from_epoch"""
    options = dict(patience=0, start_from_epoch=2, epochs=5, **NEVER_IMPROVES)
    got = linfit_early_stopping(case, **options)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, **options))
    (state, logs), = got[0]
    assert len(logs["loss"]) == 4 >= options["start_from_epoch"]
    assert state["best_epoch"] == 2 and state["stopped_epoch"] == 3


def test_early_stopping_min_delta(case):
    """keras/src/callbacks/monitor_callback_test.py::test_min_delta"""
    options = dict(monitor="loss", min_delta=100.0, epochs=3)
    got = linfit_early_stopping(case, **options)
    assert_same_early_stopping(got, plain_early_stopping(case.kind, **options))
    losses = got[0][0][1]["loss"]
    # The loss improved, but by less than min_delta: stopped after the second epoch.
    assert len(losses) == 2 and losses[1] < losses[0]


def test_early_stopping_missing_monitor_warns(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping (a monitor missing from
    the logs: a warning each epoch, and no stop), in the quiet run"""
    got, want = quiet_run(case)
    prefix = "Early stopping conditioned on metric `val_loss` which is not available"
    assert len(starting_with(got.warnings, prefix)) == \
        len(starting_with(want.warnings, prefix)) == EPOCHS
    assert len(got.logs["loss"]) == EPOCHS


# ------------------------------------------------------------------ ModelCheckpoint

def assert_same_checkpoints(got: Run, want: Run, directory: str) -> list[str]:
    """The same files in `directory`, with the same weights; returns their names."""
    got_files, want_files = got.checkpoints[directory], want.checkpoints[directory]
    assert sorted(got_files) == sorted(want_files)
    for name, weights in want_files.items():
        for loaded in (got_files[name], weights):
            if isinstance(loaded, str):
                pytest.fail(loaded)
        assert_same_weights(got_files[name], weights)
    return sorted(got_files)


def test_checkpoint_each_epoch(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (case 8b:
    `{epoch:02d}` in a `.weights.h5` name, every epoch), in the quiet run"""
    names = assert_same_checkpoints(*quiet_run(case), "each_epoch")
    assert names == ["checkpoint.epoch01.weights.h5", "checkpoint.epoch02.weights.h5"]


@pytest.mark.parametrize("directory", ["best_val_loss", "best_loss_max"])
def test_checkpoint_save_best_only(case, directory):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (case 4:
    save_best_only, on val_loss (min) and on loss (max)), in the watched run"""
    names = assert_same_checkpoints(*watched_run(case), directory)
    if directory == "best_loss_max":  # the loss falls every epoch: only the first is best
        assert names == ["checkpoint.01.weights.h5"]
    else:  # val_loss falls every epoch: each is the best so far
        assert names == ["checkpoint.01.weights.h5", "checkpoint.02.weights.h5"]


def test_checkpoint_missing_monitor_warns(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (case 5:
    the monitored metric is not available: a warning, and a save), in the quiet run"""
    got, want = quiet_run(case)
    names = assert_same_checkpoints(got, want, "missing_monitor")
    message = "Can save best model only with unknown available."
    assert got.warnings.count(message) == want.warnings.count(message) == EPOCHS
    assert names == ["checkpoint.weights.h5"]


def test_checkpoint_integer_save_freq(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (cases 8a
    and 8b: an integer `save_freq` counts batches across epochs; here 2 batches an epoch and
    a save every 3), in the quiet run"""
    names = assert_same_checkpoints(*quiet_run(case), "every_3_batches")
    assert names == ["checkpoint.epoch02batch01.weights.h5"]


def test_checkpoint_batch_in_filename(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (case 10b:
    `{batch:02d}` in the name, save_freq=1), in the watched run"""
    names = assert_same_checkpoints(*watched_run(case), "batch_in_name")
    assert names == [f"checkpoint.epoch0{epoch}batch0{batch}.weights.h5"
                     for epoch in (1, 2) for batch in (1, 2)]


@pytest.mark.parametrize("directory, saved", [("threshold_auto_none", True),
                                              ("threshold_min_0", False),
                                              ("threshold_auto_0", False)])
def test_checkpoint_initial_value_threshold(case, directory, saved):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (cases 12,
    13 and 14: `initial_value_threshold`), in the watched run"""
    names = assert_same_checkpoints(*watched_run(case), directory)
    assert bool(names) is saved


def test_checkpoint_weights_load_into_a_new_model(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_loading (weights),
    in the watched run"""
    got, want = watched_run(case)
    assert_same_checkpoints(got, want, "threshold_auto_none")
    # val_loss falls every epoch: the best is the last, the model's final weights.
    assert_same_weights(got.checkpoints["threshold_auto_none"]["checkpoint.weights.h5"],
                        got.weights)
    assert_same_weights(got.weights, want.weights)


def test_checkpoint_keras_file_loads_as_a_model(sequential_case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_loading (a whole
    `.keras` model, read by `keras.saving.load_model`) and ::test_model_checkpoint_options
    (case 1: a directory made for it), in the watched run"""
    got, want = watched_run(sequential_case)
    names = assert_same_checkpoints(got, want, "keras_file")
    assert names == ["checkpoint.model.keras"]
    assert_same_weights(got.checkpoints["keras_file"]["checkpoint.model.keras"], got.weights)


def test_checkpoint_val_loss_in_filename(case):
    """keras/src/callbacks/model_checkpoint_test.py::test_model_checkpoint_options (a
    filepath formatted with the logs: `{epoch:02d}-{val_loss:.4f}`), in the watched run"""
    got, want = watched_run(case)

    def epochs_and_losses(run):
        files = run.checkpoints["val_loss_in_name"]
        pairs = [re.fullmatch(r"checkpoint\.(\d+)-([\d.]+)\.weights\.h5", name).groups()
                 for name in sorted(files)]
        weights = [files[name] for name in sorted(files)]
        return [int(epoch) for epoch, _ in pairs], [float(loss) for _, loss in pairs], weights

    got_epochs, got_losses, got_weights = epochs_and_losses(got)
    want_epochs, want_losses, want_weights = epochs_and_losses(want)
    assert got_epochs == want_epochs == [1, 2]
    np.testing.assert_allclose(got_losses, want_losses, atol=1.1e-4)  # printed to 4 places
    np.testing.assert_allclose(got_losses, got.logs["val_loss"], atol=5.1e-5)
    for got_epoch_weights, want_epoch_weights in zip(got_weights, want_weights):
        assert_same_weights(got_epoch_weights, want_epoch_weights)


# ------------------------------------------------------------------ CSVLogger

def read_csv(text: str, separator=",") -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=separator)
    return list(reader.fieldnames), list(reader)


def assert_same_rows(got_rows: list[dict], want_rows: list[dict]) -> None:
    """linfit's rows have plain fit's cells ("NA" where the epoch had no such log)."""
    assert len(got_rows) == len(want_rows)
    for got, want in zip(got_rows, want_rows):
        for column, cell in want.items():
            if cell in ("NA", "") or column == "epoch":
                assert got[column] == cell, column
            else:
                assert_close(float(got[column]), float(cell), column)


def assert_csv_columns(got: list[str], want: list[str]) -> None:
    """The same columns, and otherwise only linfit's extra keys (with `val_` where Keras
    adds a `val_` column for each key of an epoch without validation)."""
    assert got[0] == want[0] == "epoch"
    extra = [column for column in got if column not in want]
    assert all(is_linfit_extra(column.removeprefix("val_")) for column in extra), extra
    assert [column for column in got if column in want] == want


def test_csv_logger_separator(case):
    """keras/src/callbacks/csv_logger_test.py::test_CSVLogger (case 1: a new file with a
    separator), in the watched run"""
    got, want = watched_run(case)
    assert csv.Sniffer().sniff(got.csv_text).delimiter == "\t"
    header, rows = read_csv(got.csv_text, "\t")
    want_header, want_rows = read_csv(want.csv_text, "\t")
    assert want_header == ["epoch", "loss", "val_loss"]
    assert_csv_columns(header, want_header)
    assert_same_rows(rows, want_rows)


def test_csv_logger_validation_freq(case):
    """keras/src/callbacks/csv_logger_test.py::test_CSVLogger (case 3: validation_freq=3,
    val_loss "NA" in the epochs without validation)"""
    _, text, logs = linfit_validation_freq(case)
    header, rows = read_csv(text)
    want_header, want_rows = read_csv(plain_validation_freq(case.kind)[1])
    assert_csv_columns(header, want_header)
    assert_same_rows(rows, want_rows)
    assert [row["val_loss"] for row in rows[:2] + rows[3:]] == ["NA"] * 3
    assert rows[2]["val_loss"] == str(logs["val_loss"][0])


def test_csv_logger_with_terminate_on_nan(case):
    """keras/src/callbacks/csv_logger_test.py::test_stop_training_csv"""
    got, want = linfit_overflow(case, False), plain_overflow(case.kind, False)
    (header, rows), (want_header, want_rows) = read_csv(got.csv_text), read_csv(want.csv_text)
    assert_csv_columns(header, want_header)
    assert len(rows) == len(want_rows) == 1
    assert rows[-1]["loss"] == want_rows[-1]["loss"] and rows[-1]["loss"] in ("nan", "inf")
    # Difference (1): Keras applied the update of the overflowing batch, linfit did not.
    assert not np.isfinite(float(want_rows[-1]["val_loss"]))
    assert np.isfinite(float(rows[-1]["val_loss"]))


# ------------------------------------------------------------------ ReduceLROnPlateau

@functools.cache
def plain_learning_rates(kind: str, make_callback, fits=1, optimizer="sgd",
                         learning_rate=LEARNING_RATE, **fit_options):
    """Plain fit(s) of one model with one callback from `make_callback()`: each fit's logs,
    the learning rate at the end, and what was printed."""
    callback = make_callback()
    model, logs = plain_model(kind, optimizer=optimizer, learning_rate=learning_rate), []

    def fit_all():
        for _ in range(fits):
            logs.append(plain_fit(kind, [callback], model=model, **fit_options)[1].history)

    output = printed(fit_all)
    return logs, learning_rate_of(callback), output


def linfit_learning_rates(case: Case, make_callback, fits=1, optimizer="sgd",
                          learning_rate=LEARNING_RATE, **fit_options):
    callback = make_callback()
    trainer, logs = new_trainer(case, optimizer=optimizer, learning_rate=learning_rate), []

    def fit_all():
        for _ in range(fits):
            logs.append(linfit_fit(case, [callback], trainer=trainer, **fit_options)[1].logs)

    output = printed(fit_all)
    return logs, learning_rate_of(callback), output


def assert_same_learning_rates(got, want, final_rate: float) -> None:
    got_logs, got_rate, got_output = got
    want_logs, want_rate, want_output = want
    assert len(got_logs) == len(want_logs)
    for got_fit, want_fit in zip(got_logs, want_logs):
        assert_logs_match(got_fit, want_fit)
    assert_close(got_rate, want_rate)
    assert got_rate == pytest.approx(final_rate, rel=1e-6)
    assert_same_messages(got_output, want_output)


def reduce_on_val_loss(**options):
    """A ReduceLROnPlateau whose min_delta no epoch can beat, as in Keras's tests."""
    options = {"patience": 1, "factor": 0.1, "monitor": "val_loss", "min_delta": 100, **options}
    return functools.partial(keras.callbacks.ReduceLROnPlateau, **options)


REDUCE_VERBOSELY = reduce_on_val_loss(verbose=1)
# Here on the training loss (no validation needed): no epoch beats it by min_delta either.
REDUCE_HONORING_MIN_LR = reduce_on_val_loss(monitor="loss", min_delta=10, min_lr=0.005)
REDUCE_WITH_COOLDOWN = reduce_on_val_loss(monitor="loss", cooldown=2)
REDUCE_BY_HALF_WITH_COOLDOWN = reduce_on_val_loss(monitor="loss", factor=0.5, cooldown=1)


def test_reduce_lr_with_model_fit(case):
    """keras/src/callbacks/reduce_lr_on_plateau_test.py::test_reduces_lr_with_model_fit and
    ::test_verbose_logging (the same, with verbose=1)"""
    got = linfit_learning_rates(case, REDUCE_VERBOSELY, validation=True)
    want = plain_learning_rates(case.kind, REDUCE_VERBOSELY, validation=True)
    assert_same_learning_rates(got, want, final_rate=0.01)
    assert "ReduceLROnPlateau reducing learning rate to 0.01" in got[2]


def test_reduce_lr_honors_min_lr(case):
    """keras/src/callbacks/reduce_lr_on_plateau_test.py::test_honors_min_lr"""
    got = linfit_learning_rates(case, REDUCE_HONORING_MIN_LR, epochs=4)
    want = plain_learning_rates(case.kind, REDUCE_HONORING_MIN_LR, epochs=4)
    assert_same_learning_rates(got, want, final_rate=0.005)


def test_reduce_lr_cooldown(case):
    """keras/src/callbacks/reduce_lr_on_plateau_test.py::test_cooldown"""
    got = linfit_learning_rates(case, REDUCE_WITH_COOLDOWN, epochs=4)
    want = plain_learning_rates(case.kind, REDUCE_WITH_COOLDOWN, epochs=4)
    # Reduced after epochs 2 and 4 only (the cooldown skips epoch 3): twice, by 10.
    assert_same_learning_rates(got, want, final_rate=0.001)


# ------------------------------------------------------------------ LearningRateScheduler

def schedule_by_epoch(epoch):
    return 1.0 / (2.0 + epoch)


def halve(epoch, learning_rate):
    return learning_rate / 2


SCHEDULE_BY_EPOCH = functools.partial(keras.callbacks.LearningRateScheduler, schedule_by_epoch,
                                      verbose=1)
SCHEDULE_HALVING = functools.partial(keras.callbacks.LearningRateScheduler, halve)


def test_lr_scheduler_updates_learning_rate(case):
    """keras/src/callbacks/learning_rate_scheduler_test.py::test_updates_learning_rate,
    ::test_verbose_logging and ::test_learning_rate_in_history (a schedule without the `lr`
    argument, verbose=1)"""
    got = linfit_learning_rates(case, SCHEDULE_BY_EPOCH, epochs=1)
    assert_same_learning_rates(got, plain_learning_rates(case.kind, SCHEDULE_BY_EPOCH, epochs=1),
                               final_rate=0.5)
    assert got[2] == "\nEpoch 1: LearningRateScheduler setting learning rate to 0.5.\n"
    rates = got[0][0]["learning_rate"]
    assert rates == [0.5] and type(rates[0]) is float


def test_lr_schedule_dependent_on_previous_learning_rate(case):
    """keras/src/callbacks/learning_rate_scheduler_test.py::
    test_schedule_dependent_on_previous_learning_rate (Adam(0.03), lr / 2 each epoch)"""
    options = dict(optimizer="adam", learning_rate=0.03)
    got = linfit_learning_rates(case, SCHEDULE_HALVING, **options)
    want = plain_learning_rates(case.kind, SCHEDULE_HALVING, **options)
    assert_same_learning_rates(got, want, final_rate=0.03 / 4)


SCHEDULE_SETTERS = {"ReduceLROnPlateau": reduce_on_val_loss(monitor="loss"),
                    "LearningRateScheduler": SCHEDULE_HALVING}


def schedule_optimizer():
    schedule = keras.optimizers.schedules.PolynomialDecay(initial_learning_rate=0.1,
                                                          decay_steps=10)
    return keras.optimizers.SGD(schedule)


@pytest.mark.parametrize("name", sorted(SCHEDULE_SETTERS))
def test_throws_when_optimizer_has_schedule(case, name):
    """keras/src/callbacks/reduce_lr_on_plateau_test.py::test_throws_when_optimizer_has_schedule
    and learning_rate_scheduler_test.py::test_throws_when_optimizer_has_schedule"""
    make, message = SCHEDULE_SETTERS[name], "This optimizer was created with a `LearningRate"
    with pytest.raises(TypeError, match=message):
        plain_fit(case.kind, [make()], model=plain_model(case.kind, optimizer=schedule_optimizer()))
    with pytest.raises(TypeError, match=message):
        linfit_fit(case, [make()], trainer_options={"optimizer": schedule_optimizer()})


# ------------------------------------------------------------------ callbacks reused

@dataclass(frozen=True)
class Reused:
    """Two fits of one model with the same callbacks: a keras History, an EarlyStopping, a
    ReduceLROnPlateau, a TensorBoard and a CSVLogger(append=True)."""

    logs: tuple  # each fit's epoch logs (plain fit returns the user's History, across fits)
    user_history: keras.callbacks.History
    stopping: tuple  # the EarlyStopping's state after each fit
    learning_rates: tuple  # the learning rate after each fit
    csv_text: str
    scalars: dict


class EpochLogs(keras.callbacks.Callback):
    """The epoch logs of one fit, as a History would keep them."""

    def __init__(self):
        super().__init__()
        self.logs = collections.defaultdict(list)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.logs[key].append(value)


def run_twice(fit_once) -> Reused:
    """fit_once(callbacks), called twice with the same callbacks (and an EpochLogs each)."""
    with tempfile.TemporaryDirectory() as directory:
        user_history = keras.callbacks.History()
        stopper = keras.callbacks.EarlyStopping(patience=1, **NEVER_IMPROVES)
        reducer = REDUCE_BY_HALF_WITH_COOLDOWN()
        callbacks = [user_history, stopper, reducer,
                     keras.callbacks.TensorBoard(os.path.join(directory, "tb")),
                     keras.callbacks.CSVLogger(os.path.join(directory, "log.tsv"),
                                               separator="\t", append=True)]
        logs, states, rates = [], [], []
        for _ in range(2):
            epoch_logs = EpochLogs()
            fit_once([*callbacks, epoch_logs])
            logs.append(dict(epoch_logs.logs))
            states.append(stopping_state(stopper))
            rates.append(learning_rate_of(reducer))
        return Reused(tuple(logs), user_history, tuple(states), tuple(rates),
                      Path(directory, "log.tsv").read_text(),
                      read_scalars(os.path.join(directory, "tb")))


@functools.cache
def plain_reused(kind: str) -> Reused:
    model = plain_model(kind)
    return run_twice(lambda callbacks: plain_fit(kind, callbacks, model=model, epochs=3))


@functools.cache
def linfit_reused(case: Case) -> Reused:
    trainer = new_trainer(case)
    return run_twice(lambda callbacks: linfit_fit(case, callbacks, trainer=trainer, epochs=3))


def reused_run(case: Case) -> tuple[Reused, Reused]:
    """(linfit's, plain fit's) two fits with the same callbacks, of up to 3 epochs each:
    the EarlyStopping (patience 1, on a loss that never improves in mode "max") ends each
    after 2 epochs."""
    return linfit_reused(case), plain_reused(case.kind)


def test_history_callback_across_two_fits(case):
    """keras/src/callbacks/callback_list_test.py::HistoryCallbackTest::
    test_history_multiple_training_runs, in the reused run"""
    got, want = reused_run(case)
    assert got.user_history.epoch == want.user_history.epoch == [0, 1]
    assert len(got.user_history.history["loss"]) == 4
    assert_logs_match(got.user_history.history, want.user_history.history)


def test_early_stopping_reuse(case):
    """keras/src/callbacks/early_stopping_test.py::test_early_stopping_reuse and
    ::test_state_reset_across_fit_calls, in the reused run"""
    got, want = reused_run(case)
    for got_state, want_state in zip(got.stopping, want.stopping, strict=True):
        assert_same_stopping(got_state, want_state)
        assert got_state["stopped_epoch"] == 1
    for got_logs, want_logs in zip(got.logs, want.logs, strict=True):
        assert_logs_match(got_logs, want_logs)
        assert len(got_logs["loss"]) == 2


def test_reduce_lr_state_reset_across_fit_calls(case):
    """keras/src/callbacks/reduce_lr_on_plateau_test.py::test_state_reset_across_fit_calls
    (with `factor` 0.5 and a cooldown), in the reused run"""
    got, want = reused_run(case)
    assert_close(got.learning_rates, want.learning_rates)
    # Each fit starts afresh (no best, no wait, no cooldown): its first epoch sets the best,
    # its second halves the rate. Were the first fit's state kept, the second fit would
    # halve it after its first epoch too, ending at 0.0125.
    assert got.learning_rates == pytest.approx([0.05, 0.025], rel=1e-6)
    assert_close([logs["learning_rate"] for logs in got.logs], [[0.1, 0.1], [0.05, 0.05]])


def test_tensorboard_across_invocations(case):
    """keras/src/callbacks/tensorboard_test.py::test_TensorBoard_across_invocations, in the
    reused run"""
    got, want = reused_run(case)
    assert len(want.scalars[("train", "epoch_loss")]) == 4
    assert_same_scalars(case, got.scalars, want.scalars)


def test_csv_logger_append_and_reuse(case):
    """keras/src/callbacks/csv_logger_test.py::test_CSVLogger (cases 2 and 3: appending to a
    file, and reusing the CSVLogger), in the reused run"""
    got, want = reused_run(case)
    lines, want_lines = got.csv_text.splitlines(), want.csv_text.splitlines()
    assert len(lines) == len(want_lines) == 5
    assert " ".join(lines).count("epoch") == 1
    # Each line has the header's fields: Keras's 5 (Keras adds a val_ column for each key),
    # and linfit's extra columns (documented).
    assert want_lines[0].split("\t") == ["epoch", "learning_rate", "loss", "val_learning_rate",
                                         "val_loss"]
    assert {line.count("\t") for line in lines} == {lines[0].count("\t")}
    header, rows = read_csv(got.csv_text, "\t")
    want_header, want_rows = read_csv(want.csv_text, "\t")
    assert_csv_columns(header, want_header)
    assert_same_rows(rows, want_rows)


# ------------------------------------------------------------------ TerminateOnNaN

@dataclass(frozen=True)
class OverflowRun:
    """A fit on the OVERFLOW data: its hooks, logs, weights after each batch and at the end,
    what it printed, the message of the RuntimeError it raised if any, and its CSVLogger's
    file."""

    hooks: Hooks
    logs: dict | None
    batch_weights: list
    weights: list
    output: str
    error: str | None
    csv_text: str


def overflow_run(fit, model_weights, raise_error) -> OverflowRun:
    """fit(callbacks) -> logs with a HookRecorder, a BatchState, then (unless `raise_error`
    is None) a TerminateOnNaN(raise_error) and a CSVLogger, as in Keras's
    test_stop_training_csv."""
    recorder, state, results, error = HookRecorder(), BatchState(), [], None
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "log.csv")
        callbacks = [recorder, state]
        if raise_error is not None:
            callbacks += [keras.callbacks.TerminateOnNaN(raise_error),
                          keras.callbacks.CSVLogger(path)]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            try:
                results.append(fit(callbacks))
            except RuntimeError as raised:
                error = str(raised)
        csv_text = Path(path).read_text() if os.path.exists(path) else ""
    return OverflowRun(recorder.result(), results[0] if results else None, state.weights,
                       model_weights(), output.getvalue(), error, csv_text)


@functools.cache
def plain_overflow(kind: str, raise_error=None) -> OverflowRun:
    """raise_error: None for no TerminateOnNaN (and no validation data), else its argument
    (and validation data)."""
    model = plain_model(kind)
    return overflow_run(
        lambda callbacks: plain_fit(kind, callbacks, model=model,
                                    validation=raise_error is not None, **OVERFLOW)[1].history,
        lambda: weights_of(model), raise_error)


@functools.cache
def linfit_overflow(case: Case, raise_error: bool) -> OverflowRun:
    """linfit's fit on the OVERFLOW data, with validation data and TerminateOnNaN."""
    trainer = new_trainer(case, **NO_FULL_LOSS)
    return overflow_run(
        lambda callbacks: linfit_fit(case, callbacks, trainer=trainer, validation=True,
                                     **OVERFLOW)[1].logs,
        lambda: weights_of(trainer.model), raise_error)


def test_terminate_on_nan(case):
    """keras/src/callbacks/terminate_on_nan_test.py::test_TerminateOnNaN"""
    got, want = linfit_overflow(case, False), plain_overflow(case.kind, False)
    assert len(got.logs["loss"]) == len(want.logs["loss"]) == 1
    assert not np.isfinite(got.logs["loss"][0])
    assert_close(got.logs["loss"], want.logs["loss"])
    assert set(keras_logs(got.logs)) == set(want.logs) == {"loss", "val_loss"}
    assert got.output == "Batch 1: Invalid loss, terminating training\n"
    assert_same_messages(got.output, want.output)
    # Difference (1): the model keeps the weights after batch 0, the last finite loss, so
    # its val_loss is finite; Keras applied the overflowing update.
    assert_same_weights(got.weights, want.batch_weights[0])
    assert not np.allclose(want.weights[-1], want.batch_weights[0][-1])
    assert np.isfinite(got.logs["val_loss"]).all() and not np.isfinite(want.logs["val_loss"]).any()


def test_terminate_on_nan_graceful_stop(case):
    """keras/src/callbacks/terminate_on_nan_test.py::test_terminate_on_nan_graceful_stop"""
    got, want = linfit_overflow(case, False), plain_overflow(case.kind, False)
    assert got.error is None
    assert got.hooks.calls == want.hooks.calls
    assert got.hooks.calls[-1][0] == "on_train_end"
    assert hooks_called(got.hooks, "on_train_batch_end") == [0, 1]


def test_terminate_on_nan_raise_error(case):
    """keras/src/callbacks/terminate_on_nan_test.py::
    test_terminate_on_nan_raise_error_raises_error and
    ::test_raise_error_terminate_stops_on_later_batch"""
    got, want = linfit_overflow(case, True), plain_overflow(case.kind, True)
    assert got.error == want.error
    assert got.error.startswith("NaN or Inf loss encountered at batch 1.")
    assert_same_weights(got.weights, want.batch_weights[0])


def test_raise_error_terminate_does_not_trigger_on_train_end(case):
    """keras/src/callbacks/terminate_on_nan_test.py::
    test_raise_error_terminate_does_not_trigger_on_train_end"""
    got, want = linfit_overflow(case, True), plain_overflow(case.kind, True)
    assert got.hooks.calls == want.hooks.calls
    assert "on_train_end" not in [hook for hook, _, _ in got.hooks.calls]
    assert got.hooks.calls[-1][:2] == ("on_train_batch_end", 1)


def test_normal_training_does_not_raise(case):
    """keras/src/callbacks/terminate_on_nan_test.py::test_normal_training_does_not_raise
    (raise_error False and True), in the quiet run"""
    got, want = quiet_run(case)
    assert len(got.logs["loss"]) == EPOCHS
    assert_logs_match(got.logs, want.logs)


def test_divergence_without_terminate_on_nan(case):
    """keras/src/callbacks/terminate_on_nan_test.py::test_TerminateOnNaN, without the
    callback: difference (1), linfit raises DivergenceError and applies no update whose loss
    is not finite, where plain fit trains on"""
    trainer = new_trainer(case, **NO_FULL_LOSS)
    with pytest.raises(linfit.DivergenceError) as error:
        linfit_fit(case, trainer=trainer, **OVERFLOW)
    want = plain_overflow(case.kind)
    assert len(want.logs["loss"]) == EPOCHS and not np.isfinite(want.logs["loss"]).any()
    assert (error.value.epoch, error.value.batch) == (0, 1)
    assert_same_weights(weights_of(trainer.model), want.batch_weights[0])


# ------------------------------------------------------------------ ProgbarLogger

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def progress(output: str) -> list:
    """The progress bar's lines: ("Epoch 1/2",) headers, and (step counter, {log: value})
    for each update, without linfit's extra logs."""
    entries = []
    for line in re.split(r"[\r\n]", ANSI_ESCAPE.sub("", output).replace("\x08", "")):
        line = line.strip()
        if line.startswith("Epoch "):
            entries.append((line,))
        elif counter := re.match(r"\d+/\d+", line):
            values = {name: float(value) for name, value in re.findall(r"(\w+): (\S+)", line)
                      if name != "ETA" and not is_linfit_extra(name)}
            entries.append((counter.group(), values))
    return entries


def epoch_ends(entries: list) -> list:
    """Each epoch's header and its last update: Keras prints intermediate updates when
    0.05 s have passed since the last one, so how many there are depends on the load."""
    kept = []
    for entry in entries:
        if len(entry) == 2 and kept and len(kept[-1]) == 2:
            kept[-1] = entry
        else:
            kept.append(entry)
    return kept


def assert_same_progress(got: str, want: str) -> None:
    got_entries, want_entries = epoch_ends(progress(got)), epoch_ends(progress(want))
    assert [entry[:1] for entry in got_entries] == [entry[:1] for entry in want_entries]
    for got_entry, want_entry in zip(got_entries, want_entries):
        if len(want_entry) == 2:
            assert set(got_entry[1]) == set(want_entry[1])
            for name, value in want_entry[1].items():  # printed to 4 places
                np.testing.assert_allclose(got_entry[1][name], value, rtol=1e-4, atol=1.1e-4)


def test_progbar_verbose_1(case):
    """keras/src/callbacks/progbar_logger_test.py::test_progbar_logger_full_flow, in the
    watched run"""
    got, want = watched_run(case)
    assert_same_progress(got.output, want.output)
    entries = progress(got.output)
    assert [entry[0] for entry in epoch_ends(entries)] == ["Epoch 1/2", "2/2", "Epoch 2/2",
                                                           "2/2"]
    assert entries[1][0] == "1/2"  # the first update is always shown
    assert set(epoch_ends(entries)[1][1]) == {"loss", "val_loss"}


@functools.cache
def plain_output(kind: str, **fit_options) -> str:
    return printed(lambda: plain_fit(kind, **fit_options))


def test_progbar_verbose_2(case):
    """keras/src/callbacks/progbar_logger_test.py::test_progbar_logger_verbose_2"""
    got = printed(lambda: linfit_fit(case, validation=True, verbose=2))
    want = plain_output(case.kind, validation=True, verbose=2)
    assert_same_progress(got, want)
    assert "\033[s" not in got and "\033[H" not in got
    assert [entry[0] for entry in progress(got)] == ["Epoch 1/2", "2/2", "Epoch 2/2", "2/2"]
    assert len(got.splitlines()) == len(want.splitlines()) == 4


def test_verbose_0_prints_nothing(case):
    """keras/src/callbacks/callback_list_test.py::CallbackListTest::
    test_add_progbar_default_callback (a ProgbarLogger only when verbose != 0), in the quiet
    run"""
    got, want = quiet_run(case)
    assert got.output == want.output == ""


# ------------------------------------------------------------------ TensorBoard

def assert_same_scalars(case: Case, got: dict, want: dict) -> None:
    """The same scalars at the same steps, and linfit's extra logs as `epoch_` scalars."""
    extras = {("train", f"epoch_{key}") for key in linfit_extras(case.kind)}
    assert set(got) == set(want) | extras
    for key, points in want.items():
        assert [step for step, _ in got[key]] == [step for step, _ in points], key
        assert_close([value for _, value in got[key]], [value for _, value in points], key)


def test_tensorboard_basic(case):
    """keras/src/callbacks/tensorboard_test.py::test_TensorBoard_basic, in the watched run"""
    got, want = watched_run(case)
    assert {key for key in want.scalars if not key[1].startswith("batch_")} == {
        ("train", "epoch_loss"), ("validation", "epoch_loss"),
        ("train", "epoch_learning_rate"), ("validation", "evaluation_loss_vs_iterations")}
    assert_same_scalars(case, got.scalars, want.scalars)
    # Written at on_test_end, at the optimizer's step count then.
    steps = [step for step, _ in got.scalars[("validation", "evaluation_loss_vs_iterations")]]
    assert steps == [2, 4]


def test_tensorboard_batch_metrics(case):
    """keras/src/callbacks/tensorboard_test.py::test_TensorBoard_batch_metrics (update_freq=1),
    in the watched run"""
    got, want = watched_run(case)
    assert ("train", "batch_loss") in want.scalars
    assert_same_scalars(case, got.scalars, want.scalars)
    assert [step for step, _ in got.scalars[("train", "batch_loss")]] == [1, 2, 3, 4]


def test_tensorboard_no_spurious_event_files(case):
    """keras/src/callbacks/tensorboard_test.py::test_TensorBoard_no_spurious_event_files, in
    the quiet run"""
    got, want = quiet_run(case)
    assert got.event_directories == want.event_directories == {"train"}
    assert_same_scalars(case, got.scalars, want.scalars)


# ------------------------------------------------------------------ LambdaCallback

def assert_same_lambda_calls(case: Case, hooks: tuple) -> list:
    """The watched run's LambdaCallback calls to `hooks`, the same as plain fit's."""
    got, want = watched_run(case)
    calls = [call for call in got.lambda_calls if call[0] in hooks]
    assert calls == [call for call in want.lambda_calls if call[0] in hooks]
    assert {hook for hook, _ in calls} == set(hooks)
    return calls


def test_lambda_callback(case):
    """keras/src/callbacks/lambda_callback_test.py::test_lambda_callback"""
    calls = assert_same_lambda_calls(case, ("on_train_begin", "on_epoch_begin", "on_epoch_end",
                                            "on_train_end"))
    assert calls[0] == ("on_train_begin", None) and calls[-1] == ("on_train_end", None)


def test_lambda_callback_with_batches(case):
    """keras/src/callbacks/lambda_callback_test.py::test_lambda_callback_with_batches"""
    calls = assert_same_lambda_calls(case, ("on_train_batch_begin", "on_train_batch_end"))
    assert [index for hook, index in calls if hook == "on_train_batch_end"] == [0, 1] * 2


def test_lambda_callback_on_test_hooks(case):
    """keras/src/callbacks/lambda_callback_test.py::test_lambda_callback_with_kwargs
    (on_test_begin), during fit's validation"""
    calls = assert_same_lambda_calls(case, ("on_test_begin", "on_test_batch_end",
                                            "on_test_end"))
    assert calls.count(("on_test_begin", None)) == EPOCHS
