"""The guide's figures, as PNG files. Matplotlib only, no screen needed.

Figures are made with `matplotlib.figure.Figure` rather than pyplot, so no
global backend or figure state is touched (the Agg canvas draws them).
"""

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from linfit.fileio import atomic_write
from linfit.history import line_values

# Runs are drawn over each other; distinct styles keep coinciding lines visible.
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "x")
def _style(i: int) -> dict:
    """Line style and marker of the i-th run."""
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
            "markersize": 3}


# The columns of w and b in `History.columns()`: w, w_0, w_0_1, b, b_1, ...
LINE_COLUMN = re.compile(r"[wb](_[0-9]+)*")
# More points than this make a scatter plot a blot, and slow to draw.
MAX_POINTS = 5000
# Every figure `write_figures` may write.
FIGURES = ("data.png", "weights.png", "loss.png", "gap.png", "differences.png")


def write_figures(out_dir: Path, data, comparison) -> list[str]:
    """The guide's three plots, plus the gap to the optimum and the runs' differences.

    Args:
      data: the run's `linfit.Data`; comparison: its `linfit.Comparison`.

    Returns:
      The names of the PNG files written.
    """
    runs, reference = comparison.runs, comparison.reference
    columns = {run.label: run.history.columns() for run in runs}
    shown = points_to_plot(data.num_examples)
    x, y = data.x[shown], data.y[shown]
    predictions = {run.label: np.asarray(run.model(x)) for run in runs}
    true_line = (data.true_w, data.true_b) if data.features is None and data.true_w is not None \
        else None
    plot_data(out_dir / "data.png", x, y, predictions, true_line)
    optimum = (reference.w, reference.b) if reference is not None else None
    plot_weights(out_dir / "weights.png", columns, data.true_w, data.true_b, optimum)
    plot_loss(out_dir / "loss.png", columns)
    written = ["data.png", "weights.png", "loss.png"]
    if reference is not None:
        gaps = {label: reference.gaps(run_columns) for label, run_columns in columns.items()}
        plot_gap(out_dir / "gap.png", gaps, comparison.contraction)
        written.append("gap.png")
    if len(runs) > 1:
        plot_differences(out_dir / "differences.png", comparison.agreement.rel_diff,
                         comparison.agreement.rtol)
        written.append("differences.png")
    return written


