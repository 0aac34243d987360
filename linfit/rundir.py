"""The run directory: every file name in it, and the only code that writes or reads it.

    with RunDir.created("runs/mine") as run_dir:   # None: runs/<UTC time>; held while open
        run_dir.write_config(config)               # first: a run killed from here resumes
        ...                                        # history.csv grows as training goes
        run_dir.write_results(config, data, comparison)   # metrics.json last

A directory with `metrics.json` is finished; its `status` says how. Every
run directory holds a marker, `.linfit-run`, that only linfit writes: nothing
else is ever resumed into or overwritten, and `--overwrite` removes only the
files linfit wrote there.
"""

import contextlib
import csv
import fcntl
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from linfit.checkpoint import list_checkpoints, newest_whole, position
from linfit.config import LOOPS, MODEL_CLASS_NAMES, Config, config_callbacks, load_config, to_toml
from linfit.data import Data
from linfit.data_files import shown
from linfit.errors import ConfigError, LinfitError, RunDirError, WriteError
from linfit.experiment import Comparison, RunHooks, RunLabel, RunResult
from linfit.fileio import TEMPORARY_FILES, remove_matching, write_json, write_text
from linfit.history import History
from linfit.report import write_report
from linfit.run_records import HistoryCSV, data_metrics, run_metrics, timing
from linfit.training_state import changed_setting


def _fresh_path() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, suffix = Path("runs") / stamp, 1
    while path.exists():
        path, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
    return path


@dataclass(frozen=True)
class ResumePlan:
    """Where each run of a resumed run directory continues from (no entry: from the
    start), and whether every run has finished already."""

    points: dict[str, Path]
    complete: bool


