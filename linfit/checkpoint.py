"""Checkpoints in Keras's own `.weights.h5` layout, for either model variant.

Keras 3 writes a model's own variables as datasets `vars/0`, `vars/1`, ...
(in `add_weight` order) of a group `vars`, and an optimizer's under
`optimizer/vars`. linfit reads and writes that layout with h5py, so a file
from `keras.Model.save_weights` of a `LinearModel` loads into a
`LinearModule`, and back. A training checkpoint adds the optimizer's state
and linfit's training position (a JSON root attribute Keras ignores), so a
run can be resumed exactly.

Files are untrusted input: before anything is read, every member must be a
plain dataset inside the file (no soft or external links, no external or
virtual storage) with the shape and dtype the model expects, so a hostile
file can neither reach outside itself nor make linfit allocate without
bound. Loading checks the whole file first, so it either fully succeeds or
leaves the model (and optimizer) untouched. Saving writes a temporary file
next to the target, fsyncs it and renames it over the target, so no reader
ever sees a half-written checkpoint under its final name.
"""

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from linfit.errors import CheckpointError

SUFFIX = ".weights.h5"
VARS = "vars"
OPTIMIZER = "optimizer"
STATE_ATTRIBUTE = "linfit_state"
# Caps on what an untrusted file can make linfit read.
MAX_STATE_BYTES = 16 * 2**20
MAX_ELEMENTS = 2**28
# For the kill test only (scripts/kill_test.py): seconds to wait between
# writing the temporary file and renaming it, so that a kill can land there.
WRITE_DELAY_VARIABLE = "LINFIT_CHECKPOINT_WRITE_DELAY"


