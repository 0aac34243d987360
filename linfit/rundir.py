"""The run directory: every file name in it, and the only code that writes or reads it.

    run_dir = RunDir.create("runs/mine")      # or RunDir.create(None): runs/<UTC time>
    run_dir.write_config(config)              # first: a run killed from here resumes
    ...                                       # history.csv grows as training goes
    run_dir.write_results(config, data, comparison)   # metrics.json last

A directory with `metrics.json` is finished; its `status` says how.
"""

import csv
import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from linfit.checkpoint import list_checkpoints, read_state
from linfit.config import Config, load_config, to_toml
from linfit.data import Data
from linfit.errors import LinfitError, RunDirError
from linfit.experiment import Comparison, RunHooks, RunLabel, RunResult, config_callbacks
from linfit.fileio import TEMPORARY_FILES, write_text
from linfit.history import History
from linfit.report import write_report


class RunDir:
    """A run directory at `path`, and the names of everything in it."""

    CONFIG = "config.toml"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    TIMING = "timing.json"
    REPORT = "report.md"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tb"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    @classmethod
    def create(cls, out: str | Path | None, overwrite: bool = False) -> "RunDir":
        """A new (or emptied) run directory: `out`, or runs/<UTC time> when None.

        Raises:
          RunDirError: when `out` is a file, or a non-empty directory and not
            `overwrite` of a linfit run directory.
        """
        if out is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            path, suffix = Path("runs") / stamp, 1
            while path.exists():
                path, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
        else:
            path = Path(out)
            if path.exists() and not path.is_dir():
                raise RunDirError(f"--out {path} is a file: give a new or empty directory")
            if path.is_dir() and any(path.iterdir()):
                if not overwrite:
                    raise RunDirError(f"run directory {path} exists and is not empty: choose "
                                      "another --out, --resume it, or pass --overwrite to "
                                      "replace it")
                if not (path / cls.CONFIG).is_file():
                    raise RunDirError(f"--overwrite replaces linfit run directories only, and "
                                      f"{path} has no config.toml: remove it yourself if you "
                                      "mean it")
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def final_checkpoint(self, label: RunLabel) -> Path:
        return self.path / f"{label}.weights.h5"

    def checkpoint_dir(self, label: RunLabel | None = None) -> Path:
        """Periodic checkpoints: all runs' (label None), or one run's."""
        directory = self.path / self.CHECKPOINTS
        return directory if label is None else directory / label

    def tensorboard_dir(self, label: RunLabel) -> Path:
        return self.path / self.TENSORBOARD / label

    def write_config(self, config: Config) -> None:
        write_text(self.path / self.CONFIG, to_toml(config))

    def check_is_run(self) -> None:
        """Raise RunDirError unless this is a linfit run directory."""
        if not (self.path / self.CONFIG).is_file():
            raise RunDirError(f"--resume {self.path}: no config.toml there; give the directory "
                              "of a linfit run")

    def read_config(self, overrides=()) -> Config:
        """The run's config, with `--set` overrides applied."""
        self.check_is_run()
        return load_config(self.path / self.CONFIG, overrides)

    def hooks(self, config: Config, labels: list[RunLabel], resume: "RunDir | None" = None,
              verbose: int = 0) -> RunHooks:
        """What each run of `config` writes here as it trains: periodic
        checkpoints, history.csv, TensorBoard's files (with the config's
        callbacks); with `resume`, where each run continues from."""
        resume_from = {} if resume is None else resume.resume_points(labels,
                                                                     clean=resume == self)
        history = HistoryCSV(self.path / self.HISTORY)
        return RunHooks(checkpoint_dir=self.checkpoint_dir(), resume_from=resume_from,
                        callbacks=lambda label: config_callbacks(config.train,
                                                                 self.tensorboard_dir(label)),
                        on_epoch_end=history.write, verbose=verbose)

    def write_results(self, config: Config, data: Data, comparison: Comparison) -> dict:
        """Write config, checkpoints, history, figures, report, timing and, last,
        metrics.json: a directory that has it is complete.

        Returns:
          The metrics written to metrics.json.
        """
        from linfit import plots  # matplotlib, only once there is something to draw

        runs = comparison.runs
        for run in runs:
            # A full training checkpoint: it loads as weights, and --resume can extend it.
            run.trainer.save_checkpoint(self.final_checkpoint(run.label), run.history)
        self._write_history_csv([(run.label, run.history) for run in runs])
        figures = plots.write_figures(self.path, data, comparison)
        write_report(self.path / self.REPORT, config, data, comparison, figures)
        metrics = {"status": "complete", **_data_metrics(data),
                   "runs": [_run_metrics(run.label, run.history) for run in runs]}
        if len(runs) > 1:
            metrics["agreement"] = comparison.agreement.to_json()
        if comparison.reference is not None:
            metrics["reference"] = comparison.reference.to_json()
        self._write_json(self.TIMING, {"runs": [_timing(run) for run in runs]})
        self._write_json(self.METRICS, metrics)
        return metrics

    def write_failure(self, data: Data, completed: list[RunResult], status: str,
                      message: str, error=None) -> dict:
        """Record a run that stopped part-way: the runs that finished, their
        checkpoints and history, and a metrics.json whose `status` says why.
        Training checkpoints already written stay as they are."""
        for run in completed:
            run.trainer.save_checkpoint(self.final_checkpoint(run.label), run.history)
        runs = [_run_metrics(run.label, run.history) for run in completed]
        histories = [(run.label, run.history) for run in completed]
        if getattr(error, "history", None) is not None and getattr(error, "label", None):
            runs.append({**_run_metrics(error.label, error.history), "checkpoint": None,
                         "status": status,
                         "stopped_at": {"epoch": error.epoch, "batch": error.batch}})
            histories.append((error.label, error.history))
        if histories:
            self._write_history_csv(histories)
        metrics = {"status": status, "error": message, **_data_metrics(data), "runs": runs}
        self._write_json(self.METRICS, metrics)
        return metrics

    def resume_points(self, labels: list[RunLabel], clean: bool = True) -> dict[str, Path]:
        """Per run, the checkpoint with the most epochs that loads, among its
        periodic checkpoints and its final one.

        Args:
          clean: remove what a killed write left behind (only the process
            that writes the directory; other workers only read it).
        """
        points = {}
        for label in labels:
            directory = self.checkpoint_dir(label)
            if clean:
                for leftover in [*directory.glob(TEMPORARY_FILES),
                                 *self.path.glob(TEMPORARY_FILES)]:
                    leftover.unlink(missing_ok=True)
            candidates = list_checkpoints(directory) if directory.is_dir() else []
            candidates.append(self.final_checkpoint(label))
            best = -1
            for path in candidates:
                try:
                    epoch = (read_state(path) or {}).get("epoch", -1) if path.exists() else -1
                except LinfitError:
                    continue  # unreadable: an older one will do
                if isinstance(epoch, int) and epoch > best:
                    points[label], best = path, epoch
        return points

    def read_runs(self) -> dict[str, History]:
        """The runs of a finished run directory, by label ("module-manual", ...)."""
        metrics_path = self.path / self.METRICS
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        if not metrics_path.is_file():
            raise RunDirError(f"{self.path} has no metrics.json: it is not a finished linfit "
                              "run")
        try:
            metrics = json.loads(metrics_path.read_text())
            return {RunLabel(run["model"], run["loop"]): History.from_metrics(run)
                    for run in metrics["runs"]}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{metrics_path} is not a linfit metrics file ({error})") from None

    def training_columns(self) -> tuple[tuple[str, ...] | None, str]:
        """The feature names and target column the run trained on, where known."""
        names, target = None, ""
        if (self.path / self.METRICS).is_file():
            try:
                metrics = json.loads((self.path / self.METRICS).read_text())
                names = tuple(metrics["data"]["features"])
            except (ValueError, KeyError, TypeError):
                names = None
        if (self.path / self.CONFIG).is_file():
            try:
                target = load_config(self.path / self.CONFIG).data.target
            except LinfitError:
                target = ""
        return names, target

    def listing(self) -> list[str]:
        return sorted(path.name for path in self.path.iterdir())

    def _write_history_csv(self, histories: list[tuple[RunLabel, History]]) -> None:
        with io.StringIO(newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["model", "loop", "epoch", *histories[0][1].csv_header()])
            for label, history in histories:
                for epoch in range(len(history.full_loss)):
                    writer.writerow([label.model, label.loop, epoch, *history.csv_row(epoch)])
            write_text(self.path / self.HISTORY, f.getvalue())

    def _write_json(self, name: str, value: dict) -> None:
        write_text(self.path / name, json.dumps(value, indent=2) + "\n")


