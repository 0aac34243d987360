"""The figures that compare: gap.png (each run's distance to the float64 optimum,
with the contraction theory predicts) and differences.png (how far apart the
runs are, or that they are bitwise identical). Drawn as `linfit.plot_kit` says.
"""

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from linfit import plot_kit as kit
from linfit.plot_kit import (EPOCH_LABEL, LINESTYLES, MARKERS, MAX_DIFFERENCE_CURVES,
                             RunGroup)

def plot_gap(path: Path, groups: Sequence[RunGroup], reference,
             contraction: float | None = None, standardized: bool = False) -> Path:
    """The loss gap and the distance ‖θ − θ*‖ to the optimum per epoch, log scale,
    each on its own axes.

    Args:
      reference: the `linfit.Reference` (the float64 least-squares optimum).
      contraction: predicted factor of ‖θ − θ*‖ per epoch, drawn from the first
        group's start, or None.
      standardized: the runs trained on standardised features: the factor holds
        there, not for θ in the data's units, so it is only named in a note.
    """
    fig, (loss_ax, distance_ax) = kit.panels(2, rows=2)
    notes = [note for group in groups
             for note in _draw_gaps(loss_ax, distance_ax, group, reference)]
    handles = kit.group_handles(groups)
    if contraction is None:
        notes.append("no predicted line: the contraction per epoch is known for full-batch "
                     "plain SGD only")
    elif standardized:
        notes.append(f"predicted contraction × {_factor(contraction)} per epoch not drawn: it "
                     "holds for the standardised features trained on, not for θ in data units")
    else:
        start = reference.gaps(groups[0].columns)["distance"]
        epochs = np.arange(len(start))
        predicted = start[0] * contraction ** epochs
        # Not below what the runs reach (float32's resolution of θ): a line on to
        # 1e-300 would squash the curves it is there to be compared with.
        reached = start[start > 0]
        shown = predicted >= (reached.min() / 2 if reached.size else 0)
        handles += distance_ax.plot(epochs[shown], predicted[shown], color="black",
                                    linewidth=1, label=f"predicted: × {_factor(contraction)} "
                                    "per epoch (full-batch GD)")
    handles += kit.mark_stops([loss_ax, distance_ax], groups)
    loss_ax.set_ylabel("full_loss − optimal loss")
    distance_ax.set_ylabel("‖θ − θ*‖")
    for ax in (loss_ax, distance_ax):
        kit.log_axis(ax)
        kit.epoch_axis(ax)
    kit.note(distance_ax, "\n".join(notes))
    fig.suptitle("Gap to the exact least-squares answer θ* (w, b)")
    kit.legend(fig, handles)
    return kit.save(fig, path)


def _draw_gaps(loss_ax, distance_ax, group: RunGroup, reference) -> list[str]:
    """One group's loss gap and distance; a note where the gap cannot be drawn."""
    gaps = reference.gaps(group.columns)
    epochs = np.arange(len(gaps["distance"]))
    positive = gaps["loss_gap"] > 0  # float32 rounding can take full_loss below the optimum
    loss_ax.plot(epochs, np.where(positive, gaps["loss_gap"], np.nan), **group.style)
    distance_ax.plot(epochs, gaps["distance"], **group.style)
    if positive.all():
        return []
    return [f"{group.label}: full_loss at or below the optimum's (float32 rounding) at "
            f"{np.count_nonzero(~positive)} epoch(s), not drawn there"]


def _factor(contraction: float) -> str:
    """Enough digits to tell a factor near 1 from 1."""
    return f"{contraction:.6g}" if abs(contraction - 1) < 1e-3 else f"{contraction:.3g}"


# differences.png ---------------------------------------------------------------------