def save_weights(model, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the model's variables to `path` (a `.weights.h5` file), atomically.

    Returns:
      The path written.
    """
    return save_checkpoint(path, model, overwrite=overwrite)


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, state: dict | None = None,
                    overwrite: bool = True) -> Path:
    """Write the model's variables, and optionally the optimizer's and a
    training state (JSON-serialisable), to `path`, atomically."""
    path = _checked_path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists: pass overwrite=True or choose another path")
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {path}: directory {path.parent} does not exist")
    optimizer_arrays = None
    if optimizer is not None:
        optimizer_arrays = [np.asarray(v.numpy()) for v in optimizer.variables]
    state_text = None if state is None else json.dumps(state, allow_nan=False)

    def add_training_state(f: h5py.File) -> None:
        if optimizer_arrays is not None and OPTIMIZER not in f:
            _write_group(f.create_group(OPTIMIZER).create_group(VARS), optimizer.name,
                         optimizer_arrays)
        if state_text is not None:
            f.attrs[STATE_ATTRIBUTE] = state_text

    if _has_sublayers(model):
        def write(temporary: Path) -> None:
            # Keras's own layout for a model of layers (and its compiled optimizer).
            import keras

            keras.Model.save_weights(model, temporary)
            with h5py.File(temporary, "a") as f:
                add_training_state(f)
    else:
        arrays = [np.asarray(v.numpy()) for v in _checkpoint_variables(model)]
        name = getattr(model, "name", None) or type(model).__name__

        def write(temporary: Path) -> None:
            with h5py.File(temporary, "w") as f:
                _write_group(f.create_group(VARS), name, arrays)
                add_training_state(f)

    write_atomically(path, write)
    return path


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
    path = _checked_path(path)
    if _has_sublayers(model):
        return _load_layered(path, model, optimizer)
    variables = _checkpoint_variables(model)
    with _open(path) as f:
        _check_members(path, f)
        datasets = _datasets(path, f, VARS)
        _check_fit(path, datasets, variables, type(model).__name__)
        optimizer_datasets = _optimizer_datasets(path, f, optimizer)
        state = _read_state(path, f)
        arrays = _read(path, datasets)
        optimizer_arrays = _read(path, optimizer_datasets)
    for variable, array in zip(variables, arrays):
        variable.assign(array)
    _assign_optimizer(optimizer, optimizer_arrays)
    return state


def read_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The arrays under `vars/` of a `.weights.h5` file, in index order.

    For a file whose model is not known yet; each array is capped at
    MAX_ELEMENTS elements.
    """
    path = _checked_path(path)
    with _open(path) as f:
        _check_members(path, f)
        datasets = _datasets(path, f, VARS)
        for index, dataset in enumerate(datasets):
            if dataset.size > MAX_ELEMENTS or not np.issubdtype(dataset.dtype, np.floating):
                raise CheckpointError(f"{path}: '{VARS}/{index}' is {dataset.dtype} of shape "
                                      f"{list(dataset.shape)}: not a weight linfit can load")
        return _read(path, datasets)


def read_state(path: str | os.PathLike) -> dict | None:
    """The training state stored in a checkpoint, or None for a weights-only file."""
    path = _checked_path(path)
    with _open(path) as f:
        return _read_state(path, f)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Have `write` write a temporary file beside `path`; fsync it, rename it over `path`.

    The temporary name starts with "." and ends with ".tmp.weights.h5" (the
    suffix Keras's saver insists on), so no listing of checkpoints shows it.
    """
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + SUFFIX,
                                        dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a checkpoint is not
        write(temporary)
        with temporary.open("rb+") as raw:
            os.fsync(raw.fileno())
        delay = float(os.environ.get(WRITE_DELAY_VARIABLE, "0") or 0)
        if delay:
            time.sleep(delay)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace a text file atomically: a kill leaves the old file or the new one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _write_group(group: h5py.Group, name: str, arrays: list[np.ndarray]) -> None:
    group.attrs["name"] = name
    for index, array in enumerate(arrays):
        group.create_dataset(str(index), data=array)


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CheckpointError(f"{path} is not a readable HDF5 file: is it a .weights.h5 "
                              "checkpoint, and was it completely written?") from None


def _check_members(path: Path, f: h5py.File) -> None:
    unexpected = [key for key in f.keys() if key not in (VARS, OPTIMIZER)]
    if unexpected:
        raise CheckpointError(
            f"{path} holds {', '.join(unexpected)} besides '{VARS}': it is the checkpoint of a "
            "model with sublayers, not of a model with variables of its own like LinearModel "
            "or LinearModule")


def _datasets(path: Path, parent: h5py.Group, name: str) -> list[h5py.Dataset]:
    """The datasets `name/0`, `name/1`, ... of `parent`, checked to be plain and local."""
    where = f"{parent.name.strip('/')}/{name}".strip("/")
    group = _member(path, parent, name, h5py.Group, where)
    if group is None:
        raise CheckpointError(f"{path} has no '{where}' group: it is not a Keras .weights.h5 "
                              "file of a model with variables")
    names = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if names != [str(i) for i in range(len(names))]:
        raise CheckpointError(f"{path}: '{where}' holds {names}, expected datasets named "
                              "0, 1, ... as Keras writes them")
    datasets = []
    for key in names:
        dataset = _member(path, group, key, h5py.Dataset, f"{where}/{key}")
        if dataset is None:
            raise CheckpointError(f"{path}: '{where}/{key}' is not a dataset")
        if dataset.is_virtual or dataset.external:
            raise CheckpointError(f"{path}: '{where}/{key}' keeps its data outside the file "
                                  "(a virtual or external dataset): refusing to read it")
        datasets.append(dataset)
    return datasets


def _member(path: Path, group: h5py.Group, key: str, kind: type, where: str):
    """group[key] if it is a hard link to a `kind`; None if absent; refuses links."""
    link = group.get(key, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise CheckpointError(f"{path}: '{where}' is a {type(link).__name__}, which could point "
                              "outside the file: refusing to follow it")
    member = group[key]
    return member if isinstance(member, kind) else None


def _check_fit(path, datasets, variables, owner: str, what: str = "variable") -> None:
    if not datasets and variables:
        raise CheckpointError(
            f"{path} holds no variables (an empty '{VARS}' group, as written by a keras.Model "
            "whose tf.Variables Keras does not track, such as the guide's MyModelKeras): "
            f"it cannot restore {owner}'s {len(variables)} variables")
    if len(datasets) != len(variables):
        raise CheckpointError(f"{path} holds {len(datasets)} {what}s but {owner} has "
                              f"{len(variables)}: it is the checkpoint of another "
                              f"{'optimizer' if what != 'variable' else 'model'}")
    for index, (dataset, variable) in enumerate(zip(datasets, variables)):
        shape, dtype = tuple(variable.shape), np.dtype(_dtype_name(variable))
        if dataset.shape != shape:
            raise CheckpointError(
                f"{path}: {what} {index} ({_short_name(variable)}) has shape "
                f"{list(dataset.shape)} in the file but {list(shape)} in {owner}: "
                "was it saved from a model with another number of features?")
        if dataset.dtype != dtype:
            raise CheckpointError(f"{path}: {what} {index} ({_short_name(variable)}) is "
                                  f"{dataset.dtype} in the file but {dtype} in {owner}")


def _read(path: Path, datasets: list[h5py.Dataset]) -> list[np.ndarray]:
    try:
        return [np.asarray(dataset[()]) for dataset in datasets]
    except OSError as error:
        raise CheckpointError(f"{path} could not be read ({error}): the file is damaged or "
                              "truncated") from None


def _read_state(path: Path, f: h5py.File) -> dict | None:
    if STATE_ATTRIBUTE not in f.attrs:
        return None
    attribute = h5py.h5a.open(f.id, STATE_ATTRIBUTE.encode())
    if attribute.get_storage_size() > MAX_STATE_BYTES:
        raise CheckpointError(f"{path}: its training state is larger than "
                              f"{MAX_STATE_BYTES // 2**20} MiB: refusing to read it")
    try:
        text = f.attrs[STATE_ATTRIBUTE]
        state = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except (OSError, ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: its training state is not valid JSON") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its training state is not a JSON object")
    return state


def _load_layered(path: Path, model, optimizer) -> dict | None:
    """Load a keras.Model made of layers: check the file against the layout Keras
    writes for this model, then let Keras load it (restoring everything if it fails)."""
    from linfit.models import model_variables

    with _open(path) as f:
        _check_all_links(path, f)
        found = _layout(f)
        optimizer_datasets = _optimizer_datasets(path, f, optimizer)
        state = _read_state(path, f)
        optimizer_arrays = _read(path, optimizer_datasets)
    expected = _expected_layout(model)
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: missing {missing or 'nothing'}, "
            f"unexpected {extra or 'nothing'}, other shape or dtype {wrong or 'nothing'}")
    variables = model_variables(model)
    saved = [v.numpy() for v in variables]
    try:
        own_optimizer = getattr(model, "optimizer", None)  # loaded below, if at all
        model.load_weights(path, objects_to_skip=[own_optimizer] if own_optimizer else None)
    except Exception as error:
        for variable, value in zip(variables, saved):
            variable.assign(value)
        raise CheckpointError(f"{path} could not be loaded: {error}") from None
    _assign_optimizer(optimizer, optimizer_arrays)
    return state


def _optimizer_datasets(path: Path, f: h5py.File, optimizer) -> list[h5py.Dataset]:
    """The checked datasets of the optimizer's state, when an optimizer is to be loaded."""
    if optimizer is None:
        return []
    if not isinstance(f.get(OPTIMIZER, getlink=True), h5py.HardLink):
        raise CheckpointError(f"{path} holds no optimizer state: it cannot resume training "
                              "(it is a weights-only checkpoint)")
    datasets = _datasets(path, f[OPTIMIZER], VARS)
    _check_fit(path, datasets, list(optimizer.variables), f"the {optimizer.name} optimizer",
               what="optimizer variable")
    return datasets


def _assign_optimizer(optimizer, arrays: list[np.ndarray]) -> None:
    for variable, array in zip(optimizer.variables if optimizer else [], arrays):
        variable.assign(array)


def _check_all_links(path: Path, f: h5py.File) -> None:
    """Every link in the file is a hard link to a group or a local dataset of bounded size."""
    def visit(name, link):
        if not isinstance(link, h5py.HardLink):
            raise CheckpointError(f"{path}: '{name}' is a {type(link).__name__}, which could "
                                  "point outside the file: refusing to follow it")
        member = f[name]
        if isinstance(member, h5py.Dataset):
            if member.is_virtual or member.external:
                raise CheckpointError(f"{path}: '{name}' keeps its data outside the file (a "
                                      "virtual or external dataset): refusing to read it")
            if member.size > MAX_ELEMENTS:
                raise CheckpointError(f"{path}: '{name}' declares {member.size} elements: "
                                      "refusing to read it")

    f.visititems_links(visit)


def _layout(f: h5py.File) -> dict[str, tuple]:
    """Path -> (shape, dtype) of the model's datasets in a file (the optimizer's left out)."""
    found = {}

    def visit(name, member):
        if isinstance(member, h5py.Dataset) and not name.startswith(OPTIMIZER + "/"):
            found[name] = (member.shape, member.dtype.str)

    f.visititems(visit)
    return found


def _expected_layout(model) -> dict[str, tuple]:
    """The layout Keras writes for this model, found by having it write one."""
    import keras

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("model" + SUFFIX)
        keras.Model.save_weights(model, path)
        with h5py.File(path, "r") as f:
            return _layout(f)


def _has_sublayers(model) -> bool:
    import keras

    return isinstance(model, keras.Model) and bool(model.layers)


def _checkpoint_variables(model) -> list:
    # Imported here: reading a file (read_weights) needs no TensorFlow.
    from linfit.models import model_variables

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
