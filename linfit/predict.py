"""`python -m linfit.predict`: a checkpoint's predictions for a CSV file.

    python -m linfit.predict --checkpoint RUN/module-manual.weights.h5 \
        --data new.csv --out preds.csv

The checkpoint fixes the model (scalar, or d features; one output or k);
the CSV's feature columns are those the run trained on (read from the run's
metrics.json beside the checkpoint), else all its columns but the target.
When the file has the target column(s), the loss is reported too. The checkpoint and the file
are checked against each other before TensorFlow is imported.

The file is read, predicted and written chunk by chunk (`CHUNK_ROWS` rows),
so a file larger than memory is predicted in the memory of a chunk; with
--out, the predictions appear whole or not at all.
"""

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfit.checkpoint import load_weights, read_line
from linfit.data_files import column_chunks, prediction_columns
from linfit.errors import DataError, LinfitError, RunDirError
from linfit.fileio import atomic_write
from linfit.rundir import RunDir
from linfit.runtime import import_tensorflow


@dataclass(frozen=True)
class PredictionInputs:
    """A checkpoint and the CSV to predict on, checked against each other (from the
    checkpoint and the CSV's header: the rows are read by `chunks`)."""

    checkpoint: Path
    features: int | None
    outputs: int | None
    path: Path
    header: list[str]
    columns: list[int]
    target_columns: list[int]
    target_names: tuple[str, ...] = ("y",)

    @property
    def feature_names(self) -> list[str]:
        return [self.header[i] for i in self.columns]

    def chunks(self):
        """(x, y or None) chunk by chunk: x [rows] or [rows, d], y [rows] or [rows, k]."""
        for x, y in column_chunks(self.path, self.header, self.columns, self.target_columns):
            yield (x[:, 0] if self.features is None else x), \
                (None if y is None else y[:, 0] if y.shape[1] == 1 else y)


def read_inputs(checkpoint: str | Path, data: str | Path, target: str = "") -> PredictionInputs:
    """Read the checkpoint's shape and the CSV's header; no TensorFlow needed.

    Raises:
      CheckpointError, DataError: for a bad checkpoint, a bad file, or a file
        whose features do not fit the checkpoint's model.
    """
    checkpoint = Path(checkpoint)
    features, outputs = checkpoint_shape(checkpoint)
    names, run_target = RunDir(checkpoint.parent).training_columns()
    path, header, columns, targets = prediction_columns(data, names, features, target,
                                                        run_target)
    if targets and (len(targets) == 1) != (outputs is None):
        raise DataError(f"{data}: the target has {len(targets)} column(s) but the "
                        f"checkpoint's model has {outputs or 1} output(s): name its target "
                        "columns with --target")
    names = tuple(header[i] for i in targets) or ("y",)  # the file's names for its targets
    return PredictionInputs(checkpoint, features, outputs, path, header, columns, targets, names)


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
        names = inputs.feature_names + (list(inputs.target_names) if inputs.target_columns
                                        else [])
        outputs = 1 if predictions.ndim == 1 else predictions.shape[1]
        suffixes = inputs.target_names if len(inputs.target_names) == outputs else \
            [str(j) for j in range(outputs)]
        return names + (["prediction"] if predictions.ndim == 1 else
                        [f"prediction_{suffix}" for suffix in suffixes])


def write_predictions(out, inputs: PredictionInputs, model) -> PredictionWriter:
    """Predict every chunk of `inputs` with `model` and write it to `out` (a text file)."""
    writer = PredictionWriter(out, inputs)
    for x, y in inputs.chunks():
        writer.write(x, y, np.asarray(model(x)))
    if not writer.rows:
        raise DataError(f"{inputs.path} has a header but no data rows")
    return writer


def parse_args(argv=None, prog: str = "python -m linfit.predict") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Predict with a linfit (or Keras) .weights.h5 checkpoint of f(x) = x·W + b.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a .weights.h5 file, e.g. runs/<time>/module-manual.weights.h5")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="a CSV with a header row and the training data's feature columns")
    parser.add_argument("--target", default="", metavar="COLUMN",
                        help="the target column (default: the run's, if the file has it, "
                             "else 'y'); several, comma-separated, for a model of several "
                             "outputs")
    parser.add_argument("--out", metavar="CSV",
                        help="write the predictions here (default: standard output)")
    return parser.parse_args(None if argv is None else [str(arg) for arg in argv])


def checked_out(out: str | None) -> Path | None:
    """--out, once it is known to be a file that can be written (checked first)."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise RunDirError(f"--out {path} is a directory: give the name of a CSV file to write")
    if path.exists() and not path.is_file():
        raise RunDirError(f"--out {path} is not a regular file: give a CSV file to write")
    if not path.parent.is_dir():
        raise RunDirError(f"--out {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise RunDirError(f"--out {path}: no permission to write in {path.parent}")
    return path


def main(argv=None, prog: str = "python -m linfit.predict") -> int:
    args = parse_args(argv, prog)
    try:
        out = checked_out(args.out)
        target = tuple(args.target.split(",")) if "," in args.target else args.target
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
    except BrokenPipeError:
        # The reader stopped reading (`| head`): as for any Unix filter, not an error.
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no predictions written", file=sys.stderr)
        return 130
    return 0


def _write_file(path: Path, inputs: PredictionInputs, model) -> PredictionWriter:
    with path.open("w", encoding="utf-8", newline="") as f:
        return write_predictions(f, inputs, model)


if __name__ == "__main__":
    sys.exit(main())
