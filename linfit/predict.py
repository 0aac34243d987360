"""`python -m linfit.predict`: a checkpoint's predictions for a CSV or NPZ file.

    python -m linfit.predict --checkpoint RUN/module-manual.weights.h5 \
        --data new.csv --out preds.csv

The checkpoint fixes the model (scalar, or d features; one output or k);
a CSV's feature columns are those the run trained on (read from the run's
metrics.json beside the checkpoint), else all its columns but the target; an
NPZ file's are its x, and y (if it has one) is the target. When the file has
the target, the loss is reported too. The checkpoint and the file are checked
against each other before TensorFlow is imported.

The file is read, predicted and written chunk by chunk (`CHUNK_ROWS` rows),
so a file larger than memory is predicted in the memory of a chunk; with
--out, the predictions appear whole or not at all.
"""

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfit.arguments import ArgumentParser
from linfit.checkpoint import load_weights, read_line
from linfit.data_files import CHUNK_ROWS, checked_file, column_chunks, is_npz, prediction_columns
from linfit.errors import DataError, LinfitError, RunDirError
from linfit.fileio import atomic_write, silence, write_error
from linfit.interrupts import interrupted_status, sigterm_interrupts
from linfit.npz_files import array_shapes, check_finite, row_chunks
from linfit.npz_files import feature_names as npz_feature_names
from linfit.npz_files import target_names as npz_target_names
from linfit.rundir import RunDir
from linfit.runtime import import_tensorflow


@dataclass(frozen=True)
class PredictionInputs:
    """A checkpoint and the file to predict on, checked against each other (from the
    checkpoint and the file's header or arrays' headers: the rows are read by `chunks`).

    Attributes:
      feature_names: the file's names of the model's features, in its order.
      target_names: the file's target columns; () when it has none.
      columns: () -> (x [rows, d], y [rows, k] or None) in float32, chunk by chunk.
      output_names: what names each output's predictions (the file's targets, else
        the run's, else 0, 1, ...).
    """

    checkpoint: Path
    features: int | None
    outputs: int | None
    path: Path
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    columns: Callable[[], Iterator[tuple[np.ndarray, np.ndarray | None]]]
    output_names: tuple[str, ...] = ()

    def chunks(self):
        """(x, y or None) chunk by chunk, shaped as the model takes x and gives its
        predictions: x [rows] or [rows, d], y [rows] or [rows, k]."""
        for x, y in self.columns():
            yield (x[:, 0] if self.features is None else x), \
                (None if y is None else y[:, 0] if self.outputs is None else y)


def read_inputs(checkpoint: str | Path, data: str | Path, target: str = "") -> PredictionInputs:
    """Read the checkpoint's shape and the file's header (a CSV's, or an NPZ's arrays'
    headers); no TensorFlow needed.

    Raises:
      CheckpointError, DataError: for a bad checkpoint, a bad file, or a file
        whose features do not fit the checkpoint's model.
    """
    checkpoint = Path(checkpoint)
    features, outputs = checkpoint_shape(checkpoint)
    names, run_target = _run_of(checkpoint).training_columns()
    run_targets = tuple(name for name in _names(run_target) if name)
    if len(_names(target)) > 1 and sorted(_names(target)) == sorted(run_targets):
        target = run_target  # the model's outputs are in the run's order, not the one asked
    path = checked_file(data)
    read = _npz_columns if is_npz(path) else _csv_columns
    feature_names, target_names, columns = read(path, names, features, target, run_target)
    if target_names and len(target_names) != (outputs or 1):
        raise DataError(f"{data}: the target has {len(target_names)} column(s) but the "
                        f"checkpoint's model has {outputs or 1} output(s): "
                        + ("give y the model's outputs" if is_npz(path)
                           else "name its target columns with --target"))
    output_names = next((given for given in (target_names, run_targets)
                         if len(given) == (outputs or 1)),
                        tuple(str(j) for j in range(outputs or 1)))
    return PredictionInputs(checkpoint, features, outputs, path, feature_names, target_names,
                            columns, output_names)


def _names(columns: str | tuple[str, ...]) -> tuple[str, ...]:
    return (columns,) if isinstance(columns, str) else tuple(columns)


def _run_of(checkpoint: Path) -> RunDir:
    """The run directory of a checkpoint: its folder, or for a periodic checkpoint
    (RUN/checkpoints/<run>/epoch-N.weights.h5) the run's."""
    folder = checkpoint.resolve().parent
    if folder.parent.name == RunDir.CHECKPOINTS:
        return RunDir(folder.parent.parent)
    return RunDir(folder)


def _csv_columns(path: Path, names, features: int | None, target, run_target):
    """A CSV's feature and target names, and its columns' reader
    (`linfit.data_files.prediction_columns` says which are which)."""
    path, header, columns, targets = prediction_columns(path, names, features, target,
                                                        run_target)
    return (tuple(header[i] for i in columns), tuple(header[i] for i in targets),
            lambda: column_chunks(path, header, columns, targets, others_read=False))


