"""The loss both loops minimise, the guard that stops on a non-finite one, and the
resolution of loss and optimizer names.

Both loops use the same `FiniteLoss` object, so "the loss" means one thing:
Keras's reduction of the user's loss, checked for finiteness as part of its
value (so the update that follows depends on the check and never runs on a
non-finite loss). Under tf.distribute, each replica's loss is made its share
of the global mean by `replica_share`, the one definition both loops use.
"""

import keras
import tensorflow as tf

from linfit import compat
from linfit.config import check_value
from linfit.errors import ConfigError, DivergenceError, ModelError
from linfit.history import History

# The message of the check that stops training on a non-finite loss.
NON_FINITE_LOSS = "linfit: non-finite loss"


class NonFiniteRecord(FloatingPointError):
    """A loss recorded on a whole data set is not finite.

    Attributes:
      epochs_completed: when it was recorded (0: before training).
      values: the values recorded then.
    """

    def __init__(self, epochs_completed: int, values: dict):
        super().__init__(f"a recorded loss is not finite after {epochs_completed} epochs: "
                         f"{values}")
        self.epochs_completed = epochs_completed
        self.values = values


class NonFiniteBatch(FloatingPointError):
    """A batch's loss is not finite: the guard stopped before its update.

    Attributes:
      epoch, batch: where (0-based); batch is None when the batch is not known
        (a call of several batches, compiled, where TensorFlow does not say).
    """

    def __init__(self, epoch: int, batch: int | None):
        super().__init__(f"the loss of batch {batch} of epoch {epoch} is not finite")
        self.epoch = epoch
        self.batch = batch


def is_non_finite_loss(error: BaseException) -> bool:
    """Whether `error` is linfit's finite-loss guard stopping training."""
    return isinstance(error, NonFiniteRecord) or (
        isinstance(error, tf.errors.InvalidArgumentError) and NON_FINITE_LOSS in str(error))


class ReplicaLoss(keras.losses.Loss):
    """A Keras loss whose value under tf.distribute is this replica's share of the
    global mean (`replica_share`), as linfit's steps take it; else the loss itself."""

    def __init__(self, loss: keras.losses.Loss):
        super().__init__(name=loss.name, reduction=loss.reduction, dtype=loss.dtype)
        self.wrapped = loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        context = tf.distribute.get_replica_context()
        if sample_weight is None and context is not None and context.num_replicas_in_sync > 1:
            return replica_share(self.per_example(y_true, y_pred), context)
        return self.wrapped(y_true, y_pred, sample_weight)

    def per_example(self, y_true, y_pred):
        """The wrapped loss of each example, unreduced."""
        if len(y_true.shape) == 1:  # keep a loss that averages the last axis per example
            y_true, y_pred = y_true[:, None], tf.reshape(y_pred, [-1, 1])
        return self.wrapped.call(y_true, y_pred)

    def get_config(self):
        return {"loss": keras.losses.serialize(self.wrapped)}


class FiniteLoss(ReplicaLoss):
    """A Keras loss that stops training when its value is not finite.

    The check is part of the loss's value, so the gradient, and the update
    that follows it, depend on it: a non-finite loss raises before the
    update is applied, in either loop.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        return tf.debugging.check_numerics(super().__call__(y_true, y_pred, sample_weight),
                                           NON_FINITE_LOSS)


def replica_share(per_example_losses, context):
    """In one replica: a loss whose gradient is this replica's share of the global
    mean's gradient, and whose value is this replica's own mean divided by the
    number of replicas.

    The optimizer sums the replicas' gradients, so together they are one
    device's gradient of the global mean, even when the shards differ in size
    (a batch that does not split evenly). The value is what Keras's `loss`
    tracker expects (`compat.tracked_loss` takes it back to the replica's
    mean), so the `loss` log is one device's too.
    """
    local_size = tf.cast(tf.shape(per_example_losses)[0], per_example_losses.dtype)
    global_size = context.all_reduce("SUM", local_size)
    share = tf.reduce_sum(per_example_losses) / global_size
    value = tf.math.divide_no_nan(tf.reduce_sum(per_example_losses), local_size) / \
        context.num_replicas_in_sync
    # The value of `value`, the gradient of `share`.
    return share + tf.stop_gradient(value - share)


def loss_object(identifier) -> keras.losses.Loss:
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
    return compat.loss_from_function(loss, name=getattr(loss, "__name__", "loss"))


def checked_metrics(metrics) -> list:
    """The metrics as `compile` takes them, each known to Keras.

    Raises:
      ConfigError: for a name Keras does not know.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    for metric in metrics:
        try:
            known = keras.metrics.get(metric) is not None
        except (ValueError, TypeError):
            known = False
        if not known:
            raise ConfigError(f"unknown metric {metric!r}: use a Keras metric name such as "
                              "'mae' or 'mse', or a keras.metrics.Metric")
    return metrics


