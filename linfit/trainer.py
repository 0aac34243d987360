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

import keras
import numpy as np
import tensorflow as tf

from linfit import checkpoint, compat
from linfit.callbacks import (BatchPosition, HistoryLogger, RestoreEpochProgress, StopAtSafePoint,
                              note_stopping, output_callbacks, overridden_hooks,
                              progress_callbacks, user_callbacks)
from linfit.config import check_value
from linfit.arrays import check_features, check_x
from linfit.fit_inputs import checked, fit_data
from linfit.history import History
from linfit.interrupts import STOP
from linfit.loops import failures, keras_fit
from linfit.loops.manual import CompiledMetrics, ManualLoop
from linfit.loops.steps import manual_steps
from linfit.loops.plan import ExecutionPlan, Workload, plan_execution
from linfit.losses import (FiniteLoss, build_compiled, checked_metrics, loss_object,
                           optimizer_object, optimizer_settings)
from linfit.models import as_keras_model, check_saves_whole, is_linear
from linfit.pipeline import FitData, check_fit_arguments, plain_numbers
from linfit.recording import Recording
from linfit.training_state import ResumePoint, check_middle, resume_point, training_state
from linfit.variables import (check_created_in_scope, check_trainable, model_variables,
                              trainable_variables)



class Trainer:
    """Trains a tf.Module or a keras.Model with a GradientTape loop or with `fit`.

    Args:
      model: a tf.Module (e.g. `LinearModule`) or a keras.Model whose
        variables Keras tracks (e.g. `LinearModel`, a `keras.Sequential`).
      loss: a Keras loss name or object (default "mse").
      optimizer: a Keras optimizer name (made with `learning_rate`) or object.
      learning_rate: used when `optimizer` is a name.
      metrics: Keras metrics, as `compile` takes them (["mae",
        keras.metrics.RootMeanSquaredError()]): logged per epoch by both loops under
        `fit`'s names (`val_` prefixed on validation data).
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
      record_full_loss: record `full_loss` (the loss on the whole training
        set before training and after each epoch) and the validation loss
        before training. These are forward passes of the model outside the
        training steps; False leaves them out.

    The model is compiled with this loss, optimizer and metrics (as the user
    would compile it), so after `fit` it saves whole (`model.save("m.keras")`)
    and loads with plain Keras.

    Attributes:
      run_settings: more settings that decide this run's numbers (e.g. a
        config's), saved in its checkpoints and compared when resuming.

    Raises:
      ModelError: for a model that would train nothing (see
        `linfit.variables.check_trainable`).
      ConfigError: for an unknown loss or optimizer, or a bad learning rate.
    """

    @plain_numbers
    def __init__(self, model, *, loss="mse", optimizer="sgd", learning_rate: float = 0.1,
                 metrics: list | None = None, compile: str = "auto", steps_per_call: int = 0,
                 strategy=None, standardizer=None, record_full_loss: bool = True):
        check_value("train.compile", compile, label="compile")
        check_value("train.steps_per_call", steps_per_call, label="steps_per_call")
        self.compile_mode, self.steps_per_call = compile, steps_per_call
        # How the last `fit` ran its steps: "eager", "function" or "xla" (None: not yet).
        self.execution_mode = None
        check_trainable(model)
        self.strategy = strategy
        self.distributed = strategy is not None and strategy.num_replicas_in_sync > 1
        if self.distributed:
            check_created_in_scope(model, strategy)
        self.model = model
        self.standardizer = standardizer
        self._user_loss = loss
        self.loss = FiniteLoss(loss_object(loss))
        self.metrics = checked_metrics(metrics)
        with self._scope():  # Keras ties a model's and an optimizer's strategy to it
            self.keras_model = as_keras_model(model)
            self.optimizer = optimizer_object(optimizer, learning_rate)
        self.recording = Recording(model, self.loss.wrapped, record_full_loss)
        self.run_settings: dict = {}
        # As made: callbacks may change the learning rate as training goes.
        self._optimizer_settings = optimizer_settings(self.optimizer)
        self._variables = None
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._manual_loops: dict[tuple, ManualLoop] = {}
        self.manual_loop = None  # that of the last manual fit
        self._predict_function = tf.function(self._predict_batch, reduce_retracing=True)
        # Compiled now, so Keras callbacks find `model.optimizer` in either loop
        # (LearningRateScheduler, ReduceLROnPlateau, TensorBoard).
        self._compile_as_user()
        if not isinstance(model, keras.Model) or model.built:
            self._build()

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _compile_as_user(self) -> None:
        """Compile the model with the user's loss, optimizer and metrics, as a Keras-loop
        fit leaves it (trained on linfit's guarded loss): it saves whole, loads in Keras."""
        self._manual_loops.clear()  # their steps update the metrics of the last compile
        with self._scope():
            self.keras_model.compile(optimizer=self.optimizer, loss=self._user_loss,
                                     metrics=self.metrics or None)

    def _build(self, data: tuple | None = None) -> None:
        """Build the optimizer for the model's variables, once, and (given a fit's
        data) the model, the compiled loss and metrics as `fit` builds them:
        symbolically, from the data's shapes, never calling the model on data."""
        with self._scope():
            if self._variables is None and (self.keras_model.built or data is not None):
                if not self.keras_model.built:
                    compat.symbolic_build(self.keras_model, *data)
                check_trainable(self.model, built=True)
                self._variables = trainable_variables(self.model)
                # For these variables, so that both loops (and a tf.Module behind
                # the Keras adapter, whose Keras variables are none) update the same slots.
                if not self.optimizer.built:
                    self.optimizer.build(self._variables)
            if data is not None:
                build_compiled(self.keras_model, *data)

    @plain_numbers
    def fit(self, x, y, *, epochs: int, loop: str = "manual", batch_size: int | None = None,
            shuffle_seed: int | None = None, shuffle_buffer: int = 0,
            shard_rows: tuple[int, ...] = (), validation_data: tuple | None = None,
            validation_batch_size: int | None = None, validation_freq: int = 1,
            callbacks: list | None = None, verbose: int = 0, initial_epoch: int = 0,
            resume_from: str | os.PathLike | None = None,
            checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1,
            keep_checkpoints: int = 0, checkpoint_every_batches: int = 0,
            on_epoch_end: Callable[[History], None] | None = None) -> History:
        """Train on (x, y) and return what was recorded.

        Args:
          x, y: inputs ([N] or [N, d]) and targets ([N] or [N, k]); or x the CSV
            files to stream (`linfit.streams.open_data_files`) and y None.
          epochs: the epoch to train up to (as in Keras), at least 1.
          loop: "manual" (GradientTape) or "keras" (compile + fit).
          batch_size: None for one full batch, as in the guide.
          shuffle_seed: None keeps the data's order; a seed reshuffles the
            batches each epoch, reproducibly and identically in both loops.
          shuffle_buffer, shard_rows: N > 0 shuffles as streamed data shuffles, in
            windows of N rows of the shards of `shard_rows` rows (`stream_order`).
          validation_data: (x_val, y_val) (or files), evaluated as `fit` evaluates
            it (`on_test_*` hooks, `val_` logs), in batches of `validation_batch_size`
            (default: `batch_size`), after every `validation_freq`-th epoch.
          callbacks, verbose, initial_epoch: as in Keras's `fit`; resume_from: a
            checkpoint of `save_checkpoint`'s, to continue bitwise from.
          checkpoint_dir: save a training checkpoint there every `checkpoint_every` epochs
            (0: none) and `checkpoint_every_batches` batches, keeping the newest
            `keep_checkpoints` (0: all); on_epoch_end: called with the History.

        Returns a History (`loss`, the metrics, `full_loss`, `val_loss`, `w`, `b` by epoch).
        Raises DivergenceError on a non-finite loss (unapplied; XLA: after), bar TerminateOnNaN."""
        schedule = (checkpoint_dir, checkpoint_every, checkpoint_every_batches, keep_checkpoints)
        check_fit_arguments(epochs, loop, batch_size, validation_batch_size, validation_freq,
                            shuffle_seed=shuffle_seed, shuffle_buffer=shuffle_buffer,
                            initial_epoch=initial_epoch, schedule=schedule, verbose=verbose)
        callbacks = user_callbacks(callbacks)
        check_saves_whole(self.model, callbacks)
        data = self._prepare(x, y, validation_data, loop, FitData(
            (), batch_size, shuffle_seed, epochs, validation_batch_size, validation_freq,
            shuffle_buffer=shuffle_buffer, shard_rows=tuple(shard_rows),
            whole_batches=self.distributed))
        start = self._start(self._settings(data), resume_from, initial_epoch, (epochs, loop))
        history, initial_epoch = start.history, start.epoch
        history.metrics = list(self._metric_results())
        if start.done(epochs):  # trained, or stopped early (a resumed run)
            return history
        plan = self._plan(data, shuffle_seed, callbacks, (epochs, start.batch), schedule)
        recorder = self.recording.recorder(
            history, data, plan.mode == "eager", history.metrics,
            to_data_units=None if self.standardizer is None else self.standardizer.to_original,
            record_start=resume_from is None, check_finite=not failures.terminate_on_nan(callbacks))
        callback_list = [recorder, *callbacks, HistoryLogger(history),
                         StopAtSafePoint(history, STOP),
                         *progress_callbacks(history, callbacks, start.callback_progress),
                         *output_callbacks(self._saver(history, loop), history, schedule,
                                           data.steps_per_epoch, on_epoch_end)]
        self._run(loop, plan, data, start, range(initial_epoch, epochs), callback_list, verbose)
        note_stopping(history, callbacks, epochs)
        return history

    def _plan(self, data: FitData, shuffle_seed, callbacks, span: tuple, schedule: tuple):
        """How this fit runs (see `plan_execution`), kept as `execution_mode`."""
        (epochs, first_batch), (directory, every, every_batches, _) = span, schedule
        work = Workload(data.steps_per_epoch, epochs, data.values_per_step,
                        shuffled=shuffle_seed is not None,
                        in_variables=bool(data.arrays) and data.chunks_per_step == 1)
        plan = plan_execution(compile=self.compile_mode, steps_per_call=self.steps_per_call,
                              work=work, distributed=self.distributed,
                              user_hooks=overridden_hooks(callbacks),
                              checkpoint_every=every if directory is not None else 0,
                              checkpoint_batches=every_batches if directory is not None else 0,
                              first_batch=first_batch)
        self.execution_mode = plan.mode
        return plan

    def _run(self, loop: str, plan: ExecutionPlan, data: FitData, start: ResumePoint,
             epochs: range, callback_list: list, verbose: int) -> None:
        history, first_batch = start.history, start.batch
        if first_batch:  # resumed in the middle of an epoch
            callback_list = [RestoreEpochProgress(lambda: self._epoch_variables(loop),
                                                  start.epoch_progress), *callback_list]
        position = BatchPosition()
        # One list for the whole fit, given to Keras's `fit` as it is, so a fit that
        # ends early (see `_end_as_keras`) ends on the callbacks it began.
        callbacks = keras.callbacks.CallbackList(
            [position, *callback_list], add_history=True, add_progbar=verbose != 0,
            model=self.keras_model, verbose=verbose, epochs=epochs.stop,
            steps=data.steps_per_epoch)
        end = None
        if failures.terminate_on_nan(callback_list):
            failures.check_ends_as_keras(data)
            end = lambda step: self._end_as_keras(loop, data, callbacks, step)  # noqa: E731
        trained = False
        try:
            with failures.training_errors(self, history, position, plan,
                                          (epochs.start, data.steps_per_epoch, first_batch), end,
                                          getattr(data, "data_error", None)):
                if loop == "manual":
                    self._run_manual(plan, data, epochs, callbacks, first_batch)
                else:
                    keras_fit.run_fit(self.keras_model, data, (epochs, first_batch), callbacks,
                                      plan, {"loss": self.loss, "metrics": self.metrics or None},
                                      verbose, self.strategy)
            trained = True
        finally:
            # Compiling makes variables, collectively under a multi-device strategy:
            # not after a failure there, which may have been a worker's.
            if loop == "keras" and (trained or not self.distributed):
                self._compile_as_user()

    def _end_as_keras(self, loop: str, data: FitData, callbacks, step) -> None:
        """After a non-finite batch, with the user's TerminateOnNaN: Keras's ending."""
        loss = failures.batch_loss(self.loss.wrapped, self.model, data.batches(step.epoch),
                                   step.batch or 0)
        metrics = {name: float(value) for name, value in self._metric_results().items()}
        if loop == "keras":  # evaluated with the user's loss, which reports, not raises
            self._compile_as_user()

        def evaluate():
            if not data.validates_after(step.epoch):
                return {}
            if loop == "manual":
                logs = self.manual_loop.evaluate(self._for_replicas(data), callbacks)
            else:
                logs = self.keras_model.evaluate(data.validation_batches(), callbacks=callbacks,
                                                 steps=data.validation_steps, return_dict=True,
                                                 verbose=0)
            return {f"val_{name}": value for name, value in logs.items()}

        failures.end_as_keras(callbacks, step, loss, metrics, evaluate)

    def _metric_results(self) -> dict:
        results = self.keras_model.get_metrics_result() if self.metrics else {}
        return {name: value for name, value in results.items() if name != "loss"}

    def _prepare(self, x, y, validation_data, loop: str, shape: FitData) -> FitData:
        """The inputs checked, the model built, the data in TensorFlow once (shared
        with NumPy where it can be), never per epoch; or the files to stream."""
        data, sample = fit_data(self.model, (x, y), validation_data, loop, shape,
                                self.strategy if self.distributed else None)
        self._build(sample)
        return data

    def _settings(self, data: FitData) -> dict:
        """What decides the fit's numbers besides the model: a resumed fit must share it."""
        return {**self.run_settings, "batch_size": data.batch_size,
                "shuffle_seed": data.shuffle_seed, "num_examples": data.num_examples,
                **({"shuffle_buffer": data.shuffle_buffer} if data.shuffle_buffer else {}),
                "data": data.fingerprint, "loss": self.loss.wrapped.name,
                "optimizer": self._optimizer_settings, **self._unit_settings()}

    def _unit_settings(self) -> dict:
        return {} if self.standardizer is None else {"standardizer": self.standardizer.to_json()}

    def _start(self, settings: dict, resume_from, initial_epoch: int,
               span: tuple[int, str]) -> ResumePoint:
        if resume_from is None:
            return ResumePoint(History(settings=settings), initial_epoch)
        return self._resume(resume_from, settings, span)

    def _resume(self, path, settings: dict, span: tuple[int, str]) -> ResumePoint:
        """Load a checkpoint to continue from, all or nothing: everything in it is
        checked before the model or the optimizer changes."""
        (epochs, loop), variables = span, model_variables(self.model)
        point = resume_point(path, checkpoint.read_state(path), settings,
                             [tuple(v.shape) for v in variables])
        check_middle(path, point, epochs, len(self._epoch_variables(loop)))
        checkpoint.load_checkpoint(path, self.model, self.optimizer)
        for variable, value in zip(variables, point.model_weights(epochs) or []):
            variable.assign(value)
        # Kept for its checkpoints, even of a complete run re-saved when others resume.
        point.history.callback_progress = list(point.callback_progress)
        point.history.end_weights, point.history.resumed_after = point.resume_weights, \
            point.epoch
        return point

    def _saver(self, history: History, loop: str):
        """save(path, epochs, batches): a checkpoint of this fit (mid-epoch: with its logs)."""
        return lambda path, epochs, batches: self.save_checkpoint(
            path, history, epochs, None if not batches else (
                batches, [variable.numpy() for variable in self._epoch_variables(loop)]))

    def _epoch_variables(self, loop: str) -> list:
        """The variables that hold an epoch's logs so far (its loss and metrics)."""
        metrics = [v for metric in self.keras_model.metrics for v in metric.variables]
        return [*self._loss_tracker.variables, *metrics] if loop == "manual" else metrics

    def _run_manual(self, plan: ExecutionPlan, data: FitData, epochs: range,
                    callbacks: keras.callbacks.CallbackList, first_batch: int = 0) -> None:
        worker = getattr(data, "worker", None) is not None  # streamed, on a cluster
        chunks = None if data.chunks_per_step == 1 and not worker \
            else (data.chunks_per_step, data.num_examples)
        key = (tuple(self.recording.names), plan.mode, chunks)
        if key not in self._manual_loops:
            metrics = CompiledMetrics(self.keras_model)
            steps = manual_steps(self.model, self._variables, self.loss, self.optimizer, metrics,
                                 self.strategy if self.distributed else None, worker)
            self._manual_loops[key] = ManualLoop(
                steps, self.recording.record, self.recording.names, self._loss_tracker, metrics,
                plan.mode, state=[*model_variables(self.model), *self.optimizer.variables],
                chunks=chunks,
                finalize=lambda: self.optimizer.finalize_variable_values(self._variables))
        self.manual_loop = self._manual_loops[key]
        self.manual_loop.run(plan, self._for_replicas(data), epochs, callbacks, first_batch)

    def _for_replicas(self, data: FitData) -> FitData:
        """The data as the manual loop's steps take it: split over the replicas."""
        return data.distributed(self.strategy) if self.distributed else data

    def save_checkpoint(self, path: str | os.PathLike, history: History | None = None,
                        epoch: int | None = None, middle: tuple | None = None):
        """Save the model, the optimizer and the training position (`middle`: batches
        into the next epoch, and its logs' variables) to `path`, for `resume_from`.
        It is Keras's `.weights.h5` layout: `load_weights` reads it too."""
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
        state = training_state(history, epoch, resume, final, middle)
        return checkpoint.save_checkpoint(path, self.model, self.optimizer, state, values=values)

    def evaluate(self, x, y) -> float:
        """The loss of the model on (x, y), as one batch."""
        x, y = checked(self.model, x, y)
        return float(self.loss(y, self._predict_function(x)))

    def _predict_batch(self, x):
        return self.model(x)

    def predict(self, x) -> np.ndarray:
        """The model's predictions for x ([N] or [N, d], checked as fit checks it)."""
        x = check_x(x)
        if is_linear(self.model):
            check_features(x, self.model.features)
        return np.asarray(self._predict_function(x))
