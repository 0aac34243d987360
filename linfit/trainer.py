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
from linfit.callbacks import (BatchPosition, EpochRecorder, HistoryLogger, PeriodicCheckpoint,
                              StopAtSafePoint, note_stopping, overridden_hooks,
                              progress_callbacks)
from linfit.config import check_value
from linfit.data import check_features, check_inputs, fingerprint, steps_per_epoch
from linfit.errors import ConfigError, WorkerLostError
from linfit.history import History
from linfit.interrupts import STOP
from linfit.loops import keras_fit
from linfit.loops.manual import ManualLoop, distribute, make_train_step
from linfit.loops.plan import ExecutionPlan, plan_execution
from linfit.losses import (FiniteLoss, NonFiniteBatch, NonFiniteRecord, divergence_error,
                           is_non_finite_loss, loss_object, optimizer_object,
                           optimizer_settings)
from linfit.models import as_keras_model
from linfit.pipeline import make_dataset, to_variable
from linfit.training_state import ResumePoint, resume_point, training_state
from linfit.variables import (check_created_in_scope, check_trainable, model_variables,
                              trainable_variables)

TRAINING_LOOPS = ("manual", "keras")


@dataclass(frozen=True)
class FitData:
    """A fit's data as TensorFlow variables: (x, y) and, with validation data, (x_val, y_val)."""

    arrays: tuple
    num_examples: int
    fingerprint: str

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
      compile: "function" (tf.function), "xla" (Keras's jit_compile), "eager"
        (Keras's run_eagerly), or "auto" (the default; see `linfit.loops.plan`).
        Eager and compiled runs give bitwise the same results.
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
        History and every checkpoint are then in the data's units.

    Attributes:
      run_settings: more settings that decide this run's numbers (e.g. a
        config's), saved in its checkpoints and compared when resuming.

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
            check_created_in_scope(model, strategy)
        self.model = model
        self.standardizer = standardizer
        self.loss = FiniteLoss(loss_object(loss))
        with self._scope():  # Keras ties a model's and an optimizer's strategy to it
            self.keras_model = as_keras_model(model)
            self.optimizer = optimizer_object(optimizer, learning_rate)
        self.run_settings: dict = {}
        # As made: callbacks may change the learning rate as training goes.
        self._optimizer_settings = optimizer_settings(self.optimizer)
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
          callbacks, verbose, initial_epoch: as in Keras's `fit`.
          resume_from: a checkpoint of `save_checkpoint`'s, to continue bitwise from.
          checkpoint_dir: where to save a training checkpoint every
            `checkpoint_every` epochs, keeping the newest `keep_checkpoints` (0: all).
          on_epoch_end: called with the History so far, at the start and after each epoch.

        Returns a History: `loss` per epoch, and `full_loss` (`val_loss`), `w`, `b`
        before training and after each epoch. Raises DivergenceError when a loss
        is not finite (an update with a non-finite loss is never applied).
        """
        _check_fit_arguments(epochs, loop, batch_size)
        data = self._prepare(x, y, validation_data)
        start = self._start(self._settings(data, batch_size, shuffle_seed), resume_from,
                            initial_epoch, epochs)
        history, initial_epoch = start.history, start.epoch
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
                         StopAtSafePoint(history, STOP),
                         *progress_callbacks(history, callbacks or [], start.callback_progress),
                         *self._output_callbacks(history, checkpoint_dir, checkpoint_every,
                                                 keep_checkpoints, on_epoch_end)]

        def dataset(start=initial_epoch):
            return make_dataset(*data.arrays[:2], batch_size, epochs, shuffle_seed, start)

        position = BatchPosition()
        with self._training_errors(history, position, plan, (initial_epoch, steps)):
            if loop == "manual":
                self._run_manual(plan, data, dataset, range(initial_epoch, epochs), steps,
                                 callback_list, verbose)
            else:
                keras_fit.run_fit(self.keras_model, dataset(), range(initial_epoch, epochs),
                                  steps, [position, *callback_list], plan, verbose,
                                  self.strategy)
        note_stopping(history, callbacks or [], epochs)
        return history

    def _prepare(self, x, y, validation_data) -> FitData:
        """The inputs checked, the model built, the data in TensorFlow once (shared
        with NumPy where it can be), never per epoch."""
        x, y = self._checked(x, y)
        self._build(x)
        arrays = (x, y) if validation_data is None else (x, y, *self._checked(*validation_data))
        return FitData(tuple(to_variable(array) for array in arrays), len(y),
                       fingerprint(*arrays))

    def _checked(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x, y = check_inputs(x, y)
        if hasattr(self.model, "features"):
            check_features(x, self.model.features)
        return x, y

    def _settings(self, data: FitData, batch_size, shuffle_seed) -> dict:
        """What decides the fit's numbers besides the model: a resumed fit must share it."""
        return {**self.run_settings, "batch_size": batch_size, "shuffle_seed": shuffle_seed,
                "num_examples": data.num_examples, "data": data.fingerprint,
                "loss": self.loss.wrapped.name, "optimizer": self._optimizer_settings,
                **self._unit_settings()}

    def _unit_settings(self) -> dict:
        return {} if self.standardizer is None else {"standardizer": self.standardizer.to_json()}

    def _start(self, settings: dict, resume_from, initial_epoch: int,
               epochs: int) -> ResumePoint:
        if resume_from is None:
            return ResumePoint(History(settings=settings), initial_epoch)
        return self._resume(resume_from, settings, epochs)

    def _resume(self, path, settings: dict, epochs: int) -> ResumePoint:
        """Load a checkpoint to continue from, all or nothing: everything in it is
        checked before the model or the optimizer changes."""
        variables = model_variables(self.model)
        point = resume_point(path, checkpoint.read_state(path), settings,
                             [tuple(v.shape) for v in variables])
        checkpoint.load_checkpoint(path, self.model, self.optimizer)
        # The model as the run left it, in training units: where training goes
        # on from, or, with nothing left to train, its final weights.
        weights = point.resume_weights if point.epoch < epochs else point.final_weights
        for variable, value in zip(variables, weights or []):
            variable.assign(value)
        point.history.end_weights = point.resume_weights
        return point

    def _record_function(self, validation: bool) -> Callable:
        """record(data) -> what the History records now (see `EpochRecorder`),
        compiled unless the plan is eager; one per kind of data."""
        has_line = _has_line(self.model)

        loss = self.loss.wrapped  # unchecked: the recorder reports a non-finite value

        def record(data):
            values = {"full_loss": loss(data[1], self.model(data[0]))}
            if validation:
                values["val_loss"] = loss(data[3], self.model(data[2]))
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
                self._record_function(data.validation), names, self._loss_tracker, plan.mode,
                state=[*model_variables(self.model), *self.optimizer.variables])
        self.manual_loop = self._manual_loops[key]
        if self.distributed:
            def dataset(start, make=dataset):
                return self.strategy.experimental_distribute_dataset(make(start))
        self.manual_loop.run(plan, data.arrays, dataset, epochs, steps,
                             keras.callbacks.CallbackList(
                                 callbacks, add_history=False, add_progbar=verbose != 0,
                                 model=self.keras_model, verbose=verbose, epochs=epochs.stop,
                                 steps=steps))

    @contextlib.contextmanager
    def _training_errors(self, history: History, position: BatchPosition, plan: ExecutionPlan,
                         shape: tuple[int, int]):
        """TensorFlow's errors during training, as linfit's. `position` follows the
        Keras loop (the manual loop says where it stopped itself); `shape` is the
        fit's (initial epoch, batches per epoch)."""
        initial_epoch, steps = shape
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
        except NonFiniteRecord as error:
            raise divergence_error(error.epochs_completed - 1, None, history,
                                   error.values) from None
        except NonFiniteBatch as error:
            epoch, batch = error.epoch, error.batch
        except Exception as error:
            if not is_non_finite_loss(error):
                raise
            # Keras's fit. Compiled, an update's iteration count can be applied
            # without the update itself: count on it only eagerly.
            epoch = position.epoch
            batch = position.batch if plan.steps_per_execution == 1 else None
            if plan.mode == "eager":
                batch = int(self.optimizer.iterations.numpy()) - start - \
                    (epoch - initial_epoch) * steps
        else:
            return
        if batch is not None:  # the optimizer counts the updates applied, no more
            self.optimizer.iterations.assign(start + (epoch - initial_epoch) * steps + batch)
        raise divergence_error(epoch, batch, history, batch_known=False)

    def save_checkpoint(self, path: str | os.PathLike, history: History | None = None,
                        epoch: int | None = None):
        """Save the model, the optimizer state and the training position to `path`.

        `fit(..., resume_from=path)` continues from it. The file is Keras's
        `.weights.h5` layout, so it also loads with `load_weights`.
        """
        current = [v.numpy() for v in model_variables(self.model)]
        values = final = None
        if self.standardizer is not None:  # the file in the data's units
            w, b = self.standardizer.to_original(*current)
            values, final = [np.float32(w), np.float32(b)], current
        if history is None:
            return checkpoint.save_checkpoint(path, self.model, self.optimizer,
                                              self._unit_settings(), values=values)
        resume = history.end_weights if history.end_weights is not None else current
        if final is None and all(np.array_equal(a, b) for a, b in zip(resume, current)):
            resume = None  # the file's own weights are where training goes on from
        state = training_state(history, epoch, resume, final)
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


def _check_fit_arguments(epochs, loop, batch_size) -> None:
    if loop not in TRAINING_LOOPS:
        raise ConfigError(f"loop={loop!r} is not a training loop: use one of {TRAINING_LOOPS}")
    check_value("train.epochs", epochs, label="epochs")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ConfigError(f"batch_size={batch_size!r}: use None for one full batch, "
                          "or a positive integer")
