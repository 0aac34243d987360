"""Reading NPZ data files (NumPy's zip of `.npy` arrays): `x` ([N] or [N, d]) and `y` ([N]
or [N, k]), and optionally `x_names` and `y_names`, the names of their columns
(`feature_names`, `target_names`).

A file is untrusted: the archive's structure and each array's header (shape,
dtype) are checked before any array is read, so a truncated archive, a
header that declares 2**40 elements, or a small archive that would inflate
to gigabytes is one `DataError`, not a MemoryError. `stored_arrays` locates
the values of arrays stored uncompressed, for a stream to read in place
(`linfit.stream_formats`). NumPy and the standard library only.
"""

import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfit.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"
# Optional members: the names of x's columns and of y's (as linfit.convert writes them).
NAMES, TARGET_NAMES = "x_names", "y_names"
MAX_NAME = 256  # characters of one name in x_names


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
    def read(archive, headers):
        _check_shapes(path, headers, dtype, memory_limit)
        return tuple(_read_array(path, archive, name) for name in ("x", "y"))

    x, y = _with_archive(path, read)
    with np.errstate(over="ignore"):  # an overflow is named below
        converted = [np.ascontiguousarray(array, dtype=dtype) for array in (x, y)]
    for name, original, array in zip(("x", "y"), (x, y), converted):
        check_finite(path, name, original, array)
    return converted[0], converted[1]


def check_finite(path: Path, name: str, original: np.ndarray, converted: np.ndarray,
                 first_row: int = 0) -> None:
    """Refuse array `name`'s rows (from row `first_row`) if a value, as `converted`
    holds it, is not finite, naming the row.

    Raises:
      DataError: for a value that is not finite, or overflows float32.
    """
    bad = ~np.isfinite(converted)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        value = original.reshape(len(original), -1)[row][bad.reshape(len(bad), -1)[row]][0]
        if np.isfinite(value):
            raise DataError(f"{path}: {name} in row {first_row + row}: {value:g} overflows "
                            "float32 (largest 3.4e+38): rescale it")
        raise DataError(f"{path}: {name} is not finite in row {first_row + row}: remove or "
                        "fix it")


@dataclass(frozen=True)
class StoredArray:
    """An array stored uncompressed in an NPZ file, where a stream reads it in place.

    Attributes:
      shape, dtype: as its header says (C order).
      offset: bytes from the start of the file to its first value.
      file_bytes: the file's size.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    file_bytes: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def chunks(self, path: Path, rows: int):
        """Its values, `rows` rows at a time, read from the file as needed (memory-mapped)."""
        values = np.memmap(path, self.dtype, "r", self.offset, self.shape)
        for start in range(0, self.shape[0], rows):
            yield values[start:start + rows]


def stored_arrays(path: Path) -> tuple[StoredArray, StoredArray]:
    """x and y of an NPZ file, checked as `read_npz` checks them, and located.

    Raises:
      DataError: for what `read_npz` refuses, and for arrays a stream cannot read
        in place: compressed (numpy.savez_compressed), in Fortran order, or of a
        type wider than 8 bytes.
    """
    def locate(archive, headers):
        _check_shapes(path, headers, np.float32, None)
        return tuple(_located(path, archive, name, headers[name]) for name in ("x", "y"))

    return _with_archive(path, locate)


def array_shapes(path: Path, y_optional: bool = False
                 ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The shapes of x and y, as their headers say (checked as `read_npz` checks
    them; no value read). `y_optional`: a file without y (new data, to predict
    on) gives None for it."""
    def shapes(archive, headers):
        _check_shapes(path, headers, np.float32, None)
        return headers["x"][0], headers["y"][0] if "y" in headers else None

    return _with_archive(path, shapes, optional_y=y_optional)


