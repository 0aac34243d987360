"""A model's variables, for either kind of model, and the check that it can train.

A `tf.Module` and a `keras.Model` list their variables differently; these
functions give both in checkpoint order (creation order, which is Keras's
`add_weight` order and so its `.weights.h5` layout).
"""

import keras
import tensorflow as tf

from linfit.errors import ConfigError, ModelError


def module_variables(module: tf.Module) -> list[tf.Variable]:
    """A tf.Module's variables in the order its code created them.

    `tf.Module.variables` sorts by attribute name (b before w); creation
    order matches Keras's `add_weight` order, and so Keras's checkpoint layout.
    """
    found: dict[int, tf.Variable] = {}

    def visit(value):
        if isinstance(value, tf.Variable):
            found.setdefault(id(value), value)
        elif isinstance(value, tf.Module):
            for attribute in vars(value).values():
                visit(attribute)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(module)
    return list(found.values())


def model_variables(model) -> list:
    """All variables of either kind of model, in checkpoint order."""
    return list(model.weights) if isinstance(model, keras.Model) else module_variables(model)


def trainable_variables(model) -> list:
    """The variables training updates, in checkpoint order."""
    if isinstance(model, keras.Model):
        return list(model.trainable_weights)
    return [v for v in module_variables(model) if v.trainable]


def _holds_tf_variables(value) -> bool:
    """A tf.Variable, or a list, tuple or dict of some (Keras tracks neither)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return any(isinstance(item, tf.Variable) for item in value)
    return isinstance(value, tf.Variable)


def check_trainable(model, built: bool = False) -> None:
    """Refuse a model that would silently train nothing.

    A keras.Model that is not built yet has no weights to check: only its
    untracked tf.Variables are, unless `built` says it has been built.

    Raises:
      ModelError: for a keras.Model holding plain tf.Variables that Keras
        does not track (the guide's `MyModelKeras` under Keras 3), for a
        model with no trainable variables, and for anything that is neither
        a tf.Module nor a keras.Model.
    """
    name = type(model).__name__
    if isinstance(model, keras.Model):
        untracked = [attr for attr, value in vars(model).items()  # not TF's own bookkeeping
                     if not attr.startswith("_self_") and _holds_tf_variables(value)]
        if untracked:
            raise ModelError(
                f"{name} keeps {', '.join(untracked)} as plain tf.Variable attributes, which "
                "Keras 3 does not track: fit() would train nothing and save_weights() would "
                "write no variables. Create them with self.add_weight(...) in __init__, "
                "as linfit.LinearModel does.")
        if (built or model.built) and not model.trainable_weights:
            raise ModelError(
                f"{name} has no trainable weights, so training would change nothing: create "
                "its variables with self.add_weight(...) (or build its layers) before training.")
    elif isinstance(model, tf.Module):
        if not trainable_variables(model):
            raise ModelError(f"{name} has no trainable tf.Variable, so training would change "
                             "nothing: give it variables, e.g. self.w = tf.Variable(5.0).")
    else:
        raise ModelError(f"cannot train a {name}: expected a tf.Module (such as "
                         "linfit.LinearModule) or a keras.Model (such as linfit.LinearModel)")


def check_created_in_scope(model, strategy) -> None:
    """Raise ConfigError unless every variable of `model` belongs to `strategy`."""
    # A Keras variable keeps its tf.Variable (here a MirroredVariable) as `.value`.
    variables = [v.value if isinstance(v, keras.Variable) else v for v in model_variables(model)]
    if not all(strategy.extended.variable_created_in_scope(v) for v in variables):
        raise ConfigError(f"{type(model).__name__} was not created in the strategy's scope: "
                          "create it inside `with strategy.scope():` and pass the same "
                          "strategy to the Trainer")
