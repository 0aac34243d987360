"""`python -m linfit.train`: the guide "Basic training loops", done right.

With no arguments it trains both model variants (tf.Module and keras.Model)
with both loops (GradientTape and compile/fit) on the guide's data, prints
the guide's lines for each run and how much the runs differ, and writes a
run directory. The work is done by library functions (`train_runs`,
`write_run`) that can be called from Python; `main` only parses and reports.

Config, data and the output directory are checked before TensorFlow is
imported, so a user's mistake is reported at once, as one `error:` line.
"""

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from linfit.checkpoint import write_text
from linfit.compare import MODEL_CLASSES, Comparison, RunResult
from linfit.config import LOOPS, MODEL_KINDS, Config, load_config, to_toml
from linfit.data import Data, load_data
from linfit.errors import (ConfigError, DivergenceError, LinfitError, RunDirError,
                           WorkerLostError)

CHECKPOINTS = "checkpoints"
# What linfit's atomic writes name their files until they are complete.
TEMPORARY_FILES = ".*.tmp*"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m linfit.train",
        description="Train f(x) = x·W + b as in the TensorFlow guide 'Basic training loops': "
                    "a tf.Module and a keras.Model, each with a GradientTape loop and with "
                    "Keras fit, and compare them. With no arguments: the guide's setup.")
    parser.add_argument("--config", metavar="PATH", help="a TOML config (see configs/)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override a config key, TOML syntax, e.g. "
                        "--set train.epochs=20 (repeatable)")
    parser.add_argument("--data", metavar="PATH",
                        help="a CSV file with a header row (target: column 'y', else the last)")
    parser.add_argument("--model", choices=MODEL_KINDS, help="model variant(s) to train")
    parser.add_argument("--loop", choices=LOOPS, help="training loop(s) to run")
    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default: runs/<UTC time>); must be new or empty")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run directory given by --out")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its newest checkpoints "
                        "(--set train.epochs=N may extend it)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                        help="Keras progress output in both loops: 0 none (default), "
                        "1 progress bar, 2 one line per epoch")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="split the CPU into N logical devices (to try "
                        "train.strategy = \"mirrored\" on one machine)")
    parser.add_argument("--tf-logs", action="store_true",
                        help="show TensorFlow's own log lines (hidden by default)")
    return parser.parse_args(None if argv is None else [str(arg) for arg in argv])


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then --set, then the shorthand flags."""
    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.path"), (args.model, "model.kind"),
                      (args.loop, "train.loop")):
        if flag is not None:
            overrides.append(f"{key}={json.dumps(flag)}")
    return load_config(args.config, overrides)


def prepare_run_dir(out: str | None, overwrite: bool = False) -> Path:
    """Create the run directory; refuse one that exists and is not empty,
    unless `overwrite` and it is a linfit run directory (which is emptied)."""
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / stamp
        suffix = 1
        while path.exists():
            path = Path("runs") / f"{stamp}-{suffix}"
            suffix += 1
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} is a file: give a new or empty directory")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise RunDirError(f"run directory {path} exists and is not empty: choose another "
                                  "--out, --resume it, or pass --overwrite to replace it")
            if not (path / "config.toml").is_file():
                raise RunDirError(f"--overwrite replaces linfit run directories only, and {path} "
                                  "has no config.toml: remove it yourself if you mean it")
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def initial_w(config: Config, features: int | None) -> float | tuple[float, ...]:
    """`model.init_w` for data with `features` features (None: the scalar model).

    Raises:
      ConfigError: when a list of initial weights does not fit the data.
    """
    init_w = config.model.init_w
    if not isinstance(init_w, tuple):
        return init_w
    if len(init_w) != (features or 1):
        raise ConfigError(f"model.init_w has {len(init_w)} values but the data has "
                          f"{features or 1} feature(s): give one value per feature, or one number")
    return init_w[0] if features is None else init_w


def train_runs(config: Config, data: Data, verbose: int = 0, run_dir: Path | None = None,
               resume: Path | None = None) -> Comparison:
    """Train every model variant × loop the config asks for, from the same start.

    With `run_dir`, training checkpoints go to `run_dir/checkpoints/<run>/`
    every `train.checkpoint_every` epochs; with `resume` (a run directory: this one,
    or the chief's for another worker), each run continues
    from its newest checkpoint there.
    """
    from linfit.compare import run_comparison

    checkpoint_dir = None if run_dir is None else run_dir / CHECKPOINTS
    resume_from = find_resume_points(resume, config, clean=resume == run_dir) if resume else None
    history_csv = None if run_dir is None else HistoryCSV(run_dir / "history.csv")
    return run_comparison(
        data.x, data.y, models=config.model_kinds, loops=config.loops,
        epochs=config.train.epochs, init_w=initial_w(config, data.features),
        init_b=config.model.init_b, learning_rate=config.train.learning_rate,
        optimizer=config.train.optimizer, batch_size=config.data.batch_size or None,
        shuffle_seed=config.data.seed if config.data.shuffle else None,
        validation_data=data.validation, standardize=config.data.standardize,
        feature_names=data.feature_names, seed=config.train.seed, verbose=verbose,
        compile=config.train.compile, steps_per_call=config.train.steps_per_call,
        strategy=make_strategy(config.train.strategy),
        checkpoint_dir=checkpoint_dir, checkpoint_every=config.train.checkpoint_every,
        keep_checkpoints=config.train.keep_checkpoints, resume_from=resume_from,
        callbacks=lambda label: run_callbacks(config, run_dir, label),
        on_epoch_end=history_csv.write if history_csv else None)


_strategies: dict[str, object] = {}


def make_strategy(name: str, worker_timeout: int = 60):
    """The tf.distribute strategy `train.strategy` names (None: one device), made once.

    "multiworker" reads the cluster from TF_CONFIG, as TensorFlow documents it;
    it must be made before TensorFlow runs any op (see `import_tensorflow`).
    """
    if name == "default":
        return None
    if name not in _strategies:
        import tensorflow as tf

        if name == "multiworker":
            # Collectives give up on a silent peer after worker_timeout seconds, so a
            # dead worker fails the run instead of hanging it.
            options = tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=worker_timeout)
            _strategies[name] = tf.distribute.MultiWorkerMirroredStrategy(
                communication_options=options)
        else:
            _strategies[name] = tf.distribute.MirroredStrategy()
    return _strategies[name]


def is_chief() -> bool:
    """Whether this process writes the run directory: the chief of a TF_CONFIG
    cluster (or worker 0 when there is no chief), or any process without one."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
        task = config.get("task", {})
        kinds = config.get("cluster", {})
    except (ValueError, AttributeError):
        raise ConfigError("TF_CONFIG is not valid JSON: see TensorFlow's multi-worker "
                          "guide for its format") from None
    if not task:
        return True
    if "chief" in kinds:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def run_callbacks(config: Config, run_dir: Path | None, label: str) -> list:
    """The Keras callbacks the config asks for, for one run."""
    import keras

    callbacks = []
    stopping = config.train.early_stopping
    if stopping.monitor:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=stopping.monitor, mode="min", patience=stopping.patience,
            min_delta=stopping.min_delta, restore_best_weights=stopping.restore_best_weights))
    if config.train.tensorboard and run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tb" / label),
                                                     write_graph=False))
    return callbacks