def plot_data(path: Path, x: np.ndarray, y: np.ndarray, predictions: Mapping[str, np.ndarray],
              true_line: tuple | None = None) -> Path:
    """The guide's data plot: data points, ground truth and each run's predictions.

    With several features (or outputs), predictions are plotted against the
    targets. Pass at most a few thousand points (see `points_to_plot`).
    """
    fig, ax = _new_axes()
    if x.ndim == 1 and y.ndim == 1:
        order = np.argsort(x)
        ax.plot(x, y, ".", color="tab:blue", alpha=0.6, label="Data")
        if true_line is not None:
            true_w, true_b = true_line
            ax.plot(x[order], x[order] * true_w + true_b, color="tab:green", label="Ground truth")
        for i, (label, prediction) in enumerate(predictions.items()):
            ax.plot(x[order], prediction[order], LINESTYLES[i % 4], label=f"Predictions: {label}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    else:
        low, high = float(y.min()), float(y.max())
        ax.plot([low, high], [low, high], color="tab:green", label="Perfect prediction")
        for i, (label, prediction) in enumerate(predictions.items()):
            ax.plot(np.ravel(y), np.ravel(prediction), MARKERS[i % 4], alpha=0.5,
                    fillstyle="none", label=f"Predictions: {label}")
        ax.set_xlabel("target y")
        ax.set_ylabel("predicted y")
    ax.set_title("Data, ground truth and the trained models' predictions")
    ax.legend()
    return _save(fig, path)


def points_to_plot(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS evenly spaced examples out of n."""
    return np.arange(n) if n <= MAX_POINTS else np.linspace(0, n - 1, MAX_POINTS).astype(int)


def plot_weights(path: Path, trajectories: Mapping[str, Mapping[str, np.ndarray]],
                 true_w=None, true_b=None, optimum: tuple | None = None) -> Path:
    """w and b per epoch for each run, the true values dashed (the guide's second plot).

    Args:
      trajectories: per run label, `History.columns()`.
      true_w, true_b: the line synthetic data was drawn from, or None.
      optimum: (w, b) of the least-squares optimum, drawn dotted, or None.
    """
    fig, ax = _new_axes()
    colors = {}
    for i, (label, columns) in enumerate(trajectories.items()):
        epochs = np.arange(len(columns["b"] if "b" in columns else columns["b_0"]))
        for name in [n for n in columns if LINE_COLUMN.fullmatch(n)]:
            line, = ax.plot(epochs, columns[name], color=colors.get(name),
                            label=f"{name}: {label}", **_style(i))
            colors.setdefault(name, line.get_color())
    for kind, style, (w, b) in (("true", "--", (true_w, true_b)), ("optimal", ":", optimum or
                                                                      (None, None))):
        if w is None:
            continue
        for name, value in line_values(np.asarray(w, dtype=float),
                                       np.asarray(b, dtype=float)).items():
            ax.axhline(value, linestyle=style, linewidth=1, color=colors.get(name, "gray"),
                       label=f"{kind} {name}")
    title = ("Weights and bias per epoch (dashed: true line, dotted: optimum)" if optimum
             else "Weights and bias per epoch (dashed: the true line)")
    return _finish_epoch_plot(fig, ax, path, title, "value", legend_columns=2)


def plot_loss(path: Path, trajectories: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """full_loss per epoch for each run, log scale, with Keras's `loss` and val_loss."""
    fig, ax = _new_axes()
    for i, (label, columns) in enumerate(trajectories.items()):
        epochs = np.arange(len(columns["full_loss"]))
        ax.plot(epochs, columns["full_loss"], label=f"full_loss: {label}", **_style(i))
        ax.plot(epochs, columns["loss"], LINESTYLES[i % 4], alpha=0.4,
                label=f"loss (Keras, during the epoch): {label}")
        if "val_loss" in columns:
            ax.plot(epochs, columns["val_loss"], LINESTYLES[i % 4], marker="+",
                    label=f"val_loss: {label}")
    return _finish_epoch_plot(fig, ax, path, "Loss per epoch", "mean squared error", log=True)


def plot_gap(path: Path, gaps: Mapping[str, Mapping[str, np.ndarray]],
             contraction: float | None = None) -> Path:
    """Distance to the optimum |θ − θ*| and loss gap per epoch, log scale.

    Args:
      gaps: per run label, `Reference.gaps(columns)`.
      contraction: predicted shrink factor of |θ − θ*| per epoch, drawn as a
        line from the first run's start, or None.
    """
    fig, ax = _new_axes()
    for i, (label, gap) in enumerate(gaps.items()):
        epochs = np.arange(len(gap["distance"]))
        ax.plot(epochs, gap["distance"], label=f"|θ − θ*|: {label}", **_style(i))
        loss_gap = np.where(gap["loss_gap"] > 0, gap["loss_gap"], np.nan)
        ax.plot(epochs, loss_gap, LINESTYLES[i % 4], alpha=0.5,
                label=f"full_loss − optimal loss: {label}")
    if contraction is not None and gaps:
        first = next(iter(gaps.values()))["distance"]
        epochs = np.arange(len(first))
        ax.plot(epochs, first[0] * contraction ** epochs, color="black", linewidth=1,
                label=f"predicted bound on |θ − θ*|: × {contraction:.3g} per epoch")
    return _finish_epoch_plot(fig, ax, path, "Gap to the exact least-squares answer",
                              "gap (log scale)", log=True)


# Where exact zeros are drawn on the log scale of `plot_differences`.
ZERO_FLOOR = 1e-12


def plot_differences(path: Path, rel_diff: Mapping[str, np.ndarray], rtol: float) -> Path:
    """The largest relative difference between runs per epoch and quantity, log scale.

    Exact zeros (bitwise identical runs) sit on a floor line; float32's
    machine epsilon and the agreement tolerance are drawn for scale.
    """
    fig, ax = _new_axes()
    for i, (name, diff) in enumerate(rel_diff.items()):
        epochs = np.arange(len(diff))
        ax.plot(epochs, np.maximum(diff, ZERO_FLOOR), label=name, **_style(i))
    ax.axhline(rtol, color="red", linestyle="--", linewidth=1, label=f"tolerance {rtol:g}")
    ax.axhline(np.finfo(np.float32).eps, color="gray", linestyle=":", linewidth=1,
               label="float32 rounding (machine epsilon)")
    ax.axhline(ZERO_FLOOR, color="black", linewidth=0.5, label="0: bitwise identical")
    ax.set_yscale("log")
    largest = max((float(d[np.isfinite(d)].max(initial=0.0)) for d in rel_diff.values()),
                  default=0.0)
    ax.set_ylim(ZERO_FLOOR / 3, max(1.0, largest) * 3)
    ax.set_title("Largest relative difference between runs, per epoch")
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("max |a − b| / max |value|")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _new_axes():
    fig = Figure(figsize=(7, 4.5))
    return fig, fig.add_subplot()


def _finish_epoch_plot(fig: Figure, ax, path: Path, title: str, ylabel: str,
                       log: bool = False, legend_columns: int = 1) -> Path:
    """Labels shared by the per-epoch figures, then save."""
    if log and _has_positive(ax):  # a log scale of nothing positive (an exact fit) is empty
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", ncol=legend_columns)
    return _save(fig, path)


def _has_positive(ax) -> bool:
    return any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines())


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=100, format="png"))
