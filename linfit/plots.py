"""The guide's figures, as PNG files. Matplotlib only, no screen needed.

Figures are made with `matplotlib.figure.Figure` rather than pyplot, so no
global backend or figure state is touched (the Agg canvas draws them).
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Runs are drawn over each other; distinct styles keep coinciding lines visible.
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "x")


def plot_data(path: Path, x: np.ndarray, y: np.ndarray, predictions: Mapping[str, np.ndarray],
              true_line: tuple | None = None) -> Path:
    """The guide's data plot: data points, ground truth and each run's predictions.

    With several features, predictions are plotted against the targets.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if x.ndim == 1:
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
            ax.plot(y, prediction, MARKERS[i % 4], alpha=0.5, fillstyle="none",
                    label=f"Predictions: {label}")
        ax.set_xlabel("target y")
        ax.set_ylabel("predicted y")
    ax.set_title("Data, ground truth and the trained models' predictions")
    ax.legend()
    return _save(fig, path)


def plot_weights(path: Path, trajectories: Mapping[str, Mapping[str, np.ndarray]],
                 true_w=None, true_b=None) -> Path:
    """w and b per epoch for each run, the true values dashed (the guide's second plot).

    Args:
      trajectories: per run label, `History.columns()`.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    colors = {}
    for i, (label, columns) in enumerate(trajectories.items()):
        epochs = np.arange(len(columns["b"]))
        for name in [n for n in columns if n.startswith("w")] + ["b"]:
            line, = ax.plot(epochs, columns[name], LINESTYLES[i % 4], marker=MARKERS[i % 4],
                            markersize=3, color=colors.get(name),
                            label=f"{name}: {label}")
            colors.setdefault(name, line.get_color())
    truths = {}
    if true_w is not None:
        true_w = np.atleast_1d(np.asarray(true_w, dtype=float))
        names = ["w"] if len(true_w) == 1 and "w" in colors else [f"w_{i}" for i in
                                                                  range(len(true_w))]
        truths.update(zip(names, true_w))
    if true_b is not None:
        truths["b"] = true_b
    for name, value in truths.items():
        ax.axhline(value, linestyle="--", linewidth=1, color=colors.get(name, "gray"),
                   label=f"true {name}")
    ax.set_title("Weights and bias per epoch (dashed: the true line)")
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("value")
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_loss(path: Path, trajectories: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """full_loss per epoch for each run, log scale, with Keras's `loss` per epoch."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (label, columns) in enumerate(trajectories.items()):
        epochs = np.arange(len(columns["full_loss"]))
        ax.plot(epochs, columns["full_loss"], LINESTYLES[i % 4], marker=MARKERS[i % 4],
                markersize=3, label=f"full_loss: {label}")
        ax.plot(epochs, columns["loss"], LINESTYLES[i % 4], alpha=0.4,
                label=f"loss (Keras, during the epoch): {label}")
    ax.set_yscale("log")
    ax.set_title("Loss per epoch")
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("mean squared error")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
