"""How a stream holds each kind of data file's rows: a shard's rows, in blocks, and
a batch of rows -> their values.

A CSV row travels as its line (a string, parsed by `tf.io.decode_csv` once
batched); an NPZ row as its bytes, x's then y's as stored (uint8 [row
bytes]: read in place by `tf.data.FixedLengthRecordDataset`, never parsed),
or, when the shards differ in dtype, as its values' bytes in float32 and in
float64 (a batch mixes the shards' rows, so they must be alike).
Either way the rows are the first axis, so `linfit.streaming` orders,
shuffles, batches and shares out both kinds alike. A worker stands in empty
rows for the rows other workers parse (`RowFormat.stand_ins`): "" for CSV,
which no line is; for NPZ, whose bytes can be anything, its rows then carry
a first byte that says a row is present (`flagged`; only on workers, as it
costs a copy of every row).
"""

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from linfit import pipeline
from linfit.streams import DataFiles

# The messages a value that is not finite in float32, or not a number, stops a stream with.
NOT_FINITE = "linfit: a data value is not finite in float32"
NOT_A_NUMBER = "linfit: a data value is not a number"
# The message a stream stops with when a shard ends without the rows the pre-flight
# counted. (No apostrophe: TensorFlow's error text escapes it.)
CHANGED = "linfit: the rows of a data file are not those counted before training"


@dataclass(frozen=True)
class RowFormat:
    """How a stream holds one kind of file's rows.

    Attributes:
      read: shard (an int64 index into `files.paths`) -> the dataset of its
        rows, in blocks of up to STREAM_BLOCK rows.
      values: (a batch of rows, dtype) -> (x [rows, d], y [rows, k]) in dtype:
        every value as linfit's reader reads it, checked to be finite in float32.
      stand_ins: count -> `count` empty rows.
      present: rows -> which of them are rows, not stand-ins.
    """

    read: Callable
    values: Callable
    stand_ins: Callable
    present: Callable


def row_format(files: DataFiles, flagged: bool = False) -> RowFormat:
    """The `RowFormat` of `files`' kind; `flagged`: with stand-ins (a worker's)."""
    paths = tf.constant([str(path) for path in files.paths])
    sizes, rows = (tf.constant(counts, tf.int64) for counts in (files.sizes, files.rows))
    if files.arrays is None:
        return RowFormat(read=lambda shard: _counted(_csv_lines(paths[shard], sizes[shard]),
                                                     rows[shard]),
                         values=_csv_values(files),
                         stand_ins=lambda count: tf.fill([count], ""),
                         present=lambda rows: tf.not_equal(rows, ""))
    flag = int(flagged)
    as_values = len(_dtypes(files)) > 1
    npz_rows = _npz_rows(files, paths, sizes, flag, as_values)
    row_bytes = flag + _npz_row_bytes(files, as_values)
    return RowFormat(read=lambda shard: _counted(npz_rows(shard), rows[shard]),
                     values=_npz_values(files, flag, as_values),
                     stand_ins=lambda count: tf.zeros([count, row_bytes], tf.uint8),
                     present=lambda rows: tf.equal(rows[:, 0], 1))


def _counted(blocks: tf.data.Dataset, rows) -> tf.data.Dataset:
    """`blocks` (a shard's), checked to hold `rows` rows in all when they end: a file
    changed since the pre-flight stops the stream, even one grown by whole blocks."""
    spec = blocks.element_spec
    end = tf.data.Dataset.from_tensors((tf.zeros([0, *spec.shape[1:]], spec.dtype), True))

    def count(seen, element):
        block, last = element
        seen += tf.shape(block, tf.int64)[0]
        check = tf.debugging.Assert(tf.logical_or(tf.logical_not(last), tf.equal(seen, rows)),
                                    [CHANGED])
        with tf.control_dependencies([check]):
            return seen, tf.identity(block)

    return blocks.map(lambda block: (block, False)).concatenate(end).scan(
        tf.constant(0, tf.int64), count)


# The bytes of a CSV file a stream reads at a time, then splits into lines.
# tf.data's cost is per element: TextLineDataset hands on each line as one, and
# read 0.9-1.1 M lines/s where this reads 2.5-2.9 M (measured on 2e6 lines).
CSV_BLOCK_BYTES = 1 << 20