class HistoryCSV:
    """history.csv, appended to as training goes, so a crashed run keeps its history.

    `write_run` rewrites it whole (and atomically) at the end.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows_written: dict[str, int] = {}
        path.unlink(missing_ok=True)  # a resumed run writes its whole history again

    def write(self, label: str, history) -> None:
        columns = history.columns()
        rows = len(columns["full_loss"])
        done = self.rows_written.get(label, 0)
        model_kind, loop = label.split("-")
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if not self.rows_written:
                writer.writerow(["model", "loop", "epoch", *columns])
            for epoch in range(done, rows):
                writer.writerow([model_kind, loop, epoch, *_csv_values(columns, epoch)])
        self.rows_written[label] = rows


def find_resume_points(run_dir: Path, config: Config, clean: bool = True) -> dict[str, Path]:
    """Per run, the checkpoint with the most epochs that loads, among its
    periodic checkpoints and (unless training is standardised, where it is in
    other units) its final one. Leftover temporary files are removed."""
    from linfit.callbacks import list_checkpoints
    from linfit.checkpoint import read_state

    points = {}
    for kind in config.model_kinds:
        for loop in config.loops:
            label = f"{kind}-{loop}"
            directory = run_dir / CHECKPOINTS / label
            if clean:  # the writer of the directory; other workers only read it
                for leftover in [*directory.glob(TEMPORARY_FILES),
                                 *run_dir.glob(TEMPORARY_FILES)]:
                    leftover.unlink(missing_ok=True)  # a write that a kill interrupted
            candidates = list_checkpoints(directory) if directory.is_dir() else []
            if not config.data.standardize:
                candidates.append(run_dir / f"{label}.weights.h5")
            best = -1
            for path in candidates:
                try:
                    epoch = (read_state(path) or {}).get("epoch", -1) if path.exists() else -1
                except LinfitError:
                    continue  # unreadable: an older one will do
                if isinstance(epoch, int) and epoch > best:
                    points[label], best = path, epoch
    return points


def resume_config(run_dir: Path, args: argparse.Namespace) -> Config:
    """The config of the run in `run_dir`; only `--set train.epochs=N` may change it."""
    if not (run_dir / "config.toml").is_file():
        raise RunDirError(f"--resume {run_dir}: no config.toml there; give the directory of a "
                          "linfit run")
    changed = [flag for flag, value in (("--config", args.config), ("--data", args.data),
                                        ("--model", args.model), ("--loop", args.loop),
                                        ("--out", args.out)) if value]
    changed += [o for o in args.overrides if not o.replace(" ", "").startswith("train.epochs=")]
    if changed:
        raise ConfigError(f"--resume continues a run as it was configured: drop "
                          f"{', '.join(changed)} (only --set train.epochs=N may extend it)")
    return load_config(run_dir / "config.toml", args.overrides)


def write_run(out_dir: Path, config: Config, data: Data, comparison: Comparison) -> dict:
    """Write the run directory: config, checkpoints, history, figures, report, metrics.

    metrics.json is written last: a run directory that has it is complete.

    Returns:
      The metrics written to metrics.json.
    """
    from linfit.report import write_report

    runs = comparison.runs
    for run in runs:
        # A full training checkpoint: it loads as weights, and --resume can extend it.
        run.trainer.save_checkpoint(out_dir / run.checkpoint_name, run.history)
    write_history_csv(out_dir / "history.csv", runs)
    figures = write_figures(out_dir, data, comparison)
    write_report(out_dir / "report.md", config, data, comparison, figures)
    metrics = {"status": "complete", **data_metrics(data),
               "runs": [run_metrics(run) for run in runs]}
    if len(runs) > 1:
        metrics["agreement"] = comparison.agreement.to_json()
    if comparison.reference is not None:
        metrics["reference"] = comparison.reference.to_json()
    write_timing(out_dir, runs)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def write_failed_run(out_dir: Path, data: Data, completed: list[RunResult], status: str,
                     message: str, error=None) -> dict:
    """Record a run that stopped part-way: the runs that finished, their
    checkpoints and history, and a metrics.json whose `status` says why.
    Training checkpoints already written stay as they are."""
    for run in completed:
        run.trainer.save_checkpoint(out_dir / run.checkpoint_name, run.history)
    runs = [run_metrics(run) for run in completed]
    history_runs = list(completed)
    if getattr(error, "history", None) is not None and getattr(error, "label", None):
        kind, loop = error.label.split("-")
        partial = RunResult(kind, loop, None, error.history, 0.0)
        runs.append({**run_metrics(partial), "checkpoint": None, "status": status,
                     "stopped_at": {"epoch": error.epoch, "batch": error.batch}})
        history_runs.append(partial)
    if history_runs:
        write_history_csv(out_dir / "history.csv", history_runs)
    metrics = {"status": status, "error": message, **data_metrics(data), "runs": runs}
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def data_metrics(data: Data) -> dict:
    return {"data": {"source": data.source, "num_examples": data.num_examples,
                     "validation_examples": 0 if data.y_val is None else len(data.y_val),
                     "features": list(data.feature_names)}}


def write_timing(out_dir: Path, runs: list[RunResult]) -> None:
    """Wall times, kept out of metrics.json so that file is the same on every rerun."""
    write_json(out_dir / "timing.json", {"runs": [
        {"model": run.model_kind, "loop": run.loop, "seconds": round(run.seconds, 4),
         "seconds_per_epoch": round(run.seconds / max(run.history.epochs, 1), 6)}
        for run in runs]})


def write_json(path: Path, value: dict) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_figures(out_dir: Path, data: Data, comparison: Comparison) -> list[str]:
    """The guide's three plots, plus the gap to the optimum and the runs' differences.

    Returns:
      The names of the PNG files written.
    """
    from linfit import plots

    runs, reference = comparison.runs, comparison.reference
    columns = {run.label: run.history.columns() for run in runs}
    shown = plots.points_to_plot(data.num_examples)
    x, y = data.x[shown], data.y[shown]
    predictions = {run.label: np.asarray(run.model(x)) for run in runs}
    true_line = (data.true_w, data.true_b) if data.features is None and data.true_w is not None \
        else None
    plots.plot_data(out_dir / "data.png", x, y, predictions, true_line)
    optimum = (reference.w, reference.b) if reference is not None else None
    plots.plot_weights(out_dir / "weights.png", columns, data.true_w, data.true_b, optimum)
    plots.plot_loss(out_dir / "loss.png", columns)
    written = ["data.png", "weights.png", "loss.png"]
    if reference is not None:
        gaps = {label: reference.gaps(run_columns) for label, run_columns in columns.items()}
        plots.plot_gap(out_dir / "gap.png", gaps, comparison.contraction)
        written.append("gap.png")
    if len(runs) > 1:
        plots.plot_differences(out_dir / "differences.png", comparison.agreement.rel_diff,
                               comparison.agreement.rtol)
        written.append("differences.png")
    return written


def run_metrics(result: RunResult) -> dict:
    """One run's entry in metrics.json."""
    history = result.history
    trajectory = []
    for epoch, full_loss in enumerate(history.full_loss):
        row = {"epoch": epoch, "full_loss": full_loss}
        if "val_loss" in history.trajectory:
            row["val_loss"] = history.trajectory["val_loss"][epoch]
        if "w" in history.trajectory:
            row["w"] = np.atleast_1d(history.w[epoch]).astype(float).tolist()
            row["b"] = history.b[epoch]
        trajectory.append(row)
    return {"model": result.model_kind, "loop": result.loop,
            "checkpoint": result.checkpoint_name,
            "loss": list(history.loss), "trajectory": trajectory}