class RunDir:
    """A run directory at `path`, and the names of everything in it."""

    MARKER = ".linfit-run"
    LOCK = ".linfit-lock"
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
    @contextlib.contextmanager
    def created(cls, out: str | Path | None, overwrite: bool = False):
        """A new (or, with `overwrite`, cleared) run directory, held by this process
        while the context lasts: `out`, or runs/<UTC time> when None.

        Raises:
          RunDirError: when `out` is a file, or a non-empty directory and not
            `overwrite` of a linfit run directory, or cannot be written, or is
            held by another process.
        """
        run_dir = cls(_fresh_path() if out is None else out)
        clear = run_dir._check_out(overwrite)
        run_dir._make()
        with run_dir.locked():
            if clear:
                run_dir._remove_own_files()
                run_dir._make()
            yield run_dir

    def _check_out(self, overwrite: bool) -> bool:
        """Whether --out must be cleared first (it is a non-empty run directory)."""
        path = self.path
        try:
            if path.exists() and not path.is_dir():
                raise RunDirError(f"--out {path} is a file: give a new or empty directory")
            if not (path.is_dir() and any(path.iterdir())):
                return False
        except OSError as error:
            raise RunDirError(f"--out {shown(path)}: {error.strerror}") from None
        if not overwrite:
            raise RunDirError(f"run directory {path} exists and is not empty: choose another "
                              "--out, --resume it, or pass --overwrite to replace it")
        self._check_removable()
        return True

    def _make(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Where relative data paths are read from: --resume reads them there too.
            write_text(self.path / self.MARKER,
                       json.dumps({"linfit_run": 1, "cwd": os.getcwd()}) + "\n")
        except OSError as error:
            reason = error.strerror or str(error).partition(": ")[2] or str(error)
            raise RunDirError(f"cannot write the run directory {shown(self.path)}: {reason}: "
                              "choose another --out") from None

    @contextlib.contextmanager
    def locked(self):
        """Hold the run directory for this process (an exclusive `flock` on its lock
        file): another linfit process is refused, naming this one, until it ends."""
        try:
            descriptor = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunDirError(f"cannot lock {self.path}: {error.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
                raise RunDirError(f"{self.path} is in use by another linfit process (pid "
                                  f"{holder or 'unknown'}): wait for it to end, or stop it"
                                  ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(descriptor)  # and with it the lock

    def _check_removable(self) -> None:
        """--overwrite may clear only a run directory that may go: never the current
        directory, one that holds it, the home directory or a file system's root,
        nor one reached through a link."""
        path = self.path
        if path.is_symlink():
            raise RunDirError(f"--overwrite {path}: it is a symbolic link; give the run "
                              "directory it points to, if that is what you mean")
        resolved, here = path.resolve(), Path.cwd().resolve()
        if resolved == here or resolved in here.parents:
            raise RunDirError(f"--overwrite {path}: it is the current directory or holds it, "
                              "which linfit never removes: choose a run directory below it")
        if resolved in (Path.home().resolve(), Path(resolved.anchor)):
            raise RunDirError(f"--overwrite {path}: linfit never removes the home directory "
                              "or a root directory")
        self.check_is_run(what="--overwrite replaces")

    def _remove_own_files(self) -> None:
        """--overwrite: remove what linfit wrote here (the lock file stays: it is held)."""
        from linfit.plots import FIGURES

        path = self.path

        labels = [f"{kind}-{loop}" for kind in MODEL_CLASS_NAMES for loop in LOOPS]
        names = [self.CONFIG, self.METRICS, self.HISTORY, self.TIMING, self.REPORT, *FIGURES,
                 *(f"{label}.weights.h5" for label in labels)]
        for file in [*(path / name for name in names), *path.glob(TEMPORARY_FILES)]:
            file.unlink(missing_ok=True)
        for label in labels:
            remove_matching(self.checkpoint_dir(label), ["epoch-*.weights.h5", TEMPORARY_FILES])
            remove_matching(self.tensorboard_dir(label), ["events.out.tfevents.*"])
        for directory in (self.checkpoint_dir(), self.path / self.TENSORBOARD):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        (path / self.MARKER).unlink()

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

    def check_is_run(self, what: str = "--resume continues") -> None:
        """Raise RunDirError unless this is a linfit run directory (it has the marker)."""
        if not (self.path / self.MARKER).is_file() or not (self.path / self.CONFIG).is_file():
            raise RunDirError(f"{what} linfit run directories only, and {self.path} is not "
                              f"one (it has no {self.MARKER} marker and config.toml, which "
                              "linfit writes in each): give the directory of a linfit run")

    def started_in(self) -> Path | None:
        """The directory the run was started in (where its config's relative paths
        are), or None if its marker does not say (a run of an older linfit)."""
        try:
            folder = json.loads((self.path / self.MARKER).read_text())["cwd"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Path(folder) if isinstance(folder, str) and Path(folder).is_dir() else None

    def read_config(self, overrides=()) -> Config:
        """The run's config, with `--set` overrides applied."""
        self.check_is_run()
        return load_config(self.path / self.CONFIG, overrides)

    def hooks(self, config: Config, settings: dict, resume_from: dict | None = None,
              verbose: int = 0) -> RunHooks:
        """What each run of `config` writes here as it trains: periodic
        checkpoints, history.csv, TensorBoard's files (with the config's
        callbacks), the `settings` its checkpoints hold; `resume_from`: where
        each run continues from (see `resume_plan`)."""
        history = HistoryCSV(self.path / self.HISTORY)
        return RunHooks(checkpoint_dir=self.checkpoint_dir(), resume_from=resume_from or {},
                        callbacks=lambda label: config_callbacks(config.train,
                                                                 self.tensorboard_dir(label)),
                        on_epoch_end=history.write, verbose=verbose, settings=settings)

    def write_results(self, config: Config, data: Data, comparison: Comparison,
                      devices: dict | None = None) -> dict:
        """Write config, checkpoints, history, figures, report, timing and, last,
        metrics.json: a directory that has it is complete.

        Args:
          devices: what trained (`runtime.device_summary`), for metrics.json
            and the report.

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
        write_report(self.path / self.REPORT, config, data, comparison, figures, devices)
        metrics = {"status": "complete", **data_metrics(data),
                   **({"devices": devices} if devices else {}),
                   "runs": [run_metrics(run.label, run.history) for run in runs]}
        if len(runs) > 1:
            metrics["agreement"] = comparison.agreement.to_json()
        if comparison.reference is not None:
            metrics["reference"] = comparison.reference.to_json()
        self._write_json(self.TIMING, {"runs": [timing(run) for run in runs]})
        self._write_json(self.METRICS, metrics)
        return metrics

    def write_failure(self, data: Data, completed: list[RunResult], status: str,
                      message: str, error=None) -> dict:
        """Record a run that stopped part-way: the runs that finished (or were
        interrupted after a whole epoch), their checkpoints and history, and a
        metrics.json whose `status` says why. Training checkpoints already
        written stay as they are. Best effort: on a full disk, what can be
        written is, and the rest is left as it was (never half-written).
        """
        runs, histories = [], []
        for run in completed:
            _best_effort(run.trainer.save_checkpoint, self.final_checkpoint(run.label),
                         run.history)
            entry = run_metrics(run.label, run.history)
            runs.append({**entry, "status": "interrupted"} if run.history.interrupted
                        else entry)
            histories.append((run.label, run.history))
        if getattr(error, "history", None) is not None and getattr(error, "label", None):
            runs.append({**run_metrics(error.label, error.history), "checkpoint": None,
                         "status": status,
                         "stopped_at": {"epoch": error.epoch, "batch": error.batch}})
            histories.append((error.label, error.history))
        if histories:
            _best_effort(self._write_history_csv, histories)
        metrics = {"status": status, "error": message, **data_metrics(data), "runs": runs}
        _best_effort(self._write_json, self.METRICS, metrics)
        return metrics

    def resume_plan(self, config: Config, labels: list[RunLabel], settings: dict,
                    clean: bool = True) -> ResumePlan:
        """Where each run of `config` continues from: its newest checkpoint that is
        whole (read and checked in full), among its periodic ones and its final one.
        Nothing here changes but, with `clean`, what a killed write left behind.

        Raises:
          ConfigError: a checkpoint was written with other settings or data (named),
            or the config asks for fewer epochs than a run has trained.
          CheckpointError: a run has checkpoints, but none reads whole.
        """
        points, complete = {}, True
        for label in labels:
            if clean:  # the writer of the directory; other workers only read it
                for leftover in [*self.checkpoint_dir(label).glob(TEMPORARY_FILES),
                                 *self.path.glob(TEMPORARY_FILES)]:
                    leftover.unlink(missing_ok=True)
            newest = self._newest_whole_checkpoint(label)
            if newest is None:
                complete = False
                continue
            path, state = newest
            changed = changed_setting(state, settings)
            if changed:
                raise ConfigError(_changed_message(path, *changed))
            trained, inside = position(state)
            if trained + bool(inside) > config.train.epochs:
                at_least = trained + bool(inside)
                raise ConfigError(
                    f"train.epochs = {config.train.epochs}, but {label} in {self.path} has "
                    f"trained {trained} epochs{f' and {inside} batches' if inside else ''}: "
                    f"--resume only goes on (set at least {at_least}, or start a new run to "
                    "train fewer)")
            complete &= (state["epoch"] == config.train.epochs and not state.get("batch")) \
                or bool(state["history"].get("stopped"))
            points[label] = path
        return ResumePlan(points, complete)

    def _newest_whole_checkpoint(self, label: RunLabel) -> tuple[Path, dict] | None:
        """`checkpoint.newest_whole` of the run's periodic and final checkpoints."""
        directory = self.checkpoint_dir(label)
        return newest_whole([*(list_checkpoints(directory) if directory.is_dir() else []),
                             self.final_checkpoint(label)], str(label))

    def read_runs(self) -> dict[str, History]:
        """The runs of a finished run directory, by label ("module-manual", ...)."""
        metrics_path = self.path / self.METRICS
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is a file, not a run directory" if self.path.exists()
                              else f"run directory {self.path} does not exist")
        if not metrics_path.is_file():
            raise RunDirError(f"{self.path} has no metrics.json: it is not a finished linfit "
                              "run")
        try:
            metrics = json.loads(metrics_path.read_text())
            return {RunLabel(run["model"], run["loop"]): History.from_metrics(run)
                    for run in metrics["runs"]}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{metrics_path} is not a linfit metrics file ({error})") from None

    def training_columns(self) -> tuple[tuple[str, ...] | None, str | tuple[str, ...]]:
        """The feature names and target column(s) the run trained on, where known
        (the target: metrics.json's, else config.toml's data.target, else "")."""
        names, targets = None, ()
        try:
            data = json.loads((self.path / self.METRICS).read_text())["data"]
            names, targets = tuple(data["features"]), tuple(data.get("targets", ()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        if targets:
            return names, targets[0] if len(targets) == 1 else targets
        try:
            return names, load_config(self.path / self.CONFIG).data.target
        except (OSError, LinfitError):
            return names, ""

    def listing(self) -> list[str]:
        """What the directory shows a person (linfit's hidden marker and lock left out)."""
        return sorted(path.name for path in self.path.iterdir() if not path.name.startswith("."))

    def _write_history_csv(self, histories: list[tuple[RunLabel, History]]) -> None:
        with io.StringIO(newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["model", "loop", "epoch", *histories[0][1].csv_header()])
            for label, history in histories:
                for epoch, row in enumerate(history.csv_rows()):
                    writer.writerow([label.model, label.loop, epoch, *row])
            write_text(self.path / self.HISTORY, f.getvalue())

    def _write_json(self, name: str, value: dict) -> None:
        write_json(self.path / name, value)


def _best_effort(write, *args) -> None:
    """Write what can be written: a failure being recorded may be a full disk."""
    try:
        write(*args)
    except WriteError:
        pass


def _changed_message(path: Path, key: str, then, now) -> str:
    what = ("the data is not what the run was trained on (data.path, or the file it names, "
            "changed)" if key == "data.fingerprint" else f"{key} was {then!r}, now {now!r}")
    return (f"--resume: {path} was written with other settings: {what}. Resume with the "
            "settings the run was started with, or start a new run")
