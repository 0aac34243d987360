"""The data side's TensorFlow: data held in variables, and the tf.data pipeline
both loops read.

Training reads batches from non-trainable tf.Variables: a tf.data pipeline
captures a variable by reference, where it would copy a tensor into its
graph, and compiled functions take the variables as inputs, so one trace
serves every fit on data of the same shape.
"""

import dataclasses
import functools
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from linfit.config import check_value
from linfit.errors import ConfigError

from linfit.data_files import TF_ALIGNMENT

# A full batch of more rows than this is taken in chunks of this many (in order):
# the gradient and the loss of each, weighted by its rows, are summed before the
# one update, and the recorded full_loss is summed the same way. So a stream
# never holds more than a chunk, and a stream and data in memory give the same bits.
# Large, so that a full batch in memory costs what one batch would (1e7 rows: 45 ms
# an epoch in one batch, 86 ms in chunks of 65,536, 43-56 ms in chunks of 2**20).
FULL_PASS_ROWS = 1 << 20
# Elements a stream moves at a time (lines, or row indexes): tf.data's cost is per
# element it hands on, so a stream hands on blocks and rebatches them.
STREAM_BLOCK = 4096


@dataclass(frozen=True)
class FitData:
    """A fit's data as TensorFlow holds it, and the batches both loops read.

    Attributes:
      arrays: tf.Variables (x, y) and, with validation data, (x_val, y_val).
      batch_size: None for one full batch.
      shuffle_seed: None keeps the data's order.
      epochs: the epoch training goes up to (the batches stop there).
      validation_batch_size: None: as `batch_size` (as in Keras; None for it
        is the whole validation set as one batch).
      validation_freq: validate after every N-th epoch (as in Keras).
      fingerprint: a digest of the values (`linfit.data.fingerprint`).
      strategy: a tf.distribute strategy whose replicas the batches are
        split over, or None.
      shuffle_buffer: 0 shuffles each epoch's rows as a whole; N > 0 in the
        order of a stream of shards (see `stream_order`), as streamed data is.
      shard_rows: the rows of each shard the data was read from (one shard: ()).
      whole_batches: take a full batch whole, never in chunks (under a
        tf.distribute strategy, whose replicas split it).
    """

    arrays: tuple
    batch_size: int | None
    shuffle_seed: int | None
    epochs: int
    validation_batch_size: int | None = None
    validation_freq: int = 1
    fingerprint: str = ""
    strategy: object = None
    shuffle_buffer: int = 0
    shard_rows: tuple[int, ...] = ()
    whole_batches: bool = False

    @property
    def num_examples(self) -> int:
        return int(self.arrays[1].shape[0])

    @property
    def validation(self) -> bool:
        return len(self.arrays) > 2

    @property
    def steps_per_epoch(self) -> int:
        return _batches(self.num_examples, self.batch_size)

    @property
    def chunks_per_step(self) -> int:
        """Chunks of FULL_PASS_ROWS rows one update sums: above 1 for a large full batch."""
        rows = self.num_examples
        if self.whole_batches or (self.batch_size is not None and self.batch_size < rows):
            return 1
        return math.ceil(rows / FULL_PASS_ROWS)

    @property
    def values_per_step(self) -> int:
        """Numbers one training step reads: a batch's rows of x and y."""
        rows = min(self.batch_size or self.num_examples, self.num_examples)
        width = sum(int(np.prod(array.shape[1:])) for array in self.arrays[:2])
        return rows * width

    @property
    def validation_steps(self) -> int:
        return _batches(int(self.arrays[3].shape[0]), self.validation_size)

    @property
    def validation_size(self) -> int | None:
        return self.validation_batch_size or self.batch_size

    def validates_after(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) ends with a validation, as in Keras."""
        return self.validation and (epoch + 1) % self.validation_freq == 0

    def batches(self, start: int, first_batch: int = 0) -> tf.data.Dataset:
        """The training batches of every epoch from `start` on (see `make_dataset`),
        from batch `first_batch` of the first (a run resumed inside an epoch)."""
        return self._split(skipped(make_dataset(
            *self.arrays[:2], self.batch_size, self.epochs, self.shuffle_seed, start,
            self.shuffle_buffer, self.shard_rows), first_batch))

    def update_batches(self, start: int, first_batch: int = 0) -> tf.data.Dataset:
        """What the manual loop reads: `batches(start, first_batch)`, or for a large
        full batch its chunks (`chunks_per_step` of them per update)."""
        if self.chunks_per_step == 1:
            return self.batches(start, first_batch)
        return make_dataset(*self.arrays[:2], FULL_PASS_ROWS, self.epochs, self.shuffle_seed,
                            start, self.shuffle_buffer, self.shard_rows)

    def eager_batches(self, start: int):
        """An iterator over the batches of `batches(start)`, for a loop that runs eagerly.

        One full batch in the data's order on one device is the data itself,
        every epoch: the same values as the dataset's slices, without building a
        tf.data pipeline (about 50 ms, most of a short eager run's set-up).
        """
        if self.steps_per_epoch == 1 and self.shuffle_seed is None and self.strategy is None \
                and self.chunks_per_step == 1:
            return itertools.repeat(tuple(self.arrays[:2]))
        return iter(self.update_batches(start))

    def validation_batches(self) -> tf.data.Dataset:
        """The validation data's batches, in order (one epoch of them)."""
        return self._split(make_dataset(*self.arrays[2:], self.validation_size))

    def distributed(self, strategy) -> "FitData":
        """The same data, its batches split over `strategy`'s replicas."""
        return dataclasses.replace(self, strategy=strategy)

    def _split(self, dataset: tf.data.Dataset):
        if self.strategy is None:
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)