class HistoryCSV:
    """history.csv, appended to as training goes (only the new rows: each epoch
    costs the same however long the run), so a crashed run keeps its history.

    `RunDir.write_results` rewrites it whole, atomically, at the end.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows_written: dict[str, int] = {}
        path.unlink(missing_ok=True)  # a resumed run writes its whole history again

    def write(self, label: RunLabel, history: History) -> None:
        rows = len(history.full_loss)
        done = self.rows_written.get(label, 0)
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if not self.rows_written:
                writer.writerow(["model", "loop", "epoch", *history.csv_header()])
            for epoch in range(done, rows):
                writer.writerow([label.model, label.loop, epoch, *history.csv_row(epoch)])
        self.rows_written[label] = rows


def _run_metrics(label: RunLabel, history: History) -> dict:
    """One run's entry in metrics.json."""
    return {"model": label.model, "loop": label.loop, "checkpoint": f"{label}.weights.h5",
            "loss": list(history.loss), "trajectory": history.metrics_rows()}


def _data_metrics(data: Data) -> dict:
    return {"data": {"source": data.source, "num_examples": data.num_examples,
                     "validation_examples": 0 if data.y_val is None else len(data.y_val),
                     "features": list(data.feature_names)}}


def _timing(run: RunResult) -> dict:
    """Wall times, kept out of metrics.json so that file is the same on every rerun."""
    return {"model": run.model_kind, "loop": run.loop, "seconds": round(run.seconds, 4),
            "seconds_per_epoch": round(run.seconds / max(run.history.epochs, 1), 6)}

