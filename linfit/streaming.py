"""Streamed data: batches read from CSV files by tf.data, never the whole table.

Each epoch reads the shards' lines (`tf.data.TextLineDataset`, in C++), in
blocks, in the order `linfit.pipeline.stream_order` gives, rebatches them, and
parses each batch whole (`tf.io.decode_csv`, as float64, then float32:
the rounding of linfit's own reader, so a row streamed is bitwise the row
read into memory). A few batches are read ahead (prefetch). Memory holds
the shuffle window, the batches in flight and nothing else.
"""

import dataclasses
from dataclasses import dataclass

import tensorflow as tf

from linfit import data_files, pipeline
from linfit.errors import DataError
from linfit.pipeline import FitData, stream_order
from linfit.streams import DataFiles

# The messages a value that is not finite in float32, or not a number, stops a stream with.
NOT_FINITE = "linfit: a data value is not finite in float32"
NOT_A_NUMBER = "linfit: a data value is not a number"


@dataclass(frozen=True)
class StreamData(FitData):
    """A fit's data read from files as it trains (see `FitData` for the rest).

    Attributes:
      files: the training data's files.
      validation_files: the validation data's, or None.
      worker: (index, count) of this worker in a cluster that trains one full
        batch: each worker reads its own share of the files (every count-th
        shard), or of the chunks when there are fewer shards than workers, and
        sums that share's gradient; the optimizer adds the workers' sums.
    """

    files: DataFiles | None = None
    validation_files: DataFiles | None = None
    worker: tuple[int, int] | None = None  # (index, count) under a multi-worker strategy

    @property
    def num_examples(self) -> int:
        return self.files.num_examples

    @property
    def validation(self) -> bool:
        return self.validation_files is not None

    @property
    def values_per_step(self) -> int:
        rows = min(self.batch_size or self.num_examples, self.num_examples, pipeline.FULL_PASS_ROWS)
        return rows * (len(self.files.feature_columns) + len(self.files.target_columns))

    @property
    def validation_steps(self) -> int:
        return pipeline._batches(self.validation_files.num_examples, self.validation_size)

    def batches(self, start: int) -> tf.data.Dataset:
        return self._epochs(start, min(self.batch_size or self.num_examples, self.num_examples))

    @property
    def local_chunks(self) -> int:
        """The chunks of this worker's share of one full batch (all of them, alone)."""
        if self.worker is None:
            return self.chunks_per_step
        share, by_chunks = self._worker_files()
        if by_chunks:
            return len(range(self.worker[0], self.chunks_per_step, self.worker[1]))
        return -(-share.num_examples // pipeline.FULL_PASS_ROWS)

    def _worker_files(self) -> tuple[DataFiles, bool]:
        """This worker's files, and whether it shares them by chunks (fewer files
        than workers: each reads every file and parses every count-th chunk)."""
        share = self.files.share(*self.worker)
        return share, share.paths == self.files.paths

    def update_batches(self, start: int) -> tf.data.Dataset:
        if self.worker is not None:
            return self._share(start)
        if self.chunks_per_step == 1:
            return self.batches(start)
        return self._epochs(start, pipeline.FULL_PASS_ROWS)

    def _share(self, start: int) -> tf.data.Dataset:
        """This worker's chunks of every epoch's full batch, in the files' order."""
        (index, count), (share, by_chunks) = self.worker, self._worker_files()

        def epoch_chunks(_):
            chunks = _lines(share, None, 0, 0).rebatch(pipeline.FULL_PASS_ROWS)
            return chunks.shard(count, index) if by_chunks else chunks

        return _parsed(tf.data.Dataset.range(start, self.epochs).flat_map(epoch_chunks),
                       self.files)

    def eager_batches(self, start: int):
        return iter(self.update_batches(start))

    def validation_batches(self) -> tf.data.Dataset:
        files = self.validation_files
        size = min(self.validation_size or files.num_examples, files.num_examples)
        return _parsed(_lines(files, None, 0, 0).rebatch(size), files)

    def full_pass(self) -> tf.data.Dataset:
        """The training data in its order, in chunks of FULL_PASS_ROWS rows (a worker's:
        its share, see `worker`)."""
        if self.worker is not None:
            return dataclasses.replace(self, epochs=1)._share(0)
        return _parsed(_lines(self.files, None, 0, 0).rebatch(pipeline.FULL_PASS_ROWS),
                       self.files)

    def find_bad_row(self):
        """The DataError of the first bad row of the training or validation files, or None."""
        return self.files.find_bad_row() or (
            self.validation_files.find_bad_row() if self.validation_files is not None else None)

    def sum_over_workers(self, value):
        """`value` summed over the workers (each holding its share's), or itself."""
        if self.worker is None:
            return value
        return self.strategy.reduce("SUM", self.strategy.run(tf.identity, args=(value,)),
                                    axis=None)

    def distributed(self, strategy) -> "StreamData":
        return dataclasses.replace(self, strategy=strategy)

    def _epochs(self, start: int, size: int) -> tf.data.Dataset:
        def epoch_batches(epoch):
            return _lines(self.files, self.shuffle_seed, epoch, self.shuffle_buffer).rebatch(size)

        lines = tf.data.Dataset.range(start, self.epochs).flat_map(epoch_batches)
        return self._split(_parsed(lines, self.files))


def _lines(files: DataFiles, seed: int | None, epoch, buffer: int) -> tf.data.Dataset:
    """The data lines of one epoch, in the stream's order, in blocks (blank lines
    dropped): `rebatch` them into batches."""
    paths = tf.constant([str(path) for path in files.paths])

    def not_blank(lines):  # blank as Python's str.strip() sees it, as linfit's reader
        return tf.boolean_mask(lines, tf.logical_not(tf.strings.regex_full_match(
            lines, r"[\s\p{Z}\x{85}\x{1c}-\x{1f}]*")))

    def shard_blocks(order):
        return tf.data.Dataset.from_tensor_slices(tf.gather(paths, order)).flat_map(
            lambda path: tf.data.TextLineDataset(path).skip(1).batch(
                pipeline.STREAM_BLOCK).map(not_blank))

    return stream_order(shard_blocks, len(files.paths), seed, epoch, buffer)


def _parsed(line_batches: tf.data.Dataset, files: DataFiles,
            dtype=tf.float32) -> tf.data.Dataset:
    """Batches of lines -> batches (x, y) as linfit's reader gives them (float32,
    standardised if the files are `scaled`), or with `dtype` float64 the values
    as read."""
    defaults = [tf.constant([], tf.float64)] * len(files.header)  # no default: a hole is an error
    features, targets = list(files.feature_columns), list(files.target_columns)

    def parse(lines):
        # TensorFlow's parser also reads hexadecimal (0x10), which linfit's reader refuses.
        hexadecimal = tf.strings.regex_full_match(lines, r"(?i).*0x[0-9a-f.]+.*")
        with tf.control_dependencies([tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(hexadecimal)), [NOT_A_NUMBER])]):
            lines = tf.identity(lines)
        table = tf.stack(tf.io.decode_csv(lines, defaults), axis=1)
        checked = tf.debugging.check_numerics(tf.cast(table, tf.float32), NOT_FINITE)
        if dtype == tf.float64:
            with tf.control_dependencies([checked]):
                table = tf.identity(table)
        else:
            table = checked
        x, y = tf.gather(table, features, axis=1), tf.gather(table, targets, axis=1)
        if files.mean is not None and dtype == tf.float32:
            x = tf.cast((tf.cast(x, tf.float64) - files.mean) / files.std, tf.float32)
        return (x[:, 0] if files.features is None else x), (y[:, 0] if files.outputs is None
                                                              else y)

    # Parsed on one thread of tf.data's, while training runs on the others: a parallel
    # map (num_parallel_calls) makes TensorFlow 2.21 log an error line about its own
    # op ("NodeDef mentions attribute use_unbounded_threadpool"), for no gain here.
    return line_batches.map(parse).prefetch(2)


