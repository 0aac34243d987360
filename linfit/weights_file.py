"""Reading an untrusted `.weights.h5` file: every member is checked before any is read.

Keras 3 writes a model's own variables as datasets `vars/0`, `vars/1`, ...
of a group `vars`, and an optimizer's under `optimizer/vars`. Before
anything is read, each member must be a plain dataset inside the file (no
soft or external links, no external or virtual storage) with the shape and
dtype expected, so a hostile file can neither reach outside itself nor make
linfit allocate without bound. h5py and NumPy only.
"""

import json
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


def checked_path(path) -> Path:
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CheckpointError(f"checkpoint path {path} must end with {SUFFIX!r} "
                              "(Keras's weights format), e.g. model.weights.h5")
    return path


def open_file(path: Path) -> h5py.File:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CheckpointError(f"{path} is not a readable HDF5 file: is it a .weights.h5 "
                              "checkpoint, and was it completely written?") from None


def check_members(path: Path, f: h5py.File) -> None:
    """Only `vars` (and `optimizer`) at the top: a model with variables of its own."""
    unexpected = [key for key in f.keys() if key not in (VARS, OPTIMIZER)]
    if unexpected:
        raise CheckpointError(
            f"{path} holds {', '.join(unexpected)} besides '{VARS}': it is the checkpoint of a "
            "model with sublayers, not of a model with variables of its own like LinearModel "
            "or LinearModule")


def datasets(path: Path, parent: h5py.Group, name: str) -> list[h5py.Dataset]:
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
    found = []
    for key in names:
        dataset = _member(path, group, key, h5py.Dataset, f"{where}/{key}")
        if dataset is None:
            raise CheckpointError(f"{path}: '{where}/{key}' is not a dataset")
        _check_local(path, dataset, f"{where}/{key}")
        found.append(dataset)
    return found


def optimizer_datasets(path: Path, f: h5py.File, optimizer) -> list[h5py.Dataset]:
    """The checked datasets of the optimizer's state, when an optimizer is to be loaded."""
    if optimizer is None:
        return []
    if not isinstance(f.get(OPTIMIZER, getlink=True), h5py.HardLink):
        raise CheckpointError(f"{path} holds no optimizer state: it cannot resume training "
                              "(it is a weights-only checkpoint)")
    found = datasets(path, f[OPTIMIZER], VARS)
    check_fit(path, found, list(optimizer.variables), f"the {optimizer.name} optimizer",
              what="optimizer variable")
    return found


def check_fit(path, found: list[h5py.Dataset], variables, owner: str,
              what: str = "variable") -> None:
    """The datasets are exactly the variables' count, shapes and dtypes."""
    if not found and variables:
        raise CheckpointError(
            f"{path} holds no variables (an empty '{VARS}' group, as written by a keras.Model "
            "whose tf.Variables Keras does not track, such as the guide's MyModelKeras): "
            f"it cannot restore {owner}'s {len(variables)} variables")
    if len(found) != len(variables):
        raise CheckpointError(f"{path} holds {len(found)} {what}s but {owner} has "
                              f"{len(variables)}: it is the checkpoint of another "
                              f"{'optimizer' if what != 'variable' else 'model'}")
    for index, (dataset, variable) in enumerate(zip(found, variables)):
        shape, dtype = tuple(variable.shape), np.dtype(_dtype_name(variable))
        if dataset.shape != shape:
            raise CheckpointError(
                f"{path}: {what} {index} ({_short_name(variable)}) has shape "
                f"{list(dataset.shape)} in the file but {list(shape)} in {owner}: "
                "was it saved from a model with another number of features?")
        if dataset.dtype != dtype:
            raise CheckpointError(f"{path}: {what} {index} ({_short_name(variable)}) is "
                                  f"{dataset.dtype} in the file but {dtype} in {owner}")


def check_weights(path: Path, found: list[h5py.Dataset], integers: bool = False) -> None:
    """For a file whose model is not known yet: float datasets (or integer ones, such
    as an optimizer's iteration count) of bounded size."""
    for dataset in found:
        numeric = np.issubdtype(dataset.dtype, np.floating) or (
            integers and np.issubdtype(dataset.dtype, np.integer))
        if dataset.size > MAX_ELEMENTS or not numeric:
            raise CheckpointError(f"{path}: '{dataset.name.strip('/')}' is {dataset.dtype} of "
                                  f"shape {list(dataset.shape)}: not a weight linfit can load")


def read(path: Path, found: list[h5py.Dataset]) -> list[np.ndarray]:
    try:
        return [np.asarray(dataset[()]) for dataset in found]
    except OSError as error:
        raise CheckpointError(f"{path} could not be read ({error}): the file is damaged or "
                              "truncated") from None


def read_state(path: Path, f: h5py.File) -> dict | None:
    """linfit's JSON training state (a root attribute Keras ignores), or None."""
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


def check_all_links(path: Path, f: h5py.File) -> None:
    """Every link in the file is a hard link to a group or a local dataset of bounded size."""
    def visit(name, link):
        if not isinstance(link, h5py.HardLink):
            raise CheckpointError(f"{path}: '{name}' is a {type(link).__name__}, which could "
                                  "point outside the file: refusing to follow it")
        member = f[name]
        if isinstance(member, h5py.Dataset):
            _check_local(path, member, name)
            if member.size > MAX_ELEMENTS:
                raise CheckpointError(f"{path}: '{name}' declares {member.size} elements: "
                                      "refusing to read it")

    f.visititems_links(visit)


def layout(f: h5py.File) -> dict[str, tuple]:
    """Path -> (shape, dtype) of the model's datasets in a file (the optimizer's left out)."""
    found = {}

    def visit(name, member):
        if isinstance(member, h5py.Dataset) and not name.startswith(OPTIMIZER + "/"):
            found[name] = (member.shape, member.dtype.str)

    f.visititems(visit)
    return found


def write_group(group: h5py.Group, name: str, arrays: list[np.ndarray]) -> None:
    """Keras's layout: the arrays as datasets 0, 1, ... of `group`, its owner's name as
    an attribute."""
    group.attrs["name"] = name
    for index, array in enumerate(arrays):
        group.create_dataset(str(index), data=array)


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


def _check_local(path: Path, dataset: h5py.Dataset, where: str) -> None:
    if dataset.is_virtual or dataset.external:
        raise CheckpointError(f"{path}: '{where}' keeps its data outside the file (a "
                              "virtual or external dataset): refusing to read it")


def _dtype_name(variable) -> str:
    dtype = variable.dtype
    return getattr(dtype, "name", dtype)


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]