def plot_differences(path: Path, agreement) -> Path:
    """The largest relative difference between runs per epoch and quantity, log scale.

    Exact zeros have no place on a log scale: bitwise identical runs get a
    note instead of curves, and quantities identical at every epoch are named
    rather than drawn. float32's machine epsilon and the agreement tolerance
    are drawn for scale.

    Args:
      agreement: the runs' `linfit.Agreement`.
    """
    runs = len(agreement.labels)
    if agreement.bitwise:
        return kit.save(_identical_runs_figure(agreement.labels, list(agreement.abs_diff)), path)
    fig, ax = kit.new_figure()
    curves = _difference_curves(agreement.rel_diff)
    identical = [name for name, diff in curves.items() if not np.any(diff > 0)]
    _draw_difference_curves(ax, {n: d for n, d in curves.items() if n not in identical})
    ax.axhline(agreement.rtol, color="red", linestyle="--", linewidth=1,
               label=f"tolerance {agreement.rtol:g}")
    ax.axhline(np.finfo(np.float32).eps, color="gray", linestyle=":", linewidth=1,
               label="float32 rounding (machine epsilon)")
    kit.log_axis(ax)
    kit.epoch_axis(ax)
    epochs = max(max(len(diff) for diff in curves.values()) - 1, 1)
    ax.set_xlim(-0.05 * epochs, 1.05 * epochs)  # epoch 0 in view, as in the other figures
    ax.set_xlabel(EPOCH_LABEL)
    ax.set_ylabel("max |a − b| / max |value|")
    fig.suptitle(f"Largest relative difference between the {runs} runs, per epoch")
    kit.note(ax, _differences_note(identical, curves))
    kit.legend(fig, ax.get_legend_handles_labels()[0])
    return kit.save(fig, path)


def _draw_difference_curves(ax, curves: Mapping[str, np.ndarray]) -> None:
    """Each quantity's differences where they are positive and finite: a log scale
    has no place for 0, and an infinite one (a NaN in some runs) no height."""
    for i, (name, diff) in enumerate(curves.items()):
        shown = np.where(np.isfinite(diff) & (diff > 0), diff, np.nan)
        ax.plot(np.arange(len(diff)), shown, color=f"C{i}", label=name,
                linestyle=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)],
                markersize=3)


def _identical_runs_figure(labels: Sequence[str], quantities: Sequence[str]) -> Figure:
    """A note, not a plot: there is no difference to draw."""
    fig = Figure(figsize=(7.5, 2.2), layout="constrained")
    fig.text(0.5, 0.68, f"All {len(labels)} runs are bitwise identical", ha="center",
             va="center", fontsize="xx-large")
    fig.text(0.5, 0.3, f"{', '.join(labels)}:\n{', '.join(quantities)} are the same float at "
             "every epoch,\nso there is no difference between the runs to plot.",
             ha="center", va="center", fontsize="medium", color="dimgray")
    return fig


def _difference_curves(rel_diff: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The quantities to draw, at most MAX_DIFFERENCE_CURVES: many weights (then
    biases) become one curve, their largest difference per epoch."""
    curves = dict(rel_diff)
    for letter in "wb":
        if len(curves) <= MAX_DIFFERENCE_CURVES:
            break
        family = [name for name in curves if re.fullmatch(fr"{letter}_[0-9_]+", name)]
        if len(family) > 1:
            largest = np.max([curves.pop(name) for name in family], axis=0)
            curves[f"{letter} (largest of {len(family)})"] = largest
    if len(curves) > MAX_DIFFERENCE_CURVES:  # many metrics: the rest as one curve
        names = list(curves)[MAX_DIFFERENCE_CURVES - 1:]
        curves["others (largest)"] = np.max([curves.pop(name) for name in names], axis=0)
    return curves


def _differences_note(identical: Sequence[str], curves: Mapping[str, np.ndarray]) -> str:
    drawn = [diff for name, diff in curves.items() if name not in identical]
    lines = []
    if identical:
        lines.append(f"bitwise identical at every epoch, so not drawn: {', '.join(identical)}")
    if any(np.any(diff == 0) for diff in drawn):
        lines.append("an epoch where a curve has no point: the runs agree exactly there")
    if any(np.isinf(diff).any() for diff in drawn):
        lines.append("an epoch where a value is missing in some runs only (NaN): not drawn")
    return "\n".join(lines)