def skipped(dataset: tf.data.Dataset, batches: int) -> tf.data.Dataset:
    """`dataset` without its first `batches` batches: skipped before a strategy splits
    them (a distributed dataset cannot skip)."""
    return dataset.skip(batches) if batches else dataset


def _batches(rows: int, batch_size: int | None) -> int:
    return math.ceil(rows / min(batch_size or rows, rows))


def to_variable(array: np.ndarray) -> tf.Variable:
    """A non-trainable tf.Variable holding `array`, sharing its memory where it can.

    A writeable C-contiguous float32 array aligned for TensorFlow (see
    `linfit.arrays.float32_array`) is handed over through DLPack without a
    copy; any other array is copied once.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.flags.c_contiguous and array.flags.writeable and array.size and \
            array.ctypes.data % TF_ALIGNMENT == 0:
        tensor = tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    else:
        tensor = tf.convert_to_tensor(array)
    return tf.Variable(tensor, trainable=False)


def make_dataset(x, y, batch_size: int | None = None, epochs: int = 1,
                 shuffle_seed: int | None = None, initial_epoch: int = 0,
                 shuffle_buffer: int = 0, shard_rows: tuple[int, ...] = ()) -> tf.data.Dataset:
    """The batches of every epoch, in order, as one tf.data.Dataset.

    Both loops read it through one iterator, `steps_per_epoch` batches per
    epoch, so they see the same batches in the same order. `batch_size=None`
    (or >= N) is the guide's single full batch. With `shuffle_seed`, epoch e
    uses the permutation seeded by (shuffle_seed, e): reproducible, the same
    in both loops, and independent of where training (re)started.

    With `shuffle_buffer` N > 0, epoch e is in the order a stream of the
    shards (`shard_rows`) is read in (`stream_order`), so that streamed data
    and the same data in memory train the same.

    Args:
      x, y: the data as tf.Variables (see `to_variable`), or arrays.
    """
    if not isinstance(x, tf.Variable):
        x, y = to_variable(x), to_variable(y)
    n = int(y.shape[0])
    size = min(batch_size or n, n)
    epochs_left = tf.data.Dataset.range(initial_epoch, epochs)
    if shuffle_seed is None:
        starts = epochs_left.flat_map(lambda _: tf.data.Dataset.range(0, n, size))
        return starts.map(lambda start: (x[start:start + size], y[start:start + size]))
    if shuffle_buffer:
        shards = shard_rows or (n,)
        offsets = tf.constant(np.cumsum((0, *shards)), tf.int64)

        def shard_indices(order):
            return tf.data.Dataset.from_tensor_slices(order).flat_map(
                lambda shard: tf.data.Dataset.range(offsets[shard], offsets[shard + 1]).batch(
                    STREAM_BLOCK))

        def epoch_batches(epoch):
            return stream_order(shard_indices, len(shards), shuffle_seed, epoch,
                                shuffle_buffer).rebatch(size)
    else:
        def epoch_batches(epoch):
            return tf.data.Dataset.from_tensor_slices(
                epoch_permutation(n, shuffle_seed, epoch)).batch(size)

    return epochs_left.flat_map(epoch_batches).map(
        lambda indices: (tf.gather(x, indices), tf.gather(y, indices)))


def epoch_permutation(n: int, seed: int, epoch):
    """The order of the examples in epoch `epoch` of a shuffled run: a function
    of (seed, epoch) only, so a resumed run sees the same orders."""
    return tf.argsort(tf.random.stateless_uniform([n], seed=_seed_pair(seed, epoch)))


def stream_order(shard_blocks, shards: int, seed: int | None, epoch,
                 buffer: int) -> tf.data.Dataset:
    """One epoch of a stream of shards, in its order, as blocks (tensors whose first
    axis is the elements, of any sizes: `rebatch` them into batches): the shards in a
    permutation seeded by (seed, epoch), then each window of `buffer`
    consecutive elements permuted (seeded by (seed, epoch) and its place).
    None for `seed` keeps the shards' order. A function of (seed, epoch) only,
    like `epoch_permutation`, holding at most `buffer` elements.

    Args:
      shard_blocks: order (int64 [shards]) -> the dataset of the shards'
        elements (row indexes, or rows of files) in that order, in blocks.
    """
    if seed is None:
        return shard_blocks(tf.range(shards, dtype=tf.int64))
    pair = _seed_pair(seed, epoch)
    order = tf.argsort(tf.random.stateless_uniform(
        [shards], seed=tf.random.experimental.stateless_fold_in(pair, 0)))
    windows = shard_blocks(tf.cast(order, tf.int64)).rebatch(buffer)

    def permuted(place, window):
        key = tf.random.experimental.stateless_fold_in(pair, place + 1)
        return tf.gather(window, tf.argsort(tf.random.stateless_uniform(tf.shape(window)[:1],
                                                                        seed=key)))

    return windows.enumerate().map(permuted)


def _seed_pair(seed: int, epoch):
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


# The loops `Trainer.fit` runs.
TRAINING_LOOPS = ("manual", "keras")


def check_fit_arguments(epochs, loop, batch_size, validation_batch_size, validation_freq, *,
                        shuffle_seed=None, shuffle_buffer=0, initial_epoch=0,
                        schedule=(None, 1, 0, 0), verbose=0) -> None:
    """Refuse `Trainer.fit` arguments it cannot train with, naming the argument
    (`schedule`: checkpoint_dir, checkpoint_every, checkpoint_every_batches,
    keep_checkpoints)."""
    if loop not in TRAINING_LOOPS:
        raise ConfigError(f"loop={loop!r} is not a training loop: use one of {TRAINING_LOOPS}")
    check_value("train.epochs", epochs, label="epochs")
    for name, value in (("batch_size", batch_size),
                        ("validation_batch_size", validation_batch_size)):
        if value is not None and not _positive_int(value):
            raise ConfigError(f"{name}={value!r}: use None for one full batch, "
                              "or a positive integer")
    if not _positive_int(validation_freq):
        raise ConfigError(f"validation_freq={validation_freq!r}: use a positive integer "
                          "(validate after every N-th epoch)")
    if shuffle_seed is not None:
        check_value("data.seed", shuffle_seed, label="shuffle_seed")
    directory, *counts = schedule
    for key, name, value in (("data.shuffle_buffer", "shuffle_buffer", shuffle_buffer),
                             ("train.checkpoint_every", "checkpoint_every", counts[0]),
                             ("train.checkpoint_every_batches", "checkpoint_every_batches",
                              counts[1]),
                             ("train.keep_checkpoints", "keep_checkpoints", counts[2])):
        check_value(key, value, label=name)
    if not (isinstance(initial_epoch, int) and not isinstance(initial_epoch, bool)
            and initial_epoch >= 0):
        raise ConfigError(f"initial_epoch={initial_epoch!r}: use an integer >= 0")
    if verbose not in (0, 1, 2, "auto") or isinstance(verbose, bool):
        raise ConfigError(f"verbose={verbose!r}: use 0, 1, 2 or \"auto\", as in Keras's fit")
    if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"checkpoint_dir={str(directory)!r} is a file: give a directory")
    if directory is None and (counts[0] > 1 or counts[1]):  # silently nothing, else
        raise ConfigError(f"checkpoint_every={counts[0]}, checkpoint_every_batches="
                          f"{counts[1]}: give checkpoint_dir, where to write them")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def plain_numbers(function):
    """`function` (a method), its NumPy number arguments (np.int64(5),
    np.float32(0.1)) made Python's, as Keras's `fit` takes them."""
    @functools.wraps(function)
    def with_plain_numbers(self, *args, **kwargs):
        return function(self, *map(_plain, args), **{k: _plain(v) for k, v in kwargs.items()})

    return with_plain_numbers


def _plain(value):
    return value.item() if isinstance(value, np.generic) and value.dtype.kind in "iuf" \
        else value
