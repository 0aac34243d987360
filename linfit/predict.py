"""`python -m linfit.predict`: a checkpoint's predictions for a CSV file.

    python -m linfit.predict --checkpoint RUN/module-manual.weights.h5 \
        --data new.csv --out preds.csv

The checkpoint fixes the model (scalar, or d features; one output or k);
the CSV's feature columns are those the run trained on (read from the run's
metrics.json beside the checkpoint), else all its columns but the target.
When the file has the target column(s), the loss is reported too. The checkpoint and the file
are checked against each other before TensorFlow is imported.
"""

import argparse
import csv
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfit.checkpoint import load_weights, read_line
from linfit.data_files import read_features
from linfit.errors import DataError, LinfitError, RunDirError
from linfit.fileio import write_text
from linfit.rundir import RunDir
from linfit.runtime import import_tensorflow


@dataclass(frozen=True)
class PredictionInputs:
    """A checkpoint and the data to predict on, checked against each other."""

    checkpoint: Path
    features: int | None
    outputs: int | None
    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    target_names: tuple[str, ...] = ("y",)


def read_inputs(checkpoint: str | Path, data: str | Path, target: str = "") -> PredictionInputs:
    """Read the checkpoint's shape and the CSV's columns; no TensorFlow needed.

    Raises:
      CheckpointError, DataError: for a bad checkpoint, a bad file, or a file
        whose features do not fit the checkpoint's model.
    """
    checkpoint = Path(checkpoint)
    features, outputs = checkpoint_shape(checkpoint)
    names, run_target = RunDir(checkpoint.parent).training_columns()
    x, y, used = read_features(data, names, features, target or run_target)
    if y is not None and (y.ndim == 1) != (outputs is None):
        raise DataError(f"{data}: the target has {1 if y.ndim == 1 else y.shape[1]} column(s) "
                        f"but the checkpoint's model has {outputs or 1} output(s): name its "
                        "target columns with --target")
    targets = tuple(target or run_target) if not isinstance(target or run_target, str) \
        and y is not None and y.ndim == 2 else ("y",)
    return PredictionInputs(checkpoint, features, outputs, x, y, used, targets)


def predict(inputs: PredictionInputs) -> np.ndarray:
    """The predictions of the checkpoint's model (a LinearModule) for inputs.x."""
    from linfit.models import LinearModule  # TensorFlow, once the inputs are known good

    model = LinearModule(features=inputs.features, outputs=inputs.outputs)
    load_weights(model, inputs.checkpoint)
    return np.asarray(model(inputs.x))


def checkpoint_shape(path: str | Path) -> tuple[int | None, int | None]:
    """The features and outputs of the linear model in a checkpoint (None: the
    scalar x; one output). A w of shape [1, k] takes a scalar x."""
    w, _ = read_line(path)
    if w.ndim < 2:
        return (None if w.ndim == 0 else w.shape[0]), None
    return (None if w.shape[0] == 1 else w.shape[0]), w.shape[1]


def write_predictions(out, inputs: PredictionInputs, predictions: np.ndarray) -> None:
    """CSV: the feature columns, the target(s) (if any), then `prediction` (or, for
    several outputs, `prediction_<target>` for each, `prediction_0`, ... unnamed)."""
    columns = list(inputs.x.reshape(len(predictions), -1).T)
    names = list(inputs.feature_names)
    if inputs.y is not None:
        targets = inputs.y.reshape(len(predictions), -1).T
        columns += list(targets)
        names += list(inputs.target_names)
    outputs = predictions.reshape(len(predictions), -1).T
    suffixes = inputs.target_names if len(inputs.target_names) == len(outputs) else \
        [str(j) for j in range(len(outputs))]
    names += ["prediction"] if predictions.ndim == 1 else \
        [f"prediction_{suffix}" for suffix in suffixes]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*columns, *outputs):
        # 9 significant digits: every float32 reads back exactly.
        writer.writerow([format(float(value), ".9g") for value in row])


def parse_args(argv=None, prog: str = "python -m linfit.predict") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Predict with a linfit (or Keras) .weights.h5 checkpoint of f(x) = x·W + b.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a .weights.h5 file, e.g. runs/<time>/module-manual.weights.h5")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="a CSV with a header row and the training data's feature columns")
    parser.add_argument("--target", default="", metavar="COLUMN",
                        help="the target column, if not the run's (default 'y'); several, "
                             "comma-separated, for a model of several outputs")
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
        predictions = predict(inputs)
        summary = []
        if inputs.y is not None:
            loss = float(np.mean((predictions.astype(np.float64) - inputs.y) ** 2))
            summary.append(f"loss={loss:2.5f} (mean squared error against the target)")
        if out is not None:
            text = io.StringIO()
            write_predictions(text, inputs, predictions)
            write_text(out, text.getvalue())
            print("\n".join([f"Wrote {len(predictions)} predictions to {out}", *summary]))
        else:
            write_predictions(sys.stdout, inputs, predictions)
            sys.stdout.flush()
            for line in summary:
                print(line, file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
