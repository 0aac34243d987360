"""CSV or NPZ files to be streamed: what is known of them before training (the pre-flight),
and the careful pass that names a bad row. NumPy only; `linfit.streaming`
reads the rows with tf.data.

    files = open_data_files("data/part-*.csv", target="y")
    files.num_examples, files.features, files.rows   # counted, nothing held

The pre-flight reads every shard's header (they must agree) and counts its
rows (an NPZ file's arrays' headers give both), and takes a checksum of its
bytes (a resumed run then knows whether the files changed); it holds no row.
`validate()` reads every row as `data.validate = "full"` asks, and
`find_bad_row()` runs the same checks after the stream met a value it could
not use, to say which file, line and column (or array and row) it was.
"""

import hashlib
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from linfit.data_files import (CHUNK_ROWS, checked_file, column_chunks, csv_chunks, is_npz,
                               read_header, select_columns, shown)
from linfit.errors import DataError
from linfit.npz_files import (StoredArray, check_finite, feature_names, stored_arrays,
                               target_names)
from linfit.shards import check_shards, describe, is_sharded, shard_paths

# Bytes of an NPZ file read at a time for its checksum.
CHECKSUM_BLOCK = 1 << 22


@dataclass(frozen=True)
class DataFiles:
    """One table in one or more CSV or NPZ files (shards), read in order, never held whole.

    Attributes:
      paths: the shards, in order.
      header: their common header row.
      feature_columns, target_columns: indexes into the header.
      rows: the data rows of each shard (blank lines are no rows).
      sizes: each shard's bytes when its rows were counted: a file whose size
        has changed since is refused.
      checksums: each shard's CRC-32 then (of all its bytes: about 4 GB/s), so
        that a resumed run notices a file changed anywhere (`fingerprint`).
      source: how reports name the data ("data/part-*.csv (3 files)").
      mean, std: standardisation to apply to the features as they are read
        (see `scaled`), or None.
      arrays: for NPZ shards, each one's x and y as stored (the header then
        names x's columns, then y's, as linfit's reader names them); None for CSV.
    """

    paths: tuple[Path, ...]
    header: tuple[str, ...]
    feature_columns: tuple[int, ...]
    target_columns: tuple[int, ...]
    rows: tuple[int, ...]
    sizes: tuple[int, ...]
    checksums: tuple[int, ...]
    source: str
    mean: np.ndarray | None = field(default=None, compare=False)
    std: np.ndarray | None = field(default=None, compare=False)
    arrays: tuple[tuple[StoredArray, StoredArray], ...] | None = None

    def scaled(self, mean: np.ndarray, std: np.ndarray) -> "DataFiles":
        """These files, their features read as (x − mean) / std (in float64, then
        float32, as `linfit.standardizer.Standardizer.transform` computes it)."""
        return replace(self, mean=mean, std=std)

    def select(self, shards: slice) -> "DataFiles":
        """The shards `shards` (a slice of `paths`) of these files, as one table."""
        return replace(self, paths=self.paths[shards], rows=self.rows[shards],
                       sizes=self.sizes[shards], checksums=self.checksums[shards],
                       arrays=None if self.arrays is None else self.arrays[shards])

    @property
    def num_examples(self) -> int:
        return sum(self.rows)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.header[i] for i in self.feature_columns)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.header[i] for i in self.target_columns)

    @property
    def features(self) -> int | None:
        """None for one feature (x is [N]), else d (x is [N, d])."""
        return None if len(self.feature_columns) == 1 else len(self.feature_columns)

    @property
    def outputs(self) -> int | None:
        """None for one target (y is [N]), else k (y is [N, k]; an NPZ's y of [N, 1] too)."""
        if self.arrays is not None and len(self.arrays[0][1].shape) == 2:
            return self.arrays[0][1].shape[1]
        return None if len(self.target_columns) == 1 else len(self.target_columns)

    @property
    def size(self) -> int:
        """The files' bytes."""
        return sum(path.stat().st_size for path in self.paths)

    def fingerprint(self) -> str:
        """A digest of the files as the pre-flight read them: header, columns, and each
        one's rows, size and checksum (so every byte)."""
        digest = hashlib.blake2b(digest_size=12)
        digest.update(repr((self.header, self.feature_columns, self.target_columns,
                            self.rows, self.sizes, self.checksums)).encode())
        return digest.hexdigest()

    def exact_chunks(self):
        """(x [rows, d], y [rows] or [rows, k]) in float64, chunk by chunk, in order:
        the values as read, for exact sums (the least-squares reference)."""
        if self.arrays is not None:
            yield from self._stored_chunks()
            return
        for path in self.paths:
            for chunk in csv_chunks(path, list(self.header)):
                y = chunk[:, self.target_columns]
                yield chunk[:, self.feature_columns], (y[:, 0] if y.shape[1] == 1 else y)

    def sample(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `rows` rows (x, y) in float32, shaped as training takes them."""
        xs, ys, seen = [], [], 0
        for x, y in self.exact_chunks():
            xs.append(x[:rows - seen])
            ys.append(y[:rows - seen])
            seen += len(xs[-1])
            if seen >= rows:
                break
        with np.errstate(over="ignore"):  # a value float32 cannot hold: the stream names it
            x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)
        return (x[:, 0] if self.features is None else x), y

    def validate(self) -> None:
        """Read every row: a row that is not numbers, or a value that is not finite
        in float32, is a DataError naming its file, line and column (of an NPZ
        file: the array and the row)."""
        if self.arrays is not None:
            for _ in self._stored_chunks(check=True):
                pass
            return
        for path, size in zip(self.paths, self.sizes):
            _check_unchanged(path, size)
            _check_rows(path, list(self.header))

    def _stored_chunks(self, check: bool = False):
        """`exact_chunks` of NPZ shards; `check`: each chunk checked as `validate` says."""
        for path, size, stored in zip(self.paths, self.sizes, self.arrays):
            _check_unchanged(path, size)
            first_row = 0
            for x, y in zip(*(array.chunks(path, CHUNK_ROWS) for array in stored)):
                for name, values in ((("x", x), ("y", y)) if check else ()):
                    with np.errstate(over="ignore"):  # named by check_finite
                        converted = values.astype(np.float32)
                    check_finite(path, name, values, converted, first_row)
                first_row += len(y)
                yield x.reshape(len(x), -1).astype(np.float64), y.astype(np.float64)

    def find_bad_row(self) -> DataError | None:
        """The error of the first bad row of any shard (or of a shard that cannot be
        read any more), or None if every row is good."""
        try:
            self.validate()
        except DataError as error:
            return error
        except OSError as error:
            return DataError(f"{shown(Path(error.filename or self.source))} cannot be read any "
                             f"more ({error.strerror}): check the data files, then --resume")
        return None


def open_data_files(spec: str | Path | tuple[str, ...], target: str | tuple[str, ...] = "",
                    feature_names: tuple[str, ...] = ()) -> DataFiles:
    """The pre-flight of streaming: the shards named, their headers checked, their
    rows counted.

    Raises:
      DataError: for a missing or unreadable shard, headers (or NPZ arrays) that
        differ, unknown columns, line endings a stream cannot split, NPZ arrays a
        stream cannot read in place (`linfit.npz_files.stored_arrays`), or no rows.
    """
    paths = shard_paths(spec) if is_sharded(spec) else [checked_file(spec)]
    check_shards(paths)
    source = describe(spec, paths) if is_sharded(spec) else str(spec)
    if is_npz(paths[0]):
        return _open_npz(paths, source)
    header = read_header(paths[0])
    targets, features = select_columns(paths[0], header, target, feature_names)
    rows, sizes, checksums = zip(*(_count_rows(path) for path in paths))
    if 0 in rows:  # as when read into memory
        raise DataError(f"{shown(paths[rows.index(0)])} has a header but no data rows")
    return DataFiles(tuple(paths), tuple(header), tuple(features), tuple(targets), rows, sizes,
                     checksums, source)


def _open_npz(paths: list[Path], source: str) -> DataFiles:
    """NPZ shards' pre-flight: each one's arrays checked and located (`check_shards`
    has found them all of one shape; of any dtypes: see `linfit.stream_formats`).
    Their columns are named as linfit's reader names them (x_names, else x or x0,
    x1, ...; y_names, else y or y0, y1, ...); data.target and data.features do not
    apply, as in memory."""
    arrays = tuple(stored_arrays(path) for path in paths)  # shapes and names: check_shards
    x, y = arrays[0]
    features = feature_names(paths[0], int(np.prod(x.shape[1:], dtype=np.int64)))
    targets = target_names(paths[0], None if len(y.shape) == 1 else y.shape[1])
    return DataFiles(tuple(paths), features + targets, tuple(range(len(features))),
                     tuple(range(len(features), len(features) + len(targets))),
                     tuple(stored[1].shape[0] for stored in arrays),
                     tuple(stored[0].file_bytes for stored in arrays),
                     tuple(_checksum(path, stored[0].file_bytes)
                           for path, stored in zip(paths, arrays)), source, arrays=arrays)


def _count_rows(path: Path, block_bytes: int = 1 << 20) -> tuple[int, int, int]:
    """The data rows of a CSV file (lines after the header that are not blank), the
    bytes they were counted in (the file's size when it was opened), and their CRC-32.

    Raises:
      DataError: for a \\r not followed by \\n, which a stream cannot split at.
    """
    rows, lines, checksum = -1, 0, 0  # the header is no row
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        for block in _line_blocks(f, size, block_bytes):
            values = np.frombuffer(block, np.uint8)
            ends = np.flatnonzero(values == ord("\n"))
            _check_line_ends(path, values, ends, lines)
            rows += _rows_in(block, values, ends)
            lines += len(ends)
            checksum = zlib.crc32(block, checksum)
    return max(rows, 0), size, checksum


def _checksum(path: Path, size: int) -> int:
    """The CRC-32 of a file's first `size` bytes."""
    checksum = 0
    with path.open("rb") as f:
        while size > 0 and (block := f.read(min(CHECKSUM_BLOCK, size))):
            size -= len(block)
            checksum = zlib.crc32(block, checksum)
    return checksum


def _check_line_ends(path: Path, values: np.ndarray, ends: np.ndarray, lines: int) -> None:
    """Refuse a \\r before anything but \\n in a block of whole lines (`values`,
    its \\n at `ends`, after `lines` lines); one ending the file is a line's end."""
    returns = np.flatnonzero(values[:-1] == ord("\r"))
    alone = returns[values[returns + 1] != ord("\n")]
    if alone.size:
        line = lines + int(np.searchsorted(ends, alone[0])) + 1
        raise DataError(f"{shown(path)}, line {line}: a \\r not followed by \\n (as an old Mac "
                        "file ends its lines): a stream splits lines only at \\n; save the "
                        "file with \\n line endings, or set data.streaming = false")


def _line_blocks(f, size: int, block_bytes: int = 1 << 20):
    """The first `size` bytes of a binary file, in blocks of whole lines (the last
    one may lack its \\n)."""
    pieces: list[bytes] = []
    while size > 0 and (block := f.read(min(block_bytes, size))):
        size -= len(block)
        end = block.rfind(b"\n") + 1
        if not end:  # a line longer than a block
            pieces.append(block)
            continue
        yield b"".join([*pieces, block[:end]])
        pieces = [block[end:]]
    if rest := b"".join(pieces):
        yield rest


def _rows_in(block: bytes, values: np.ndarray, ends: np.ndarray) -> int:
    """The lines of a block of whole lines (`values` its bytes, its \\n at `ends`)
    that are not blank. Counted with NumPy, a block at a time (line by line in
    Python took 7 s for 2 GB): a line that starts with a printable character other
    than a space is not blank; the others (blank lines, or lines indented with
    spaces) are looked at one by one."""
    lines = len(ends) + (not block.endswith(b"\n"))
    if not lines:
        return 0
    starts = np.concatenate(([0], ends[:lines - 1] + 1))
    first = values[starts]
    maybe = np.flatnonzero((first <= ord(" ")) | (first > ord("~")))
    ends = np.append(ends, len(values))
    return lines - sum(_blank(block[starts[i]:ends[i]]) for i in maybe)


# The ASCII characters str.strip() strips (bytes.isspace() leaves out \x1c-\x1f).
ASCII_BLANK = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _blank(line: bytes) -> bool:
    """Blank as Python's str.strip() sees it (a line of spaces, or of Unicode ones
    such as a no-break space): the readers skip such lines, and so does the stream
    (`linfit.stream_formats._csv_lines`), which must read as many rows as this counts."""
    rest = line.strip(ASCII_BLANK)
    return not rest or (not rest.isascii() and not rest.decode("utf-8", "replace").strip())


def _check_unchanged(path: Path, size: int) -> None:
    if path.stat().st_size != size:
        raise DataError(f"{shown(path)} has changed since it was checked (it was {size} "
                        f"bytes, it is {path.stat().st_size}): run the command again")


def _check_rows(path: Path, header: list[str]) -> None:
    """Every row numbers of the header's width, every value finite in float32."""
    for _ in column_chunks(path, header, list(range(len(header))), []):
        pass
