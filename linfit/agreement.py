"""Do runs agree? Histories aligned epoch by epoch, their largest differences, and
the first epoch and quantity where they part. NumPy only, no training.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linfit.errors import ConfigError

DEFAULT_RTOL = 1e-5
# Differences this small count as agreement even next to a zero value:
# far below float32 resolution at the scale of any loss or weight here.
DEFAULT_ATOL = 1e-8


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

    @property
    def bitwise(self) -> bool:
        """Whether the runs trained as many epochs, with every value identical."""
        return len(set(self.epochs)) == 1 and not any(self.max_abs.values())

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
            return (f"they DIFFER in length: {' and '.join(map(str, self.epochs))} epochs "
                    f"(the first {min(self.epochs)} match to {self.rtol:g} relative)")
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

    Raises:
      ConfigError: for a tolerance that is not a finite number >= 0.
    """
    for name, tolerance in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance)
                and tolerance >= 0):
            raise ConfigError(f"{name}={tolerance!r}: a tolerance must be a finite number >= 0")
    labels = tuple(labels or (f"run {i}" for i in range(len(runs))))
    # Every column has a row per epoch and one before training.
    epochs = tuple(len(next(iter(run.values()))) - 1 for run in runs)
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
