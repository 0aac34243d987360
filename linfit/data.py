"""Training data: the guide's synthetic line or a file, validation splits,
standardisation (the checks every array passes: `linfit.arrays`). NumPy only.

Data is read once into float32 arrays; no epoch copies it again.
"""

import hashlib
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from linfit.config import DataConfig
from linfit.data_files import (available_memory, float64_chunks, is_npz, read_table,
                               read_target_names)
from linfit.errors import ConfigError, DataError
from linfit.npz_files import is_stored
from linfit.shards import (describe, is_sharded, read_shards, shard_chunks, shard_paths,
                           shown_shape)
from linfit.standardizer import Standardizer  # noqa: F401 (linfit.data.Standardizer)
from linfit.streams import DataFiles, open_data_files

# data.streaming = "auto" streams CSV files larger than this share of the free memory.
STREAM_ABOVE = 0.25
# Rows of streamed data kept in memory, for shapes and the plot of the data.
STREAM_SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class ExactValues:
    """The training rows' values as read from their file, in float64, chunk by chunk.

    Training uses float32 copies; sums that must be exact (the least-squares
    reference) read these instead, without a float64 copy of the data in memory.
    """

    read: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    rows: np.ndarray | None = None  # which rows of the file are training rows

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x [rows, d], y [rows]) chunks of the training rows, in float64."""
        start = 0
        for x, y in self.read():
            if self.rows is None:
                yield x, y
            else:
                keep = self.rows[start:start + len(y)]
                yield x[keep], y[keep]
            start += len(y)


@dataclass(frozen=True)
class Data:
    """Training inputs and targets, float32, ready for either model.

    `x` is [N] for one feature (the guide's scalar model) and [N, d] for d
    features; `features` is None or d accordingly. `y` is [N], or [N, k] for
    k outputs. `target_names` name y's columns, when it was read from a file
    (the target column of a CSV, for one). `true_w`/`true_b` are the
    line the data was drawn from, when it is synthetic. `x_val`/`y_val` are
    held-out data for `val_loss`, or None. `exact` gives the values as read
    from a file, in float64 (None: x and y are the data exactly).

    Streamed data (`files` set) is read as training goes: `x` and `y` then
    hold only its first rows, for shapes and plots; `num_examples` counts all.
    `shard_rows` are the rows of each shard of sharded data; `note` says
    how the data is read, when that was chosen for the user.
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    feature_names: tuple[str, ...] = ("x",)
    true_w: np.ndarray | float | None = None
    true_b: float | None = None
    x_val: np.ndarray | None = field(default=None, repr=False)
    y_val: np.ndarray | None = field(default=None, repr=False)
    exact: ExactValues | None = field(default=None, repr=False, compare=False)
    target_names: tuple[str, ...] = ()
    files: DataFiles | None = field(default=None, repr=False)
    validation_files: DataFiles | None = field(default=None, repr=False)
    shard_rows: tuple[int, ...] = ()
    note: str = ""

    @property
    def features(self) -> int | None:
        return None if self.x.ndim == 1 else self.x.shape[1]

    @property
    def outputs(self) -> int | None:
        """None for one target per example (y is [N]), else k (y is [N, k])."""
        return None if self.y.ndim == 1 else self.y.shape[1]

    @property
    def num_examples(self) -> int:
        return len(self.y) if self.files is None else self.files.num_examples

    @property
    def validation_examples(self) -> int:
        if self.validation_files is not None:
            return self.validation_files.num_examples
        return 0 if self.y_val is None else len(self.y_val)

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.y_val is None else (self.x_val, self.y_val)


def load_data(config: DataConfig) -> Data:
    """The data a config names (a CSV or NPZ file, or the synthetic line when
    `path` is ""), with its validation data split off or read.

    Raises:
      DataError: naming the file, and the line or column where it can.
    """
    note = streams_because(config)
    if note:
        return stream_data(config, note)
    data = read_data_file(config.path, config.target, config.features) if config.path \
        else synthetic_line(config)
    if config.validation_path:
        x_val, y_val, names = _read(config.validation_path, config.target,
                                    config.features or data.feature_names)
        if (x_val.ndim, x_val.shape[1:]) != (data.x.ndim, data.x.shape[1:]):
            raise DataError(f"validation file {config.validation_path} has "
                            f"{_count(x_val)} feature(s) but the training data has "
                            f"{_count(data.x)}: give it the same columns")
        if y_val.shape[1:] != data.y.shape[1:]:
            raise DataError(f"validation file {config.validation_path} has "
                            f"{_count(y_val)} target(s) (y {shown_shape(y_val.shape)}) but the "
                            f"training data has {_count(data.y)} (y {shown_shape(data.y.shape)}): "
                            "give it the same columns")
        if tuple(names) != tuple(data.feature_names):  # an NPZ's x_names, or its x0, x1, ...
            raise DataError(f"validation file {config.validation_path} names its features "
                            f"{', '.join(names)} but the training data's are "
                            f"{', '.join(data.feature_names)}: give it the same columns")
        return replace(data, x_val=x_val, y_val=y_val)
    if config.validation_split:
        return split_validation(data, config.validation_split,
                                config.seed if config.shuffle else None)
    return data


def streams_because(config: DataConfig) -> str:
    """Why `config`'s data is streamed ("" when it is read into memory).

    Raises:
      ConfigError: for streaming asked of data that cannot stream.
    """
    if not config.path or config.streaming is False:
        return ""
    if config.streaming is True:
        return "data.streaming = true"
    if config.validation_split or (config.shuffle and not config.shuffle_buffer):
        return ""  # "auto" streams only what can stream: these need the rows in memory
    paths = shard_paths(config.path) if is_sharded(config.path) else [Path(config.path)]
    try:
        if not paths[0].is_file() or (is_npz(paths[0]) and not all(map(is_stored, paths))):
            return ""
        size = sum(path.stat().st_size for path in paths)
    except OSError:
        return ""  # the reader says what is wrong with the file
    free = available_memory()
    if free is None or size <= STREAM_ABOVE * free:
        return ""
    return (f"data.streaming = \"auto\": the files' {size / 2**30:.2f} GB are more than "
            f"a quarter of the {free / 2**30:.2f} GB of memory available")


def stream_data(config: DataConfig, note: str) -> Data:
    """The data of `config`, to be streamed: checked, counted, its first rows read."""
    if config.validation_split:
        raise ConfigError("data.validation_split holds rows out of data in memory; streamed "
                          "data needs its validation rows in files: set data.validation_path")
    if config.shuffle and not config.shuffle_buffer:
        raise ConfigError("streamed data shuffles in a bounded window: set "
                          "data.shuffle_buffer (e.g. 100000 rows), or data.streaming = false")
    files = open_data_files(config.path, config.target, config.features)
    validation = None if not config.validation_path else open_data_files(
        config.validation_path, config.target, files.feature_names)
    if validation is not None and not _same_columns(validation, files):
        raise DataError(f"validation files {validation.source} have the columns "
                        f"{', '.join(validation.header)} but the training files have "
                        f"{', '.join(files.header)}: give them the same features and targets")
    if config.validate == "full":
        for checked in (files, validation):
            if checked is not None:
                checked.validate()
    x, y = files.sample(STREAM_SAMPLE_ROWS)
    return Data(x=x, y=y, source=files.source, feature_names=files.feature_names,
                target_names=files.target_names, files=files,
                validation_files=validation, shard_rows=files.rows, note=note)


def _same_columns(validation: DataFiles, files: DataFiles) -> bool:
    """Whether validation files fit the training files, as in memory: the same
    features and as many targets (a CSV's columns are found by name, in any order,
    each file parsed by its own header)."""
    return (validation.feature_names, validation.outputs) == (files.feature_names, files.outputs)


def read_data_file(path: str | Path | tuple[str, ...], target: str | tuple[str, ...] = "",
                   features: tuple[str, ...] = ()) -> Data:
    """Read a CSV (header row) or NPZ (arrays `x` and `y`) training file, or several
    (a glob pattern or a tuple of paths: see `linfit.shards`) as one.

    CSV: the column named `target`, else `y`, else the last one, is the
    target; a tuple of several names gives y of shape [N, k]. `features`
    names the feature columns, as `data.features` does (default: all the
    others). One feature gives x of shape [N].
    """
    shard_rows = ()
    if not is_sharded(path):
        x, y, names = read_table(path, target, features)
        source, exact = str(path), lambda: float64_chunks(path, target, features)
        targets = read_target_names(path, target, features, _outputs(y))
    else:
        paths = shard_paths(path)
        x, y, names, shard_rows, targets = read_shards(paths, target, features)
        source, exact = describe(path, paths), lambda: shard_chunks(paths, target, features)
    return Data(x=x, y=y, source=source, feature_names=names, target_names=targets,
                exact=ExactValues(exact), shard_rows=shard_rows)


def _outputs(y: np.ndarray) -> int | None:
    return None if y.ndim == 1 else y.shape[1]


def _read(path, target, features) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One file's table, or the shards' (a glob pattern or a tuple of paths): the
    validation data's."""
    if not is_sharded(path):
        return read_table(path, target, features)
    return read_shards(shard_paths(path), target, features)[:3]


# The name this function had first; it reads NPZ files too.
read_csv = read_data_file


def synthetic_line(config: DataConfig | None = None) -> Data:
    """The guide's data: y = x·W + b + noise, seeded by `config.seed`.

    With a scalar `true_w`, x is the guide's linspace(-2, 2, N); with a list
    of d weights, x is [N, d], drawn uniformly from [-2, 2].
    """
    config = config or DataConfig()
    rng = np.random.default_rng(config.seed)
    n = config.num_examples
    features = len(config.true_w) if isinstance(config.true_w, tuple) else 1
    needed, free = n * (features + 1) * 24, available_memory()  # float64 work, float32 kept
    if free is not None and needed > free:
        raise DataError(f"data.num_examples = {n} needs about {needed / 2**30:.1f} GB of memory "
                        f"and {free / 2**30:.1f} GB is free: ask for fewer examples")
    if isinstance(config.true_w, tuple):
        true_w = np.asarray(config.true_w, dtype=np.float32)
        x = rng.uniform(-2.0, 2.0, size=(n, len(true_w))).astype(np.float32)
        names = tuple(f"x{i}" for i in range(len(true_w)))
        clean = x.astype(np.float64) @ true_w.astype(np.float64) + config.true_b
    else:
        true_w = config.true_w
        x = np.linspace(-2.0, 2.0, n, dtype=np.float32)
        names = ("x",)
        clean = x.astype(np.float64) * true_w + config.true_b
    noise = rng.standard_normal(n) * config.noise_stddev
    with np.errstate(over="ignore", invalid="ignore"):
        y = (clean + noise).astype(np.float32)
    if not np.isfinite(y).all():
        raise DataError("the synthetic line's y overflows float32 (largest 3.4e+38): make "
                        "data.true_w, data.true_b or data.noise_stddev smaller")
    return Data(x=x, y=y, source="synthetic", feature_names=names,
                true_w=true_w, true_b=config.true_b)


def split_validation(data: Data, fraction: float, seed: int | None) -> Data:
    """Hold out the last `fraction` of the examples (after a seeded shuffle if
    `seed` is not None) as validation data."""
    n = data.num_examples
    held_out = round(n * fraction)
    if held_out < 1 or held_out > n - 1:
        raise DataError(f"data.validation_split = {fraction} of {n} examples holds out "
                        f"{held_out}: it must leave at least one example on each side")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    train, val = order[:n - held_out], order[n - held_out:]
    exact = data.exact
    if exact is not None:
        rows = np.zeros(n, dtype=bool)
        rows[train] = True
        exact = ExactValues(exact.read, rows)
    return replace(data, x=data.x[train], y=data.y[train], x_val=data.x[val], y_val=data.y[val],
                   exact=exact)


def _count(x: np.ndarray) -> int:
    return 1 if x.ndim == 1 else x.shape[1]


def fingerprint(*arrays: np.ndarray, names: tuple[str, ...] = ()) -> str:
    """A short digest of arrays: their shapes, types and every value (a CRC-32 of
    their bytes, about 4 GB/s), and their columns' `names` if given, so a checkpoint
    says which data it was trained on and a resumed run notices a change anywhere."""
    digest = hashlib.blake2b(digest_size=12)
    if names:  # as a streamed run's fingerprint holds the header
        digest.update(repr(names).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(repr((array.shape, str(array.dtype))).encode())
        digest.update(zlib.crc32(array.reshape(-1).view(np.uint8)).to_bytes(4, "little"))
    return digest.hexdigest()


def steps_per_epoch(num_examples: int, batch_size: int | None) -> int:
    """Batches per epoch; the last one may be partial."""
    return math.ceil(num_examples / min(batch_size or num_examples, num_examples))
