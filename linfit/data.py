"""Training data: the guide's synthetic line, CSV and NPZ files, input checks,
standardisation, and the tf.data pipeline both loops read.

Readers and checks use NumPy only, so the CLI can reject a bad file before
it pays for importing TensorFlow; `make_dataset` imports it when called.
Data is read once into float32 arrays; no epoch copies it again.
"""

import csv
import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from linfit.config import DataConfig
from linfit.errors import DataError


@dataclass(frozen=True)
class Data:
    """Training inputs and targets, float32, ready for either model.

    `x` is [N] for one feature (the guide's scalar model) and [N, d] for d
    features; `features` is None or d accordingly. `true_w`/`true_b` are the
    line the data was drawn from, when it is synthetic. `x_val`/`y_val` are
    held-out data for `val_loss`, or None.
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    feature_names: tuple[str, ...] = ("x",)
    true_w: np.ndarray | float | None = None
    true_b: float | None = None
    x_val: np.ndarray | None = field(default=None, repr=False)
    y_val: np.ndarray | None = field(default=None, repr=False)

    @property
    def features(self) -> int | None:
        return None if self.x.ndim == 1 else self.x.shape[1]

    @property
    def num_examples(self) -> int:
        return len(self.y)

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.y_val is None else (self.x_val, self.y_val)


def load_data(config: DataConfig) -> Data:
    """The data a config names (a CSV or NPZ file, or the synthetic line when
    `path` is ""), with its validation data split off or read.

    Raises:
      DataError: naming the file, and the line or column where it can.
    """
    if config.path:
        data = read_data_file(config.path, config.target, config.features)
    else:
        data = synthetic_line(config)
    if config.validation_path:
        x_val, y_val, _ = _read_file(Path(config.validation_path), config.target,
                                     config.features or data.feature_names)
        if (x_val.ndim, x_val.shape[1:]) != (data.x.ndim, data.x.shape[1:]):
            raise DataError(f"validation file {config.validation_path} has "
                            f"{_count(x_val)} feature(s) but the training data has "
                            f"{_count(data.x)}: give it the same columns")
        return replace(data, x_val=x_val, y_val=y_val)
    if config.validation_split:
        return split_validation(data, config.validation_split,
                                config.seed if config.shuffle else None)
    return data


def synthetic_line(config: DataConfig | None = None) -> Data:
    """The guide's data: y = x·W + b + noise, seeded by `config.seed`.

    With a scalar `true_w`, x is the guide's linspace(-2, 2, N); with a list
    of d weights, x is [N, d], drawn uniformly from [-2, 2].
    """
    config = config or DataConfig()
    rng = np.random.default_rng(config.seed)
    n = config.num_examples
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
    y = (clean + noise).astype(np.float32)
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
    return replace(data, x=data.x[train], y=data.y[train], x_val=data.x[val], y_val=data.y[val])


def read_data_file(path: str | Path, target: str = "", features: tuple[str, ...] = ()) -> Data:
    """Read a CSV (header row) or NPZ (arrays `x` and `y`) training file.

    CSV: the column named `target`, else `y`, else the last one, is the
    target; `features` picks feature columns (default: all the others).
    One feature gives x of shape [N].
    """
    path = Path(path)
    x, y, names = _read_file(path, target, features)
    return Data(x=x, y=y, source=str(path), feature_names=names)


def read_csv(path: str | Path, target: str = "", features: tuple[str, ...] = ()) -> Data:
    """Read a CSV file with a header row; see `read_data_file`."""
    return read_data_file(path, target, features)


def read_features(path: str | Path, feature_names: tuple[str, ...] | None, features: int | None,
                  target: str = "") -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a CSV for prediction: features for a model, and the target if present.

    The feature columns are `feature_names` (the training data's) when
    known, else every column but the target (`target`, or `y` if present),
    and there must be as many as the model takes.

    Returns:
      x ([N] when `features` is None, else [N, features]), y or None, and
      the names of the feature columns used.
    """
    path = _checked_file(path)
    header = _read_header(path, min_columns=1)
    if target and target not in header:
        raise DataError(f"{path}: target column {target!r} is not a column; the columns are "
                        f"{', '.join(header)}")
    expected = features or 1
    target_name = target or ("y" if "y" in header else "")
    if feature_names:
        missing = [name for name in feature_names if name not in header]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)} the model was "
                            f"trained on; its columns are {', '.join(header)}")
        columns = [header.index(name) for name in feature_names]
    else:
        columns = [i for i, name in enumerate(header) if name != target_name]
    if len(columns) != expected:
        raise DataError(
            f"{path} has {len(columns)} feature column(s) ({', '.join(header[i] for i in columns)})"
            f" but the checkpoint's model takes {expected}: give the training data's feature "
            "columns, and name a target column other than 'y' with --target")
    target_column = header.index(target_name) if target_name in header else None
    x, y = _read_columns(path, header, columns, target_column)
    return (x if features is not None else x[:, 0]), y, [header[i] for i in columns]


