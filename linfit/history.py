"""What one `fit` recorded, and every form it is stored in.

`History` is filled one epoch at a time (appending never rebuilds what is
there), and converts itself to each form linfit writes or reads: columns for
figures and comparisons, exact JSON for checkpoints, rows for metrics.json
and history.csv. NumPy only.
"""

from dataclasses import dataclass, field

import numpy as np


def weight_names(shape: tuple) -> list[str]:
    """Column names of w's values, in order: `w` for one weight, `w_0`, `w_1`, ... for
    one per feature, and `w_0_0`, `w_0_1`, ... (feature, output) for several outputs."""
    if len(shape) == 2:
        return [f"w_{i}_{j}" for i in range(shape[0]) for j in range(shape[1])]
    count = int(np.prod(shape))
    return ["w"] if count == 1 else [f"w_{i}" for i in range(count)]


def bias_names(shape: tuple) -> list[str]:
    """Column names of b's values: `b`, or `b_0`, `b_1`, ... for several outputs."""
    return ["b"] if len(shape) == 0 else [f"b_{j}" for j in range(shape[0])]


def line_values(w, b) -> dict[str, float]:
    """w and b by column name (see `weight_names`, `bias_names`)."""
    return {**dict(zip(weight_names(np.shape(w)), map(float, np.ravel(w)))),
            **dict(zip(bias_names(np.shape(b)), map(float, np.ravel(b))))}


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
      metrics: the names of the compiled metrics (in `logs`, and with `val_`
        in the trajectory when there was validation data).
      stopped: a callback stopped training before the last epoch asked for.
      interrupted: a signal stopped it (after a whole epoch); it can go on.
      early_stopping: what Keras's EarlyStopping decided, when one was used:
        `monitor`, `best_after` (epochs completed at its best) and `restored`
        (whether the model was given back the best epoch's weights).
      callback_progress, end_weights: where training stood, for a checkpoint
        to resume from exactly: the stateful callbacks' progress, and the
        weights before a callback restored others at the end of training.
      resumed_after: the epochs a checkpoint held when this process went on
        from it (0: trained from the start here); `epochs_trained` are the rest.
    """

    logs: dict[str, list[float]] = field(default_factory=dict)
    trajectory: dict[str, list] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    stopped: bool = False
    early_stopping: dict | None = None
    interrupted: bool = field(default=False, compare=False)
    callback_progress: list = field(default_factory=list, repr=False, compare=False)
    end_weights: list | None = field(default=None, repr=False, compare=False)
    resumed_after: int = field(default=0, repr=False, compare=False)

    @property
    def epochs(self) -> int:
        return len(self.logs.get("loss", []))

    @property
    def epochs_trained(self) -> int:
        """Epochs this process trained (a resumed run's, since it resumed)."""
        return self.epochs - self.resumed_after

    @property
    def loss(self) -> list[float]:
        return self.logs.get("loss", [])

    @property
    def full_loss(self) -> list[float]:
        return self.trajectory.get("full_loss", [])

    @property
    def w(self) -> list[np.ndarray]:
        """W after each epoch (row 0: before training): float32 arrays of W's shape
        (0-d for the scalar model: `float(history.w[-1])`)."""
        return self._line("w")

    @property
    def b(self) -> list[np.ndarray]:
        """b after each epoch, as `w`: float32 arrays, 0-d for one output."""
        return self._line("b")

    def _line(self, name: str) -> list:
        if name in self.trajectory or not self.trajectory:  # nothing recorded yet: []
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
        return self.rows - 1

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

        Keys: `loss` and the compiled metrics (NaN in row 0: nothing was
        trained yet), `full_loss`, `val_loss` and the validation metrics where
        there was validation data (NaN where an epoch was not validated), then
        `w` (or `w_0`, `w_1`, ... for several weights) and `b` where recorded.
        """
        names = self.column_names()
        values = np.array(list(self._row_values(0, self.rows)), dtype=np.float64)
        return {name: values.reshape(self.rows, len(names))[:, i].copy()
                for i, name in enumerate(names)}

    def _row_values(self, start: int, stop: int):
        """Each row's values (floats; NaN where there is none), in `column_names()`'s
        order. The columns are found once: 10**5 rows take about a second."""
        names = self.column_names()
        line = weight_names(np.shape(self.w[0])) + bias_names(np.shape(self.b[0])) \
            if self.has_line else []
        others = names[:len(names) - len(line)]
        for row in range(start, stop):
            values = [self._value(name, row) for name in others]
            if line:
                values += map(float, np.ravel(self.w[row]))
                values += map(float, np.ravel(self.b[row]))
            yield values

    @property
    def rows(self) -> int:
        """Rows recorded: the start, then one per epoch (none before any was recorded)."""
        return max([len(values) for values in self.trajectory.values()] or
                   [self.epochs + 1 if self.epochs else 0])

    def column_names(self) -> list[str]:
        """The columns of `columns()`, history.csv and metrics.json, in order."""
        names = ["loss", *self.metrics]
        names += [name for name in ("full_loss", "val_loss", *(f"val_{m}" for m in self.metrics))
                  if name in self.trajectory]
        if self.has_line:
            names += list(line_values(self.w[0], self.b[0]))
        return names

    def _value(self, name: str, row: int) -> float:
        """The value of column `name` (not one of w's or b's) in row `row` (NaN where
        there is none)."""
        if name in self.logs and name not in self.trajectory:
            value = None if row == 0 else self.logs[name][row - 1]
        elif name in self.trajectory:
            value = self.trajectory[name][row]
        else:
            value = None
        return np.nan if value is None else float(value)

    def csv_header(self) -> list[str]:
        """history.csv's columns after `model,loop,epoch`."""
        return self.column_names()

    def csv_rows(self, start: int = 0, stop: int | None = None) -> list[list[str]]:
        """Rows `start` to `stop` (default: the last) of history.csv (after
        `model,loop,epoch`), each value exact."""
        return [["" if np.isnan(v) else repr(v) for v in values]
                for values in self._row_values(start, self.rows if stop is None else stop)]

    def csv_row(self, epoch: int) -> list[str]:
        """Row `epoch` of history.csv (after `model,loop,epoch`), each value exact."""
        return self.csv_rows(epoch, epoch + 1)[0]

    def to_json(self) -> dict:
        """Plain lists and floats, exact: `History.from_json` gives it back bit for bit."""
        trajectory = {name: [np.asarray(v).tolist() for v in values]
                      for name, values in self.trajectory.items()}
        result = {"logs": {name: [float(v) for v in values] for name, values in self.logs.items()},
                  "trajectory": trajectory}
        if self.metrics:
            result["metrics"] = list(self.metrics)
        if self.stopped:
            result["stopped"] = True
        if self.early_stopping is not None:
            result["early_stopping"] = dict(self.early_stopping)
        return result

    @classmethod
    def from_json(cls, data: dict, settings: dict | None = None) -> "History":
        # In the order training records them (a checkpoint's JSON sorts its keys), so
        # a resumed run's metrics.json is the same bytes as a straight run's.
        order = ["full_loss", "val_loss", *(f"val_{name}" for name in data.get("metrics", [])),
                 "w", "b"]
        names = sorted(data["trajectory"], key=lambda n: order.index(n) if n in order else 0)
        trajectory = {name: list(data["trajectory"][name]) for name in names}
        _as_arrays(trajectory, np.float32)
        return cls(logs={name: list(values) for name, values in data["logs"].items()},
                   trajectory=trajectory, settings=dict(settings or {}),
                   metrics=list(data.get("metrics", [])),
                   stopped=bool(data.get("stopped", False)),
                   early_stopping=_in_order(data.get("early_stopping"),
                                            ("monitor", "best_after", "restored")))

    def metrics_rows(self) -> list[dict]:
        """The trajectory as metrics.json's rows: {epoch, full_loss[, val_loss...][, w, b]}."""
        rows = []
        for epoch in range(self.rows):
            row = {"epoch": epoch}
            for name, values in self.trajectory.items():
                value = values[epoch]
                if name == "w":  # always a list, so a reader knows its form
                    value = np.atleast_1d(value).astype(float).tolist()
                elif isinstance(value, np.ndarray):
                    value = np.asarray(value, dtype=float).tolist()  # a 0-d one: a float
                row[name] = value
            rows.append(row)
        return rows

    @classmethod
    def from_metrics(cls, run: dict) -> "History":
        """A run of metrics.json (`loss` and `trajectory` rows) as a History."""
        rows = run["trajectory"]
        trajectory = {name: [row[name] for row in rows] for name in (rows[0] if rows else ())
                      if name != "epoch"}
        _as_arrays(trajectory, np.float64)
        metrics = run.get("metrics", {})
        return cls(logs={"loss": list(run["loss"]), **metrics}, trajectory=trajectory,
                   metrics=list(metrics))


def _as_arrays(trajectory: dict, dtype) -> None:
    """w and b read from JSON numbers and lists, as arrays (as History holds them)."""
    if "w" in trajectory:
        trajectory["w"] = [np.asarray(w, dtype=dtype) for w in trajectory["w"]]
    if "b" in trajectory:
        trajectory["b"] = [np.asarray(b, dtype=dtype) for b in trajectory["b"]]


def _in_order(record: dict | None, keys: tuple[str, ...]) -> dict | None:
    """`record` with `keys` first, in that order (how training writes it; a
    checkpoint's JSON sorts its keys), so that a resumed run writes the same bytes."""
    if record is None:
        return None
    return {**{key: record[key] for key in keys if key in record}, **record}
