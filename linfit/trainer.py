"""Trainer: one front that trains either model with either loop.

    trainer = Trainer(LinearModule(), learning_rate=0.1)
    history = trainer.fit(x, y, epochs=10, loop="manual")   # or loop="keras"

Both loops use the same loss object, the same optimizer object and the same
recording callbacks, so their History has the same keys with the same
meaning (see `History`).
"""

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras.src.losses.losses import LossFunctionWrapper

from linfit import checkpoint
from linfit import data as data_lib
from linfit.callbacks import NonFiniteRecord, PeriodicCheckpoint, TrajectoryRecorder
from linfit.compare import weight_names
from linfit.config import LOOPS
from linfit.errors import CheckpointError, ConfigError, DivergenceError, WorkerLostError
from linfit.loops import keras_fit, manual
from linfit.models import as_keras_model, check_trainable, model_variables, trainable_variables

TRAINING_LOOPS = tuple(loop for loop in LOOPS if loop != "both")
CHECKPOINT_FORMAT = 1
# With steps_per_call = 0, the manual loop fuses epochs up to about this many steps a call.
FUSED_STEPS = 1024
# With compile = "auto", runs of at most this many steps run eagerly: tracing costs more.
EAGER_STEPS = 32
# The message of the check that stops training on a non-finite loss.
NON_FINITE_LOSS = manual.NON_FINITE_LOSS


@dataclass
class History:
    """What one `fit` recorded, identical in meaning for both loops.

    Attributes:
      logs: Keras's per-epoch logs, one value per epoch trained: `loss` (the
        mean over the epoch's batches of the loss computed before each
        update, weighted by batch size, as Keras defines it) and `full_loss`.
      trajectory: on the whole training set, before training and after each
        epoch (E + 1 rows): `full_loss`, and `w`, `b` where the model has them.
    """

    logs: dict[str, list[float]]
    trajectory: dict[str, list] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.logs.get("loss", []))

    @property
    def loss(self) -> list[float]:
        return self.logs.get("loss", [])

    @property
    def full_loss(self) -> list[float]:
        return self.trajectory["full_loss"]

    @property
    def w(self) -> list[np.ndarray]:
        return self.trajectory["w"]

    @property
    def b(self) -> list[float]:
        return self.trajectory["b"]

    def columns(self) -> dict[str, np.ndarray]:
        """Everything recorded, one row per epoch from 0 (before training) to E.

        Keys: `loss` (NaN in row 0: nothing was trained yet), `full_loss`,
        `val_loss` where there was validation data, then `w` (or `w_0`, `w_1`,
        ... for several weights) and `b` where recorded.
        """
        columns = {"loss": np.array([np.nan, *self.loss], dtype=np.float64),
                   "full_loss": np.array(self.full_loss, dtype=np.float64)}
        if "val_loss" in self.trajectory:
            columns["val_loss"] = np.array(self.trajectory["val_loss"], dtype=np.float64)
        if "w" in self.trajectory:
            w = np.array(self.w, dtype=np.float64).reshape(len(self.w), -1)
            columns.update(zip(weight_names(w.shape[1]), w.T))
            columns["b"] = np.array(self.b, dtype=np.float64)
        return columns

    def to_json(self) -> dict:
        """Plain lists and floats, exact: `History.from_json` gives it back bit for bit."""
        trajectory = {name: [np.asarray(v).tolist() for v in values]
                      for name, values in self.trajectory.items()}
        return {"logs": {name: [float(v) for v in values] for name, values in self.logs.items()},
                "trajectory": trajectory}

    @classmethod
    def from_json(cls, data: dict) -> "History":
        trajectory = {name: list(values) for name, values in data["trajectory"].items()}
        if "w" in trajectory:
            trajectory["w"] = [np.asarray(w, dtype=np.float32) for w in trajectory["w"]]
        return cls(logs={name: list(values) for name, values in data["logs"].items()},
                   trajectory=trajectory)

    def report_lines(self) -> list[str]:
        """The guide's printout: "Starting:", then "Epoch  0:" ... with W, b and loss."""
        lines = []
        for row, full_loss in enumerate(self.full_loss):
            lines.append("Starting:" if row == 0 else f"Epoch {row - 1:2d}:")
            if "w" in self.trajectory:
                lines.append("    " + format_state(self.w[row], self.b[row], full_loss))
            else:
                lines.append(f"    loss={full_loss:2.5f}")
        return lines