def row_chunks(path: Path, names: tuple[str, ...], rows: int):
    """The arrays `names` of an NPZ file, `rows` rows at a time, in step, as stored:
    read from the archive as they are needed, compressed or not, so a file larger
    than memory takes the memory of a chunk (an array in Fortran order of several
    columns is read whole). For a file whose headers were checked.

    Raises:
      DataError: for an archive found damaged while it is read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            yield from zip(*(_array_rows(path, archive, name, rows) for name in names))
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path} is damaged or truncated ({error}): write it again with "
                        "numpy.savez") from None


def _array_rows(path: Path, archive: zipfile.ZipFile, name: str, rows: int):
    shape, dtype, _, fortran_order, _ = _header(path, archive, name)
    if fortran_order and len(shape) == 2 and shape[1] > 1:  # its columns one after another
        values = _read_array(path, archive, name)
        yield from (values[start:start + rows] for start in range(0, len(values), rows))
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with archive.open(f"{name}.npy") as f:
        _header_of(f)
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            values = f.read(count * row_bytes)
            if len(values) < count * row_bytes:
                raise EOFError(f"{name} ends at row {start + len(values) // row_bytes}")
            yield np.frombuffer(values, dtype).reshape((count, *shape[1:]))


def _with_archive(path: Path, use, optional_y: bool = False):
    """use(the archive, its x and y headers (see `_header`)), for an NPZ file that is
    not trusted: what is wrong with it is one DataError. `optional_y`: a file
    without y is given x's header alone."""
    if not is_zip(path):
        raise DataError(f"{path} is not an NPZ archive (NumPy's numpy.savez writes one: a zip "
                        "of arrays x and y); a CSV file should end in .csv")
    try:
        with zipfile.ZipFile(path) as archive:
            names = ("x",) if optional_y and "y.npy" not in archive.namelist() else ("x", "y")
            return use(archive, {name: _header(path, archive, name) for name in names})
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            struct.error) as error:
        raise DataError(f"{path} is damaged or truncated ({error}): write it again with "
                        "numpy.savez") from None


def feature_names(path: Path, width: int) -> tuple[str, ...]:
    """The names of x's `width` columns: the archive's `x_names` (1-D text, or
    UTF-8 bytes, one name per column, as linfit.convert writes it; stripped, as a
    CSV header's are), else x for one column and x0, x1, ... for several.

    Raises:
      DataError: for an `x_names` that does not name each column once, or whose
        names are longer than MAX_NAME characters.
    """
    return _column_names(path, "x", width, ("x",) if width == 1 else
                         tuple(f"x{i}" for i in range(width)))


def target_names(path: Path, outputs: int | None) -> tuple[str, ...]:
    """The names of y's columns (`outputs`: None for y of [N], else k for [N, k]): the
    archive's `y_names`, as `feature_names` reads x_names, else y, or y0, y1, ...

    Raises:
      DataError: as `feature_names`.
    """
    return _column_names(path, "y", outputs or 1, ("y",) if outputs is None else
                         tuple(f"y{j}" for j in range(outputs)))


def _column_names(path: Path, array: str, width: int, default: tuple[str, ...]
                  ) -> tuple[str, ...]:
    member = f"{array}_names"

    def read(archive, headers):
        if f"{member}.npy" not in archive.namelist():
            return default
        shape, dtype, size = _header(path, archive, member)[:3]
        if dtype.kind not in "US" or shape != (width,) or \
                dtype.itemsize > 4 * MAX_NAME or dtype.itemsize * width > size:
            # Not read: the header says what is wrong, and the values could be huge.
            raise _bad_names(path, array, width, f"{dtype} of shape {list(shape)}")
        names = _read_array(path, archive, member)
        try:
            names = [str(n.decode() if isinstance(n, bytes) else n).strip() for n in names]
        except UnicodeDecodeError:
            raise _bad_names(path, array, width, "bytes that are not UTF-8 text") from None
        twice = sorted(name for name, count in Counter(names).items() if count > 1)
        if twice:
            raise _bad_names(path, array, width,
                             f"{', '.join(map(repr, twice[:5]))} more than once")
        return tuple(names)

    return _with_archive(path, read, optional_y=True)


def _bad_names(path: Path, array: str, width: int, found: str) -> DataError:
    return DataError(f"{path}: {array}_names must name each of {array}'s {width} column(s) "
                     f"once (text of shape [{width}], names of at most {MAX_NAME} characters), "
                     f"got {found}: fix or remove it")


def is_stored(path: Path) -> bool:
    """Whether an NPZ file's arrays can be streamed in place (see `stored_arrays`)."""
    try:
        stored_arrays(path)
    except DataError:
        return False
    return True


