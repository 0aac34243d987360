"""The guide's figures, as PNG files: data.png, weights.png, loss.png here, gap.png and
differences.png in `linfit.plot_comparison`, all drawn with `linfit.plot_kit`.
Matplotlib only, no screen needed.

Figures are made with `matplotlib.figure.Figure` rather than pyplot, so no
global backend or figure state is touched (the Agg canvas draws them).

What every figure keeps to, so that it is looked at rather than read:

- Runs whose histories are bitwise identical are one *group*, drawn once and
  labelled "all 4 runs" or "module-manual, keras-manual"; each group keeps
  one colour and line style in every figure.
- Legends sit outside the axes, at most `MAX_LEGEND_ENTRIES` entries each.
- One quantity per axes: w and b each get their own panel, and the loss gap
  and the distance to the optimum their own axes.
- Epoch axes have integer ticks; log axes are labelled 1, 2, 5, 10, ... when
  they span few decades, so they show more than two numbers.
- The optimum (float64 least squares) and, for synthetic data only, the true
  values are labelled reference lines; an early stop and the best epoch are
  labelled vertical lines.
- Nothing is drawn at a made-up value: exact zeros on a log scale are left
  out and said so in a note.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from linfit import plot_kit as kit
from linfit.history import line_values
from linfit.plot_comparison import plot_differences, plot_gap
from linfit.plot_kit import (DATA_COLOR, EPOCH_LABEL, GROUP_COLORS, LINE_COLUMN, LINESTYLES,
                             LOSS_KINDS, MARKERS, MAX_PANELS, MAX_POINTS, OPTIMUM_STYLE,
                             SYMLOG_RATIO, TRUE_STYLE, RunGroup, group_runs)

# Every figure `write_figures` may write.
FIGURES = ("data.png", "weights.png", "loss.png", "gap.png", "differences.png")


def write_figures(out_dir: Path, data, comparison) -> list[str]:
    """The guide's three plots, plus the gap to the optimum and the runs' differences.

    Args:
      data: the run's `linfit.Data`; comparison: its `linfit.Comparison`.

    Returns:
      The names of the PNG files written.
    """
    out_dir = Path(out_dir)
    groups = group_runs(comparison.runs)
    reference = comparison.reference
    # Only synthetic data was drawn from a line; a file's data has none to claim.
    true_line = (data.true_w, data.true_b) if data.true_w is not None else None
    optimum = (reference.w, reference.b) if reference is not None else None
    _plot_data_of(out_dir / "data.png", data, groups, true_line)
    plot_weights(out_dir / "weights.png", groups, true_line, optimum, data.feature_names)
    plot_loss(out_dir / "loss.png", groups)
    written = ["data.png", "weights.png", "loss.png"]
    if reference is not None and all("full_loss" in group.columns for group in groups):
        standardized = any(getattr(run.trainer, "standardizer", None) is not None
                           for run in comparison.runs)
        plot_gap(out_dir / "gap.png", groups, reference, comparison.contraction, standardized)
        written.append("gap.png")
    if len(comparison.runs) > 1:
        plot_differences(out_dir / "differences.png", comparison.agreement)
        written.append("differences.png")
    return written


def _plot_data_of(path: Path, data, groups: Sequence[RunGroup], true_line) -> Path:
    """`plot_data` of some of `data`'s examples and each group's predictions."""
    scatter = data.features is not None or data.outputs is not None
    # A scatter plot draws each group's predictions of each output: fewer points
    # each keep the file small and the plot legible.
    limit = MAX_POINTS // (len(groups) * (data.outputs or 1)) if scatter else MAX_POINTS
    shown = points_to_plot(len(data.y), limit)  # streamed data: of its first rows
    x, y = data.x[shown], data.y[shown]
    predictions = {group.label: np.asarray(group.runs[0].model(x)) for group in groups}
    return plot_data(path, x, y, predictions, None if scatter else true_line)


def points_to_plot(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `limit` evenly spaced examples out of n."""
    limit = max(limit, 1)
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).astype(int)


# data.png ----------------------------------------------------------------------------

def plot_data(path: Path, x: np.ndarray, y: np.ndarray, predictions: Mapping[str, np.ndarray],
              true_line: tuple | None = None) -> Path:
    """The guide's data plot: data points, the true line and each group's predictions.

    With several features (or outputs), predictions are plotted against the
    targets. Pass at most a few thousand points (see `points_to_plot`).

    Args:
      predictions: per run group label, the predictions for x.
      true_line: (w, b) of the line synthetic data was drawn from, or None.
    """
    fig, ax = kit.new_figure()
    if x.ndim == 1 and y.ndim == 1:
        _draw_line_fit(ax, x, y, predictions, true_line)
    else:
        _draw_predicted_against_target(ax, y, predictions)
    fig.suptitle("Data and the trained models' predictions")
    kit.legend(fig, ax.get_legend_handles_labels()[0])
    return kit.save(fig, path)


