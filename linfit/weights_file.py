"""Reading an untrusted `.weights.h5` file: every member is checked before any is read.

Keras 3 writes a model's own variables as datasets `vars/0`, `vars/1`, ...
of a group `vars`, and an optimizer's under `optimizer/vars`. Before
anything is read, each member must be a plain dataset inside the file (no
soft or external links, no external or virtual storage) with the shape and
dtype expected, so a hostile file can neither reach outside itself nor make
linfit allocate without bound. h5py and NumPy only.

A file linfit writes ends in a seal, its SHA-256 (HDF5 ignores bytes past
the end of its data, and so does Keras). A damaged file is refused on its
seal before the HDF5 library parses it: a single flipped byte can otherwise
make that library loop forever or crash the process. Whatever a file
without a seal (plain Keras's) makes h5py raise is a `CheckpointError` too.
"""

import contextlib
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import h5py
import numpy as np

from linfit.errors import CheckpointError

SUFFIX = ".weights.h5"
VARS = "vars"
OPTIMIZER = "optimizer"
# linfit's training state: UTF-8 JSON as a byte dataset at the root, which Keras
# ignores (an attribute would be limited to 64 KiB, and one of variable length
# does not say its size before it is read).
STATE = "linfit_state"
# Caps on what an untrusted file can make linfit read.
MAX_STATE_BYTES = 256 * 2**20  # the history of ~2e6 epochs of one weight, ~6e3 of 2000
MAX_ELEMENTS = 2**28
MAX_FEATURES = 2**20  # of a linear model read without knowing it (predict, resume)
MAX_STATE_DEPTH = 64
SEAL = b"\nlinfit-sha256:"
SEAL_SIZE = len(SEAL) + 64 + 1


def checked_path(path) -> Path:
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CheckpointError(f"checkpoint path {path} must end with {SUFFIX!r} "
                              "(Keras's weights format), e.g. model.weights.h5")
    return path


@contextlib.contextmanager
def reading(path: Path):
    """Open a checkpoint to read (its seal checked first); every failure inside,
    whatever h5py raises, becomes one CheckpointError naming the file."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        what = "does not exist" if not path.exists() else f"cannot be read ({error.strerror})"
        raise CheckpointError(f"checkpoint {path} {what}") from None
    if not stat.S_ISREG(mode):
        what = "is a directory" if stat.S_ISDIR(mode) else "is not a regular file (a pipe?)"
        raise CheckpointError(f"checkpoint {path} {what}: give a .weights.h5 file")
    check_seal(path)
    try:
        with h5py.File(path, "r") as f:
            yield f
    except CheckpointError:
        raise
    except OSError as error:
        raise CheckpointError(f"{path} is not a readable HDF5 file ({error}): is it a "
                              ".weights.h5 checkpoint, and was it completely written?") from None
    except Exception as error:  # h5py's RuntimeError, KeyError, ... on a damaged file
        raise CheckpointError(f"{path} is damaged ({type(error).__name__}: {error})") from None


@contextlib.contextmanager
def writing():
    """HDF5's failures while writing (on close, h5py raises RuntimeError for a full
    disk) as the OSError they are, with the errno HDF5 reports."""
    try:
        yield
    except RuntimeError as error:
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found.group(1)) if found else None
        raise OSError(code, os.strerror(code) if code else str(error)) from None


def seal(path: Path) -> None:
    """Append the file's SHA-256, so a damaged copy is known before it is parsed."""
    digest = _digest(path, path.stat().st_size)
    with path.open("ab") as f:
        f.write(SEAL + digest.encode() + b"\n")


def check_seal(path: Path) -> bool:
    """Whether the file ends in linfit's seal (then it matches, or this raises)."""
    size = path.stat().st_size
    if size < SEAL_SIZE:
        return False
    with path.open("rb") as f:
        f.seek(size - SEAL_SIZE)
        tail = f.read()
    if not (tail.startswith(SEAL) and tail.endswith(b"\n")):
        return False
    if tail[len(SEAL):-1] != _digest(path, size - SEAL_SIZE).encode():
        raise CheckpointError(f"{path} is damaged: its content does not match the checksum "
                              "linfit wrote with it (a flipped bit, or a partial copy)")
    return True


def _digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while size > 0:
            block = f.read(min(size, 1 << 20))
            if not block:
                break
            digest.update(block)
            size -= len(block)
    return digest.hexdigest()


def check_members(path: Path, f: h5py.File) -> None:
    """Only `vars` (and `optimizer`) at the top: a model with variables of its own."""
    unexpected = [key for key in f.keys() if key not in (VARS, OPTIMIZER, STATE)]
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
    dataset = _member(path, f, STATE, h5py.Dataset, STATE)
    if dataset is None:
        return None
    _check_local(path, dataset, STATE)
    if dataset.dtype != np.uint8 or dataset.ndim != 1 or dataset.size > MAX_STATE_BYTES:
        raise CheckpointError(f"{path}: its training state is not the text linfit writes "
                              f"(bytes, at most {MAX_STATE_BYTES // 2**20} MiB): refusing to "
                              "read it")
    try:
        state = json.loads(dataset[()].tobytes().decode())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its training state is not valid JSON") from None
    if _depth(state) > MAX_STATE_DEPTH:
        raise CheckpointError(f"{path}: its training state is nested too deeply")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its training state is not a JSON object")
    return state


def check_all_links(path: Path, f: h5py.File) -> None:
    """Every link in the file is a hard link to a group or a local dataset of bounded size."""
    links = []
    # Collected first and checked after: an exception raised inside h5py's
    # visitor comes out as a SystemError.
    f.visititems_links(lambda name, link: links.append((name, link)))
    for name, link in links:
        if not isinstance(link, h5py.HardLink):
            raise CheckpointError(f"{path}: '{name}' is a {type(link).__name__}, which could "
                                  "point outside the file: refusing to follow it")
        member = f[name]
        if isinstance(member, h5py.Dataset):
            _check_local(path, member, name)
            if member.size > MAX_ELEMENTS:
                raise CheckpointError(f"{path}: '{name}' declares {member.size} elements: "
                                      "refusing to read it")


def layout(f: h5py.File) -> dict[str, tuple]:
    """Path -> (shape, dtype) of the model's datasets in a file (the optimizer's left out)."""
    members = []
    f.visititems(lambda name, member: members.append((name, member)))
    return {name: (member.shape, member.dtype.str) for name, member in members
            if isinstance(member, h5py.Dataset) and not name.startswith(OPTIMIZER + "/")
            and name != STATE}


def _depth(value, depth: int = 0) -> int:
    """How deeply a JSON value nests (iteratively: a hostile one cannot overflow)."""
    deepest, stack = depth, [(value, depth)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_STATE_DEPTH:
            break
        if isinstance(value, dict):
            stack += [(item, level + 1) for item in value.values()]
        elif isinstance(value, list):
            stack += [(item, level + 1) for item in value]
    return deepest


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
