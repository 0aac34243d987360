"""What a run directory's record files hold, entry by entry: history.csv as it grows
(only the new rows each epoch), each run's entry in metrics.json, its data's, and
timing.json's. `linfit.rundir` decides when each is written, and where.
"""

import csv
import io
import json
from pathlib import Path

from linfit.data import Data
from linfit.experiment import RunLabel, RunResult
from linfit.fileio import append_text, write_text
from linfit.history import History


class HistoryCSV:
    """history.csv, appended to as training goes (only the new rows: each epoch
    costs the same however long the run), so a crashed run keeps its history.

    `RunDir.write_results` rewrites it whole, atomically, at the end. A resumed run
    writes its whole history again: its first write replaces the file an earlier
    process left, atomically, so a resume killed before it leaves that file whole.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows_written: dict[str, int] = {}

    def write(self, label: RunLabel, history: History) -> None:
        rows = history.rows  # not len(full_loss): it may not be recorded
        done = self.rows_written.get(label, 0)
        with io.StringIO() as text:
            writer = csv.writer(text, lineterminator="\n")
            if not self.rows_written:
                writer.writerow(["model", "loop", "epoch", *history.csv_header()])
            for epoch, row in enumerate(history.csv_rows(done, rows), start=done):
                writer.writerow([label.model, label.loop, epoch, *row])
            if self.rows_written:
                append_text(self.path, text.getvalue())  # whole rows, or none
            else:
                write_text(self.path, text.getvalue())
        self.rows_written[label] = rows


def run_metrics(label: RunLabel, history: History) -> dict:
    """One run's entry in metrics.json: its history, how it ended, and its final
    (saved) state."""
    rows = history.metrics_rows()
    entry = {"model": label.model, "loop": label.loop, "checkpoint": f"{label}.weights.h5",
             "epochs_run": history.epochs, "stopped_early": history.stopped}
    if history.early_stopping is not None:
        entry["early_stopping"] = dict(history.early_stopping)
    if rows:
        entry["final"] = rows[history.final_row]
    if history.metrics:
        entry["metrics"] = {name: list(history.logs.get(name, [])) for name in history.metrics}
    return {**entry, "loss": list(history.loss), "trajectory": rows}


def data_metrics(data: Data) -> dict:
    """The data's entry: with its columns' names (`targets`: for data from files, which
    `linfit.predict` then looks for in the files it is given)."""
    return {"data": {"source": data.source, "num_examples": data.num_examples,
                     "validation_examples": data.validation_examples,
                     "streamed": data.files is not None,
                     "features": list(data.feature_names),
                     **({"targets": list(data.target_names)} if data.target_names else {})}}


def timing(run: RunResult) -> dict:
    """Wall times, kept out of metrics.json so that file is the same on every rerun."""
    return {"model": run.model_kind, "loop": run.loop, "seconds": round(run.seconds, 4),
            "seconds_per_epoch": round(run.seconds / run.history.epochs_trained, 6)
            if run.history.epochs_trained else None}  # a run complete before it resumed



def run_status(folder: str | Path) -> str | None:
    """metrics.json's status in a run directory ("complete", "interrupted", "diverged",
    "failed"), or None when it has none that can be read (a run still training, or
    killed before its results were written)."""
    try:
        status = json.loads((Path(folder) / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status if isinstance(status, str) else None
