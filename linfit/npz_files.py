"""Reading NPZ data files (NumPy's zip of `.npy` arrays): `x` ([N] or [N, d]) and `y` ([N]).

A file is untrusted: the archive's structure and each array's header (shape,
dtype) are checked before any array is read, so a truncated archive, a
header that declares 2**40 elements, or a small archive that would inflate
to gigabytes is one `DataError`, not a MemoryError. NumPy and the standard
library only.
"""

import zipfile
import zlib
from pathlib import Path

import numpy as np

from linfit.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ZIP_MAGIC


def read_npz(path: Path, dtype=np.float32, memory_limit: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """x and y of an NPZ file, as `dtype`, each checked before it is read.

    Args:
      memory_limit: refuse arrays whose values would take more bytes than this.

    Raises:
      DataError: naming the file and what is wrong with it.
    """
    if not is_zip(path):
        raise DataError(f"{path} is not an NPZ archive (NumPy's numpy.savez writes one: a zip "
                        "of arrays x and y); a CSV file should end in .csv")
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {name: _header(path, archive, name) for name in ("x", "y")}
            _check_shapes(path, headers, dtype, memory_limit)
            x, y = (_read_array(path, archive, name) for name in ("x", "y"))
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path} is damaged or truncated ({error}): write it again with "
                        "numpy.savez") from None
    with np.errstate(over="ignore"):  # an overflow is named below
        converted = [np.ascontiguousarray(array, dtype=dtype) for array in (x, y)]
    for name, original, array in zip(("x", "y"), (x, y), converted):
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            value = original.reshape(len(original), -1)[row][bad.reshape(len(bad), -1)[row]][0]
            if np.isfinite(value):
                raise DataError(f"{path}: {name} in row {row}: {value:g} overflows float32 "
                                "(largest 3.4e+38): rescale it")
            raise DataError(f"{path}: {name} is not finite in row {row}: remove or fix it")
    return converted[0], converted[1]


def _header(path: Path, archive: zipfile.ZipFile, name: str) -> tuple:
    """(shape, dtype, uncompressed size) of member `name`.npy, from its header."""
    member = f"{name}.npy"
    if member not in archive.namelist():
        found = ", ".join(n.removesuffix(".npy") for n in archive.namelist()) or "nothing"
        missing = [n for n in ("x", "y") if f"{n}.npy" not in archive.namelist()]
        raise DataError(f"{path} has no array {' or '.join(map(repr, missing))}: an NPZ needs "
                        f"x [N, d] (or [N]) and y [N]; it has {found}")
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    return shape, dtype, archive.getinfo(member).file_size


def _check_shapes(path: Path, headers: dict, dtype, memory_limit: int | None) -> None:
    (x_shape, x_dtype, x_size), (y_shape, y_dtype, y_size) = headers["x"], headers["y"]
    for name, kind in (("x", x_dtype), ("y", y_dtype)):
        if kind.hasobject or not np.issubdtype(kind, np.number) or \
                np.issubdtype(kind, np.complexfloating):
            raise DataError(f"{path}: {name} must be real numbers, got {kind}")
    if len(x_shape) not in (1, 2) or len(y_shape) not in (1, 2):
        raise DataError(f"{path}: x must be [N] or [N, d] and y [N] or [N, k], got x "
                        f"{list(x_shape)} and y {list(y_shape)}")
    if x_shape[0] != y_shape[0]:
        raise DataError(f"{path}: x has {x_shape[0]} rows but y has {y_shape[0]}: they must "
                        "match")
    if y_shape[0] == 0:
        raise DataError(f"{path} holds no examples")
    if len(x_shape) == 2 and x_shape[1] == 0:
        raise DataError(f"{path}: x has 0 features (shape {list(x_shape)}): it needs at least "
                        "one column")
    for name, shape, kind, size in (("x", x_shape, x_dtype, x_size),
                                    ("y", y_shape, y_dtype, y_size)):
        if int(np.prod(shape)) * kind.itemsize > size:
            raise DataError(f"{path}: {name} declares {list(shape)} values of {kind} but holds "
                            "fewer: the file is damaged")
    values = int(np.prod(x_shape) + np.prod(y_shape))
    needed = values * (max(x_dtype.itemsize, y_dtype.itemsize) + np.dtype(dtype).itemsize)
    if memory_limit is not None and needed > memory_limit:
        raise DataError(f"{path} holds {needed / 2**30:.1f} GB of values, more than this "
                        f"machine's free memory ({memory_limit / 2**30:.1f} GB)")


def _read_array(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)
