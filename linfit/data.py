"""Training data: the guide's synthetic line, CSV files, input checks, tf.data.

Readers and checks use NumPy only, so the CLI can reject a bad file before
it pays for importing TensorFlow; `make_dataset` imports it when called.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfit.config import DataConfig
from linfit.errors import DataError


@dataclass(frozen=True)
class Data:
    """Training inputs and targets, float32, ready for either model.

    `x` is [N] for one feature (the guide's scalar model) and [N, d] for d
    features; `features` is None or d accordingly. `true_w`/`true_b` are the
    line the data was drawn from, when it is synthetic.
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    feature_names: tuple[str, ...] = ("x",)
    true_w: np.ndarray | float | None = None
    true_b: float | None = None

    @property
    def features(self) -> int | None:
        return None if self.x.ndim == 1 else self.x.shape[1]

    @property
    def num_examples(self) -> int:
        return len(self.y)


def load_data(config: DataConfig) -> Data:
    """The data a config names: a CSV file, or the synthetic line when path is ""."""
    if config.path:
        return read_csv(config.path)
    return synthetic_line(config)


def synthetic_line(config: DataConfig = DataConfig()) -> Data:
    """The guide's data: y = x·W + b + noise, seeded by `config.seed`.

    With a scalar `true_w`, x is the guide's linspace(-2, 2, N); with a list
    of d weights, x is [N, d], drawn uniformly from [-2, 2].
    """
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


def read_csv(path: str | Path) -> Data:
    """Read a CSV with a header row: column `y` is the target, else the last one.

    All other columns are features; one feature gives x of shape [N].

    Raises:
      DataError: naming the file, and the line or column where it can.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check --data / data.path")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory: give the path of a CSV file")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text CSV file") from None
    rows = [row for row in rows if row]  # blank lines, e.g. a trailing one
    if not rows:
        raise DataError(f"{path} is empty: expected a header row, then one row per example")
    header = [name.strip() for name in rows[0]]
    if len(header) < 2:
        raise DataError(f"{path} has a single column {header[0]!r}: expected at least one "
                        "feature column and a target column")
    if len(set(header)) != len(header):
        duplicated = sorted({name for name in header if header.count(name) > 1})
        raise DataError(f"{path}: duplicate column names {duplicated}: rename them")
    if len(rows) == 1:
        raise DataError(f"{path} has a header but no data rows")
    table = _parse_rows(path, header, rows[1:])
    target = header.index("y") if "y" in header else len(header) - 1
    feature_columns = [i for i in range(len(header)) if i != target]
    x = table[:, feature_columns]
    if x.shape[1] == 1:
        x = x[:, 0]
    return Data(x=np.ascontiguousarray(x), y=np.ascontiguousarray(table[:, target]),
                source=str(path), feature_names=tuple(header[i] for i in feature_columns))


def _parse_rows(path: Path, header: list[str], rows: list[list[str]]) -> np.ndarray:
    table = np.empty((len(rows), len(header)), dtype=np.float32)
    for index, row in enumerate(rows):
        line = index + 2  # 1-based, after the header
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} values, but the header has "
                            f"{len(header)} columns")
        for column, cell in enumerate(row):
            try:
                table[index, column] = float(cell)
            except ValueError:
                raise DataError(f"{path}, line {line}, column {header[column]!r}: "
                                f"{cell!r} is not a number") from None
    bad = ~np.isfinite(table)
    if bad.any():
        index, column = np.argwhere(bad)[0]
        raise DataError(f"{path}, line {index + 2}, column {header[column]!r}: "
                        f"{table[index, column]} is not finite: remove or fix the row")
    return table


def check_inputs(x, y, features: int | None | type(...) = ...) -> tuple[np.ndarray, np.ndarray]:
    """x and y as float32 arrays, checked for shape and finiteness.

    Args:
      x: inputs, [N] or [N, d].
      y: targets, [N].
      features: what the model expects: None for the scalar model, d for
        d features, or ... when the model does not say.

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
    if features is None and x.ndim != 1:
        raise DataError(f"the model is scalar (features=None) and takes x of shape [N], "
                        f"got {list(x.shape)}: build it with features={x.shape[1]}")
    if features not in (None, ...) and (x.ndim != 2 or x.shape[1] != features):
        raise DataError(f"the model takes {features} features (x of shape [N, {features}]), "
                        f"got x of shape {list(x.shape)}")
    for name, array in (("x", x), ("y", y)):
        if not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0])
            raise DataError(f"{name} has a non-finite value in row {row}: "
                            "remove or fix it before training")
    return x, y


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int | None = None):
    """The tf.data pipeline both loops read, batch by batch, in the same order.

    `batch_size=None` (or >= N) is the guide's single full batch; otherwise
    batches of `batch_size` in order, the last one partial.
    """
    import tensorflow as tf  # here, so reading data does not import TensorFlow

    if batch_size is None or batch_size >= len(y):
        return tf.data.Dataset.from_tensors((x, y))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