def _draw_line_fit(ax, x, y, predictions, true_line) -> None:
    order = np.argsort(x)
    ax.plot(x, y, ".", color=DATA_COLOR, alpha=0.5, label="data")
    if true_line is not None:
        true_w, true_b = true_line
        ax.plot(x[order], x[order] * true_w + true_b, **TRUE_STYLE, label="true line")
    for i, (label, prediction) in enumerate(predictions.items()):
        ax.plot(x[order], np.ravel(prediction)[order], color=GROUP_COLORS[i % len(GROUP_COLORS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)], label=f"predictions: {label}")
    _keep_data_in_view(ax, y, predictions)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _keep_data_in_view(ax, y, predictions) -> None:
    """When predictions run far outside the data (a diverged run), the y axis keeps
    to the data, which would otherwise be a flat line, and a note gives their range."""
    low, high = float(np.min(y)), float(np.max(y))
    span = max(high - low, 1e-12)
    predicted = np.concatenate([np.ravel(p) for p in predictions.values()] or [np.zeros(0)])
    finite = predicted[np.isfinite(predicted)]
    if finite.size == 0 or max(high - finite.min(), finite.max() - low) <= 10 * span:
        return
    ax.set_ylim(low - 0.5 * span, high + 0.5 * span)
    kit.note(ax, f"predictions leave the plot: they range from {finite.min():.3g} "
          f"to {finite.max():.3g}")


def _draw_predicted_against_target(ax, y, predictions) -> None:
    low, high = float(np.min(y)), float(np.max(y))
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="perfect prediction")
    few = np.size(y) <= 200  # a few points can be large and solid
    for i, (label, prediction) in enumerate(predictions.items()):
        ax.plot(np.ravel(y), np.ravel(prediction), MARKERS[i % len(MARKERS)],
                markersize=6 if few else 3, color=GROUP_COLORS[i % len(GROUP_COLORS)],
                alpha=0.8 if few else 0.5, fillstyle="none", label=f"predictions: {label}")
    ax.set_xlabel("target y")
    ax.set_ylabel("predicted y")


# weights.png -------------------------------------------------------------------------

def plot_weights(path: Path, groups: Sequence[RunGroup], true_line: tuple | None = None,
                 optimum: tuple | None = None, feature_names: Sequence[str] = ()) -> Path:
    """w and b per epoch (the guide's second plot), one panel per parameter.

    Args:
      true_line: (w, b) the synthetic data was drawn from, or None (a file's data).
      optimum: (w, b) of the least-squares optimum, or None.
      feature_names: to say which feature each w_i weighs.
    """
    names = [name for name in groups[0].columns if LINE_COLUMN.fullmatch(name)]
    if not names:  # a model without variables w and b
        fig, ax = kit.new_figure((7.5, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "This model recorded no w and b.", ha="center", va="center")
        return kit.save(fig, path)
    references = {kind: line_values(np.asarray(w, dtype=float), np.asarray(b, dtype=float))
                  for kind, (w, b) in (("true", true_line or (None, None)),
                                       ("optimum", optimum or (None, None))) if w is not None}
    if len(names) <= MAX_PANELS:
        fig, axes = kit.panels(len(names))
        for ax, name in zip(axes, names):
            _draw_parameter(ax, groups, name, references)
            ax.set_title(_parameter_title(name, feature_names), fontsize="medium")
        handles = kit.group_handles(groups)
    else:
        families = [[n for n in names if n[0] == letter] for letter in "wb"]
        fig, axes = kit.panels(2)
        for ax, family in zip(axes, families):
            _draw_parameter_family(ax, groups, family, references)
        handles = kit.group_handles(groups, color="black")
    handles += _reference_handles(references, shared=len(names) > MAX_PANELS)
    handles += kit.mark_stops(axes, groups)
    for ax in axes:
        kit.epoch_axis(ax)
    fig.suptitle("Weights and bias per epoch")
    kit.legend(fig, handles)
    return kit.save(fig, path)


def _draw_parameter(ax, groups, name: str, references: Mapping[str, Mapping[str, float]]):
    """One parameter's trajectory per group, and its reference values."""
    for group in groups:
        values = group.columns[name]
        ax.plot(np.arange(len(values)), values, **group.style)
    for kind, values in references.items():
        ax.axhline(values[name], **(TRUE_STYLE if kind == "true" else OPTIMUM_STYLE))
    ax.margins(y=0.08)  # a reference line at the edge would hide in the frame
    scale = _symlog_threshold([group.columns[name] for group in groups],
                              [values[name] for values in references.values()])
    if scale is not None:
        _symlog_axis(ax, scale)


def _symlog_threshold(trajectories: Sequence[np.ndarray], references: Sequence[float]):
    """For a trajectory that runs away (a diverging run), the scale of its start
    and reference values: a symmetric log axis from there shows every epoch, where
    a linear one would flatten all but the last few. None: keep it linear."""
    finite = np.concatenate([np.ravel(t)[np.isfinite(t)] for t in trajectories])
    start = [abs(float(t[0])) for t in trajectories if np.isfinite(t[0])]
    scale = max([*start, *map(abs, references), 1e-3])
    largest = float(np.abs(finite).max(initial=0.0))
    return scale if largest > SYMLOG_RATIO * scale else None


def _symlog_axis(ax, scale: float) -> None:
    ax.set_yscale("symlog", linthresh=scale)
    # Ticks inside the linear part, next to 0, would print over each other.
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda value, _: "0" if value == 0 else "" if abs(value) < scale
        else ("−" if value < 0 else "") + kit.log_tick_label(abs(value))))
    ax.set_ylabel("symmetric log scale", fontsize="small")