def _csv_lines(path, size) -> tf.data.Dataset:
    """A CSV shard's data lines, less the blank ones, in blocks (those that end in
    each CSV_BLOCK_BYTES of the file): its bytes split at \\n, a \\r before it
    dropped (as TextLineDataset drops it). The file must still be `size` bytes,
    as the pre-flight counted its rows: else reading it fails (a DataLossError)."""
    def lines_of(state, block):
        carry, header = state  # the line a block ended in; the header lines left to skip
        text = tf.strings.regex_replace(carry + block, "\r\n", "\n")  # a \r\n may span blocks
        parts = tf.strings.split(text, "\n")
        lines = parts[:-1]
        skipped = tf.minimum(header, tf.size(lines))
        return (parts[-1], header - skipped), not_blank(lines[skipped:])

    def not_blank(lines):  # blank as Python's str.strip() sees it, as linfit's reader
        return tf.boolean_mask(lines, tf.logical_not(tf.strings.regex_full_match(
            lines, r"[\s\p{Z}\x{0b}\x{85}\x{1c}-\x{1f}]*")))  # RE2's \s leaves out \v

    blocks = _blocks(path, size, size, 0, 1, CSV_BLOCK_BYTES)
    end = tf.data.Dataset.from_tensors(tf.constant("\n"))  # ends a last line without one
    return blocks.concatenate(end).scan((tf.constant(""), tf.constant(1)), lines_of)


def _csv_values(files: DataFiles):
    defaults = [tf.constant([], tf.float64)] * len(files.header)  # no default: a hole is an error
    features, targets = list(files.feature_columns), list(files.target_columns)

    def values(lines, dtype):
        # TensorFlow's parser also reads hexadecimal (0x10), which linfit's reader refuses.
        hexadecimal = tf.strings.regex_full_match(lines, r"(?i).*0x[0-9a-f.]+.*")
        with tf.control_dependencies([tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(hexadecimal)), [NOT_A_NUMBER])]):
            lines = tf.identity(lines)
        table = _finite(tf.stack(tf.io.decode_csv(lines, defaults), axis=1), dtype)
        return tf.gather(table, features, axis=1), tf.gather(table, targets, axis=1)

    return values


def _dtypes(files: DataFiles) -> list[tuple[np.dtype, np.dtype]]:
    """The (x, y) dtypes of NPZ shards, each once, in the order of the shards."""
    return list(dict.fromkeys((x.dtype, y.dtype) for x, y in files.arrays))


def _widths(files: DataFiles) -> tuple[int, int]:
    """The values in a row of x and of y."""
    return len(files.feature_columns), len(files.target_columns)


def _npz_row_bytes(files: DataFiles, as_values: bool) -> int:
    """The bytes of a streamed NPZ row (its present flag aside): see `_npz_rows`."""
    if as_values:
        return 12 * sum(_widths(files))
    x, y = files.arrays[0]
    return x.row_bytes + y.row_bytes


def _npz_rows(files: DataFiles, paths, sizes, flag: int, as_values: bool):
    """`RowFormat.read` for NPZ shards: each block of x's rows and of y's, read whole,
    as rows of bytes: present (1, if `flag`), then x's and y's as stored, or, for
    shards of several dtypes (`as_values`), x's and y's values in float32, then in
    float64 (so that each is rounded once, as linfit's reader rounds it)."""
    x_offsets, y_offsets = (tf.constant([arrays[i].offset for arrays in files.arrays], tf.int64)
                            for i in (0, 1))
    rows = tf.constant(files.rows, tf.int64)
    dtypes = _dtypes(files)
    x_width, y_width = _widths(files)

    def reader(x_dtype: np.dtype, y_dtype: np.dtype):
        x_bytes, y_bytes = x_width * x_dtype.itemsize, y_width * y_dtype.itemsize

        def rows_of(x_block, y_block):
            x_rows = tf.reshape(tf.io.decode_raw(x_block, tf.uint8), [-1, x_bytes])
            y_rows = tf.reshape(tf.io.decode_raw(y_block, tf.uint8), [-1, y_bytes])
            present = [tf.ones([tf.shape(y_rows)[0], 1], tf.uint8)] if flag else []
            if not as_values:
                return tf.concat([*present, x_rows, y_rows], axis=1)
            x_values, y_values = _decoded(x_rows, x_dtype, x_width), _decoded(y_rows, y_dtype,
                                                                               y_width)
            return tf.concat([*present, *(_as_bytes(values, dtype) for dtype in (
                tf.float32, tf.float64) for values in (x_values, y_values))], axis=1)

        def read(shard):
            stored = (paths[shard], sizes[shard], rows[shard])
            return tf.data.Dataset.zip(_blocks(*stored, x_offsets[shard], x_bytes),
                                       _blocks(*stored, y_offsets[shard], y_bytes)).map(rows_of)

        return read

    readers = [reader(*kind) for kind in dtypes]
    if len(readers) == 1:
        return readers[0]
    kind_of = tf.constant([dtypes.index((x.dtype, y.dtype)) for x, y in files.arrays])

    def read(shard):  # its kind's reader: the others take none of it (nor open it)
        everything, none = tf.constant(-1, tf.int64), tf.constant(0, tf.int64)
        kinds = [read_as(shard).take(tf.where(tf.equal(kind_of[shard], kind), everything, none))
                 for kind, read_as in enumerate(readers)]
        return functools.reduce(tf.data.Dataset.concatenate, kinds)

    return read