def _read_file(path: Path, target: str, features) -> tuple[np.ndarray, np.ndarray, tuple]:
    path = _checked_file(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    header = _read_header(path)
    target_column, feature_columns = _select_columns(path, header, target, features)
    x, y = _read_columns(path, header, feature_columns, target_column)
    if x.shape[1] == 1:
        x = x[:, 0]
    return x, y, tuple(header[i] for i in feature_columns)


def _checked_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check --data / data.path")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory: give the path of a CSV or NPZ file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: expected a header row, then one row per example")
    return path


def _read_header(path: Path, min_columns: int = 2) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text CSV file") from None
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


def _select_columns(path: Path, header: list[str], target: str,
                    features) -> tuple[int, list[int]]:
    if target and target not in header:
        raise DataError(f"{path}: data.target {target!r} is not a column; the columns are "
                        f"{', '.join(header)}")
    target_name = target or ("y" if "y" in header else header[-1])
    unknown = [name for name in features if name not in header]
    if unknown:
        raise DataError(f"{path}: data.features names {', '.join(map(repr, unknown))}, which "
                        f"is not a column; the columns are {', '.join(header)}")
    if target_name in features:
        raise DataError(f"{path}: column {target_name!r} is the target, so it cannot also be "
                        "in data.features")
    names = list(features) or [name for name in header if name != target_name]
    return header.index(target_name), [header.index(name) for name in names]


# Rows parsed at a time: the data is read straight into its final arrays, so
# reading needs little more memory than the data itself.
CHUNK_ROWS = 65536


