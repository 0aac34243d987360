"""Checkpoints in Keras's own `.weights.h5` layout, for either model variant.

Keras 3 writes a model's own variables as datasets `vars/0`, `vars/1`, ...
(in `add_weight` order) of a group `vars`, and an optimizer's under
`optimizer/vars`. linfit reads and writes that layout with h5py, so a file
from `keras.Model.save_weights` of a `LinearModel` loads into a
`LinearModule`, and back. Loading checks the whole file against the model
before it assigns anything, so it either fully succeeds or leaves the model
untouched. Saving writes a temporary file next to the target and renames it
over the target, so no reader ever sees a half-written checkpoint.
"""

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from linfit.errors import CheckpointError

SUFFIX = ".weights.h5"
VARS = "vars"
# Groups a weights file may hold besides the model's own variables.
IGNORED_GROUPS = ("optimizer",)


def save_weights(model, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the model's variables to `path` (a `.weights.h5` file), atomically.

    Returns:
      The path written.
    """
    path = _checked_path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists: pass overwrite=True or choose another path")
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {path}: directory {path.parent} does not exist")
    arrays = [np.asarray(v.numpy()) for v in _checkpoint_variables(model)]
    name = getattr(model, "name", None) or type(model).__name__
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        os.fchmod(descriptor, 0o644)  # mkstemp makes it private; a checkpoint is not
        with os.fdopen(descriptor, "wb") as raw:
            with h5py.File(raw, "w") as f:
                group = f.create_group(VARS)
                group.attrs["name"] = name
                for index, array in enumerate(arrays):
                    group.create_dataset(str(index), data=array)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load_weights(model, path: str | os.PathLike) -> None:
    """Load a `.weights.h5` file into the model, all or nothing.

    Raises:
      CheckpointError: for a wrong suffix, a missing or unreadable file, or
        variables that do not fit the model (missing, extra, wrong shape or
        dtype). The model is unchanged when it raises.
    """
    path = _checked_path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    variables = _checkpoint_variables(model)
    arrays = read_weights(path)
    _check_fit(path, arrays, variables, type(model).__name__)
    for variable, array in zip(variables, arrays):
        variable.assign(array)


def read_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The arrays under `vars/` of a `.weights.h5` file, in index order."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise CheckpointError(f"{path} is not a readable HDF5 file: is it a .weights.h5 "
                              "checkpoint, and was it completely written?") from None
    with f:
        unexpected = [key for key in f.keys() if key not in (VARS, *IGNORED_GROUPS)]
        if unexpected:
            raise CheckpointError(
                f"{path} holds {', '.join(unexpected)} besides '{VARS}': it is the checkpoint "
                "of a model with sublayers, not of a model with variables of its own like "
                "LinearModel or LinearModule")
        group = f.get(VARS)
        if not isinstance(group, h5py.Group):
            raise CheckpointError(f"{path} has no '{VARS}' group: it is not a Keras "
                                  ".weights.h5 file of a model with variables")
        names = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if names != [str(i) for i in range(len(names))]:
            raise CheckpointError(f"{path}: '{VARS}' holds {names}, expected datasets "
                                  "named 0, 1, ... as Keras writes them")
        arrays = []
        for name in names:
            dataset = group[name]
            if not isinstance(dataset, h5py.Dataset):
                raise CheckpointError(f"{path}: '{VARS}/{name}' is not a dataset")
            arrays.append(np.asarray(dataset[()]))
        return arrays


def _check_fit(path, arrays, variables, model_name) -> None:
    if not arrays:
        raise CheckpointError(
            f"{path} holds no variables (an empty '{VARS}' group, as written by a keras.Model "
            "whose tf.Variables Keras does not track, such as the guide's MyModelKeras): "
            f"it cannot restore {model_name}'s {len(variables)} variables")
    if len(arrays) != len(variables):
        raise CheckpointError(f"{path} holds {len(arrays)} variables but {model_name} has "
                              f"{len(variables)}: it is the checkpoint of another model")
    for index, (array, variable) in enumerate(zip(arrays, variables)):
        shape, dtype = tuple(variable.shape), np.dtype(_dtype_name(variable))
        if array.shape != shape:
            raise CheckpointError(
                f"{path}: variable {index} ({_short_name(variable)}) has shape "
                f"{list(array.shape)} in the file but {list(shape)} in {model_name}: "
                "was it saved from a model with another number of features?")
        if array.dtype != dtype:
            raise CheckpointError(f"{path}: variable {index} ({_short_name(variable)}) is "
                                  f"{array.dtype} in the file but {dtype} in {model_name}")


def _checkpoint_variables(model) -> list:
    # Imported here: reading a file (read_weights) needs no TensorFlow.
    import keras

    from linfit.models import model_variables

    if isinstance(model, keras.Model) and model.layers:
        raise CheckpointError(
            f"{type(model).__name__} has sublayers; linfit checkpoints hold models whose "
            "variables are their own (LinearModel, LinearModule): use model.save_weights")
    return model_variables(model)


def _checked_path(path) -> Path:
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CheckpointError(f"checkpoint path {path} must end with {SUFFIX!r} "
                              "(Keras's weights format), e.g. model.weights.h5")
    return path


def _dtype_name(variable) -> str:
    dtype = variable.dtype
    return getattr(dtype, "name", dtype)


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _fsync_directory(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