def build_compiled(keras_model: keras.Model, x, y) -> None:
    """Build the model's compiled loss and metrics for the shapes of (x, y), as `fit`
    builds them (`compat.symbolic_build`).

    Raises:
      ModelError: for a metric (or a Keras model) that cannot take them, e.g.
        R2Score, which takes 2-D targets only, with one output.
    """
    try:
        compat.symbolic_build(keras_model, x, y)
    except ValueError as error:
        raise ModelError(f"the model, its loss or its metrics cannot take this data (x of "
                         f"shape {tuple(x.shape)}, y of {tuple(y.shape)}): {error}") from None


def optimizer_object(identifier, learning_rate) -> keras.optimizers.Optimizer:
    """A Keras optimizer: the object itself, or one made from a name and a learning rate."""
    if isinstance(identifier, keras.optimizers.Optimizer):
        return identifier
    check_value("train.learning_rate", learning_rate, label="learning_rate")
    if not isinstance(identifier, str):  # None, a number, an optimizer's class
        raise ConfigError(f"optimizer={identifier!r}: use a Keras optimizer name such as "
                          "'sgd' or 'adam', or a keras.optimizers.Optimizer (an instance)")
    try:
        return keras.optimizers.get({"class_name": identifier,
                                     "config": {"learning_rate": learning_rate}})
    except (ValueError, TypeError):
        raise ConfigError(f"unknown optimizer {identifier!r}: use a Keras optimizer name such "
                          "as 'sgd' or 'adam', or a keras.optimizers.Optimizer") from None


def optimizer_settings(optimizer: keras.optimizers.Optimizer) -> dict:
    """The optimizer's class and plain settings (learning rate, momentum, ...), as JSON."""
    return {"class": type(optimizer).__name__, **{
        key: value for key, value in optimizer.get_config().items()
        if key != "name" and isinstance(value, (bool, int, float, str, type(None)))}}


def divergence_error(epoch: int, batch: int | None, history: History,
                     recorded: dict | None = None, batch_known: bool = True,
                     at_start: bool = False) -> DivergenceError:
    """The error for a non-finite loss: of batch `batch` of epoch `epoch` (that
    update was not applied; `batch` None and not `batch_known`: a batch of that
    epoch; `at_start`: the first batch, before any update), or with `batch`
    None, of the whole training set after epoch `epoch` (-1: before
    training), whose values were `recorded`."""
    losses = _some(history.trajectory.get("full_loss", []))
    advice = "Lower the learning rate (or standardise the data)"
    if at_start:
        return DivergenceError(
            "training cannot start: the loss of the first batch is already not finite at the "
            "starting weights, before any update (none was applied). Check the data and the "
            "starting weights (model.init_w, model.init_b), or standardise the data",
            epoch, batch, history)
    if batch is not None:
        where = (f"training diverged at epoch {epoch}, batch {batch}: that batch's loss is not "
                 "finite, so its update was not applied")
    elif not batch_known:
        where = (f"training diverged at epoch {epoch}: the loss of one of its batches is not "
                 "finite, so that update was not applied")
    elif epoch < 0:
        return DivergenceError(
            f"training cannot start: before any update the loss on the training data is not "
            f"finite ({_values(recorded)}). Check the data and the starting weights "
            "(model.init_w, model.init_b), or standardise the data", None, None, history)
    else:
        where = (f"training diverged at epoch {epoch}: after it the loss on the whole training "
                 f"set is not finite ({_values(recorded)}), so training stopped there")
    return DivergenceError(f"{where}. full_loss per epoch so far: [{losses}]. {advice}",
                           epoch, batch, history)


def _some(values: list, ends: int = 5) -> str:
    """The first and last `ends` values, with how many are left out between."""
    shown = [f"{v:.4g}" for v in values]
    if len(shown) > 2 * ends + 1:
        shown = [*shown[:ends], f"... {len(shown) - 2 * ends} more ...", *shown[-ends:]]
    return ", ".join(shown)


def _values(recorded: dict | None) -> str:
    return ", ".join(f"{name} = {value:g}" for name, value in (recorded or {}).items())
