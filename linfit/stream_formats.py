"""How a stream holds each kind of data file's rows: a shard's rows, in blocks, and
a batch of rows -> their values.

A CSV row travels as its line (a string, parsed by `tf.io.decode_csv` once
batched); an NPZ row as its bytes, x's then y's as stored (uint8 [row
bytes]: read in place by `tf.data.FixedLengthRecordDataset`, never parsed).
Either way the rows are the first axis, so `linfit.streaming` orders,
shuffles, batches and shares out both kinds alike. A worker stands in empty
rows for the rows other workers parse (`RowFormat.stand_ins`): "" for CSV,
which no line is; for NPZ, whose bytes can be anything, its rows then carry
a first byte that says a row is present (`flagged`; only on workers, as it
costs a copy of every row).
"""

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
    x, y = files.arrays[0]
    flag = int(flagged)
    npz_rows = _npz_rows(files, paths, sizes, flag)
    return RowFormat(read=lambda shard: _counted(npz_rows(shard), rows[shard]),
                     values=_npz_values(files, flag),
                     stand_ins=lambda count: tf.zeros([count, flag + x.row_bytes + y.row_bytes],
                                                      tf.uint8),
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


def _npz_rows(files: DataFiles, paths, sizes, flag: int):
    """`RowFormat.read` for NPZ shards: each block of x's rows and of y's, read whole,
    as rows of bytes: present (1, if `flag`), x's, y's."""
    x, y = files.arrays[0]
    x_offsets, y_offsets = (tf.constant([arrays[i].offset for arrays in files.arrays], tf.int64)
                            for i in (0, 1))
    rows = tf.constant(files.rows, tf.int64)

    def rows_of(x_block, y_block):
        x_rows = tf.reshape(tf.io.decode_raw(x_block, tf.uint8), [-1, x.row_bytes])
        y_rows = tf.reshape(tf.io.decode_raw(y_block, tf.uint8), [-1, y.row_bytes])
        present = [tf.ones([tf.shape(y_rows)[0], 1], tf.uint8)] if flag else []
        return tf.concat([*present, x_rows, y_rows], axis=1)

    def read(shard):
        stored = (paths[shard], sizes[shard], rows[shard])
        return tf.data.Dataset.zip(_blocks(*stored, x_offsets[shard], x.row_bytes),
                                   _blocks(*stored, y_offsets[shard], y.row_bytes)).map(rows_of)

    return read


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


def _npz_values(files: DataFiles, flag: int):
    x, y = files.arrays[0]
    native = "<" if sys.byteorder == "little" else ">"

    def decoded(row_bytes, stored, dtype):
        kind = np.dtype(stored.dtype)
        width = stored.row_bytes // kind.itemsize
        values = tf.reshape(row_bytes, [-1, width, kind.itemsize])
        if kind.byteorder not in ("=", "|", native):
            values = tf.reverse(values, axis=[2])
        values = tf.reshape(tf.bitcast(values, tf.as_dtype(kind.type)), [-1, width])
        return _finite(values, dtype)

    def values(rows, dtype):
        return (decoded(rows[:, flag:flag + x.row_bytes], x, dtype),
                decoded(rows[:, flag + x.row_bytes:], y, dtype))

    return values


def _finite(values, dtype):
    """`values` as `dtype`, once every one is known to be finite in float32."""
    # One reduction and an assertion: `tf.debugging.check_numerics` took as long as
    # parsing the CSV text did (measured: the parse ran at half the speed with it).
    as_float32 = tf.cast(values, tf.float32)
    finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(as_float32)), [NOT_FINITE])
    with tf.control_dependencies([finite]):
        return tf.identity(as_float32) if dtype == tf.float32 else tf.cast(values, dtype)
