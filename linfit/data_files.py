"""Reading data files: CSV (with a header row) and NPZ, and choosing their columns.

NumPy only, so the CLI can reject a bad file before it pays for importing
TensorFlow. Every problem is a `DataError` naming the file, and the line and
column where there is one. CSV rows are parsed in chunks straight into
float32 arrays aligned for TensorFlow, so reading needs little more memory
than the data itself.
"""

import csv
import re
import stat
import warnings
from pathlib import Path

import numpy as np

from linfit.errors import DataError
from linfit.npz_files import feature_names, is_zip, read_npz, target_names

# Rows parsed at a time.
CHUNK_ROWS = 65536
# A number as NumPy's fast parser reads it (Python's float() also takes "1_000"
# and non-ASCII digits, which that parser refuses).
NUMBER = re.compile(r"\s*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    r"|inf(?:inity)?|nan)\s*", re.IGNORECASE)
# TensorFlow's CPU kernels require buffers aligned to this many bytes (Eigen's
# maximum alignment); an array so aligned can be shared with it, not copied.
TF_ALIGNMENT = 64


def read_table(path: str | Path, target: str | tuple[str, ...] = "",
               feature_names: tuple[str, ...] = ()
               ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A training file's features, target and feature names.

    CSV: the column named `target`, else `y`, else the last one, is the
    target; several names (a tuple) give y of shape [N, k], one column per
    output. `feature_names` picks feature columns (default: all the others).
    NPZ: arrays `x` ([N] or [N, d]) and `y` ([N] or [N, k]). One feature
    gives x of shape [N].
    """
    path = checked_file(path)
    if is_npz(path):
        return _read_npz(path)
    header = read_header(path)
    target_columns, feature_columns = select_columns(path, header, target, feature_names)
    x, y = read_columns(path, header, feature_columns, target_columns)
    if x.shape[1] == 1:
        x = x[:, 0]
    return x, y, tuple(header[i] for i in feature_columns)


def read_target_names(path: str | Path, target: str | tuple[str, ...] = "",
                      feature_names: tuple[str, ...] = (), outputs: int | None = None
                      ) -> tuple[str, ...]:
    """The names of the target column(s) `read_table` takes from a training file:
    a CSV's header names; an NPZ file's y_names, else y (y0, y1, ... for `outputs`
    columns)."""
    path = checked_file(path)
    if is_npz(path):
        return target_names(path, outputs)
    header = read_header(path)
    return tuple(header[i] for i in select_columns(path, header, target, feature_names)[0])


def prediction_columns(path: str | Path, feature_names: tuple[str, ...] | None,
                       features: int | None, target: str | tuple[str, ...] = "",
                       trained_target: str | tuple[str, ...] = ""
                       ) -> tuple[Path, list[str], list[int], list[int]]:
    """A CSV's columns for prediction, checked from its header: (path, header, the
    feature columns, the target columns or []).

    The target is `target` (which must be there), else `trained_target` (the
    training data's) if the file has it, else `y` if present. The feature
    columns are `feature_names` (the training data's) when known, else every
    column but the target, and there must be as many as the model takes.
    """
    path = checked_file(path)
    header = read_header(path, min_columns=1)
    trained = (trained_target,) if isinstance(trained_target, str) else trained_target
    if not target and all(name in header for name in trained):
        target = trained_target
    target_columns, columns = select_columns(path, header, target, feature_names or (),
                                             for_prediction=True)
    expected = features or 1
    if len(columns) != expected:
        raise DataError(
            f"{path} has {len(columns)} feature column(s) ({', '.join(header[i] for i in columns)})"
            f" but the checkpoint's model takes {expected}: give the training data's feature "
            "columns, and name a target column other than 'y' with --target")
    return path, header, columns, target_columns


def select_columns(path: Path, header: list[str], target: str | tuple[str, ...] = "",
                   feature_names=(), for_prediction: bool = False
                   ) -> tuple[list[int], list[int]]:
    """The target columns and the feature columns of a CSV header, by name.

    The target is the column `target` (or the columns, for a tuple of names),
    else `y`, else (for training) the last column; for prediction a file may
    have no target. The features are the columns `feature_names`, else every
    column but the targets.

    Returns:
      (the targets' indexes, [] for none; the features' indexes in the order named).
    """
    targets = (target,) if isinstance(target, str) else tuple(target)
    targets = tuple(name for name in targets if name)
    for names, what in ((targets, "the target"), (tuple(feature_names), "data.features")):
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise DataError(f"{path}: {what} names column {twice[0]!r} more than once: "
                            "name each column once")
    missing = [name for name in targets if name not in header]
    if missing:
        what = "target column" if for_prediction else "data.target"
        raise DataError(f"{path}: {what} {', '.join(map(repr, missing))} is not a column; "
                        f"the columns are {', '.join(header)}")
    if not targets:
        targets = ("y",) if "y" in header else () if for_prediction else (header[-1],)
    unknown = [name for name in feature_names if name not in header]
    if unknown and for_prediction:
        raise DataError(f"{path} lacks the column(s) {', '.join(unknown)} the model was "
                        f"trained on; its columns are {', '.join(header)}")
    if unknown:
        raise DataError(f"{path}: data.features names {', '.join(map(repr, unknown))}, which "
                        f"is not a column; the columns are {', '.join(header)}")
    both = [name for name in targets if name in feature_names]
    if both:
        what = "the target" if len(targets) == 1 else "a target"
        raise DataError(f"{path}: column {both[0]!r} is {what}, so it cannot also be "
                        "in data.features")
    names = list(feature_names) or [name for name in header if name not in targets]
    return ([header.index(name) for name in targets if name in header],
            [header.index(name) for name in names])


def checked_file(path) -> Path:
    """`path`, once it is known to be a non-empty regular file this process can read."""
    path = Path(path)
    try:
        mode, size = path.stat().st_mode, path.stat().st_size
        if stat.S_ISREG(mode) and size:
            path.open("rb").close()
    except FileNotFoundError:
        raise DataError(f"data file {shown(path)} does not exist: check --data / data.path"
                        ) from None
    except OSError as error:
        raise DataError(f"data file {shown(path)} cannot be read: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"data file {path} is a directory: give the path of a CSV or NPZ file")
    if not stat.S_ISREG(mode):
        raise DataError(f"data file {path} is not a regular file (a pipe or a device): linfit "
                        "reads a file twice, to size it and to parse it; save it to a file first")
    if size == 0:
        raise DataError(f"{path} is empty: expected a header row, then one row per example")
    return path


def is_npz(path: Path) -> bool:
    """An NPZ file by its name (any case) or its content (a zip archive)."""
    return path.suffix.lower() == ".npz" or is_zip(path)


def shown(path: Path) -> str:
    """A path as a message shows it: whole, unless it is absurdly long."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:100]}...{text[-60:]} ({len(text)} characters)"


def read_header(path: Path, min_columns: int = 2) -> list[str]:
    try:
        # utf-8-sig: Excel starts its UTF-8 CSV files with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError:
        _raise_encoding_error(path)
    except csv.Error as error:
        raise DataError(f"{path}, line 1: {error}: is it a CSV file with a header row?"
                        ) from None
    header = [name.strip() for name in header]
    if not any(header):
        raise DataError(f"{path}: the first line is empty: expected a header row of "
                        "column names")
    if len(header) < min_columns:
        raise DataError(f"{path} has a single column {header[0]!r}: expected at least one "
                        "feature column and a target column")
    if len(set(header)) != len(header):
        duplicated = sorted({name for name in header if header.count(name) > 1})
        raise DataError(f"{path}: duplicate column names {duplicated}: rename them")
    return header


def read_columns(path: Path, header: list[str], feature_columns: list[int],
                 target_columns: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """The feature columns as float32 [N, d] and the target columns as [N] (one),
    [N, k] (several) or None (none), read straight into arrays TensorFlow can share."""
    capacity = _count_lines(path)  # an upper bound on the rows: blank lines are skipped
    x = aligned_empty((capacity, len(feature_columns)))
    y = None if not target_columns else aligned_empty((capacity, len(target_columns)))
    rows = 0
    for x_chunk, y_chunk in column_chunks(path, header, feature_columns, target_columns):
        end = rows + len(x_chunk)
        x[rows:end] = x_chunk
        if y is not None:
            y[rows:end] = y_chunk
        rows = end
    if rows == 0:
        raise DataError(f"{path} has a header but no data rows")
    return x[:rows], (None if y is None else y[:rows, 0] if y.shape[1] == 1 else y[:rows])


def column_chunks(path: Path, header: list[str], feature_columns: list[int],
                  target_columns: list[int], others_read: bool = True):
    """The feature and target columns of a CSV, chunk by chunk, as float32 arrays
    [rows, d] and [rows, k] (None without target columns).

    Args:
      others_read: whether the other columns must be numbers too (not for
        predictions, whose files may hold an id or a name beside the features).

    Raises:
      DataError: for a value float32 cannot hold, naming its line and column.
    """
    rows = 0
    used = set(feature_columns) | set(target_columns)
    unread = () if others_read else tuple(i for i in range(len(header)) if i not in used)
    for chunk in csv_chunks(path, header, unread):
        with np.errstate(over="ignore"):  # checked just below, with the line
            x = chunk[:, feature_columns].astype(np.float32)
            y = chunk[:, target_columns].astype(np.float32) if target_columns else None
        for array, columns in ((x, feature_columns), (y, target_columns)):
            if array is not None and not np.isfinite(array).all():
                row, index = np.argwhere(~np.isfinite(array))[0]
                raise DataError(f"{path}, line {line_of_row(path, rows + row)}, column "
                                f"{header[columns[index]]!r}: {chunk[row, columns[index]]:g} "
                                "overflows float32 (largest 3.4e+38): rescale the column")
        yield x, y
        rows += len(chunk)


def csv_chunks(path: Path, header: list[str], unread: tuple[int, ...] = ()):
    """The data rows of a CSV, as float64 arrays [rows, columns] of up to CHUNK_ROWS rows.

    Every row has the header's width and every value is a finite number, but in
    the columns `unread`, which may hold anything and read as 0. NumPy's fast
    parser reads each chunk; on a failure a second, careful pass says which
    line and column is wrong.
    """
    rows = 0
    with path.open(newline="", encoding="utf-8") as f:
        next(f)  # the header
        while lines := _next_lines(path, f):
            chunk = _parse_chunk(path, header, lines, unread)
            if chunk.shape[1] != len(header):
                _raise_parse_error(path, header, unread)  # names the first line too wide
            bad = ~np.isfinite(chunk)
            if bad.any():
                row, column = np.argwhere(bad)[0]
                raise DataError(f"{path}, line {line_of_row(path, rows + row)}, column "
                                f"{header[column]!r}: {chunk[row, column]} is not finite: "
                                "remove or fix the row")
            yield chunk
            rows += len(chunk)


def float64_chunks(path: str | Path, target: str | tuple[str, ...] = "",
                   feature_names: tuple[str, ...] = (),
                   chunk_rows: int = CHUNK_ROWS):
    """A training file's (x, y) as read, in float64, chunk by chunk (x is [rows, d]).

    For exact sums over the data (the least-squares reference) without
    keeping a float64 copy of it in memory.
    """
    path = Path(path)
    if is_npz(path):
        x, y, _ = _read_npz(path, dtype=np.float64)
        x = x.reshape(len(y), -1)
        for start in range(0, len(y), chunk_rows):
            yield x[start:start + chunk_rows], y[start:start + chunk_rows]
        return
    header = read_header(path)
    target_columns, feature_columns = select_columns(path, header, target, feature_names)
    for chunk in csv_chunks(path, header):
        y = chunk[:, target_columns]
        yield chunk[:, feature_columns], (y[:, 0] if y.shape[1] == 1 else y)


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose buffer TensorFlow can share."""
    nbytes = int(np.prod(shape)) * 4
    buffer = np.empty(nbytes + TF_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % TF_ALIGNMENT
    return buffer[offset:offset + nbytes].view(np.float32).reshape(shape)


def _next_lines(path: Path, f) -> list[str]:
    """The next CHUNK_ROWS lines that are not blank (a line of spaces is blank too)."""
    lines = []
    try:
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == CHUNK_ROWS:
                    break
    except UnicodeDecodeError:
        _raise_encoding_error(path)
    return lines


def _raise_encoding_error(path: Path) -> None:
    """Name the first line that is not UTF-8 text."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                bad = line[error.start:error.end]
                raise DataError(f"{path}, line {number}: not UTF-8 text (bytes {bad!r} at "
                                f"character {error.start + 1}): save the file as UTF-8"
                                ) from None
    raise DataError(f"{path} is not UTF-8 text: save it as UTF-8")


def _parse_chunk(path: Path, header: list[str], lines: list[str], unread: tuple[int, ...] = ()
                 ) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None,
                              quotechar='"', converters=dict.fromkeys(unread, _unread))
    except ValueError as error:
        _raise_parse_error(path, header, unread)
        raise DataError(f"{path} could not be read as numbers: {error}") from None


def _count_lines(path: Path) -> int:
    """An upper bound on the lines of a text file, whatever ends them (\\n, \\r\\n, \\r)."""
    count = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n") + block.count(b"\r")
    return count + 1  # a last line without a newline


def _unread(cell: str) -> float:
    return 0.0


def _raise_parse_error(path: Path, header: list[str], unread: tuple[int, ...] = ()) -> None:
    """Name the first line, and column (not one of `unread`), that is not a row of numbers."""
    for line, row in _rows(path):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} values, but the header has "
                            f"{len(header)} columns")
        for index, (name, cell) in enumerate(zip(header, row)):
            if index not in unread and not NUMBER.fullmatch(cell):
                raise DataError(f"{path}, line {line}, column {name!r}: {cell!r} is not a "
                                "number") from None


def line_of_row(path: Path, row: int) -> int:
    """The file line of data row `row` (0-based; blank lines are no rows)."""
    for seen, (line, _) in enumerate(_rows(path)):
        if seen == row:
            return line
    return row + 2


def _rows(path: Path):
    """(line number, cells) of each data row that is not blank."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            next(reader)
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row
        except csv.Error as error:
            raise DataError(f"{path}, line {reader.line_num}: {error}") from None


def _read_npz(path: Path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray, tuple]:
    x, y = read_npz(path, dtype, memory_limit=available_memory())
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    return x, y, feature_names(path, 1 if x.ndim == 1 else x.shape[1])


def available_memory() -> int | None:
    """Bytes of memory free for new data (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
