"""What one `fit` recorded, and every form it is stored in.

`History` is filled one epoch at a time (appending never rebuilds what is
there), and converts itself to each form linfit writes or reads: columns for
figures and comparisons, exact JSON for checkpoints, rows for metrics.json
and history.csv. NumPy only.
"""

from dataclasses import dataclass, field

import numpy as np


def weight_names(count: int) -> list[str]:
    """Column names of w: `w` for one weight, else `w_0`, `w_1`, ..."""
    return ["w"] if count == 1 else [f"w_{i}" for i in range(count)]


@dataclass
class History:
    """What one `fit` recorded, identical in meaning for both loops.

    Attributes:
      logs: Keras's per-epoch logs, one value per epoch trained: `loss` (the
        mean over the epoch's batches of the loss computed before each
        update, weighted by batch size, as Keras defines it), `full_loss`,
        and whatever else the callbacks logged.
      trajectory: on the whole training set, before training and after each
        epoch (E + 1 rows): `full_loss` (`val_loss` with validation data),
        and `w`, `b` where the model has them.
      settings: what decides its numbers besides the model (the data and
        its order, the optimizer, ...), which a resumed run must share.
      stopped: a callback stopped training before the last epoch asked for.
      interrupted: a signal stopped it (after a whole epoch); it can go on.
      early_stopping: what Keras's EarlyStopping decided, when one was used:
        `monitor`, `best_after` (epochs completed at its best) and `restored`
        (whether the model was given back the best epoch's weights).
      callback_progress, end_weights: where training stood, for a checkpoint
        to resume from exactly: the stateful callbacks' progress, and the
        weights before a callback restored others at the end of training.
    """

    logs: dict[str, list[float]] = field(default_factory=dict)
    trajectory: dict[str, list] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    stopped: bool = False
    early_stopping: dict | None = None
    interrupted: bool = field(default=False, compare=False)
    callback_progress: list = field(default_factory=list, repr=False, compare=False)
    end_weights: list | None = field(default=None, repr=False, compare=False)

    @property
    def epochs(self) -> int:
        return len(self.logs.get("loss", []))

    @property
    def loss(self) -> list[float]:
        return self.logs.get("loss", [])

    @property
    def full_loss(self) -> list[float]:
        return self.trajectory.get("full_loss", [])

    @property
    def w(self) -> list[np.ndarray]:
        return self._line("w")

    @property
    def b(self) -> list[float]:
        return self._line("b")

    def _line(self, name: str) -> list:
        if name in self.trajectory or not self.full_loss:
            return self.trajectory.get(name, [])
        raise AttributeError(f"this History has no '{name}': only a model with variables w and "
                             "b (such as LinearModule) records them; it recorded "
                             f"{', '.join(self.trajectory)} (see History.columns())")

    @property
    def final_row(self) -> int:
        """The row of the trajectory that the model ended with: the last one, or
        the best epoch's when EarlyStopping restored its weights."""
        if self.early_stopping and self.early_stopping["restored"]:
            return self.early_stopping["best_after"]
        return len(self.full_loss) - 1

    def final(self) -> dict:
        """The final row (see `final_row`): `epoch` (epochs completed), full_loss,
        val_loss, and w, b where recorded."""
        row = self.final_row
        return {"epoch": row, **{name: values[row] for name, values in self.trajectory.items()}}

    @property
    def has_line(self) -> bool:
        """Whether w and b were recorded (a model with variables `w` and `b`)."""
        return "w" in self.trajectory

    def append_logs(self, logs: dict) -> None:
        """One epoch's Keras logs, as keras.callbacks.History keeps them."""
        for name, value in logs.items():
            self.logs.setdefault(name, []).append(value)

    def append_row(self, row: dict) -> None:
        """One row of the trajectory (full_loss, val_loss, w, b)."""
        for name, value in row.items():
            self.trajectory.setdefault(name, []).append(value)

    def columns(self) -> dict[str, np.ndarray]:
        """Everything recorded, one row per epoch from 0 (before training) to E.

        Keys: `loss` (NaN in row 0: nothing was trained yet), `full_loss`,
        `val_loss` where there was validation data, then `w` (or `w_0`, `w_1`,
        ... for several weights) and `b` where recorded.
        """
        columns = {"loss": np.array([np.nan, *self.loss], dtype=np.float64),
                   "full_loss": np.array(self.full_loss, dtype=np.float64)}
        if "val_loss" in self.trajectory:
            columns["val_loss"] = np.array(self.trajectory["val_loss"], dtype=np.float64)
        if self.has_line:
            w = np.array(self.w, dtype=np.float64).reshape(len(self.w), -1)
            columns.update(zip(weight_names(w.shape[1]), w.T))
            columns["b"] = np.array(self.b, dtype=np.float64)
        return columns

    def csv_header(self) -> list[str]:
        """history.csv's columns after `model,loop,epoch`."""
        names = ["loss", "full_loss", *(["val_loss"] if "val_loss" in self.trajectory else [])]
        if self.has_line:
            names += [*weight_names(np.size(self.w[0])), "b"]
        return names

    def csv_row(self, epoch: int) -> list[str]:
        """Row `epoch` of history.csv (after `model,loop,epoch`), each value exact."""
        values = [np.nan if epoch == 0 else self.loss[epoch - 1], self.full_loss[epoch]]
        if "val_loss" in self.trajectory:
            values.append(self.trajectory["val_loss"][epoch])
        if self.has_line:
            values += [*np.ravel(self.w[epoch]), self.b[epoch]]
        return ["" if np.isnan(v) else repr(float(v)) for v in values]

    def to_json(self) -> dict:
        """Plain lists and floats, exact: `History.from_json` gives it back bit for bit."""
        trajectory = {name: [np.asarray(v).tolist() for v in values]
                      for name, values in self.trajectory.items()}
        result = {"logs": {name: [float(v) for v in values] for name, values in self.logs.items()},
                  "trajectory": trajectory}
        if self.stopped:
            result["stopped"] = True
        if self.early_stopping is not None:
            result["early_stopping"] = dict(self.early_stopping)
        return result

    @classmethod
    def from_json(cls, data: dict, settings: dict | None = None) -> "History":
        trajectory = {name: list(values) for name, values in data["trajectory"].items()}
        if "w" in trajectory:
            trajectory["w"] = [np.asarray(w, dtype=np.float32) for w in trajectory["w"]]
        return cls(logs={name: list(values) for name, values in data["logs"].items()},
                   trajectory=trajectory, settings=dict(settings or {}),
                   stopped=bool(data.get("stopped", False)),
                   early_stopping=data.get("early_stopping"))

    def metrics_rows(self) -> list[dict]:
        """The trajectory as metrics.json's rows: {epoch, full_loss[, val_loss][, w, b]}."""
        rows = []
        for epoch, full_loss in enumerate(self.full_loss):
            row = {"epoch": epoch, "full_loss": full_loss}
            if "val_loss" in self.trajectory:
                row["val_loss"] = self.trajectory["val_loss"][epoch]
            if self.has_line:
                row["w"] = np.atleast_1d(self.w[epoch]).astype(float).tolist()
                row["b"] = self.b[epoch]
            rows.append(row)
        return rows

    @classmethod
    def from_metrics(cls, run: dict) -> "History":
        """A run of metrics.json (`loss` and `trajectory` rows) as a History."""
        rows = run["trajectory"]
        trajectory = {name: [row[name] for row in rows] for name in ("full_loss", "val_loss")
                      if rows and name in rows[0]}
        if rows and "w" in rows[0]:
            trajectory["w"] = [np.asarray(row["w"], dtype=np.float64) for row in rows]
            trajectory["b"] = [row["b"] for row in rows]
        return cls(logs={"loss": list(run["loss"])}, trajectory=trajectory)