def _npz_columns(path: Path, names, features: int | None, target, run_target):
    """An NPZ file's: x is the features, y (if there is one) the target, named as
    linfit's reader names them (x_names, y_names, else x0, x1, ... and y). x's
    names must be those the run trained on, when the run is known."""
    x_shape, y_shape = array_shapes(path, y_optional=True)
    width = int(np.prod(x_shape[1:], dtype=np.int64))
    x_names = npz_feature_names(path, width)
    if width != (features or 1):
        raise DataError(f"{path}: x has {width} feature column(s) but the checkpoint's model "
                        f"takes {features or 1}: give x the training data's features")
    if names and tuple(names) != x_names:
        raise DataError(f"{path} names x's columns {', '.join(x_names)} but the model was "
                        f"trained on {', '.join(names)}: store x_names (linfit.convert "
                        "writes them) with the training data's features in that order")
    targets = () if y_shape is None else npz_target_names(
        path, None if len(y_shape) == 1 else y_shape[1])
    trained = tuple(name for name in _names(run_target) if name)
    if targets and trained and targets != trained:
        raise DataError(f"{path} names y's columns {', '.join(targets)} but the model was "
                        f"trained to predict {', '.join(trained)}: store y_names (linfit.convert "
                        "writes them) with the training data's targets in that order, or "
                        "leave y out")
    asked = _names(target)
    if target and asked != targets:
        raise DataError(f"{path}: --target {','.join(asked)}: an NPZ file's target is its "
                        f"array y ({', '.join(targets) or 'which it lacks'}): leave --target out")
    arrays = ("x",) if y_shape is None else ("x", "y")
    return x_names, targets, lambda: _npz_chunks(path, arrays)


def _npz_chunks(path: Path, arrays: tuple[str, ...]):
    """(x [rows, d], y [rows, k] or None) of an NPZ file in float32, checked finite."""
    first_row = 0
    for chunk in row_chunks(path, arrays, CHUNK_ROWS):
        converted = []
        for name, values in zip(arrays, chunk):
            values = values.reshape(len(values), -1)
            with np.errstate(over="ignore"):  # named by check_finite
                converted.append(values.astype(np.float32))
            check_finite(path, name, values, converted[-1], first_row)
        first_row += len(converted[0])
        yield converted[0], converted[1] if len(converted) == 2 else None


def prediction_model(inputs: PredictionInputs):
    """The checkpoint's model, a LinearModule."""
    from linfit.models import LinearModule  # TensorFlow, once the inputs are known good

    model = LinearModule(features=inputs.features, outputs=inputs.outputs)
    load_weights(model, inputs.checkpoint)
    return model


def checkpoint_shape(path: str | Path) -> tuple[int | None, int | None]:
    """The features and outputs of the linear model in a checkpoint (None: the
    scalar x; one output). A w of shape [1, k] takes a scalar x."""
    w, _ = read_line(path)
    if w.ndim < 2:
        return (None if w.ndim == 0 else w.shape[0]), None
    return (None if w.shape[0] == 1 else w.shape[0]), w.shape[1]


class PredictionWriter:
    """CSV: the feature columns, the target(s) (if any), then `prediction` (or, for
    several outputs, `prediction_<target>` for each, `prediction_0`, ... unnamed),
    written chunk by chunk; the loss against the target is summed as it goes."""

    def __init__(self, out, inputs: PredictionInputs):
        self._writer = csv.writer(out, lineterminator="\n")
        self._inputs = inputs
        self.rows, self.squared_error, self.values = 0, 0.0, 0

    def write(self, x: np.ndarray, y: np.ndarray | None, predictions: np.ndarray) -> None:
        """Write a chunk's rows.

        Raises:
          DataError: for a prediction float32 cannot hold (features far outside
            the training data's range), naming its data row.
        """
        overflow = ~np.isfinite(predictions.reshape(len(predictions), -1)).all(axis=1)
        if overflow.any():
            raise DataError(f"{self._inputs.path}, data row {self.rows + overflow.argmax() + 1}: "
                            "the prediction overflows float32 (the features are too large "
                            "for the model): check or rescale that row")
        if not self.rows:  # the first chunk: the header, named after its predictions
            self._writer.writerow(self._names(predictions))
        rows = len(predictions)
        columns = list(x.reshape(rows, -1).T) + ([] if y is None else list(y.reshape(rows, -1).T))
        for row in zip(*columns, *predictions.reshape(rows, -1).T):
            # 9 significant digits: every float32 reads back exactly.
            self._writer.writerow([format(float(value), ".9g") for value in row])
        if y is not None:
            self.squared_error += float(np.sum((predictions.astype(np.float64) - y) ** 2))
            self.values += predictions.size
        self.rows += rows

    def _names(self, predictions: np.ndarray) -> list[str]:
        inputs = self._inputs
        names = [*inputs.feature_names, *inputs.target_names]
        return names + (["prediction"] if predictions.ndim == 1 else
                        [f"prediction_{name}" for name in inputs.output_names])


