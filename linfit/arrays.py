"""The arrays the Python API is given (`Trainer.fit`, `evaluate`, `predict`): as float32
arrays TensorFlow can share, checked for type, shape and finiteness, each mistake one
DataError. NumPy only.
"""

import numpy as np

from linfit.data_files import TF_ALIGNMENT, aligned_empty
from linfit.errors import ConfigError, DataError


def float32_array(values, name: str = "x") -> np.ndarray:
    """`values` (an array, a tf.Tensor, a list) as a float32 array TensorFlow can share.

    The array itself when it already is one (float32, C-contiguous, aligned
    for TensorFlow, writeable: DLPack exports no read-only buffer); otherwise
    one aligned copy. A read-only, non-contiguous or float64 array is thus
    copied exactly once, never twice.

    Raises:
      DataError: for values that are not real numbers, or that float32 cannot hold.
    """
    if hasattr(values, "element_spec"):  # a tf.data.Dataset
        raise DataError(f"{name} is a tf.data.Dataset: give arrays (or tensors, or lists), "
                        "or files to stream (linfit.streams.open_data_files)")
    try:
        array = np.asarray(values)  # a view where NumPy can make one (tensors, arrays)
    except ValueError as error:  # ragged lists
        raise DataError(f"{name} must be a table of numbers, every row as long: {error}"
                        ) from None
    if array.dtype.kind not in "biuf":  # not text, objects, complex, dates or durations
        raise DataError(f"{name} must be real numbers, got an array of {array.dtype}")
    if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable \
            and array.ctypes.data % TF_ALIGNMENT == 0:
        return array
    copy = aligned_empty(array.shape)
    with np.errstate(over="ignore"):  # named just below
        np.copyto(copy, array, casting="unsafe")
    if array.dtype.itemsize > 4 and array.dtype.kind == "f" and \
            not np.isfinite(copy).all():
        overflow = np.isfinite(array) & ~np.isfinite(copy)
        if overflow.any():
            row = int(np.argwhere(overflow)[0][0])
            raise DataError(f"{name} in row {row}: {array[overflow].flat[0]:g} overflows "
                            "float32 (largest 3.4e+38): rescale it")
    return copy


def check_inputs(x, y) -> tuple[np.ndarray, np.ndarray]:
    """x ([N] or [N, d]) and y ([N], or [N, k] for k outputs) as float32 arrays,
    checked for shape and finiteness.

    Raises:
      DataError: what is wrong with the inputs.
    """
    x, y = check_x(x), float32_array(y, "y")
    if y.ndim not in (1, 2):
        raise DataError(f"y must have shape [N] (one target per example) or [N, k] (k "
                        f"outputs), got shape {list(y.shape)}")
    if x.ndim not in (1, 2) or len(x) != len(y):
        raise DataError(f"x must have shape [N] or [N, d] with N = len(y) = {len(y)}, "
                        f"got shape {list(x.shape)}")
    if len(y) == 0:
        raise DataError("no training examples: x and y are empty")
    _check_finite("y", y)
    return x, y


def check_x(x) -> np.ndarray:
    """x ([N] or [N, d]) as a float32 array, checked for shape and finiteness.

    Raises:
      DataError: what is wrong with it.
    """
    x = float32_array(x, "x")
    if x.ndim not in (1, 2):
        raise DataError(f"x must have shape [N] or [N, d], got shape {list(x.shape)}")
    _check_finite("x", x)
    return x


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise DataError(f"{name} has a non-finite value in row {row}: remove or fix it")


def check_features(x: np.ndarray, features: int | None) -> None:
    """Raise DataError unless x has the shape a model with `features` takes."""
    if features is None and x.ndim != 1:
        raise DataError(f"the model is scalar (features=None) and takes x of shape [N], "
                        f"got {list(x.shape)}: build it with features={x.shape[1]}")
    if features is not None and (x.ndim != 2 or x.shape[1] != features):
        raise DataError(f"the model takes {features} features (x of shape [N, {features}]), "
                        f"got x of shape {list(x.shape)}")


def check_outputs(y: np.ndarray, outputs: int | None) -> None:
    """Raise DataError unless y has the shape a linear model with `outputs` gives."""
    if outputs is None and y.ndim != 1:
        raise DataError(f"the model has one output and takes y of shape [N], got "
                        f"{list(y.shape)}: build it with outputs={y.shape[1]}")
    if outputs is not None and (y.ndim != 2 or y.shape[1] != outputs):
        raise DataError(f"the model has {outputs} outputs (y of shape [N, {outputs}]), "
                        f"got y of shape {list(y.shape)}")


def check_validation(validation_data, check=check_inputs) -> tuple[np.ndarray, np.ndarray]:
    """`validation_data`'s (x_val, y_val), checked by `check(x, y)` as training data is,
    its mistakes named as the validation data's.

    Raises:
      ConfigError: for anything but a pair (sample weights are not taken).
      DataError: what is wrong with the arrays.
    """
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        given = (f"{len(validation_data)} items (sample weights are not taken)"
                 if isinstance(validation_data, (tuple, list)) else type(validation_data).__name__)
        raise ConfigError(f"validation_data must be (x_val, y_val), got {given}")
    try:
        return check(*validation_data)
    except DataError as error:
        raise DataError(f"validation_data: {error}") from None
