"""Checkpoints in Keras's own `.weights.h5` layout, for either model variant.

A file from `keras.Model.save_weights` of a `LinearModel` loads into a
`LinearModule`, and back. A training checkpoint adds the optimizer's state
(Keras's `optimizer/vars` layout) and linfit's training state (a JSON root
attribute Keras ignores), so a run can be resumed exactly.

Loading checks the whole file first (see `linfit.weights_file`), so it either
fully succeeds or leaves the model (and optimizer) untouched. Saving goes
through `linfit.fileio.atomic_write`, so no reader ever sees a half-written
checkpoint under its final name.
"""

import io
import json
import math
import os
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np

from linfit import weights_file as wf
from linfit.errors import CheckpointError, LinfitError, ModelError
from linfit.fileio import atomic_write

SUFFIX = wf.SUFFIX
# The version of the training state written with a checkpoint; a newer one is refused.
STATE_FORMAT = 1


def save_weights(model, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the model's variables to `path` (a `.weights.h5` file), atomically.

    Returns:
      The path written.
    """
    return save_checkpoint(path, model, overwrite=overwrite)


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, state: dict | None = None,
                    overwrite: bool = True, values: list[np.ndarray] | None = None) -> Path:
    """Write the model's variables, and optionally the optimizer's and a
    training state (JSON-serialisable), to `path`, atomically.

    Args:
      values: what to write for the model's variables, if not their values
        (a standardised run writes its weights in the data's units).
    """
    path = wf.checked_path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists: pass overwrite=True or choose another path")
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {path}: directory {path.parent} does not exist")
    optimizer_arrays = None if optimizer is None else [
        np.asarray(v.numpy()) for v in optimizer.variables]
    state_text = None if state is None else _state_text(state, path)

    def add_training_state(f: h5py.File) -> None:
        if optimizer_arrays is not None and wf.OPTIMIZER not in f:
            wf.write_group(f.create_group(wf.OPTIMIZER).create_group(wf.VARS), optimizer.name,
                           optimizer_arrays)
        if state_text is not None:
            f.create_dataset(wf.STATE, data=np.frombuffer(state_text.encode(), np.uint8))

    if _has_sublayers(model):
        if not model.built:
            raise ModelError(f"{type(model).__name__} is not built, so it has no weights to "
                             "save yet: fit it (or call it on data, or build it) first")

        def write(temporary: Path) -> None:
            import keras  # Keras's own layout for a model of layers

            with wf.writing():
                keras.Model.save_weights(model, temporary)
                with h5py.File(temporary, "a") as f:
                    add_training_state(f)
            wf.seal(temporary)
    else:
        arrays = values if values is not None else [
            np.asarray(v.numpy()) for v in _variables(model)]
        if not arrays:  # the file the guide's untracked Keras model writes: refused on load
            raise ModelError(f"{type(model).__name__} has no variables to save: give a model "
                             "(a tf.Module or keras.Model) with its weights")
        name = getattr(model, "name", None) or type(model).__name__

        def write(temporary: Path) -> None:
            # Made in memory, then written as bytes: a full disk or a file-size limit is
            # an OSError of that write, never an HDF5 file that failed to close (h5py
            # failed again as it was freed, and the process crashed at exit).
            with io.BytesIO() as image:
                with h5py.File(image, "w") as f:
                    wf.write_group(f.create_group(wf.VARS), name, arrays)
                    add_training_state(f)
                temporary.write_bytes(image.getvalue())
            wf.seal(temporary)

    return atomic_write(path, write, suffix=".tmp" + SUFFIX)


def load_weights(model, path: str | os.PathLike) -> None:
    """Load a `.weights.h5` file into the model, all or nothing.

    The optimizer state and training state in the file, if any, are ignored.

    Raises:
      CheckpointError: for a wrong suffix, a missing, unreadable or hostile
        file, or variables that do not fit the model (missing, extra, wrong
        shape or dtype). The model is unchanged when it raises.
    """
    load_checkpoint(path, model)


def load_checkpoint(path: str | os.PathLike, model, optimizer=None) -> dict | None:
    """Load the model's (and the optimizer's) variables from a checkpoint, all or nothing.

    Returns:
      The training state saved with it, or None.

    Raises:
      CheckpointError: as `load_weights`, and for optimizer state that is
        missing or does not fit `optimizer`. Nothing is changed when it raises.
    """
    path = wf.checked_path(path)
    if _has_sublayers(model):
        return _load_layered(path, model, optimizer)
    variables = _variables(model)
    with wf.reading(path) as f:
        wf.check_members(path, f)
        found = wf.datasets(path, f, wf.VARS)
        wf.check_fit(path, found, variables, type(model).__name__)
        optimizer_found = wf.optimizer_datasets(path, f, optimizer)
        state = _checked_state(path, f) if optimizer is not None else None
        arrays = wf.read(path, found)
        optimizer_arrays = wf.read(path, optimizer_found)
    _assign(variables, arrays)
    _assign(optimizer.variables if optimizer else [], optimizer_arrays)
    return state


def read_line(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """w ([], [d] or [d, k]) and b ([], or [k]) of the linear model a `.weights.h5`
    file holds, for a file whose model is not known yet. Counts, shapes and
    dtypes are checked before anything is read (w has at most
    `weights_file.MAX_FEATURES` values).

    Raises:
      CheckpointError: for a file that is not the checkpoint of f(x) = x·W + b.
    """
    path = wf.checked_path(path)
    with wf.reading(path) as f:
        wf.check_members(path, f)
        found = wf.datasets(path, f, wf.VARS)
        shapes = [dataset.shape for dataset in found]
        if not _line_shapes(shapes):
            raise CheckpointError(
                f"{path} is not a checkpoint of f(x) = x·W + b: expected variables w ([], "
                f"[d] or [d, k], at most {wf.MAX_FEATURES} values) then b ([], or [k]), found "
                f"shapes {', '.join(str(list(shape)) for shape in shapes) or 'none'}")
        wf.check_weights(path, found)
        w, b = wf.read(path, found)
    return w, b


def _line_shapes(shapes: list[tuple]) -> bool:
    """Whether (w, b) shapes are those of a linear model (see `read_line`)."""
    if len(shapes) != 2 or not all(n >= 1 for n in shapes[0]) or \
            math.prod(shapes[0]) > wf.MAX_FEATURES:
        return False
    w, b = shapes
    return (len(w) <= 1 and b == ()) or (len(w) == 2 and b == w[1:])


def read_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The arrays under `vars/` of a `.weights.h5` file, in index order.

    For a file whose model is not known yet; each array is capped at
    `weights_file.MAX_ELEMENTS` elements.
    """
    path = wf.checked_path(path)
    with wf.reading(path) as f:
        wf.check_members(path, f)
        found = wf.datasets(path, f, wf.VARS)
        wf.check_weights(path, found)
        return wf.read(path, found)


def verify(path: str | os.PathLike) -> dict | None:
    """Read a linear model's checkpoint whole, without a model: every array of the
    model and the optimizer, and the training state, all checked.

    Returns:
      The training state, or None.

    Raises:
      CheckpointError: for anything unreadable, damaged, or not finite.
    """
    path = wf.checked_path(path)
    w, b = read_line(path)
    with wf.reading(path) as f:
        wf.check_all_links(path, f)
        optimizer = wf.datasets(path, f[wf.OPTIMIZER], wf.VARS) if wf.OPTIMIZER in f else []
        wf.check_weights(path, optimizer, integers=True)
        if any(dataset.size > max(w.size, 1) for dataset in optimizer):
            raise CheckpointError(f"{path}: its optimizer state is larger than its model")
        arrays = [w, b, *wf.read(path, optimizer)]
        state = _checked_state(path, f)
    if not all(np.isfinite(array).all() for array in arrays):
        raise CheckpointError(f"{path} holds values that are not finite: the file is damaged")
    return state


def read_state(path: str | os.PathLike) -> dict | None:
    """The training state stored in a checkpoint, or None for a weights-only file."""
    path = wf.checked_path(path)
    with wf.reading(path) as f:
        return _checked_state(path, f)


def checkpoint_name(epochs_completed: int, batches: int = 0) -> str:
    """The name of a periodic checkpoint after `epochs_completed` epochs and, in the
    middle of the next one, `batches` of its batches."""
    middle = f"-batch-{batches:06d}" if batches else ""
    return f"epoch-{epochs_completed:04d}{middle}{SUFFIX}"


def list_checkpoints(directory: Path) -> list[Path]:
    """The periodic checkpoints in `directory`, oldest first (temporary files excluded)."""
    pattern = re.compile(r"epoch-(\d+)(?:-batch-(\d+))?\.weights\.h5")
    found = [((int(m.group(1)), int(m.group(2) or 0)), path)
             for path in Path(directory).glob("epoch-*.weights.h5")
             if (m := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def position(state: dict) -> tuple[int, int]:
    """How far a checkpoint's run had trained: (epochs, batches of the next epoch)."""
    batch = state.get("batch", 0)
    return state["epoch"], batch if isinstance(batch, int) else 0


def newest_whole(paths: list[Path], run: str) -> tuple[Path, dict] | None:
    """(path, training state) of the checkpoint among `paths` furthest on (epochs,
    then batches of the next) that reads whole, or None when none exists; damaged
    ones are passed over.

    Raises:
      CheckpointError: when checkpoints of `run` exist but none reads whole (naming
        the newest and what is wrong with it): a run is never started over unasked.
    """
    best, refused = None, None
    for path in paths:
        try:
            state = verify(path) if path.exists() else None
        except LinfitError as error:
            refused = error  # damaged or half-written: an older one will do
            continue
        if isinstance(state, dict) and isinstance(state.get("epoch"), int) and \
                isinstance(state.get("history"), dict) and \
                (best is None or position(state) >= position(best[1])):
            best = (path, state)
    if best is None and refused is not None:
        raise CheckpointError(f"{run}: none of its checkpoints reads whole, so it cannot go on "
                              f"from one ({refused}): restore one from a copy, or start a new "
                              "run")
    return best


def _state_text(state: dict, path: Path) -> str:
    # Sorted keys: the same state is the same bytes, whatever built it.
    # A metric may be NaN (a user's, on a batch it cannot score): JSON's NaN reads back.
    text = json.dumps({"format": STATE_FORMAT, **state}, sort_keys=True)
    if len(text.encode()) > wf.MAX_STATE_BYTES:  # a checkpoint linfit could not read back
        raise CheckpointError(
            f"cannot write {path}: its training state, most of it the run's history, is "
            f"more than the {wf.MAX_STATE_BYTES // 2**20} MiB a checkpoint holds: train "
            "fewer epochs in one run (a new run can start from its weights: model.init_w, "
            "model.init_b)")
    return text


def _checked_state(path: Path, f: h5py.File) -> dict | None:
    state = wf.read_state(path, f)
    if state is not None and not (isinstance(state.get("format", STATE_FORMAT), int)
                                  and state.get("format", STATE_FORMAT) <= STATE_FORMAT):
        raise CheckpointError(f"{path} was written by a newer linfit (training state format "
                              f"{state.get('format')!r}; this one reads {STATE_FORMAT}): "
                              "upgrade linfit to resume from it")
    return state


def _load_layered(path: Path, model, optimizer) -> dict | None:
    """Load a keras.Model made of layers: check the file against the layout Keras
    writes for this model, then let Keras load it (restoring everything if it fails)."""
    with wf.reading(path) as f:
        wf.check_all_links(path, f)
        found = wf.layout(f)
        optimizer_found = wf.optimizer_datasets(path, f, optimizer)
        state = _checked_state(path, f)
        optimizer_arrays = wf.read(path, optimizer_found)
    expected = _expected_layout(model)
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: missing {missing or 'nothing'}, "
            f"unexpected {extra or 'nothing'}, other shape or dtype {wrong or 'nothing'}")
    variables = _variables(model)
    saved = [v.numpy() for v in variables]
    try:
        own_optimizer = getattr(model, "optimizer", None)  # loaded below, if at all
        model.load_weights(path, objects_to_skip=[own_optimizer] if own_optimizer else None)
    except Exception as error:
        _assign(variables, saved)
        raise CheckpointError(f"{path} could not be loaded: {error}") from None
    _assign(optimizer.variables if optimizer else [], optimizer_arrays)
    return state


def _expected_layout(model) -> dict[str, tuple]:
    """The layout Keras writes for this model, found by having it write one."""
    import keras

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("model" + SUFFIX)
        keras.Model.save_weights(model, path)
        with h5py.File(path, "r") as f:
            return wf.layout(f)


def _has_sublayers(model) -> bool:
    import keras

    return isinstance(model, keras.Model) and bool(model.layers)


def _variables(model) -> list:
    # Imported here: reading a file (read_weights, read_state) needs no TensorFlow.
    from linfit.variables import model_variables

    return model_variables(model)


def _assign(variables, arrays: list[np.ndarray]) -> None:
    for variable, array in zip(variables, arrays):
        variable.assign(array)