def _draw_parameter_family(ax, groups, family: Sequence[str], references) -> None:
    """Many parameters on one axes: a colour per parameter, a line style per group."""
    colors = _many_colors(len(family))
    for color, name in zip(colors, family):
        for group in groups:
            values = group.columns[name]
            ax.plot(np.arange(len(values)), values, color=color,
                    linestyle=group.style["linestyle"], linewidth=1)
        for kind, values in references.items():
            ax.axhline(values[name], color=color, linewidth=0.8,
                       linestyle=(TRUE_STYLE if kind == "true" else OPTIMUM_STYLE)["linestyle"])
    title = f"{family[0][0]}: {len(family)} values, one colour each" if len(family) > 1 \
        else family[0]
    ax.set_title(title, fontsize="medium")


def _many_colors(count: int) -> list:
    from matplotlib import colormaps

    return [colormaps["viridis"](i / max(count - 1, 1)) for i in range(count)]


def _parameter_title(name: str, feature_names: Sequence[str]) -> str:
    """"w_1 (x2)": the feature a weight multiplies, where it is known."""
    parts = name.split("_")
    if parts[0] == "w" and len(parts) >= 2 and int(parts[1]) < len(feature_names):
        return f"{name} ({feature_names[int(parts[1])]})"
    return name


def _reference_handles(references: Mapping, shared: bool = False) -> list:
    """Legend entries of the optimum and true lines drawn (each parameter's own
    colour when `shared`)."""
    labels = {"optimum": "optimum (float64 least squares)", "true": "true value (synthetic data)"}
    handles = []
    for kind in ("optimum", "true"):
        if kind in references:
            style = dict(TRUE_STYLE if kind == "true" else OPTIMUM_STYLE)
            if shared:
                style["color"] = "gray"
            handles.append(Line2D([], [], **style, label=labels[kind]))
    return handles


# loss.png ----------------------------------------------------------------------------

def plot_loss(path: Path, groups: Sequence[RunGroup]) -> Path:
    """full_loss per epoch for each group, log scale, with Keras's `loss` and val_loss.

    A colour per group, a line style per kind of loss, all on one y axis.
    """
    fig, ax = kit.new_figure()
    kinds = []
    for group in groups:
        columns = group.columns
        for kind, (_, style) in LOSS_KINDS.items():
            if kind in columns and np.isfinite(columns[kind]).any():
                ax.plot(np.arange(len(columns[kind])), columns[kind], color=group.color,
                        linewidth=_layered_width(group, groups),
                        **kit.marked(style, len(columns[kind])))
                kinds.append(kind)
    handles = kit.group_handles(groups, solid=True)
    for handle, group in zip(handles, groups):
        handle.set_linewidth(_layered_width(group, groups))
    handles += [Line2D([], [], color="gray", **style, label=label)
                for kind, (label, style) in LOSS_KINDS.items() if kind in kinds]
    handles += kit.mark_stops([ax], groups)
    kit.log_axis(ax)
    kit.epoch_axis(ax)
    ax.set_xlabel(EPOCH_LABEL)
    ax.set_ylabel("mean squared error")
    fig.suptitle("Loss per epoch")
    kit.legend(fig, handles)
    return kit.save(fig, path)


def _layered_width(group: RunGroup, groups: Sequence[RunGroup]) -> float:
    """Line styles here tell the kinds of loss apart, so groups whose losses
    coincide are told apart by width: the first drawn widest, under the others."""
    return 1.5 + 1.2 * (len(groups) - 1 - group.index)


# gap.png -----------------------------------------------------------------------------