def format_state(w, b: float, loss: float) -> str:
    """As the guide prints it: `W = 4.47, b = 0.39, loss=6.29030`.

    A vector w prints as `W = [0.52, -1.20, 1.98]`.
    """
    w = np.asarray(w)
    w_text = f"{float(w):1.2f}" if w.ndim == 0 else "[" + ", ".join(f"{v:1.2f}" for v in w) + "]"
    return f"W = {w_text}, b = {b:1.2f}, loss={loss:2.5f}"


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
        default): eager for a run of at most EAGER_STEPS steps, where tracing
        would cost more than it saves, else "function". The modes give
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

    Raises:
      ModelError: for a model that would train nothing (see
        `linfit.models.check_trainable`).
      ConfigError: for an unknown loss or optimizer, or a bad learning rate.
    """

    def __init__(self, model, *, loss="mse", optimizer="sgd", learning_rate: float = 0.1,
                 compile: str = "auto", steps_per_call: int = 0, strategy=None):
        if compile not in manual.COMPILE_MODES:
            raise ConfigError(f"compile={compile!r}: use one of {manual.COMPILE_MODES}")
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or \
                steps_per_call < 0:
            raise ConfigError(f"steps_per_call={steps_per_call!r}: use 0 (automatic) or a "
                              "number of batches")
        self.compile = compile
        self.steps_per_call = steps_per_call
        check_trainable(model)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = strategy is not None and self.strategy.num_replicas_in_sync > 1
        if self.distributed:
            _check_created_in_scope(model, self.strategy)
        self.model = model
        self.loss = FiniteLoss(_loss_object(loss))
        with self.strategy.scope():  # Keras ties a model's and an optimizer's strategy to it
            self.keras_model = as_keras_model(model)
            self.optimizer = _optimizer_object(optimizer, learning_rate)
        self._variables = None
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._train_functions = {}
        self.train_functions = None  # those of the last manual fit
        self._last_run = None
        # reduce_retracing: one trace serves the training and validation sets alike.
        self._loss_function = tf.function(lambda x, y: self.loss(y, self.model(x)),
                                          reduce_retracing=True)
        self._predict_function = tf.function(lambda x: self.model(x), reduce_retracing=True)
        if not isinstance(model, keras.Model) or model.built:
            self._build()

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
        with self.strategy.scope():
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
          x: inputs, [N] for the scalar model or [N, d].
          y: targets, [N].
          epochs: the epoch to train up to (as in Keras), at least 1.
          loop: "manual" (GradientTape) or "keras" (compile + fit).
          batch_size: None for one full batch, as in the guide.
          shuffle_seed: None keeps the data's order; a seed reshuffles the
            batches each epoch, reproducibly and identically in both loops.
          validation_data: (x_val, y_val) for `val_loss`, or None.
          callbacks: Keras callbacks, run by either loop.
          verbose: Keras's verbosity: 0 silent, 1 progress bar, 2 a line per epoch.
          initial_epoch: the epoch to start at (as in Keras): the data order
            and epoch numbers continue from there.
          resume_from: a training checkpoint (see `save_checkpoint`) to
            continue from: the model, the optimizer state, the epoch and the
            history so far are restored, and the result is bitwise what an
            uninterrupted run gives.
          checkpoint_dir: where to save a training checkpoint every
            `checkpoint_every` epochs, keeping the newest `keep_checkpoints`
            (0: all).
          on_epoch_end: called with the History so far, before training and
            after each epoch (e.g. to write it out as training goes).

        Returns:
          History with `loss` per epoch, and `full_loss` (`val_loss` with
          validation data), `w`, `b` per epoch plus the starting row.

        Raises:
          DivergenceError: when a loss is not finite; that update is not
            applied, so the model keeps its last finite weights.
        """
        _check_fit_arguments(epochs, loop, batch_size)
        features = getattr(self.model, "features", ...)
        x, y = data_lib.check_inputs(x, y, features)
        self._build(x)
        run = {"batch_size": batch_size, "shuffle_seed": shuffle_seed, "num_examples": len(y)}
        prior = None
        self._last_run = run
        if resume_from is not None:
            prior, initial_epoch = self._resume(resume_from, run)
        if initial_epoch >= epochs:
            return prior or History(logs={"loss": []})
        # In TensorFlow once (shared with NumPy where it can be), never per epoch.
        x, y = data_lib.to_variable(x), data_lib.to_variable(y)
        mode = self._mode(epochs * data_lib.steps_per_epoch(run["num_examples"], batch_size))
        data = (x, y)
        losses = {"full_loss": lambda: self._loss_function(x, y)}
        if validation_data is not None:
            x_val, y_val = map(data_lib.to_variable, data_lib.check_inputs(*validation_data,
                                                                           features))
            data = (x, y, x_val, y_val)
            losses["val_loss"] = lambda: self._loss_function(x_val, y_val)
        in_graph = self._record_losses(len(data) > 2)
        losses_now = {name: (lambda f=f: f(data)) for name, f in in_graph.items()}
        def dataset():
            return data_lib.make_dataset(x, y, batch_size, epochs, shuffle_seed, initial_epoch)

        steps = data_lib.steps_per_epoch(run["num_examples"], batch_size)
        recorder = TrajectoryRecorder(losses_now if mode == "eager" else losses, self.model,
                                      record_start=prior is None)
        history = keras.callbacks.History()

        def so_far() -> History:
            return _joined(prior, History(logs=dict(history.history),
                                          trajectory=recorder.trajectory))

        # The recorder goes first so the callbacks after it see its losses;
        # the checkpoint goes after History, so it saves the epoch just done.
        callback_list = [recorder, *(callbacks or []), history]
        if checkpoint_dir is not None:
            callback_list.append(PeriodicCheckpoint(
                lambda path, epoch: self.save_checkpoint(path, so_far(), epoch, run),
                checkpoint_dir, checkpoint_every, keep_checkpoints))
        if on_epoch_end is not None:
            callback_list.append(keras.callbacks.LambdaCallback(
                on_train_begin=lambda logs: on_epoch_end(so_far()),
                on_epoch_end=lambda epoch, logs: on_epoch_end(so_far())))
        start_iteration = int(self.optimizer.iterations.numpy())
        try:
            if loop == "manual":
                fused = self._epochs_per_call(mode, steps, bool(callbacks), checkpoint_every
                                              if checkpoint_dir is not None else 0)
                self._fit_manual(dataset, initial_epoch, epochs, steps, callback_list, verbose,
                                 fused, recorder, data, in_graph, mode,
                                 full_batch=steps == 1 and shuffle_seed is None)
            else:
                keras_fit.run_fit(self.keras_model, dataset(), initial_epoch, epochs, steps,
                                  callback_list, self.loss, self.optimizer, verbose,
                                  strategy=self.strategy,
                                  # Whole epochs per execution, unless callbacks of
                                  # yours want to see every batch.
                                  # (and one step under a strategy: Keras's multi-step
                                  # loop fails on distributed batches).
                                  steps_per_execution=1 if self.distributed else (
                                      self.steps_per_call or (1 if callbacks else steps)),
                                  jit_compile=mode == "xla", run_eagerly=mode == "eager")
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
            if not self.distributed:
                raise
            raise WorkerLostError(
                "a worker of the cluster stopped responding "
                f"({type(error).__name__}), so training stopped: start every worker again "
                "with --resume RUN_DIR (or resume_from=) to continue from the last "
                "checkpoint") from None
        except (tf.errors.InvalidArgumentError, NonFiniteRecord) as error:
            if isinstance(error, tf.errors.InvalidArgumentError) and \
                    NON_FINITE_LOSS not in str(error):
                raise
            done = int(self.optimizer.iterations.numpy()) - start_iteration
            raise _divergence(initial_epoch + done // steps, done % steps, so_far()) from None
        return so_far()

    def save_checkpoint(self, path: str | os.PathLike, history: History | None = None,
                        epoch: int | None = None, run: dict | None = None):
        """Save the model, the optimizer state and the training position to `path`.

        `fit(..., resume_from=path)` continues from it. The file is Keras's
        `.weights.h5` layout, so it also loads with `load_weights`.
        """
        state = {"format": CHECKPOINT_FORMAT, **(run or self._last_run or {})}
        if history is not None:
            state["epoch"] = history.epochs if epoch is None else epoch
            state["history"] = history.to_json()
        return checkpoint.save_checkpoint(path, self.model, self.optimizer, state)

    def _resume(self, path, run: dict) -> tuple[History, int]:
        state = checkpoint.load_checkpoint(path, self.model, self.optimizer)
        if not state or "epoch" not in state or "history" not in state:
            raise CheckpointError(f"{path} is a weights-only checkpoint: it has no training "
                                  "position to resume from")
        for key, value in run.items():
            if state.get(key) != value:
                raise ConfigError(
                    f"{path} was written by a run with {key}={state.get(key)!r}, not "
                    f"{value!r}: resume with the same data and settings, or start afresh")
        return History.from_json(state["history"]), int(state["epoch"])

    def evaluate(self, x, y) -> float:
        """The loss of the model on (x, y), as one batch."""
        x, y = data_lib.check_inputs(x, y, getattr(self.model, "features", ...))
        return float(self._loss_function(x, y))

    def predict(self, x) -> np.ndarray:
        """The model's predictions for x, as a float32 array [N]."""
        x = np.asarray(x, dtype=np.float32)
        data_lib.check_features(x, getattr(self.model, "features", ...))
        return np.asarray(self._predict_function(x))

    def _mode(self, total_steps: int) -> str:
        """The compile mode of a run of `total_steps` steps (counted from epoch 0,
        so a resumed run runs as the whole run would have)."""
        if self.distributed:  # strategy.run wants a tf.function
            return "function"
        if self.compile != "auto":
            return self.compile
        return "eager" if total_steps <= EAGER_STEPS else "function"

    def _epochs_per_call(self, mode: str, steps: int, user_callbacks: bool,
                         checkpoint_every: int) -> int:
        """How many epochs the manual loop runs per call (0: step by step)."""
        if mode == "eager" or self.distributed:
            return 0
        if self.steps_per_call:
            return self.steps_per_call // steps if self.steps_per_call >= steps else 0
        if user_callbacks:  # they may stop training or read the model mid-run
            return 0
        # Checkpoints are written between calls, at their epochs.
        return checkpoint_every or max(1, FUSED_STEPS // steps)

    def _record_losses(self, validation: bool) -> dict:
        """name -> f(data): the losses the History records, from the data variables."""
        losses = {"full_loss": lambda data: self.loss(data[1], self.model(data[0]))}
        if validation:
            losses["val_loss"] = lambda data: self.loss(data[3], self.model(data[2]))
        return losses

    def _fit_manual(self, dataset, initial_epoch, epochs, steps, callbacks, verbose, fused,
                    recorder, data, losses, mode, full_batch):
        has_line = "w" in recorder.trajectory
        names = (*losses, *(("w", "b") if has_line else ()))
        if (names, mode) not in self._train_functions:
            def record(data):
                values = {name: loss(data) for name, loss in losses.items()}
                if has_line:
                    values.update(w=tf.identity(self.model.w), b=tf.identity(self.model.b))
                return values

            if self.distributed:
                step = manual.make_distributed_step(self.model, self._variables, self.loss,
                                                    self.optimizer, self.strategy)
            else:
                step = manual.make_train_step(self.model, self._variables, self.loss,
                                              self.optimizer)
            self._train_functions[names, mode] = manual.TrainFunctions(
                step, self._loss_tracker, record, list(names), mode,
                distributed=self.distributed)
        self.train_functions = self._train_functions[names, mode]
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=False, add_progbar=verbose != 0, model=self.keras_model,
            verbose=verbose, epochs=epochs, steps=steps)
        if self.distributed:
            def dataset(make=dataset):
                return self.strategy.experimental_distribute_dataset(make())
        manual.run_epochs(self.train_functions, self._loss_tracker, dataset,
                          range(initial_epoch, epochs), steps, callback_list, self.keras_model,
                          steps_per_call=self.steps_per_call or 1, fused_epochs=fused,
                          recorder=recorder, data=data, full_batch=full_batch)


def _check_created_in_scope(model, strategy) -> None:
    # A Keras variable keeps its tf.Variable (here a MirroredVariable) as `.value`.
    variables = [v.value if isinstance(v, keras.Variable) else v for v in model_variables(model)]
    if not all(strategy.extended.variable_created_in_scope(v) for v in variables):
        raise ConfigError(f"{type(model).__name__} was not created in the strategy's scope: "
                          "create it inside `with strategy.scope():` and pass the same "
                          "strategy to the Trainer")


def _joined(first: History | None, second: History) -> History:
    """`second` continued from `first` (a resumed run's history)."""
    if first is None:
        return second
    logs = {name: [*first.logs.get(name, []), *second.logs.get(name, [])]
            for name in {*first.logs, *second.logs}}
    trajectory = {name: [*first.trajectory.get(name, []), *values]
                  for name, values in second.trajectory.items()}
    return History(logs=logs, trajectory=trajectory or first.trajectory)


def _divergence(epoch: int, batch: int, history: History) -> DivergenceError:
    losses = ", ".join(f"{v:.4g}" for v in history.trajectory.get("full_loss", []))
    return DivergenceError(
        f"training diverged at epoch {epoch}, batch {batch}: the loss is not finite, so that "
        f"update was not applied. full_loss per epoch so far: [{losses}]. Lower the learning "
        "rate (or standardise the data)", epoch, batch, history)


class FiniteLoss(keras.losses.Loss):
    """A Keras loss that stops training when its value is not finite.

    The check is part of the loss's value, so the gradient, and the update
    that follows it, depend on it: a non-finite loss raises before the
    update is applied, in either loop.
    """

    def __init__(self, loss: keras.losses.Loss):
        super().__init__(name=loss.name, reduction=loss.reduction, dtype=loss.dtype)
        self.wrapped = loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        context = tf.distribute.get_replica_context()
        if sample_weight is None and context is not None and context.num_replicas_in_sync > 1:
            loss = self._global_mean_share(y_true, y_pred, context)
        else:
            loss = self.wrapped(y_true, y_pred, sample_weight)
        return tf.debugging.check_numerics(loss, NON_FINITE_LOSS)

    def _global_mean_share(self, y_true, y_pred, context):
        """In a replica of Keras's fit: a loss whose gradient is this replica's share
        of the global mean's gradient, and whose value is this replica's own mean
        divided by the number of replicas.

        Keras's fit sums the replicas' gradients, and keeps its `loss` log as
        each replica's value times the number of replicas, averaged weighted
        by the replica's batch size. With these two, both are one device's,
        even when shards differ in size (a batch that does not split evenly);
        Keras's own reduction, each replica's mean over the number of
        replicas, is not.
        """
        if len(y_true.shape) == 1:  # keep a loss that averages the last axis per example
            y_true, y_pred = y_true[:, None], tf.reshape(y_pred, [-1, 1])
        losses = self.wrapped.call(y_true, y_pred)
        local_size = tf.cast(tf.shape(losses)[0], losses.dtype)
        global_size = context.all_reduce("SUM", local_size)
        share = tf.reduce_sum(losses) / global_size
        value = tf.math.divide_no_nan(tf.reduce_sum(losses), local_size) / \
            context.num_replicas_in_sync
        # The value of `value`, the gradient of `share`.
        return share + tf.stop_gradient(value - share)

    def get_config(self):
        return {"loss": keras.losses.serialize(self.wrapped)}


def _check_fit_arguments(epochs, loop, batch_size) -> None:
    if loop not in TRAINING_LOOPS:
        raise ConfigError(f"loop={loop!r} is not a training loop: use one of {TRAINING_LOOPS}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r}: it must be an integer >= 1")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ConfigError(f"batch_size={batch_size!r}: use None for one full batch, "
                          "or a positive integer")


def _loss_object(identifier) -> keras.losses.Loss:
    """A Keras Loss object for a name, function or Loss.

    A loss function is wrapped the way `compile` wraps it, so the manual
    loop reduces it exactly as `fit` does.
    """
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError):
        loss = None
    if loss is None:
        raise ConfigError(f"unknown loss {identifier!r}: use a Keras loss name such as 'mse', "
                          "or a keras.losses.Loss")
    if isinstance(loss, keras.losses.Loss):
        return loss
    return LossFunctionWrapper(loss, name=getattr(loss, "__name__", "loss"))


def _optimizer_object(identifier, learning_rate) -> keras.optimizers.Optimizer:
    if isinstance(identifier, keras.optimizers.Optimizer):
        return identifier
    if (isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
            or not learning_rate > 0 or not math.isfinite(learning_rate)):
        raise ConfigError(f"learning_rate={learning_rate!r}: it must be a finite number > 0")
    try:
        return keras.optimizers.get({"class_name": identifier,
                                     "config": {"learning_rate": learning_rate}})
    except (ValueError, TypeError):
        raise ConfigError(f"unknown optimizer {identifier!r}: use a Keras optimizer name such "
                          "as 'sgd' or 'adam', or a keras.optimizers.Optimizer") from None