def write_history_csv(path: Path, results: list[RunResult]) -> None:
    """One row per run and epoch: model,loop,epoch,loss,full_loss,w…,b (row 0: no loss)."""
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        for index, result in enumerate(results):
            columns = result.history.columns()
            if index == 0:
                writer.writerow(["model", "loop", "epoch", *columns])
            for epoch in range(len(columns["full_loss"])):
                writer.writerow([result.model_kind, result.loop, epoch,
                                 *_csv_values(columns, epoch)])
        write_text(path, f.getvalue())


def _csv_values(columns: dict[str, np.ndarray], epoch: int) -> list[str]:
    return ["" if np.isnan(v[epoch]) else repr(float(v[epoch])) for v in columns.values()]


@contextlib.contextmanager
def stderr_silenced(enabled: bool = True):
    """Send file descriptor 2 to /dev/null, to hide C++ log lines printed on import.

    TensorFlow prints oneDNN/CUDA lines while it imports and initialises its
    devices, even with TF_CPP_MIN_LOG_LEVEL=2, from C++ where Python's
    sys.stderr cannot catch them.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow(show_logs: bool = False, devices: int | None = None,
                      strategy: str = "default", worker_timeout: int = 60) -> None:
    """Import TensorFlow and Keras and start TensorFlow's devices, quietly
    (`devices`: as that many logical CPUs; `strategy`: made before any op runs,
    as a multi-worker one must be); turn on TensorFlow's op determinism."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if show_logs else "2")
    with stderr_silenced(not show_logs):
        import tensorflow as tf

        if devices:  # before anything starts the devices
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
        import linfit.trainer  # noqa: F401  (imports Keras)
        make_strategy(strategy, worker_timeout)
        tf.constant(0.0)  # device start-up logs its own lines
    # Same config, same bits: ops with a nondeterministic kernel raise instead.
    tf.config.experimental.enable_op_determinism()


