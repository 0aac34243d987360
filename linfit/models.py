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

from linfit import checkpoint, compat, runtime
from linfit.errors import ModelError
from linfit.variables import module_variables, trainable_variables


def initial_values(features: int | None, init_w, init_b,
                   outputs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Starting w and b as float32 arrays, of the shapes `weight_shapes` gives.

    `init_w` is a number (every weight starts there), or a list: of d numbers
    (one per feature, the same for every output; for one output with
    `features=None` it sets `features = len(init_w)`), or with outputs, d
    lists of k numbers.
    `init_b` is a number, or with outputs a list of k numbers.
    """
    for name, value in (("features", features), ("outputs", outputs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ModelError(f"{name} must be None (the guide's scalar model) or a positive "
                             f"integer, got {value!r}")
    w = np.asarray(init_w, dtype=np.float32)
    if features is None and outputs is None and w.ndim >= 1:
        features = len(w)
    w_shape, b_shape = weight_shapes(features, outputs)
    return _filled(w, w_shape, "init_w"), _filled(np.asarray(init_b, np.float32), b_shape,
                                                    "init_b")


def weight_shapes(features: int | None, outputs: int | None) -> tuple[tuple, tuple]:
    """The shapes of w and b: w is [] for the guide's scalar model, [d] for d
    features, and [d, k] (d = 1 for a scalar x) for k outputs; b is [] or [k]."""
    if outputs is None:
        return (() if features is None else (features,)), ()
    return (features or 1, outputs), (outputs,)


def _filled(value: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    if value.ndim == 0:
        return np.full(shape, value, dtype=np.float32)
    if len(shape) == 2 and value.shape == shape[:1]:  # one per feature, for every output
        return np.repeat(value[:, None], shape[1], axis=1)
    if value.shape != shape and value.ndim == len(shape) == 1 and name == "init_w":
        raise ModelError(f"init_w has {len(value)} values but the model has {shape[0]} "
                         "features: give one value per feature, or a single number")
    if value.shape != shape:
        raise ModelError(f"{name} has shape {list(value.shape)} but the model's is "
                         f"{list(shape)}: give a single number, or one value per weight")
    return value


def affine(x, w, b):
    """x·W + b: x is [N] (w scalar, or [1, k]) or [N, d] (w of shape [d] or [d, k]);
    the result is [N], or [N, k] for a w of k outputs."""
    if len(w.shape) == 0:
        return x * w + b
    if len(w.shape) == 1:
        return tf.linalg.matvec(x, w) + b
    return tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w) + b


def start_devices_quietly() -> None:
    """Start TensorFlow's devices, where a model's first variable would, with their
    start-up lines hidden (`failed call to cuInit` on a machine without a GPU);
    not when the user chose TensorFlow's log level, or they have started."""
    if not runtime.LEVEL_CHOSEN and not compat.devices_started():
        with runtime.stderr_silenced():
            tf.config.list_logical_devices()


class LinearModule(tf.Module):
    """f(x) = x·W + b as a tf.Module: the guide's `MyModel`, with features and outputs.

    Args:
      features: None for the guide's scalar model (x of shape [N]), or d for
        x of shape [N, d] and w of shape [d].
      outputs: None for one output (y of shape [N]), or k for y of shape
        [N, k], w of shape [d, k] (d = 1 for a scalar x) and b of shape [k].
      init_w: the starting w: a number, or one value per weight.
      init_b: the starting b: a number, or one value per output.
    """

    def __init__(self, features: int | None = None, init_w: float | Sequence[float] = 5.0,
                 init_b: float = 0.0, outputs: int | None = None, **kwargs):
        super().__init__(**kwargs)
        start_devices_quietly()
        w, b = initial_values(features, init_w, init_b, outputs)
        self.features = None if w.ndim == 0 or (outputs and not features) else w.shape[0]
        self.outputs = outputs
        self.w = tf.Variable(w, name="w")
        self.b = tf.Variable(b, name="b")

    def __call__(self, x):
        # Keras casts a layer's inputs to its dtype; do the same, so both
        # variants accept Python numbers and float64 arrays alike.
        return affine(tf.cast(x, self.w.dtype), self.w, self.b)


@keras.saving.register_keras_serializable(package="linfit")
class LinearModel(keras.Model):
    """f(x) = x·W + b as a keras.Model: the guide's `MyModelKeras`, working.

    The variables are made with `add_weight` (w, then b), so Keras tracks,
    trains and saves them. Same arguments as `LinearModule`. Registered with
    Keras: a model saved whole (`model.save("m.keras")`) loads with
    `keras.saving.load_model` once linfit is imported.
    """

    def __init__(self, features: int | None = None, init_w: float | Sequence[float] = 5.0,
                 init_b: float = 0.0, outputs: int | None = None, **kwargs):
        super().__init__(**kwargs)
        start_devices_quietly()
        w, b = initial_values(features, init_w, init_b, outputs)
        self.features = None if w.ndim == 0 or (outputs and not features) else w.shape[0]
        self.outputs = outputs
        self.w = self.add_weight(shape=w.shape, initializer=keras.initializers.Constant(w),
                                 name="w")
        self.b = self.add_weight(shape=b.shape, initializer=keras.initializers.Constant(b),
                                 name="b")
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

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return _compute_metrics(self, x, y, y_pred, sample_weight)


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

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return _compute_metrics(self, x, y, y_pred, sample_weight)

    def get_config(self):
        # Keras asks for it to save the model whole (`.keras`); a tf.Module has no
        # config, and Keras's own error ("non-serializable argument values")
        # would not say what to do.
        raise _not_saved_whole(self.module)

    def get_weights(self):
        return [v.numpy() for v in module_variables(self.module)]

    def set_weights(self, weights):
        for variable, value in zip(module_variables(self.module), weights, strict=True):
            variable.assign(value)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        checkpoint.save_weights(self.module, filepath, overwrite=overwrite)

    def load_weights(self, filepath, **kwargs):
        checkpoint.load_weights(self.module, filepath)


def _compute_metrics(model: keras.Model, x, y, y_pred, sample_weight):
    """Keras's `compute_metrics`, but under several replicas the metrics one device
    would compute (`compat.update_metrics_of_replica`)."""
    if sample_weight is None and compat.update_metrics_of_replica(model, y, y_pred):
        return model.get_metrics_result()
    return keras.Model.compute_metrics(model, x, y, y_pred, sample_weight)


def check_saves_whole(model, callbacks: list) -> None:
    """Refuse, before training, a ModelCheckpoint that would save a tf.Module whole
    (Keras would fail at its first save, leaving a partial `.keras` file).

    Raises:
      ModelError: saying to save the weights instead.
    """
    if isinstance(model, keras.Model):
        return
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.ModelCheckpoint) and \
                not callback.save_weights_only:
            raise _not_saved_whole(model)


def _not_saved_whole(module) -> ModelError:
    return ModelError(
        f"a tf.Module ({type(module).__name__}) cannot be saved whole as a .keras "
        "file: save its weights instead (a .weights.h5 name, or ModelCheckpoint(..., "
        "save_weights_only=True)), or train a keras.Model such as linfit.LinearModel")


def is_linear(model) -> bool:
    """Whether `model` is one of linfit's linear models (with `features`, `outputs`)."""
    return isinstance(model, (LinearModule, LinearModel))


def as_keras_model(model) -> keras.Model:
    """The model itself if it is a keras.Model, else a KerasModuleAdapter for it."""
    return model if isinstance(model, keras.Model) else KerasModuleAdapter(model)


# The model variants, by the name configs and run labels use.
MODELS = {"module": LinearModule, "keras": LinearModel}
