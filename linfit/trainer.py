"""Trainer: one front that trains either model with either loop.

    trainer = Trainer(LinearModule(), learning_rate=0.1)
    history = trainer.fit(x, y, epochs=10, loop="manual")   # or loop="keras"

Both loops use the same loss object, the same optimizer object and the same
recording callbacks, so their History has the same keys with the same
meaning (see `linfit.History`). `fit` is four stages: prepare the data and
the starting point, plan the execution, assemble the callbacks, run a loop.
"""

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from linfit import checkpoint
from linfit.callbacks import EpochRecorder, HistoryLogger, PeriodicCheckpoint, overridden_hooks
from linfit.config import check_value
from linfit.data import check_features, check_inputs, steps_per_epoch
from linfit.errors import CheckpointError, ConfigError, DivergenceError, WorkerLostError
from linfit.history import History
from linfit.loops import keras_fit
from linfit.loops.manual import ManualLoop, distribute, make_train_step
from linfit.loops.plan import ExecutionPlan, plan_execution
from linfit.losses import FiniteLoss, is_non_finite_loss, loss_object, optimizer_object
from linfit.models import as_keras_model
from linfit.pipeline import make_dataset, to_variable
from linfit.variables import check_trainable, model_variables, trainable_variables

TRAINING_LOOPS = ("manual", "keras")


@dataclass(frozen=True)
class FitData:
    """A fit's data as TensorFlow variables: (x, y) and, with validation data, (x_val, y_val)."""

    arrays: tuple
    num_examples: int

    @property
    def validation(self) -> bool:
        return len(self.arrays) > 2


