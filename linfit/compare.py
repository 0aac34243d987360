"""Comparing runs: do the manual loop and `fit` give the same numbers, and how
close does each get to the exact answer?

- `run_comparison` trains any set of model × loop combinations on the same
  data from the same start and returns a `Comparison`.
- `Agreement` aligns runs epoch by epoch and finds the largest differences,
  and the first epoch and quantity where runs stop agreeing.
- `Reference` is the exact least-squares answer for MSE, computed in
  float64, with the learning-rate stability limit of full-batch gradient
  descent and its predicted contraction per epoch.
- `python -m linfit.compare RUN_A RUN_B` compares two finished run
  directories: exit 0 when they agree, 1 when they don't, 2 on bad input.

This module imports TensorFlow only when it trains, so comparing two run
directories is quick.
"""

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from linfit.data import Standardizer
from linfit.errors import DivergenceError, LinfitError, RunDirError

DEFAULT_RTOL = 1e-5
# Differences this small count as agreement even next to a zero value:
# far below float32 resolution at the scale of any loss or weight here.
DEFAULT_ATOL = 1e-8
MODEL_CLASSES = {"module": "LinearModule", "keras": "LinearModel"}


@dataclass(frozen=True)
class Agreement:
    """Runs aligned epoch by epoch, and how far apart they are.

    Attributes:
      labels: one per run.
      values: per quantity (`loss`, `full_loss`, `w` or `w_0`..., `b`), an
        array [runs, epochs + 1]; row 0 is before training (NaN for `loss`).
      abs_diff: per quantity and epoch, the largest |a - b| between runs.
      scale: per quantity and epoch, the largest |value| (0 where a run has NaN).
      epochs: how many epochs each run trained; only the epochs all runs
        have are compared, and runs of different lengths do not agree.
      rtol, atol: values agree when abs_diff <= atol + rtol * max |value|.
    """

    labels: tuple[str, ...]
    values: dict[str, np.ndarray]
    abs_diff: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    epochs: tuple[int, ...]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @property
    def rel_diff(self) -> dict[str, np.ndarray]:
        """Per quantity and epoch, abs_diff / scale (0 for 0/0, inf for x/0)."""
        return {name: np.divide(diff, self.scale[name],
                                out=np.where(diff > 0, np.inf, 0.0), where=self.scale[name] > 0)
                for name, diff in self.abs_diff.items()}

    @property
    def max_abs(self) -> dict[str, float]:
        return {name: float(diff.max(initial=0.0)) for name, diff in self.abs_diff.items()}

    @property
    def max_rel(self) -> dict[str, float]:
        return {name: float(diff.max(initial=0.0)) for name, diff in self.rel_diff.items()}

    @property
    def first_difference(self) -> tuple[int, str] | None:
        """(epoch, quantity) of the first value where the runs disagree, or None."""
        first = None
        for name, diff in self.abs_diff.items():
            bad = np.flatnonzero(diff > self.atol + self.rtol * self.scale[name])
            if bad.size and (first is None or bad[0] < first[0]):
                first = (int(bad[0]), name)
        if first is None and len(set(self.epochs)) > 1:
            first = (min(self.epochs) + 1, "epochs")
        return first

    @property
    def agree(self) -> bool:
        return self.first_difference is None

    def to_json(self) -> dict:
        first = self.first_difference
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "agree": self.agree,
                "rtol": self.rtol,
                "first_difference": None if first is None else {"epoch": first[0],
                                                                "quantity": first[1]}}

    def verdict(self) -> str:
        if self.agree:
            return f"they agree to {self.rtol:g} relative"
        epoch, name = self.first_difference
        if name == "epochs":
            return (f"they trained {' and '.join(map(str, self.epochs))} epochs; the first "
                    f"{min(self.epochs)} agree to {self.rtol:g} relative")
        return f"they DIFFER, first at epoch {epoch} in {name}"

    def summary_lines(self) -> list[str]:
        """A table a person reads at a glance: the largest difference per quantity."""
        lines = [f"Largest differences between {', '.join(self.labels)} ({self.verdict()}):",
                 f"    {'quantity':<10} {'max abs':>10} {'max rel':>10}  at epoch"]
        for name, (largest, epoch) in self.largest().items():
            lines.append(f"    {name:<10} {largest:>10.3g} {self.max_rel[name]:>10.3g}"
                         f"  {'-' if epoch is None else epoch}")
        return lines

    def largest(self) -> dict[str, tuple[float, int | None]]:
        """Per quantity, the largest absolute difference and its epoch (None if 0)."""
        result = {}
        for name, diff in self.abs_diff.items():
            epoch = int(np.argmax(diff)) if diff.size and diff.max() > 0 else None
            result[name] = (float(diff.max(initial=0.0)), epoch)
        return result