def _located(path: Path, archive: zipfile.ZipFile, name: str, header: tuple) -> StoredArray:
    shape, dtype, _, fortran_order, header_bytes = header
    info = archive.getinfo(f"{name}.npy")
    cannot = ("is compressed (numpy.savez_compressed)" if info.compress_type != zipfile.ZIP_STORED
              else "is stored in Fortran order" if fortran_order and len(shape) == 2
              and shape[1] > 1 else f"holds {dtype}" if dtype.itemsize > 8 else "")
    if cannot:
        raise DataError(f"{path}: {name} {cannot}, which a stream cannot read in place: write "
                        "it with numpy.savez(path, x=np.ascontiguousarray(x, np.float32), "
                        "y=...), or set data.streaming = false")
    with path.open("rb") as f:  # the member's own header: its size is not in the directory
        f.seek(info.header_offset)
        local = f.read(30)
    if local[:4] != ZIP_MAGIC:
        raise DataError(f"{path} is damaged: {name}.npy's entry is not where the archive "
                        "says: write it again with numpy.savez")
    name_bytes, extra_bytes = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_bytes + extra_bytes + header_bytes
    stored = StoredArray(tuple(shape), dtype, start, path.stat().st_size)
    if start + stored.shape[0] * stored.row_bytes > stored.file_bytes:
        raise DataError(f"{path} is truncated: {name} ends past the end of the file: write "
                        "it again with numpy.savez")
    return stored


def _header(path: Path, archive: zipfile.ZipFile, name: str) -> tuple:
    """(shape, dtype, uncompressed size, Fortran order, the header's bytes) of member
    `name`.npy, from its header."""
    member = f"{name}.npy"
    if member not in archive.namelist():
        found = ", ".join(n.removesuffix(".npy") for n in archive.namelist()) or "nothing"
        missing = [n for n in ("x", "y") if f"{n}.npy" not in archive.namelist()]
        raise DataError(f"{path} has no array {' or '.join(map(repr, missing))}: an NPZ needs "
                        f"x [N, d] (or [N]) and y [N]; it has {found}")
    with archive.open(member) as f:
        shape, fortran_order, dtype = _header_of(f)
        header_bytes = f.tell()
    return shape, dtype, archive.getinfo(member).file_size, fortran_order, header_bytes


def _header_of(f) -> tuple:
    """(shape, Fortran order, dtype) of the .npy file `f`, read up to its values."""
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(f)


def _check_shapes(path: Path, headers: dict, dtype, memory_limit: int | None) -> None:
    """Check the headers of x and y (or of x alone, for a file to predict on)."""
    arrays = {name: headers[name][:3] for name in ("x", "y") if name in headers}
    for name, (_, kind, _) in arrays.items():
        if kind.kind not in "iuf":  # not bool, complex, timedelta, text or objects
            raise DataError(f"{path}: {name} must be real numbers, got {kind}")
    shapes = {name: shape for name, (shape, _, _) in arrays.items()}
    if any(len(shape) not in (1, 2) for shape in shapes.values()):
        raise DataError(f"{path}: x must be [N] or [N, d] and y [N] or [N, k], got " +
                        " and ".join(f"{name} {list(shape)}" for name, shape in shapes.items()))
    if len({shape[0] for shape in shapes.values()}) > 1:
        raise DataError(f"{path}: x has {shapes['x'][0]} rows but y has {shapes['y'][0]}: "
                        "they must match")
    if shapes["x"][0] == 0:
        raise DataError(f"{path} holds no examples")
    for name, columns in (("x", "features"), ("y", "targets")):
        if name in shapes and len(shapes[name]) == 2 and shapes[name][1] == 0:
            raise DataError(f"{path}: {name} has 0 {columns} (shape {list(shapes[name])}): it "
                            "needs at least one column")
    for name, (shape, kind, size) in arrays.items():
        if int(np.prod(shape)) * kind.itemsize > size:
            raise DataError(f"{path}: {name} declares {list(shape)} values of {kind} but holds "
                            "fewer: the file is damaged")
    values = sum(int(np.prod(shape)) for shape in shapes.values())
    widest = max(kind.itemsize for _, kind, _ in arrays.values())
    needed = values * (widest + np.dtype(dtype).itemsize)
    if memory_limit is not None and needed > memory_limit:
        raise DataError(f"{path} holds {needed / 2**30:.1f} GB of values, more than this "
                        f"machine's free memory ({memory_limit / 2**30:.1f} GB)")


def _read_array(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)