class Trainer:
    """Trains a tf.Module or a keras.Model with a GradientTape loop or with `fit`.

    Args:
      model: a tf.Module (e.g. `LinearModule`) or a keras.Model whose
        variables Keras tracks (e.g. `LinearModel`).
      loss: a Keras loss name or object (default "mse").
      optimizer: a Keras optimizer name (made with `learning_rate`) or object.
      learning_rate: used when `optimizer` is a name.
      compile: "function" (tf.function), "xla" (also compiled by XLA;
        Keras's jit_compile), "eager" (Keras's run_eagerly), or "auto" (the
        default): eager for a short run, where tracing would cost more than
        it saves, else "function" (see `linfit.loops.plan`). The modes give
        bitwise the same results here (tests/test_trainer.py checks it).
      steps_per_call: batches per compiled call (Keras's steps_per_execution).
        0, the default, lets the manual loop run whole epochs per call when
        no callback of yours needs to act during training, and the Keras
        loop one epoch per execution. A multiple of the batches per epoch
        fuses that many epochs per call, recording every epoch in the graph.
      strategy: a tf.distribute strategy to train under, for both loops, with
        one device's results (the model must be created in its scope); None
        for the default, one device. Under a strategy the manual loop runs
        step by step and the Keras loop one step per execution.
      standardizer: for a model with `w` and `b` trained on standardised
        features, the `linfit.data.Standardizer` that scaled them: the
        History and every checkpoint are then in the data's units (a
        checkpoint also keeps the trained values, to resume exactly).

    Raises:
      ModelError: for a model that would train nothing (see
        `linfit.variables.check_trainable`).
      ConfigError: for an unknown loss or optimizer, or a bad learning rate.
    """

    def __init__(self, model, *, loss="mse", optimizer="sgd", learning_rate: float = 0.1,
                 compile: str = "auto", steps_per_call: int = 0, strategy=None,
                 standardizer=None):
        check_value("train.compile", compile, label="compile")
        check_value("train.steps_per_call", steps_per_call, label="steps_per_call")
        self.compile_mode = compile
        self.steps_per_call = steps_per_call
        check_trainable(model)
        self.strategy = strategy
        self.distributed = strategy is not None and strategy.num_replicas_in_sync > 1
        if self.distributed:
            _check_created_in_scope(model, strategy)
        self.model = model
        self.standardizer = standardizer
        self.loss = FiniteLoss(loss_object(loss))
        with self._scope():  # Keras ties a model's and an optimizer's strategy to it
            self.keras_model = as_keras_model(model)
            self.optimizer = optimizer_object(optimizer, learning_rate)
        self._variables = None
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._manual_loops: dict[tuple, ManualLoop] = {}
        self.manual_loop = None  # that of the last manual fit
        self._records: dict[tuple, Callable] = {}
        self._predict_function = tf.function(lambda x: self.model(x), reduce_retracing=True)
        if not isinstance(model, keras.Model) or model.built:
            self._build()

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _build(self, x=None):
        """Build the model (a Keras model not built yet: on one example of x) and
        the optimizer, once."""
        if self._variables is not None:
            return
        if not self.keras_model.built and x is not None:
            self.model(x[:1])
        check_trainable(self.model, built=True)
        self._variables = trainable_variables(self.model)
        # Built here, once, for these variables, so that both loops (and a
        # tf.Module behind the Keras adapter) update the same slots.
        with self._scope():
            if not self.optimizer.built:
                self.optimizer.build(self._variables)
            # Compiled now, so Keras callbacks find `model.optimizer` in either loop
            # (LearningRateScheduler, ReduceLROnPlateau, TensorBoard).
            self.keras_model.compile(optimizer=self.optimizer, loss=self.loss)

    def fit(self, x, y, *, epochs: int, loop: str = "manual", batch_size: int | None = None,
            shuffle_seed: int | None = None, validation_data: tuple | None = None,
            callbacks: list | None = None, verbose: int = 0, initial_epoch: int = 0,
            resume_from: str | os.PathLike | None = None,
            checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1,
            keep_checkpoints: int = 0,
            on_epoch_end: Callable[[History], None] | None = None) -> History:
        """Train on (x, y) and return what was recorded.

        Args:
          x, y: inputs ([N] for the scalar model, or [N, d]) and targets [N].
          epochs: the epoch to train up to (as in Keras), at least 1.
          loop: "manual" (GradientTape) or "keras" (compile + fit).
          batch_size: None for one full batch, as in the guide.
          shuffle_seed: None keeps the data's order; a seed reshuffles the
            batches each epoch, reproducibly and identically in both loops.
          validation_data: (x_val, y_val) for `val_loss`, or None.
          callbacks, verbose, initial_epoch: as in Keras's `fit`, in either loop.
          resume_from: a checkpoint of `save_checkpoint`'s, to continue bitwise from.
          checkpoint_dir: where to save a training checkpoint every
            `checkpoint_every` epochs, keeping the newest `keep_checkpoints` (0: all).
          on_epoch_end: called with the History so far, at the start and after each epoch.

        Returns:
          History: `loss` per epoch, and `full_loss` (`val_loss`), `w`, `b`
          before training and after each epoch.

        Raises:
          DivergenceError: a loss was not finite; that update was not applied.
        """
        _check_fit_arguments(epochs, loop, batch_size)
        data = self._prepare(x, y, validation_data)
        settings = {"batch_size": batch_size, "shuffle_seed": shuffle_seed,
                    "num_examples": data.num_examples, **self._unit_settings()}
        history, initial_epoch = self._start(settings, resume_from, initial_epoch)
        if initial_epoch >= epochs:
            return history
        steps = steps_per_epoch(data.num_examples, batch_size)
        plan = plan_execution(
            compile=self.compile_mode, steps_per_call=self.steps_per_call, steps_per_epoch=steps,
            epochs=epochs, shuffled=shuffle_seed is not None, distributed=self.distributed,
            user_hooks=overridden_hooks(callbacks or []),
            checkpoint_every=checkpoint_every if checkpoint_dir is not None else 0)
        callback_list = [self._recorder(history, data, plan, record_start=resume_from is None),
                         *(callbacks or []), HistoryLogger(history),
                         *self._output_callbacks(history, checkpoint_dir, checkpoint_every,
                                                 keep_checkpoints, on_epoch_end)]

        def dataset():
            return make_dataset(*data.arrays[:2], batch_size, epochs, shuffle_seed,
                                initial_epoch)

        with self._training_errors(history, initial_epoch, steps):
            if loop == "manual":
                self._run_manual(plan, data, dataset, range(initial_epoch, epochs), steps,
                                 callback_list, verbose)
            else:
                keras_fit.run_fit(self.keras_model, dataset(), range(initial_epoch, epochs),
                                  steps, callback_list, plan, verbose, self.strategy)
        return history

    def _prepare(self, x, y, validation_data) -> FitData:
        """The inputs checked, the model built, the data in TensorFlow once (shared
        with NumPy where it can be), never per epoch."""
        x, y = self._checked(x, y)
        self._build(x)
        arrays = (x, y) if validation_data is None else (x, y, *self._checked(*validation_data))
        return FitData(tuple(to_variable(array) for array in arrays), len(y))

    def _checked(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x, y = check_inputs(x, y)
        if hasattr(self.model, "features"):
            check_features(x, self.model.features)
        return x, y

    def _unit_settings(self) -> dict:
        return {} if self.standardizer is None else {"standardizer": self.standardizer.to_json()}

    def _start(self, settings: dict, resume_from, initial_epoch: int) -> tuple[History, int]:
        if resume_from is None:
            return History(settings=settings), initial_epoch
        return self._resume(resume_from, settings)

    def _resume(self, path, settings: dict) -> tuple[History, int]:
        state = checkpoint.load_checkpoint(path, self.model, self.optimizer)
        if not state or "epoch" not in state or "history" not in state:
            raise CheckpointError(f"{path} is a weights-only checkpoint: it has no training "
                                  "position to resume from")
        for key, value in settings.items():
            if state.get(key) != value:
                raise ConfigError(
                    f"{path} was written by a run with {key}={state.get(key)!r}, not "
                    f"{value!r}: resume with the same data and settings, or start afresh")
        if "trained_weights" in state:
            for variable, value in zip(model_variables(self.model), state["trained_weights"]):
                variable.assign(np.asarray(value, dtype=np.float32))
        return History.from_json(state["history"], settings), int(state["epoch"])

    def _record_function(self, validation: bool) -> Callable:
        """record(data) -> what the History records now (see `EpochRecorder`),
        compiled unless the plan is eager; one per kind of data."""
        has_line = _has_line(self.model)

        def record(data):
            values = {"full_loss": self.loss(data[1], self.model(data[0]))}
            if validation:
                values["val_loss"] = self.loss(data[3], self.model(data[2]))
            if has_line:
                values.update(w=tf.identity(self.model.w), b=tf.identity(self.model.b))
            return values

        return record

    def _record_names(self, validation: bool) -> list[str]:
        return ["full_loss", *(["val_loss"] if validation else []),
                *(["w", "b"] if _has_line(self.model) else [])]

    def _recorder(self, history: History, data: FitData, plan: ExecutionPlan,
                  record_start: bool) -> EpochRecorder:
        key = (data.validation, plan.mode == "eager")
        if key not in self._records:
            record = self._record_function(data.validation)
            self._records[key] = record if plan.mode == "eager" else tf.function(record)
        record = self._records[key]
        to_data_units = None if self.standardizer is None else self.standardizer.to_original
        return EpochRecorder(history, lambda: record(data.arrays),
                             self._record_names(data.validation), to_data_units, record_start)

    def _output_callbacks(self, history: History, checkpoint_dir, checkpoint_every: int,
                          keep_checkpoints: int, on_epoch_end) -> list:
        # After the user's callbacks and History: they see each epoch as recorded.
        callbacks = []
        if checkpoint_dir is not None:
            callbacks.append(PeriodicCheckpoint(
                lambda path, epoch: self.save_checkpoint(path, history, epoch),
                checkpoint_dir, checkpoint_every, keep_checkpoints))
        if on_epoch_end is not None:
            callbacks.append(keras.callbacks.LambdaCallback(
                on_train_begin=lambda logs: on_epoch_end(history),
                on_epoch_end=lambda epoch, logs: on_epoch_end(history)))
        return callbacks

    def _run_manual(self, plan: ExecutionPlan, data: FitData, dataset, epochs: range,
                    steps: int, callbacks: list, verbose: int) -> None:
        names = self._record_names(data.validation)
        key = (tuple(names), plan.mode)
        if key not in self._manual_loops:
            step = make_train_step(self.model, self._variables, self.loss, self.optimizer)
            self._manual_loops[key] = ManualLoop(
                distribute(step, self.strategy) if self.distributed else step,
                self._record_function(data.validation), names, self._loss_tracker, plan.mode)
        self.manual_loop = self._manual_loops[key]
        if self.distributed:
            def dataset(make=dataset):
                return self.strategy.experimental_distribute_dataset(make())
        self.manual_loop.run(plan, data.arrays, dataset, epochs, steps,
                             keras.callbacks.CallbackList(
                                 callbacks, add_history=False, add_progbar=verbose != 0,
                                 model=self.keras_model, verbose=verbose, epochs=epochs.stop,
                                 steps=steps))

    @contextlib.contextmanager
    def _training_errors(self, history: History, initial_epoch: int, steps: int):
        """TensorFlow's errors during training, as linfit's."""
        start = int(self.optimizer.iterations.numpy())
        try:
            yield
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
            if not self.distributed:
                raise
            raise WorkerLostError(
                "a worker of the cluster stopped responding "
                f"({type(error).__name__}), so training stopped: start every worker again "
                "with --resume RUN_DIR (or resume_from=) to continue from the last "
                "checkpoint") from None
        except Exception as error:
            if not is_non_finite_loss(error):
                raise
            done = int(self.optimizer.iterations.numpy()) - start
            raise divergence_error(initial_epoch + done // steps, done % steps,
                                   history) from None

    def save_checkpoint(self, path: str | os.PathLike, history: History | None = None,
                        epoch: int | None = None):
        """Save the model, the optimizer state and the training position to `path`.

        `fit(..., resume_from=path)` continues from it. The file is Keras's
        `.weights.h5` layout, so it also loads with `load_weights`.
        """
        state = dict(history.settings) if history is not None else self._unit_settings()
        if history is not None:
            state["epoch"] = history.epochs if epoch is None else epoch
            state["history"] = history.to_json()
        values = None
        if self.standardizer is not None:
            trained = [v.numpy() for v in model_variables(self.model)]
            state["trained_weights"] = [value.tolist() for value in trained]
            w, b = self.standardizer.to_original(*trained)
            values = [np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)]
        return checkpoint.save_checkpoint(path, self.model, self.optimizer, state, values=values)

    def evaluate(self, x, y) -> float:
        """The loss of the model on (x, y), as one batch."""
        x, y = self._checked(x, y)
        return float(self.loss(y, self._predict_function(x)))

    def predict(self, x) -> np.ndarray:
        """The model's predictions for x, as a float32 array [N]."""
        x = np.asarray(x, dtype=np.float32)
        if hasattr(self.model, "features"):
            check_features(x, self.model.features)
        return np.asarray(self._predict_function(x))


