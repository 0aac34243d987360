"""The guide's linear model f(x) = x·W + b, as a tf.Module and as a keras.Model.

Both variants take the same constructor, compute the same function and hold
the same two variables, `w` then `b`, so their checkpoints are
interchangeable. With no arguments each is a drop-in for the guide's
`MyModel` / `MyModelKeras`: scalar w = 5.0, b = 0.0.

Under Keras 3 a plain `tf.Variable` on a keras.Model is not tracked (the
guide's `MyModelKeras` trains nothing), so `LinearModel` makes its
variables with `add_weight`. `KerasModuleAdapter` lets Keras's `fit` and
callbacks drive a tf.Module.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from linfit import checkpoint, compat
from linfit.errors import ModelError
from linfit.variables import module_variables, trainable_variables


def initial_values(features: int | None, init_w: float | Sequence[float],
                   init_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Starting w and b as float32 arrays: w is [] when features is None, else [d].

    A list `init_w` with `features=None` sets `features = len(init_w)`.
    """
    if features is not None and (isinstance(features, bool) or not isinstance(features, int)
                                 or features < 1):
        raise ModelError(f"features must be None (the scalar model) or a positive integer, "
                         f"got {features!r}")
    w = np.asarray(init_w, dtype=np.float32)
    if w.ndim > 1:
        raise ModelError(f"init_w must be a number or a list of numbers, got shape {w.shape}")
    if w.ndim == 1:
        if features is None:
            features = len(w)
        if len(w) != features:
            raise ModelError(f"init_w has {len(w)} values but the model has {features} "
                             "features: give one value per feature, or a single number")
    elif features is not None:
        w = np.full([features], w, dtype=np.float32)
    return w, np.asarray(init_b, dtype=np.float32)


def affine(x, w, b):
    """x·W + b: x is [N] (scalar w) or [N, d] (w of shape [d]); the result is [N]."""
    if len(w.shape) == 0:
        return x * w + b
    return tf.linalg.matvec(x, w) + b


class LinearModule(tf.Module):
    """f(x) = x·W + b as a tf.Module: the guide's `MyModel`, with features.

    Args:
      features: None for the guide's scalar model (x of shape [N]), or d for
        x of shape [N, d] and w of shape [d].
      init_w: the starting w: a number, or a list of d numbers.
      init_b: the starting b.
    """

    def __init__(self, features: int | None = None, init_w: float | Sequence[float] = 5.0,
                 init_b: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        w, b = initial_values(features, init_w, init_b)
        self.features = None if w.ndim == 0 else len(w)
        self.w = tf.Variable(w, name="w")
        self.b = tf.Variable(b, name="b")

    def __call__(self, x):
        # Keras casts a layer's inputs to its dtype; do the same, so both
        # variants accept Python numbers and float64 arrays alike.
        return affine(tf.cast(x, self.w.dtype), self.w, self.b)


class LinearModel(keras.Model):
    """f(x) = x·W + b as a keras.Model: the guide's `MyModelKeras`, working.

    The variables are made with `add_weight` (w, then b), so Keras tracks,
    trains and saves them. Same arguments as `LinearModule`.
    """

    def __init__(self, features: int | None = None, init_w: float | Sequence[float] = 5.0,
                 init_b: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        w, b = initial_values(features, init_w, init_b)
        self.features = None if w.ndim == 0 else len(w)
        self.w = self.add_weight(shape=w.shape, initializer=keras.initializers.Constant(w),
                                 name="w")
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(b), name="b")
        # Built now, so save_weights/load_weights work before the first call,
        # as they do on the guide's class.
        self.built = True

    def __call__(self, x, *args, **kwargs):
        # Keras takes tensors and arrays as inputs but not Python numbers;
        # the guide calls its model with `3.0`.
        if isinstance(x, (int, float, list, tuple)):
            x = np.asarray(x, dtype=self.compute_dtype)
        return super().__call__(x, *args, **kwargs)

    def call(self, x):
        return affine(x, self.w, self.b)


class KerasModuleAdapter(keras.Model):
    """A tf.Module seen as a keras.Model, for `fit` and for Keras callbacks.

    Keras does not see the module's tf.Variables, so this adapter's
    `train_step` takes the gradient with respect to them itself; otherwise it
    is Keras's own step (same loss, same loss tracker, same optimizer call).
    Its `save_weights`/`load_weights` go through `linfit.checkpoint`.
    """

    def __init__(self, module: tf.Module, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self.built = True

    def call(self, x):
        return self.module(x)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = trainable_variables(self.module)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
            # What Keras's train_step does with its (private) loss tracker.
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(compat.tracked_loss(loss), sample_weight=tf.shape(x)[0])
            loss = self.optimizer.scale_loss(loss)  # for a LossScaleOptimizer, as Keras
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_weights(self):
        return [v.numpy() for v in module_variables(self.module)]

    def set_weights(self, weights):
        for variable, value in zip(module_variables(self.module), weights, strict=True):
            variable.assign(value)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        checkpoint.save_weights(self.module, filepath, overwrite=overwrite)

    def load_weights(self, filepath, **kwargs):
        checkpoint.load_weights(self.module, filepath)


def as_keras_model(model) -> keras.Model:
    """The model itself if it is a keras.Model, else a KerasModuleAdapter for it."""
    return model if isinstance(model, keras.Model) else KerasModuleAdapter(model)


# The model variants, by the name configs and run labels use.
MODELS = {"module": LinearModule, "keras": LinearModel}