def compare_columns(runs: Sequence[dict[str, np.ndarray]], labels: Sequence[str] | None = None,
                    rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Agreement:
    """Align runs' histories (as `History.columns()`) epoch by epoch and diff them.

    Runs are compared over the epochs they all have. A NaN in every run (row
    0 of `loss`) matches; a NaN in some runs only is an infinite difference.
    """
    labels = tuple(labels or (f"run {i}" for i in range(len(runs))))
    epochs = tuple(len(run["full_loss"]) - 1 for run in runs)
    length = min(epochs) + 1
    values, abs_diff, scale = {}, {}, {}
    for name in runs[0]:
        values[name] = np.stack([np.asarray(run[name], dtype=np.float64)[:length]
                                 for run in runs])
        abs_diff[name], scale[name] = _spread_and_scale(values[name])
    return Agreement(labels, values, abs_diff, scale, epochs, rtol, atol)


def compare_histories(histories: Sequence, labels: Sequence[str] | None = None,
                      rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Agreement:
    """Compare `linfit.History` objects of runs from the same start on the same data."""
    return compare_columns([history.columns() for history in histories], labels, rtol, atol)


def _spread_and_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch, max - min over runs and the largest magnitude."""
    missing = np.isnan(values)
    spread = np.where(missing.all(axis=0), 0.0,
                      np.where(missing.any(axis=0), np.inf,
                               values.max(axis=0) - values.min(axis=0)))
    scale = np.where(missing.any(axis=0), 0.0, np.abs(values).max(axis=0))
    return spread, scale


@dataclass(frozen=True)
class Reference:
    """The exact answer for MSE on (x, y), in float64.

    Attributes:
      w, b: the least-squares optimum (`numpy.linalg.lstsq` on A = [X 1]).
      loss: the mean squared error at the optimum.
      eigenvalues: of the Hessian H = (2/N)·AᵀA of the MSE, ascending.
    """

    w: np.ndarray
    b: float
    loss: float
    eigenvalues: np.ndarray

    @property
    def lr_limit(self) -> float:
        """Full-batch gradient descent diverges at learning rates >= 2 / λmax(H)."""
        return float(2.0 / self.eigenvalues[-1])

    def contraction(self, learning_rate: float) -> float:
        """Predicted factor by which |θ - θ*| shrinks per full-batch GD epoch.

        The error evolves as e ← (I - lr·H) e, so its slowest mode shrinks
        by max |1 - lr·λ|; the loss gap shrinks by the square of that.
        """
        return float(np.max(np.abs(1.0 - learning_rate * self.eigenvalues)))

    def gaps(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per epoch of a run: `loss_gap` (full_loss − optimum) and `distance` |θ − θ*|."""
        w = np.column_stack([columns[name] for name in columns if name.startswith("w")])
        theta = np.column_stack([w, columns["b"]])
        optimum = np.append(np.atleast_1d(self.w), self.b)
        return {"loss_gap": np.asarray(columns["full_loss"]) - self.loss,
                "distance": np.linalg.norm(theta - optimum, axis=1)}

    def stability_warning(self, learning_rate: float) -> str | None:
        """A warning when full-batch GD at this rate will diverge, else None."""
        if learning_rate < self.lr_limit:
            return None
        relation = "at" if learning_rate == self.lr_limit else "above"
        return (f"learning rate {learning_rate:g} is {relation} the stability limit "
                f"{self.lr_limit:.3g} for this data: training will diverge")

    def to_json(self) -> dict:
        return {"w": np.atleast_1d(self.w).tolist(), "b": self.b, "loss": self.loss,
                "lr_limit": self.lr_limit}


def least_squares_reference(x, y, chunk_rows: int = 65536) -> Reference:
    """The float64 least-squares optimum of f(x) = x·W + b on (x, y).

    The design matrix [X 1 y] is reduced to its 12×12 (for 10 features) R
    factor chunk by chunk (a tall-skinny QR), so memory stays small for
    millions of rows; `numpy.linalg.lstsq` then solves R θ = Qᵀy, which has
    the same (minimum-norm) solution as lstsq on [X 1] itself.
    """
    n = len(y)
    scalar_model = np.ndim(x) == 1
    x = np.asarray(x).reshape(n, -1)
    columns = x.shape[1] + 2  # the features, the bias, y
    r = np.zeros((0, columns))
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = np.column_stack([x[start:stop].astype(np.float64), np.ones(stop - start),
                                 np.asarray(y[start:stop], dtype=np.float64)])
        r = np.linalg.qr(np.vstack([r, block]), mode="r")
    r = np.vstack([r, np.zeros((max(columns - len(r), 0), columns))])
    r_a, q_t_y, residual = r[:-1, :-1], r[:-1, -1], r[-1, -1]
    theta, *_ = np.linalg.lstsq(r_a, q_t_y, rcond=None)
    loss = float((np.sum((r_a @ theta - q_t_y) ** 2) + residual ** 2) / n)
    eigenvalues = np.linalg.eigvalsh((2.0 / n) * r_a.T @ r_a)
    w = theta[0] if scalar_model else theta[:-1]
    return Reference(w=np.asarray(w), b=float(theta[-1]), loss=loss, eigenvalues=eigenvalues)


@dataclass
class RunResult:
    """One model variant trained by one loop."""

    model_kind: str
    loop: str
    trainer: object  # linfit.Trainer
    history: object  # linfit.History
    seconds: float

    @property
    def model(self):
        return self.trainer.model

    @property
    def label(self) -> str:
        return f"{self.model_kind}-{self.loop}"

    @property
    def checkpoint_name(self) -> str:
        return f"{self.label}.weights.h5"


@dataclass
class Comparison:
    """Runs of several model × loop combinations, how they agree, and the exact answer.

    `reference` is None when the loss is not MSE.
    """

    runs: list[RunResult]
    agreement: Agreement
    reference: Reference | None
    learning_rate: float
    full_batch_sgd: bool

    @property
    def contraction(self) -> float | None:
        """The predicted |θ − θ*| contraction per epoch, for full-batch plain SGD on MSE."""
        if self.reference is None or not self.full_batch_sgd:
            return None
        return self.reference.contraction(self.learning_rate)


def run_comparison(x, y, *, models: Sequence[str] = ("module", "keras"),
                   loops: Sequence[str] = ("manual", "keras"), epochs: int = 10,
                   init_w=5.0, init_b: float = 0.0, learning_rate: float = 0.1,
                   optimizer: str = "sgd", loss: str = "mse", batch_size: int | None = None,
                   shuffle_seed: int | None = None, validation_data: tuple | None = None,
                   standardize: bool = False, feature_names: tuple[str, ...] = (),
                   seed: int = 0, rtol: float = DEFAULT_RTOL, verbose: int = 0,
                   compile: str = "auto", steps_per_call: int = 0, strategy=None,
                   checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                   keep_checkpoints: int = 0,
                   resume_from: dict[str, Path] | None = None,
                   callbacks: Callable[[str], list] | None = None,
                   on_epoch_end: Callable[[str, object], None] | None = None) -> Comparison:
    """Train every model × loop combination from the same start, and compare.

    Args:
      x, y: the training data; x is [N] (scalar model) or [N, d].
      models: "module" (LinearModule) and/or "keras" (LinearModel).
      loops: "manual" and/or "keras".
      standardize: train on features scaled to zero mean and unit variance;
        histories, the trained models (and so their checkpoints) are in
        the original units all the same.
      seed: passed to `keras.utils.set_random_seed` before each run.
      strategy: a tf.distribute strategy; the models are created in its scope.
      checkpoint_dir: with `checkpoint_every` > 0, each run saves training
        checkpoints in `checkpoint_dir/<model>-<loop>/`.
      resume_from: per run label ("module-manual", ...), a training
        checkpoint to continue that run from.
      callbacks: per run label, the Keras callbacks for that run.
      on_epoch_end: called with the run label and its History so far (in
        the original units), before training and after each epoch.
      Other arguments as for `Trainer` and `Trainer.fit`.

    Returns:
      A Comparison. With MSE and full-batch SGD at a learning rate at or
      above the stability limit, a `UserWarning` is issued before training.

    Raises:
      DivergenceError: when a run's loss is not finite; its `completed`
        holds the runs that finished before it.
    """
    import keras
    import tensorflow as tf

    from linfit import models as models_lib
    from linfit.trainer import Trainer

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    features = None if x.ndim == 1 else x.shape[1]
    standardizer = Standardizer.fit(x, feature_names) if standardize else None
    x_train, start_w, start_b = x, init_w, init_b
    if standardizer is not None:
        x_train = standardizer.transform(x)
        start_w, start_b = standardizer.from_original(
            np.broadcast_to(np.asarray(init_w, dtype=np.float64), np.shape(x[0])), init_b)
        if validation_data is not None:
            validation_data = (standardizer.transform(validation_data[0]), validation_data[1])
    reference = None
    if loss in ("mse", "mean_squared_error"):
        # The optimum in original units; the curvature of the data as trained on.
        reference = least_squares_reference(x, y)
        if standardizer is not None:
            reference = replace(reference,
                                eigenvalues=least_squares_reference(x_train, y).eigenvalues)
    full_batch_sgd = optimizer == "sgd" and (batch_size is None or batch_size >= len(y))
    if reference is not None and full_batch_sgd:
        message = reference.stability_warning(learning_rate)
        if message:
            warnings.warn(message, stacklevel=2)
    runs = []
    for kind in models:
        for loop in loops:
            keras.utils.set_random_seed(seed)
            with (strategy or tf.distribute.get_strategy()).scope():
                model = getattr(models_lib, MODEL_CLASSES[kind])(
                    features=features, init_w=start_w, init_b=start_b)
            trainer = Trainer(model, loss=loss, optimizer=optimizer, learning_rate=learning_rate,
                              compile=compile, steps_per_call=steps_per_call, strategy=strategy)
            label = f"{kind}-{loop}"
            progress = None
            if on_epoch_end is not None:
                def progress(history, label=label):
                    on_epoch_end(label, history if standardizer is None
                                 else _to_original_units(history, standardizer))
            start = time.perf_counter()
            try:
                history = trainer.fit(
                    x_train, y, epochs=epochs, loop=loop, batch_size=batch_size,
                    shuffle_seed=shuffle_seed, validation_data=validation_data, verbose=verbose,
                    resume_from=(resume_from or {}).get(label),
                    checkpoint_dir=Path(checkpoint_dir) / label if checkpoint_every else None,
                    checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                    callbacks=callbacks(label) if callbacks else None, on_epoch_end=progress)
            except DivergenceError as error:
                raise _with_context(error, label, runs, reference if full_batch_sgd else None,
                                    learning_rate) from None
            if standardizer is not None:
                history = _to_original_units(history, standardizer)
                model.w.assign(np.asarray(history.w[-1], dtype=np.float32))
                model.b.assign(np.float32(history.b[-1]))
            runs.append(RunResult(kind, loop, trainer, history, time.perf_counter() - start))
    agreement = compare_histories([run.history for run in runs], [run.label for run in runs],
                                  rtol=rtol)
    return Comparison(runs, agreement, reference, learning_rate, full_batch_sgd)


def _with_context(error: DivergenceError, label: str, completed: list, reference,
                  learning_rate: float) -> DivergenceError:
    """The error of run `label`, naming it and the stability limit, with the finished runs."""
    message = f"{label}: {error}"
    if reference is not None:
        message += (f"; the stability limit of the learning rate for this data is "
                    f"{reference.lr_limit:.3g} (this run used {learning_rate:g})")
    result = DivergenceError(message, error.epoch, error.batch, error.history)
    result.completed = list(completed)
    result.label = label
    return result


def _to_original_units(history, standardizer: Standardizer):
    """The history with its w and b in the data's original units."""
    rows = [standardizer.to_original(w, b) for w, b in zip(history.w, history.b)]
    trajectory = dict(history.trajectory, w=[np.float32(w) for w, _ in rows],
                      b=[float(np.float32(b)) for _, b in rows])
    return replace(history, trajectory=trajectory)


def columns_from_metrics(run: dict) -> dict[str, np.ndarray]:
    """A run of metrics.json as `History.columns()` (the inverse of what train writes)."""
    trajectory = run["trajectory"]
    columns = {"loss": np.array([np.nan, *run["loss"]], dtype=np.float64)}
    for name in ("full_loss", "val_loss"):
        if trajectory and name in trajectory[0]:
            columns[name] = np.array([row[name] for row in trajectory], dtype=np.float64)
    if trajectory and "w" in trajectory[0]:
        w = np.array([row["w"] for row in trajectory], dtype=np.float64)
        columns.update(zip(weight_names(w.shape[1]), w.T))
        columns["b"] = np.array([row["b"] for row in trajectory], dtype=np.float64)
    return columns


def weight_names(features: int) -> list[str]:
    """Column names of w: `w` for one weight, else `w_0`, `w_1`, ..."""
    return ["w"] if features == 1 else [f"w_{i}" for i in range(features)]


def read_run_dir(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The runs of a finished run directory, by label ("module-manual", ...)."""
    path = Path(path)
    metrics_path = path / "metrics.json"
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    if not metrics_path.is_file():
        raise RunDirError(f"{path} has no metrics.json: it is not a finished linfit run")
    try:
        metrics = json.loads(metrics_path.read_text())
        return {f"{run['model']}-{run['loop']}": columns_from_metrics(run)
                for run in metrics["runs"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{metrics_path} is not a linfit metrics file ({error})") from None


def compare_run_dirs(path_a, path_b, rtol: float = DEFAULT_RTOL) -> dict[str, Agreement]:
    """Agreement of the runs two directories have in common, by label.

    Two directories of a single run each are compared whatever their labels.
    """
    runs_a, runs_b = read_run_dir(path_a), read_run_dir(path_b)
    common = [label for label in runs_a if label in runs_b]
    if not common and len(runs_a) == len(runs_b) == 1:
        (label_a, a), (label_b, b) = *runs_a.items(), *runs_b.items()
        return {f"{label_a} vs {label_b}": compare_columns(
            [a, b], [f"A:{label_a}", f"B:{label_b}"], rtol)}
    if not common:
        raise RunDirError(f"{path_a} ({', '.join(runs_a)}) and {path_b} ({', '.join(runs_b)}) "
                          "have no model-loop run in common to compare")
    result = {}
    for label in common:
        if list(runs_a[label]) != list(runs_b[label]):
            raise RunDirError(f"{label}: the runs record different quantities "
                              f"({', '.join(runs_a[label])} vs {', '.join(runs_b[label])}): "
                              "were they trained on data with different features?")
        result[label] = compare_columns([runs_a[label], runs_b[label]],
                                        [f"A:{label}", f"B:{label}"], rtol)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m linfit.compare",
        description="Compare two finished linfit run directories, run by run. Exit status: "
                    "0 when they agree, 1 when they differ, 2 on bad input.")
    parser.add_argument("run_a", metavar="RUN_A")
    parser.add_argument("run_b", metavar="RUN_B")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help=f"relative tolerance (default {DEFAULT_RTOL:g})")
    args = parser.parse_args(argv)
    try:
        agreements = compare_run_dirs(args.run_a, args.run_b, rtol=args.rtol)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"A = {args.run_a}\nB = {args.run_b}\n")
    for label, agreement in agreements.items():
        print(f"{label}:")
        print("\n".join(agreement.summary_lines()))
        print()
    differing = [label for label, agreement in agreements.items() if not agreement.agree]
    print("They differ in " + ", ".join(differing) + "." if differing else
          f"All {len(agreements)} compared runs agree.")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