def main(argv=None) -> int:
    args = parse_args(argv)
    chief = True
    try:
        if args.resume:
            out_dir = Path(args.resume)
            config = resume_config(out_dir, args)
        else:
            config = config_from_args(args)
        if args.devices is not None and args.devices < 1:
            raise ConfigError(f"--devices {args.devices}: give a number of devices >= 1")
        data = load_data(config.data)
        initial_w(config, data.features)  # fails now, not after TensorFlow's import
        if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("train.tensorboard = true needs the tensorboard package: "
                              "pip install 'linfit[tensorboard]'")
        chief = config.train.strategy != "multiworker" or is_chief()
        if not chief:  # another worker: it trains, the chief writes the run directory
            out_dir = Path(tempfile.mkdtemp(prefix="linfit-worker-"))
        elif not args.resume:
            out_dir = prepare_run_dir(args.out, overwrite=args.overwrite)
            # First, so that a run killed at any moment from here can be resumed.
            write_text(out_dir / "config.toml", to_toml(config))
        import_tensorflow(show_logs=args.tf_logs, devices=args.devices,
                          strategy=config.train.strategy,
                          worker_timeout=config.train.worker_timeout)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        if not chief:
            shutil.rmtree(out_dir, ignore_errors=True)
        return 2
    try:
        return train_into(out_dir, config, data, args, chief)
    finally:
        if not chief:  # whatever becomes of the run, this worker's directory goes with it
            shutil.rmtree(out_dir, ignore_errors=True)


