"""Comparing runs: do the manual loop and `fit` give the same numbers?"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RTOL = 1e-5
# Differences this small count as agreement even next to a zero value:
# far below float32 resolution at the scale of any loss or weight here.
DEFAULT_ATOL = 1e-8


@dataclass(frozen=True)
class Agreement:
    """The largest differences between runs, per quantity, over all epochs.

    Attributes:
      max_abs: per quantity, the largest |a - b| between any two runs.
      max_rel: per quantity, the largest |a - b| / max(|a|, |b|).
      agree: whether every value agrees within `rtol` (relative) or `atol`.
      first_difference: (epoch, quantity) of the first value that does not, or None.
    """

    max_abs: dict[str, float]
    max_rel: dict[str, float]
    agree: bool
    first_difference: tuple[int, str] | None
    rtol: float

    def to_json(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "agree": self.agree,
                "rtol": self.rtol}

    def summary_lines(self, labels: Sequence[str]) -> list[str]:
        verdict = (f"they agree to {self.rtol:g} relative" if self.agree else
                   f"they DIFFER: first at epoch {self.first_difference[0]}, "
                   f"{self.first_difference[1]}")
        lines = [f"Largest differences between {', '.join(labels)} ({verdict}):"]
        for name in self.max_abs:
            lines.append(f"    {name:<10} {self.max_abs[name]:.3g} (relative "
                         f"{self.max_rel[name]:.3g})")
        return lines


def compare_histories(histories: Sequence, rtol: float = DEFAULT_RTOL,
                      atol: float = DEFAULT_ATOL) -> Agreement:
    """Compare `linfit.History` objects of runs from the same start on the same data."""
    return compare_columns([history.columns() for history in histories], rtol, atol)


def compare_columns(runs: Sequence[dict[str, np.ndarray]], rtol: float = DEFAULT_RTOL,
                    atol: float = DEFAULT_ATOL) -> Agreement:
    """Compare runs' histories (as `History.columns()`), epoch by epoch.

    NaN rows (row 0 of `loss`) match NaN. All runs must have the same
    quantities and the same number of epochs.
    """
    max_abs, max_rel, first = {}, {}, None
    for name in runs[0]:
        spread, scale = _spread_and_scale(np.stack([run[name] for run in runs]))
        relative = np.divide(spread, scale, out=np.where(spread > 0, np.inf, 0.0),
                             where=scale > 0)
        max_abs[name] = float(spread.max(initial=0.0))
        max_rel[name] = float(relative.max(initial=0.0))
        bad = np.flatnonzero(spread > atol + rtol * scale)
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), name)
    return Agreement(max_abs, max_rel, first is None, first, rtol)


def _spread_and_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch, max - min over runs and the largest magnitude.

    NaN in every run spreads by 0; NaN in some runs only, by infinity.
    """
    missing = np.isnan(values)
    spread = np.where(missing.all(axis=0), 0.0,
                      np.where(missing.any(axis=0), np.inf,
                               values.max(axis=0) - values.min(axis=0)))
    scale = np.where(missing.any(axis=0), 0.0, np.abs(values).max(axis=0))
    return spread, scale
