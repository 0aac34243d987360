"""How a stream reads each kind of data file: a shard's rows, in blocks, and a batch
of rows -> their values.

A row travels as one string: a CSV file's line, or an NPZ file's row of x
and y as stored (their bytes, read in place by
`tf.data.FixedLengthRecordDataset`, decoded by `tf.io.decode_raw`, never
parsed). So `linfit.streaming` orders, shuffles, batches and shares out the
rows of either kind alike. No row is an empty string: a worker stands in
empty strings for the rows other workers parse.
"""

import numpy as np
import tensorflow as tf

from linfit import pipeline
from linfit.streams import DataFiles

# The messages a value that is not finite in float32, or not a number, stops a stream with.
NOT_FINITE = "linfit: a data value is not finite in float32"
NOT_A_NUMBER = "linfit: a data value is not a number"


def shard_reader(files: DataFiles):
    """shard (an int64 index into `files.paths`) -> the dataset of its rows, in
    blocks (1-D string tensors) of up to STREAM_BLOCK rows."""
    paths = tf.constant([str(path) for path in files.paths])
    if files.arrays is None:
        return lambda shard: _csv_lines(tf.gather(paths, shard))
    return _npz_rows(files, paths)


def values_reader(files: DataFiles, dtype):
    """A batch of rows (1-D strings) -> (x [rows, d], y [rows, k]) in `dtype`: every
    value as linfit's reader reads it, checked to be finite in float32."""
    if files.arrays is None:
        return _csv_values(files, dtype)
    return _npz_values(files, dtype)


def _csv_lines(path) -> tf.data.Dataset:
    """A CSV shard's data lines, in blocks of STREAM_BLOCK lines less the blank ones."""
    def not_blank(lines):  # blank as Python's str.strip() sees it, as linfit's reader
        return tf.boolean_mask(lines, tf.logical_not(tf.strings.regex_full_match(
            lines, r"[\s\p{Z}\x{0b}\x{85}\x{1c}-\x{1f}]*")))  # RE2's \s leaves out \v

    return tf.data.TextLineDataset(path).skip(1).batch(pipeline.STREAM_BLOCK).map(not_blank)


def _csv_values(files: DataFiles, dtype):
    defaults = [tf.constant([], tf.float64)] * len(files.header)  # no default: a hole is an error
    features, targets = list(files.feature_columns), list(files.target_columns)

    def values(lines):
        # TensorFlow's parser also reads hexadecimal (0x10), which linfit's reader refuses.
        hexadecimal = tf.strings.regex_full_match(lines, r"(?i).*0x[0-9a-f.]+.*")
        with tf.control_dependencies([tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(hexadecimal)), [NOT_A_NUMBER])]):
            lines = tf.identity(lines)
        table = _finite(tf.stack(tf.io.decode_csv(lines, defaults), axis=1), dtype)
        return tf.gather(table, features, axis=1), tf.gather(table, targets, axis=1)

    return values


def _npz_rows(files: DataFiles, paths):
    """`shard_reader` for NPZ shards: each block of x's rows and of y's, read whole,
    cut into rows and joined (x's bytes, then y's)."""
    x, y = files.arrays[0]
    x_offsets, y_offsets = (tf.constant([arrays[i].offset for arrays in files.arrays], tf.int64)
                            for i in (0, 1))
    sizes = tf.constant([arrays[0].file_bytes for arrays in files.arrays], tf.int64)
    rows = tf.constant(files.rows, tf.int64)

    def rows_of(x_block, y_block):
        count = tf.strings.length(y_block) // y.row_bytes
        starts = tf.range(count)
        return tf.strings.join([tf.strings.substr(x_block, starts * x.row_bytes,
                                                  tf.fill([count], x.row_bytes)),
                                tf.strings.substr(y_block, starts * y.row_bytes,
                                                  tf.fill([count], y.row_bytes))])

    def read(shard):
        stored = (paths[shard], sizes[shard], rows[shard])
        return tf.data.Dataset.zip(_blocks(*stored, x_offsets[shard], x.row_bytes),
                                   _blocks(*stored, y_offsets[shard], y.row_bytes)).map(rows_of)

    return read


def _blocks(path, size, rows, offset, row_bytes: int) -> tf.data.Dataset:
    """The bytes of a stored array's `rows` rows from `offset` on, in blocks of
    STREAM_BLOCK rows (the last one shorter): one record each."""
    block_rows = pipeline.STREAM_BLOCK
    full = rows // block_rows
    rest = rows - full * block_rows
    blocks_end = offset + full * block_rows * row_bytes
    blocks = tf.data.FixedLengthRecordDataset(path, block_rows * row_bytes, header_bytes=offset,
                                              footer_bytes=size - blocks_end)
    last = tf.data.FixedLengthRecordDataset(  # none when the rows fill whole blocks
        path, tf.maximum(rest, 1) * row_bytes, header_bytes=blocks_end,
        footer_bytes=tf.maximum(size - blocks_end - tf.maximum(rest, 1) * row_bytes, 0))
    return blocks.concatenate(last.take(tf.minimum(rest, 1)))


def _npz_values(files: DataFiles, dtype):
    x, y = files.arrays[0]

    def decoded(strings, stored):
        kind = np.dtype(stored.dtype)
        raw = tf.io.decode_raw(strings, tf.as_dtype(kind.type), little_endian=kind.byteorder != ">")
        return _finite(tf.reshape(raw, [-1, stored.row_bytes // kind.itemsize]), dtype)

    def values(rows):
        return (decoded(tf.strings.substr(rows, 0, x.row_bytes), x),
                decoded(tf.strings.substr(rows, x.row_bytes, y.row_bytes), y))

    return values


def _finite(values, dtype):
    """`values` as `dtype`, once every one is known to be finite in float32."""
    checked = tf.debugging.check_numerics(tf.cast(values, tf.float32), NOT_FINITE)
    if dtype == tf.float32:
        return checked
    with tf.control_dependencies([checked]):
        return tf.cast(values, dtype)
