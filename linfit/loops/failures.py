"""What a failed training step becomes, the same for both loops.

- A non-finite loss stops the step before its update (`linfit.losses.FiniteLoss`).
  Without the user's `TerminateOnNaN`, that is linfit's `DivergenceError`,
  saying where. With it, the fit ends as Keras's `fit` ends it: the batch's
  hooks see the non-finite loss, TerminateOnNaN stops training (or raises its
  RuntimeError), the epoch ends with its evaluation, and the History keeps
  that epoch; the update itself is still never applied.
- A worker lost under a multi-worker strategy is a `WorkerLostError`.
"""

import contextlib
from dataclasses import dataclass

import keras
import tensorflow as tf

from linfit.errors import ConfigError, WorkerLostError
from linfit.losses import (NonFiniteBatch, NonFiniteRecord, divergence_error,
                           is_non_finite_loss)
from linfit.streaming import is_data_error


def worker_lost(error: tf.errors.OpError) -> WorkerLostError:
    """The error of a collective that gave up on a silent worker of the cluster."""
    return WorkerLostError(
        "a worker of the cluster stopped responding "
        f"({type(error).__name__}), so training stopped: if it stopped at an error of "
        "its own (its output says), mend that; then start every worker again with "
        "--resume RUN_DIR (or resume_from=) to continue from the last checkpoint")


@contextlib.contextmanager
def lost_workers(strategy):
    """Under a multi-worker `strategy`, a worker lost before training (while the
    variables are made, which is collective) as a WorkerLostError too."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        raise worker_lost(error) from None


@dataclass
class NonFiniteStep:
    """Where a step's loss was not finite: epoch, batch (None: one of the epoch's)."""

    epoch: int
    batch: int | None


@contextlib.contextmanager
def training_errors(trainer, history, position, plan, shape: tuple[int, int, int],
                    on_non_finite=None, data_error=None):
    """TensorFlow's errors during training, as linfit's.

    Args:
      trainer: the Trainer (its optimizer's update count is made exact).
      position: a `BatchPosition` following the Keras loop (the manual loop
        says where it stopped itself).
      shape: the fit's (initial epoch, batches per epoch, the batch the initial
        epoch starts at).
      on_non_finite: NonFiniteStep -> None, to end the fit as Keras would
        (with the user's TerminateOnNaN); None raises DivergenceError.
      data_error: for streamed data, (the TensorFlow error) -> the DataError
        that names the row the stream could not use (its file, line and column),
        or says what else went wrong (`StreamData.data_error`).
    """
    initial_epoch, steps, first_batch = shape
    optimizer = trainer.optimizer
    start = int(optimizer.iterations.numpy())
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        if not trainer.distributed:
            raise
        raise worker_lost(error) from None
    except NonFiniteRecord as error:
        raise divergence_error(error.epochs_completed - 1, None, history,
                               error.values) from None
    except NonFiniteBatch as error:
        step = NonFiniteStep(error.epoch, error.batch)
    except Exception as error:
        if data_error is not None and is_data_error(error):
            raise data_error(error) from None
        if not is_non_finite_loss(error):
            raise
        # Keras's fit. Compiled, an update's iteration count can be applied
        # without the update itself: count on it only eagerly.
        step = NonFiniteStep(position.epoch,
                             position.batch if plan.steps_per_execution == 1 else None)
        if plan.mode == "eager":
            step.batch = int(optimizer.iterations.numpy()) - start - \
                (step.epoch - initial_epoch) * steps + first_batch
    else:
        return
    if step.batch is not None:  # the optimizer counts the updates applied, no more
        optimizer.iterations.assign(start + (step.epoch - initial_epoch) * steps + step.batch
                                    - first_batch)
    if on_non_finite is not None:
        on_non_finite(step)
        return
    if step.batch == 0 and int(optimizer.iterations.numpy()) == 0:
        raise divergence_error(0, 0, history, at_start=True) from None
    raise divergence_error(step.epoch, step.batch, history, batch_known=False) from None


def terminate_on_nan(callbacks: list) -> bool:
    """Whether the user asked for Keras's ending of a non-finite loss."""
    return any(isinstance(callback, keras.callbacks.TerminateOnNaN) for callback in callbacks)


def check_ends_as_keras(data) -> None:
    """Refuse Keras's ending (TerminateOnNaN) where the batch cannot be read again
    whole: a worker's share of streamed data."""
    if getattr(data, "worker", None) is not None:
        raise ConfigError("TerminateOnNaN does not run on streamed data on several workers: "
                          "leave it out (linfit stops a diverging run itself, keeping every "
                          "finite epoch), or set data.streaming = false")


def end_as_keras(callbacks: keras.callbacks.CallbackList, step: NonFiniteStep, loss: float,
                 metrics: dict, evaluate) -> None:
    """The rest of Keras's `fit` after a batch whose loss is `loss` (not finite).

    Args:
      callbacks: every callback of the fit (a CallbackList on the model).
      metrics: the compiled metrics' results so far.
      evaluate: () -> the validation logs (`val_...`) when the epoch validates, else {}.

    TerminateOnNaN(raise_error=True) raises its RuntimeError from the batch's
    hook, as in `fit`, and no other hook runs.
    """
    logs = {"loss": loss, **metrics}
    callbacks.on_train_batch_end(step.batch or 0, dict(logs))
    logs.update(evaluate())
    callbacks.on_epoch_end(step.epoch, logs)
    callbacks.on_train_end(logs)


def batch_loss(loss_fn, model, batches, batch: int) -> float:
    """The unchecked loss of batch `batch` of an epoch's `batches` (its value for the logs)."""
    for index, (x, y) in enumerate(batches):
        if index == batch:
            return float(loss_fn(y, model(x)))
    return float("nan")