def _has_line(model) -> bool:
    return hasattr(model, "w") and hasattr(model, "b")


def _check_created_in_scope(model, strategy) -> None:
    # A Keras variable keeps its tf.Variable (here a MirroredVariable) as `.value`.
    variables = [v.value if isinstance(v, keras.Variable) else v for v in model_variables(model)]
    if not all(strategy.extended.variable_created_in_scope(v) for v in variables):
        raise ConfigError(f"{type(model).__name__} was not created in the strategy's scope: "
                          "create it inside `with strategy.scope():` and pass the same "
                          "strategy to the Trainer")


def divergence_error(epoch: int, batch: int, history: History) -> DivergenceError:
    losses = ", ".join(f"{v:.4g}" for v in history.trajectory.get("full_loss", []))
    return DivergenceError(
        f"training diverged at epoch {epoch}, batch {batch}: the loss is not finite, so that "
        f"update was not applied. full_loss per epoch so far: [{losses}]. Lower the learning "
        "rate (or standardise the data)", epoch, batch, history)


def _check_fit_arguments(epochs, loop, batch_size) -> None:
    if loop not in TRAINING_LOOPS:
        raise ConfigError(f"loop={loop!r} is not a training loop: use one of {TRAINING_LOOPS}")
    check_value("train.epochs", epochs, label="epochs")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ConfigError(f"batch_size={batch_size!r}: use None for one full batch, "
                          "or a positive integer")