def _as_bytes(values, dtype):
    """Values [rows, width] as `dtype`, as bytes [rows, width * dtype.size]."""
    return tf.reshape(tf.bitcast(tf.cast(values, dtype), tf.uint8),
                      [-1, values.shape[1] * dtype.size])


def _blocks(path, size, rows, offset, row_bytes: int, block_rows: int | None = None
            ) -> tf.data.Dataset:
    """The bytes of a stored array's `rows` rows from `offset` on, in blocks of
    `block_rows` rows (default STREAM_BLOCK; the last one shorter): one record each.
    A file's bytes are the rows of 1 byte of an array at offset 0."""
    block_rows = block_rows or pipeline.STREAM_BLOCK
    full = rows // block_rows
    rest = rows - full * block_rows
    blocks_end = offset + full * block_rows * row_bytes
    blocks = tf.data.FixedLengthRecordDataset(path, block_rows * row_bytes, header_bytes=offset,
                                              footer_bytes=size - blocks_end)
    last = tf.data.FixedLengthRecordDataset(  # none when the rows fill whole blocks
        path, tf.maximum(rest, 1) * row_bytes, header_bytes=blocks_end,
        footer_bytes=tf.maximum(size - blocks_end - tf.maximum(rest, 1) * row_bytes, 0))
    return blocks.concatenate(last.take(tf.minimum(rest, 1)))


NATIVE = "<" if sys.byteorder == "little" else ">"


def _decoded(row_bytes, dtype: np.dtype, width: int):
    """Rows of bytes [rows, width * dtype.itemsize] -> their `width` values [rows,
    width] as stored (`dtype`, in either byte order)."""
    values = tf.reshape(row_bytes, [-1, width, dtype.itemsize])
    if dtype.byteorder not in ("=", "|", NATIVE):
        values = tf.reverse(values, axis=[2])
    return tf.reshape(tf.bitcast(values, tf.as_dtype(dtype.type)), [-1, width])


def _npz_values(files: DataFiles, flag: int, as_values: bool):
    x, y = files.arrays[0]
    x_width, y_width = _widths(files)

    def values(rows, dtype):
        if not as_values:  # as stored
            return (_finite(_decoded(rows[:, flag:flag + x.row_bytes], x.dtype, x_width), dtype),
                    _finite(_decoded(rows[:, flag + x.row_bytes:], y.dtype, y_width), dtype))
        start = flag + (0 if dtype == tf.float32 else 4 * (x_width + y_width))
        x_end, y_end = start + dtype.size * x_width, start + dtype.size * (x_width + y_width)
        same = np.dtype(dtype.as_numpy_dtype)  # as `dtype` rounded each value
        return (_finite(_decoded(rows[:, start:x_end], same, x_width), dtype),
                _finite(_decoded(rows[:, x_end:y_end], same, y_width), dtype))

    return values


def _finite(values, dtype):
    """`values` as `dtype`, once every one is known to be finite in float32."""
    # One reduction and an assertion: `tf.debugging.check_numerics` took as long as
    # parsing the CSV text did (measured: the parse ran at half the speed with it).
    as_float32 = tf.cast(values, tf.float32)
    finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(as_float32)), [NOT_FINITE])
    with tf.control_dependencies([finite]):
        return tf.identity(as_float32) if dtype == tf.float32 else tf.cast(values, dtype)
