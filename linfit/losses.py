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
from linfit.errors import ConfigError

# The message of the check that stops training on a non-finite loss.
NON_FINITE_LOSS = "linfit: non-finite loss"


class NonFiniteRecord(FloatingPointError):
    """A recorded loss is not finite (found after an update, where no check inside
    the graph ran: under XLA, which drops tf.debugging.check_numerics)."""


def is_non_finite_loss(error: BaseException) -> bool:
    """Whether `error` is linfit's finite-loss guard stopping training."""
    return isinstance(error, NonFiniteRecord) or (
        isinstance(error, tf.errors.InvalidArgumentError) and NON_FINITE_LOSS in str(error))


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
            if len(y_true.shape) == 1:  # keep a loss that averages the last axis per example
                y_true, y_pred = y_true[:, None], tf.reshape(y_pred, [-1, 1])
            loss = replica_share(self.wrapped.call(y_true, y_pred), context)
        else:
            loss = self.wrapped(y_true, y_pred, sample_weight)
        return tf.debugging.check_numerics(loss, NON_FINITE_LOSS)

    def get_config(self):
        return {"loss": keras.losses.serialize(self.wrapped)}


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


def optimizer_object(identifier, learning_rate) -> keras.optimizers.Optimizer:
    """A Keras optimizer: the object itself, or one made from a name and a learning rate."""
    if isinstance(identifier, keras.optimizers.Optimizer):
        return identifier
    check_value("train.learning_rate", learning_rate, label="learning_rate")
    try:
        return keras.optimizers.get({"class_name": identifier,
                                     "config": {"learning_rate": learning_rate}})
    except (ValueError, TypeError):
        raise ConfigError(f"unknown optimizer {identifier!r}: use a Keras optimizer name such "
                          "as 'sgd' or 'adam', or a keras.optimizers.Optimizer") from None