def value_chunks(files: DataFiles):
    """The files' (x, y) as read, in float64 NumPy chunks of CHUNK_ROWS rows, in
    order (unscaled): one tf.data pass, for the exact sums of the least-squares
    reference and of standardisation.

    Raises:
      DataError: naming the file, line and column of a row that is not numbers.
    """
    lines = _lines(files, None, 0, 0).rebatch(data_files.CHUNK_ROWS)
    try:
        for x, y in _parsed(lines, files, tf.float64):
            yield x.numpy(), y.numpy()
    except tf.errors.OpError as error:
        if not is_data_error(error):
            raise
        raise files.find_bad_row() or DataError(
            f"{files.source} could not be read: {str(error).splitlines()[0]}") from None


def is_data_error(error: BaseException) -> bool:
    """Whether a TensorFlow error came from reading, parsing or checking streamed rows
    (a file gone or unreadable since the pre-flight, a bad value)."""
    if isinstance(error, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
                          tf.errors.DataLossError)):
        return True
    return isinstance(error, tf.errors.InvalidArgumentError) and (
        NOT_FINITE in str(error) or NOT_A_NUMBER in str(error)
        or "decode_csv" in str(error).lower()
        or "Field " in str(error) or "Expect " in str(error) or "Quote" in str(error))