def write_predictions(out, inputs: PredictionInputs, model) -> PredictionWriter:
    """Predict every chunk of `inputs` with `model` and write it to `out` (a text file)."""
    writer = PredictionWriter(out, inputs)
    for x, y in inputs.chunks():
        writer.write(x, y, np.asarray(model(x)))
    if not writer.rows:
        raise DataError(f"{inputs.path} has a header but no data rows")
    return writer


def parse_args(argv=None, prog: str = "python -m linfit.predict") -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog,
        description="Predict with a linfit (or Keras) .weights.h5 checkpoint of f(x) = x·W + b.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a .weights.h5 file, e.g. runs/<time>/module-manual.weights.h5")
    parser.add_argument("--data", required=True, metavar="FILE",
                        help="a CSV with a header row and the training data's feature "
                             "columns, or an NPZ file of x (and y, if known)")
    parser.add_argument("--target", default="", metavar="COLUMN",
                        help="the target column (default: the run's, if the file has it, "
                             "else 'y'); several, comma-separated, for a model of several "
                             "outputs")
    parser.add_argument("--out", metavar="CSV",
                        help="write the predictions here (default: standard output)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (never the data or the checkpoint)")
    args = parser.parse_args(None if argv is None else [str(arg) for arg in argv])
    if args.overwrite and args.out is None:
        parser.error("--overwrite replaces --out, which is not given: the predictions go "
                     "to the standard output; leave --overwrite out or give --out")
    return args


def checked_out(out: str | None, overwrite: bool = False, inputs: dict | None = None
                ) -> Path | None:
    """--out, once it is known to be a file that can be written (checked first): a
    file that exists only with `overwrite`, and never one of `inputs` ({option:
    path}, the files read)."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise RunDirError(f"--out {path} is a directory: give the name of a CSV file to write")
    if path.exists() and not path.is_file():
        raise RunDirError(f"--out {path} is not a regular file: give a CSV file to write")
    for option, given in (inputs or {}).items():
        if _same_file(path, given):
            raise RunDirError(f"--out {path} is the {option} file: write the predictions to "
                              "another file")
    if path.exists() and not overwrite:
        raise RunDirError(f"--out {path} exists: give another file, or add --overwrite to "
                          "replace it")
    if not path.parent.is_dir():
        raise RunDirError(f"--out {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise RunDirError(f"--out {path}: no permission to write in {path.parent}")
    return path


def main(argv=None, prog: str = "python -m linfit.predict") -> int:
    args = parse_args(argv, prog)
    with sigterm_interrupts():
        try:
            predict(args)
        except BrokenPipeError:
            # The reader stopped reading (`| head`): as for any Unix filter, not an error.
            # Python would report the pipe again when it flushes stdout at exit.
            silence(sys.stdout)
        except LinfitError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:  # the standard output (a full disk under `> file`)
            silence(sys.stdout)
            print(f"error: {write_error('the standard output', error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM: --out is left as it was
            print("interrupted: no predictions written", file=sys.stderr)
            return interrupted_status(interrupt)
    return 0


def predict(args: argparse.Namespace) -> None:
    """The command, its arguments parsed."""
    out = checked_out(args.out, args.overwrite, {"--data": args.data,
                                                 "--checkpoint": args.checkpoint})
    target = tuple(name.strip() for name in args.target.split(",")) if "," in args.target \
        else args.target
    if isinstance(target, tuple) and not all(target):
        raise DataError(f"--target {args.target!r}: name each target column, comma-separated")
    inputs = read_inputs(args.checkpoint, args.data, target)
    import_tensorflow()
    model = prediction_model(inputs)
    if out is not None:
        written = []
        atomic_write(out, lambda temporary: written.append(_write_file(temporary, inputs,
                                                                        model)))
        print(f"Wrote {written[0].rows} predictions to {out}")
    else:
        written = [write_predictions(sys.stdout, inputs, model)]
        sys.stdout.flush()
    if written[0].values:
        loss = written[0].squared_error / written[0].values
        print(f"loss={loss:2.5f} (mean squared error against the target)",
              file=sys.stdout if out is not None else sys.stderr)


def _same_file(path: Path, other) -> bool:
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):
        return False


def _write_file(path: Path, inputs: PredictionInputs, model) -> PredictionWriter:
    with path.open("w", encoding="utf-8", newline="") as f:
        return write_predictions(f, inputs, model)


if __name__ == "__main__":
    sys.exit(main())