def train_into(out_dir: Path, config: Config, data: Data, args, chief: bool) -> int:
    """Train the runs of `config`, record them in `out_dir` and print them.

    Returns the exit status: 0, or 2, 3, 4 for a failed run (recorded as such).
    """
    # From here on the run directory exists: whatever happens is recorded in it.
    write_text(out_dir / "config.toml", to_toml(config))
    try:
        with warnings.catch_warnings():
            # A warning (such as an unstable learning rate) is one line, shown
            # before training starts.
            warnings.showwarning = _print_warning
            comparison = train_runs(config, data, verbose=args.verbose, run_dir=out_dir,
                                    resume=Path(args.resume) if args.resume else None)
    except DivergenceError as error:
        write_failed_run(out_dir, data, error.completed, "diverged", str(error), error)
        print(f"error: {error}", file=sys.stderr)
        return 3
    except WorkerLostError as error:
        write_failed_run(out_dir, data, [], "failed", str(error))
        print(f"error: {error}", file=sys.stderr)
        return 4
    except LinfitError as error:
        write_failed_run(out_dir, data, [], "failed", str(error))
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BaseException as error:  # a bug or an interrupt: record it, then let it show
        write_failed_run(out_dir, data, [], "failed", f"{type(error).__name__}: {error}")
        raise
    for run in comparison.runs:
        print(f"{MODEL_CLASSES[run.model_kind]} trained by the {run.loop} loop:")
        print("\n".join(run.history.report_lines()))
        print()
    if len(comparison.runs) > 1:
        print("\n".join(comparison.agreement.summary_lines()))
    write_run(out_dir, config, data, comparison)
    if not chief:
        print("\nThis worker wrote nothing: the chief writes the run directory.")
        return 0
    print(f"\nWrote {out_dir}/ (open report.md): " + ", ".join(sorted(
        path.name for path in out_dir.iterdir())))
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