def _read_columns(path: Path, header: list[str], feature_columns: list[int],
                  target_column: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The feature columns as float32 [N, d] and the target column as [N] (or None).

    NumPy's fast parser reads chunks of rows; on a failure a second, careful
    pass says which line and column is wrong.
    """
    capacity = _count_lines(path)  # an upper bound on the rows: blank lines are skipped
    x = aligned_empty((capacity, len(feature_columns)))
    y = None if target_column is None else aligned_empty((capacity,))
    rows = 0
    with path.open(newline="", encoding="utf-8") as f:
        next(f)  # the header
        while lines := list(itertools.islice(f, CHUNK_ROWS)):
            chunk = _parse_chunk(path, header, lines)
            if chunk.size == 0:  # blank lines only
                continue
            if chunk.shape[1] != len(header):
                _raise_parse_error(path, header)  # names the first line that is too wide
            bad = ~np.isfinite(chunk)
            if bad.any():
                row, column = np.argwhere(bad)[0]
                raise DataError(f"{path}, line {_line_of_row(path, rows + row)}, column "
                                f"{header[column]!r}: {chunk[row, column]} is not finite: "
                                "remove or fix the row")
            x[rows:rows + len(chunk)] = chunk[:, feature_columns]
            if y is not None:
                y[rows:rows + len(chunk)] = chunk[:, target_column]
            rows += len(chunk)
    if rows == 0:
        raise DataError(f"{path} has a header but no data rows")
    return x[:rows], (None if y is None else y[:rows])


def _parse_chunk(path: Path, header: list[str], lines: list[str]) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            return np.loadtxt(lines, delimiter=",", dtype=np.float32, ndmin=2, comments=None,
                              quotechar='"')
    except ValueError as error:
        _raise_parse_error(path, header)
        raise DataError(f"{path} could not be read as numbers: {error}") from None


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count + 1  # a last line without a newline


def _raise_parse_error(path: Path, header: list[str]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise DataError(f"{path}, line {line}: {len(row)} values, but the header has "
                                f"{len(header)} columns")
            for name, cell in zip(header, row):
                try:
                    float(cell)
                except ValueError:
                    raise DataError(f"{path}, line {line}, column {name!r}: {cell!r} is not "
                                    "a number") from None


def _line_of_row(path: Path, row: int) -> int:
    """The file line of data row `row` (0-based), counting blank lines."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        seen = -1
        for values in reader:
            seen += bool(values)
            if seen == row:
                return reader.line_num
    return row + 2


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ("x", "y") if name not in archive.files]
            if missing:
                raise DataError(f"{path} has no array {' or '.join(map(repr, missing))}: an "
                                f"NPZ needs x [N, d] (or [N]) and y [N]; it has "
                                f"{', '.join(archive.files) or 'nothing'}")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable NPZ file ({error})") from None
    if x.ndim not in (1, 2) or y.ndim != 1:
        raise DataError(f"{path}: x must be [N] or [N, d] and y [N], got x "
                        f"{list(x.shape)} and y {list(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} rows but y has {len(y)}: they must match")
    if len(y) == 0:
        raise DataError(f"{path} holds no examples")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise DataError(f"{path}: x and y must be numeric, got {x.dtype} and {y.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    for name, array in (("x", x), ("y", y)):
        if not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise DataError(f"{path}: {name} is not finite in row {row}: remove or fix it")
    names = ("x",) if x.ndim == 1 else tuple(f"x{i}" for i in range(x.shape[1]))
    return x, y, names


def _count(x: np.ndarray) -> int:
    return 1 if x.ndim == 1 else x.shape[1]


@dataclass(frozen=True)
class Standardizer:
    """Scales features to zero mean and unit variance, and maps a linear
    model's weights back to the original units.

    With x_s = (x − mean) / std, the model x_s·w_s + b_s equals x·w + b for
    w = w_s / std and b = b_s − Σ w_s·mean / std.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, feature_names: tuple[str, ...] = ()) -> "Standardizer":
        x64 = np.asarray(x, dtype=np.float64)
        mean, std = x64.mean(axis=0), x64.std(axis=0)
        constant = np.flatnonzero(np.atleast_1d(std) == 0)
        if constant.size:
            names = [feature_names[i] if i < len(feature_names) else str(i) for i in constant]
            raise DataError(f"feature(s) {', '.join(names)} are constant: standardisation "
                            "cannot scale them; leave them out with data.features")
        return cls(mean=mean, std=std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def to_original(self, w, b: float) -> tuple[np.ndarray, float]:
        """(w_s, b_s) on standardised features -> (w, b) on the original ones."""
        w = np.asarray(w, dtype=np.float64)
        w_original = w / self.std
        return w_original, float(b - np.sum(w_original * self.mean))

    def from_original(self, w, b: float) -> tuple[np.ndarray, float]:
        """(w, b) on the original features -> (w_s, b_s) on standardised ones."""
        w = np.asarray(w, dtype=np.float64)
        return w * self.std, float(b + np.sum(w * self.mean))


def check_inputs(x, y, features=...) -> tuple[np.ndarray, np.ndarray]:
    """x and y as float32 arrays, checked for shape and finiteness.

    Args:
      x: inputs, [N] or [N, d].
      y: targets, [N].
      features: what the model expects: None for the scalar model, d for
        d features, or ... (the default) when the model does not say.

    Raises:
      DataError: what is wrong with the inputs and what the model expects.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise DataError(f"y must be a vector of N targets, got shape {list(y.shape)}")
    if x.ndim not in (1, 2) or len(x) != len(y):
        raise DataError(f"x must have shape [N] or [N, d] with N = len(y) = {len(y)}, "
                        f"got shape {list(x.shape)}")
    if len(y) == 0:
        raise DataError("no training examples: x and y are empty")
    check_features(x, features)
    for name, array in (("x", x), ("y", y)):
        if not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise DataError(f"{name} has a non-finite value in row {row}: "
                            "remove or fix it before training")
    return x, y


def check_features(x: np.ndarray, features=...) -> None:
    """Raise DataError unless x has the shape a model with `features` takes."""
    if features is None and x.ndim != 1:
        raise DataError(f"the model is scalar (features=None) and takes x of shape [N], "
                        f"got {list(x.shape)}: build it with features={x.shape[1]}")
    if features not in (None, ...) and (x.ndim != 2 or x.shape[1] != features):
        raise DataError(f"the model takes {features} features (x of shape [N, {features}]), "
                        f"got x of shape {list(x.shape)}")


def steps_per_epoch(num_examples: int, batch_size: int | None) -> int:
    """Batches per epoch; the last one may be partial."""
    return math.ceil(num_examples / min(batch_size or num_examples, num_examples))


# TensorFlow's CPU kernels require buffers aligned to this many bytes (Eigen's
# maximum alignment); an array so aligned can be shared with it, not copied.
TF_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose buffer TensorFlow can share."""
    nbytes = int(np.prod(shape)) * 4
    buffer = np.empty(nbytes + TF_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % TF_ALIGNMENT
    return buffer[offset:offset + nbytes].view(np.float32).reshape(shape)


def to_variable(array: np.ndarray):
    """A non-trainable tf.Variable holding `array`, sharing its memory where it can.

    Training reads batches from such variables: a tf.data pipeline captures
    a variable by reference, where it would copy a tensor into its graph. A
    C-contiguous float32 array aligned for TensorFlow is handed over through
    DLPack without a copy; any other array is copied once.
    """
    import tensorflow as tf  # here, so reading data does not import TensorFlow

    array = np.asarray(array, dtype=np.float32)
    if array.flags.c_contiguous and array.ctypes.data % TF_ALIGNMENT == 0 and array.size:
        tensor = tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    else:
        tensor = tf.convert_to_tensor(array)
    return tf.Variable(tensor, trainable=False)


def make_dataset(x, y, batch_size: int | None = None, epochs: int = 1,
                 shuffle_seed: int | None = None, initial_epoch: int = 0):
    """The batches of every epoch, in order, as one tf.data.Dataset.

    Both loops read it through one iterator, `steps_per_epoch` batches per
    epoch, so they see the same batches in the same order. `batch_size=None`
    (or >= N) is the guide's single full batch. With `shuffle_seed`, epoch e
    uses the permutation seeded by (shuffle_seed, e): reproducible, the same
    in both loops, and independent of where training (re)started.

    Args:
      x, y: the data as tf.Variables (see `to_variable`), or arrays.
    """
    import tensorflow as tf

    if not isinstance(x, tf.Variable):
        x, y = to_variable(x), to_variable(y)
    n = int(y.shape[0])
    size = min(batch_size or n, n)
    epochs_left = tf.data.Dataset.range(initial_epoch, epochs)
    if shuffle_seed is None:
        starts = epochs_left.flat_map(lambda _: tf.data.Dataset.range(0, n, size))
        return starts.map(lambda start: (x[start:start + size], y[start:start + size]))

    def epoch_batches(epoch):
        return tf.data.Dataset.from_tensor_slices(epoch_permutation(n, shuffle_seed, epoch)).batch(
            size)

    return epochs_left.flat_map(epoch_batches).map(
        lambda indices: (tf.gather(x, indices), tf.gather(y, indices)))


def epoch_permutation(n: int, seed: int, epoch):
    """The order of the examples in epoch `epoch` of a shuffled run: a function
    of (seed, epoch) only, so a resumed run sees the same orders."""
    import tensorflow as tf

    seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([n], seed=seed_pair))
