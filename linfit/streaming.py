"""Streamed data: batches read from CSV or NPZ files by tf.data, never the whole table.

Each epoch reads the shards' rows (a CSV file's lines, split from blocks of its
bytes in C++; an NPZ file's rows as stored: see `linfit.stream_formats`), in
blocks, in the order `linfit.pipeline.stream_order` gives, rebatches them,
and decodes each batch whole (CSV: `tf.io.decode_csv` as float64, then
float32, the rounding of linfit's own reader), so a row streamed is bitwise
the row read into memory. A few batches are read ahead (prefetch). Memory holds
the shuffle window, the batches in flight and nothing else.
"""

import dataclasses
import re
from dataclasses import dataclass, field

import tensorflow as tf

from linfit import data_files, pipeline
from linfit.errors import DataError
from linfit.pipeline import FitData, stream_order
from linfit.stream_formats import CHANGED, NOT_A_NUMBER, NOT_FINITE, row_format
from linfit.streams import DataFiles


@dataclass(frozen=True)
class StreamData(FitData):
    """A fit's data read from files as it trains (see `FitData` for the rest).

    Attributes:
      files: the training data's files.
      validation_files: the validation data's, or None.
      worker: (index, count) of this worker in a cluster. Every worker steps
        through the same global batches in the same order, but reads and parses
        only its share of their rows (those of every count-th shard from the
        index-th, or of every count-th block of lines when there are fewer
        shards than workers; see `_worker_blocks`), and sums that share's
        gradient; the optimizer adds the workers' sums. Its batches are (x, y,
        the batch's rows, every worker's).
    """

    files: DataFiles | None = None
    validation_files: DataFiles | None = None
    worker: tuple[int, int] | None = None  # (index, count) under a multi-worker strategy
    # The passes made after every epoch, built once: building one traces its functions
    # (0.2-0.3 s; a streamed CLI run of 4 runs x 6 small epochs took 31 s
    # rebuilding them, 15-21 s not).
    _passes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def batches(self, start: int, first_batch: int = 0) -> tf.data.Dataset:
        return self._epochs(start, min(self.batch_size or self.num_examples, self.num_examples),
                            first_batch)

    @property
    def full_pass_chunks(self) -> int:
        """The chunks `full_pass` reads."""
        return -(-self.num_examples // pipeline.FULL_PASS_ROWS)

    def update_batches(self, start: int, first_batch: int = 0) -> tf.data.Dataset:
        if self.chunks_per_step == 1:
            return self.batches(start, first_batch)
        return self._epochs(start, pipeline.FULL_PASS_ROWS)

    def eager_batches(self, start: int):
        return iter(self.update_batches(start))

    def validation_batches(self) -> tf.data.Dataset:
        files = self.validation_files
        size = min(self.validation_size or files.num_examples, files.num_examples)
        batches = self._pass("validation", files, size, with_rows=True)
        # A worker's go to its own replica whole; local devices share each batch.
        return batches if self.worker is not None else self._split(batches)

    def full_pass(self) -> tf.data.Dataset:
        """The training data in its order, in chunks of FULL_PASS_ROWS rows (a worker's:
        its share, see `worker`)."""
        return self._pass("full", self.files, pipeline.FULL_PASS_ROWS)

    def _pass(self, name: str, files: DataFiles, size: int, with_rows: bool = False
              ) -> tf.data.Dataset:
        """`files` in their order, in batches of `size` rows: made the first time only."""
        if (name, size) not in self._passes:
            lines = _lines(files, None, 0, 0, self.worker).rebatch(size)
            self._passes[name, size] = self._parse(lines, files, size, with_rows)
        return self._passes[name, size]

    def data_error(self, error: Exception) -> DataError:
        """What a TensorFlow error of reading the stream (`is_data_error`) means: the
        first bad row of the training or validation files, else `unreadable`."""
        files = [f for f in (self.files, self.validation_files) if f is not None]
        return next(filter(None, (f.find_bad_row() for f in files)), None) or unreadable(
            error, " or ".join(f.source for f in files))

    def sum_over_workers(self, value):
        """`value` summed over the workers (each holding its share's), or itself."""
        if self.worker is None:
            return value
        return summed_over_workers(self.strategy, value)

    def distributed(self, strategy) -> "StreamData":
        return dataclasses.replace(self, strategy=strategy)

    def _epochs(self, start: int, size: int, first_batch: int = 0) -> tf.data.Dataset:
        def epoch_batches(epoch):
            return _lines(self.files, self.shuffle_seed, epoch, self.shuffle_buffer,
                          self.worker).rebatch(size)

        lines = tf.data.Dataset.range(start, self.epochs).flat_map(epoch_batches)
        if self.worker is None:
            return self._split(pipeline.skipped(_parsed(lines, self.files, size), first_batch))
        # A worker's batches go to its own replica whole: a distributed dataset would split them.
        return pipeline.skipped(self._parse(lines, self.files, size, with_rows=True),
                                first_batch)

    def _parse(self, lines: tf.data.Dataset, files: DataFiles, rows: int,
               with_rows: bool = False) -> tf.data.Dataset:
        """Batches of `rows` rows -> (x, y), or a worker's rows of them (`_own_rows`)."""
        if self.worker is None:
            return _parsed(lines, files, rows)
        return _own_rows(lines, files, rows, with_rows)


@tf.function  # run eagerly, a collective strategy warns of its overhead
def summed_over_workers(strategy, value):
    """`value`, each worker's own, summed over the workers of `strategy`'s cluster."""
    return strategy.reduce("SUM", strategy.run(tf.identity, args=(value,)), axis=None)


def _lines(files: DataFiles, seed: int | None, epoch, buffer: int,
           worker: tuple[int, int] | None = None) -> tf.data.Dataset:
    """The rows of one epoch (lines, or NPZ rows' bytes: see `linfit.stream_formats`),
    in the stream's order, in blocks: `rebatch` them into batches. A worker's:
    see `_worker_blocks`."""
    read = row_format(files).read

    def shard_blocks(order):
        return tf.data.Dataset.from_tensor_slices(order).flat_map(read)

    if worker is not None:
        shard_blocks = _worker_blocks(files, *worker)
    return stream_order(shard_blocks, len(files.paths), seed, epoch, buffer)


def _worker_blocks(files: DataFiles, index: int, count: int):
    """`stream_order`'s shard_blocks for worker `index` of `count`: the blocks of
    every shard, as one process reads them, but with the rows other workers
    parse replaced by empty rows (`RowFormat.stand_ins`). So the stream's order,
    and every global batch, is the same on every worker and in one process.

    The worker reads every count-th shard from the index-th; for the others it
    makes as many empty rows as the pre-flight counted, reading nothing. With
    fewer shards than workers, it reads every shard and keeps every count-th
    block of rows from the index-th.
    """
    by_blocks = len(files.paths) < count
    rows_as = row_format(files, flagged=True)
    reads = tf.constant([by_blocks or shard % count == index for shard in range(len(files.paths))])
    rows = tf.constant(files.rows, tf.int64)

    def blocks(shard):
        lines = rows_as.read(shard)
        if by_blocks:
            lines = lines.enumerate().map(lambda block, block_lines: tf.where(
                tf.equal(block % count, index), block_lines, tf.zeros_like(block_lines)))
        others = tf.data.Dataset.range(rows[shard]).batch(pipeline.STREAM_BLOCK).map(
            lambda block: rows_as.stand_ins(tf.size(block)))
        everything, none = tf.constant(-1, tf.int64), tf.constant(0, tf.int64)
        return lines.take(tf.where(reads[shard], everything, none)).concatenate(
            others.take(tf.where(reads[shard], none, everything)))

    def shard_blocks(order):
        return tf.data.Dataset.from_tensor_slices(order).flat_map(blocks)

    return shard_blocks


def _parsed(line_batches: tf.data.Dataset, files: DataFiles, rows: int,
            dtype=tf.float32) -> tf.data.Dataset:
    """Batches of `rows` rows -> batches (x, y) as linfit's reader gives them
    (float32, standardised if the files are `scaled`), or with `dtype` float64 the
    values as read."""
    # Parsed on one thread of tf.data's, while training runs on the others: a parallel
    # map (num_parallel_calls) gained nothing on two cores (CSV epochs: 0.50-0.56 M
    # rows/s with 2 calls, 0.50-0.52 M without).
    return line_batches.map(_parser(files, dtype)).prefetch(_read_ahead(files, rows, dtype))


# Batches read ahead: up to 16 (a training step is short, and a deeper buffer rides
# out the reading thread's pauses: epochs of 2e7 NPZ rows in batches of 1024 ran at
# 3.6-4.2 M rows/s with 16, 2.9-4.5 M with 2), within PREFETCH_BYTES, at least 2.
PREFETCH_BYTES = 16 << 20


def _read_ahead(files: DataFiles, rows: int, dtype=tf.float32) -> int:
    """How many parsed batches of `rows` rows a stream holds ready."""
    batch_bytes = rows * (len(files.feature_columns) + len(files.target_columns)) * dtype.size
    return int(min(16, max(2, PREFETCH_BYTES // batch_bytes)))


def _own_rows(line_batches: tf.data.Dataset, files: DataFiles, rows: int,
              with_rows: bool = False) -> tf.data.Dataset:
    """A worker's batches of rows (see `_worker_blocks`) -> (x, y) of the rows it
    parses, the others left out; `with_rows`: (x, y, the batch's rows, every worker's)."""
    parse, present = _parser(files, tf.float32, True), row_format(files, True).present

    def own(lines):
        x, y = parse(tf.boolean_mask(lines, present(lines)))
        return (x, y, tf.shape(lines, tf.int64)[0]) if with_rows else (x, y)

    return line_batches.map(own).prefetch(_read_ahead(files, rows))


def _parser(files: DataFiles, dtype, flagged: bool = False):
    """A batch of rows -> (x, y): see `_parsed`; `flagged`: a worker's (`_own_rows`)."""
    values = row_format(files, flagged).values

    def parse(rows):
        x, y = values(rows, dtype)
        if files.mean is not None and dtype == tf.float32:
            x = tf.cast((tf.cast(x, tf.float64) - files.mean) / files.std, tf.float32)
        return (x[:, 0] if files.features is None else x), (y[:, 0] if files.outputs is None
                                                              else y)

    return parse


def value_chunks(files: DataFiles):
    """The files' (x, y) as read, in float64 NumPy chunks of CHUNK_ROWS rows, in
    order (unscaled): one tf.data pass, for the exact sums of the least-squares
    reference and of standardisation.

    Raises:
      DataError: naming the file, line and column of a row that is not numbers.
    """
    lines = _lines(files, None, 0, 0).rebatch(data_files.CHUNK_ROWS)
    try:
        for x, y in _parsed(lines, files, data_files.CHUNK_ROWS, tf.float64):
            yield x.numpy(), y.numpy()
    except tf.errors.OpError as error:
        if not is_data_error(error):
            raise
        raise files.find_bad_row() or unreadable(error, files.source) from None


def unreadable(error: Exception, source: str) -> DataError:
    """A stream's reading error that linfit's own reader finds no bad row for."""
    text = str(error)
    if CHANGED in text:
        return DataError(f"{source} changed while it was read (a file's rows are not those "
                         "counted before training): run the command again")
    refused = re.search(r"(Field \d+ in record \d+ is not a valid \w+: [^\n]*?"
                        r"|(?:Unquoted fields|Quote)[^\n]*?)(?:\t|\n|\[|$)", text)
    if refused:  # decode_csv is stricter than NumPy: spaces or characters around a value
        return DataError(f"{source}: a value the stream's CSV parser cannot read, though "
                         f"linfit's in-memory reader can ({refused.group(1).strip()}): write "
                         "plain numbers (no spaces, quotes or other characters around them), "
                         "or set data.streaming = false")
    return DataError(f"{source} could not be read ({text.splitlines()[0]}): check its files "
                     "and start again, or --resume")


def is_data_error(error: BaseException) -> bool:
    """Whether a TensorFlow error came from reading, parsing or checking streamed rows
    (a file gone or unreadable since the pre-flight, a bad value)."""
    if isinstance(error, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
                          tf.errors.DataLossError)):
        return True
    return isinstance(error, tf.errors.InvalidArgumentError) and (
        NOT_FINITE in str(error) or NOT_A_NUMBER in str(error) or CHANGED in str(error)
        or "decode_csv" in str(error).lower()
        or "Field " in str(error) or "Expect " in str(error) or "Quote" in str(error)
        or "Unquoted fields" in str(error)
        or "exact multiple of the record length" in str(error))  # an NPZ file cut short
