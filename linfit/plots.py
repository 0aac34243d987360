"""The guide's figures, as PNG files. Matplotlib only, no screen needed.

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

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from linfit.fileio import atomic_write
from linfit.history import line_values

# The columns of w and b in `History.columns()`: w, w_0, w_0_1, b, b_1, ...
LINE_COLUMN = re.compile(r"[wb](_[0-9]+)*")
# More points than this make a scatter plot a blot, slow to draw and a large file.
MAX_POINTS = 2000
# Every figure `write_figures` may write.
FIGURES = ("data.png", "weights.png", "loss.png", "gap.png", "differences.png")
# More entries than this in one legend are read, not seen.
MAX_LEGEND_ENTRIES = 8
# Up to this many parameters get a panel each in weights.png; more share two panels.
MAX_PANELS = 12
# Curves in differences.png besides its two reference lines (see MAX_LEGEND_ENTRIES).
MAX_DIFFERENCE_CURVES = MAX_LEGEND_ENTRIES - 2
DPI = 100
# A figure's PNG stays under this many bytes, down to MIN_DPI (see `_png_bytes`).
MAX_PNG_BYTES, MIN_DPI = 140_000, 40
# A parameter this many times larger than its start and optimum gets a symlog axis.
SYMLOG_RATIO = 1e4
EPOCH_LABEL = "epoch (0 = before training)"
# Runs longer than this are drawn without a marker per epoch.
MAX_MARKED_EPOCHS = 60
NOTE_WIDTH = 95  # characters of a note's line: about the axes' width at 7.5 inches

# Per run group, in order. Blue and green are left to the data and the true line.
GROUP_COLORS = ("tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive",
                "tab:cyan", "tab:gray")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "x")
DATA_COLOR, TRUE_COLOR, OPTIMUM_COLOR = "tab:blue", "tab:green", "black"
TRUE_STYLE = {"color": TRUE_COLOR, "linestyle": "--", "linewidth": 1.2}
OPTIMUM_STYLE = {"color": OPTIMUM_COLOR, "linestyle": ":", "linewidth": 1.2}
# Keras's loss and val_loss are drawn fainter than full_loss, in the group's colour.
LOSS_KINDS = {
    "full_loss": ("full_loss: whole training set, after each epoch",
                  {"linestyle": "-", "marker": "o", "markersize": 3}),
    "loss": ("loss: Keras, mean over the epoch's batches",
             {"linestyle": "--", "alpha": 0.6}),
    "val_loss": ("val_loss: validation data", {"linestyle": ":", "marker": "+"}),
}


@dataclass(frozen=True)
class RunGroup:
    """Runs with bitwise identical histories, drawn as one.

    Attributes:
      label: "all 4 runs", or the runs' labels joined by ", ".
      runs: the `RunResult`s of the group; the first stands for all.
      index: the group's place, which picks its colour and line style.
      columns: the group's `History.columns()` (computed once: it is not cheap).
    """

    label: str
    runs: tuple
    index: int
    columns: dict

    @property
    def history(self):
        return self.runs[0].history

    @property
    def style(self) -> dict:
        """Colour, line style and marker of the group's lines."""
        return _marked({"color": GROUP_COLORS[self.index % len(GROUP_COLORS)],
                        "linestyle": LINESTYLES[self.index % len(LINESTYLES)],
                        "marker": MARKERS[self.index % len(MARKERS)], "markersize": 3},
                       len(self.history.full_loss or self.history.loss))

    @property
    def color(self) -> str:
        return self.style["color"]


def _marked(style: dict, epochs: int) -> dict:
    """`style`, without its marker for a long run: a marker per epoch would be a
    smear (and a large file)."""
    return style if epochs <= MAX_MARKED_EPOCHS else {**style, "marker": None}


def group_runs(runs: Sequence) -> list[RunGroup]:
    """The runs, grouped where their `History.columns()` are bitwise identical."""
    groups = {}  # bitwise key -> (columns, runs)
    for run in runs:
        columns = run.history.columns()
        groups.setdefault(_bitwise_key(columns), (columns, []))[1].append(run)
    return [RunGroup(_group_label(members, len(runs)), tuple(members), i, columns)
            for i, (columns, members) in enumerate(groups.values())]


def _bitwise_key(columns: Mapping[str, np.ndarray]) -> tuple:
    # Bytes, not values: NaN equals NaN, and -0.0 differs from 0.0, as "bitwise" says.
    return tuple((name, np.asarray(values, dtype=np.float64).tobytes())
                 for name, values in columns.items())


def _group_label(group: Sequence, total: int) -> str:
    if len(group) == total and total > 1:
        return f"all {total} runs"
    return ", ".join(str(run.label) for run in group)


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
    shown = points_to_plot(data.num_examples, limit)
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
    fig, ax = _new_figure()
    if x.ndim == 1 and y.ndim == 1:
        _draw_line_fit(ax, x, y, predictions, true_line)
    else:
        _draw_predicted_against_target(ax, y, predictions)
    fig.suptitle("Data and the trained models' predictions")
    _legend(fig, ax.get_legend_handles_labels()[0])
    return _save(fig, path)


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
    _note(ax, f"predictions leave the plot: they range from {finite.min():.3g} "
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
        fig, ax = _new_figure((7.5, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "This model recorded no w and b.", ha="center", va="center")
        return _save(fig, path)
    references = {kind: line_values(np.asarray(w, dtype=float), np.asarray(b, dtype=float))
                  for kind, (w, b) in (("true", true_line or (None, None)),
                                       ("optimum", optimum or (None, None))) if w is not None}
    if len(names) <= MAX_PANELS:
        fig, axes = _panels(len(names))
        for ax, name in zip(axes, names):
            _draw_parameter(ax, groups, name, references)
            ax.set_title(_parameter_title(name, feature_names), fontsize="medium")
        handles = _group_handles(groups)
    else:
        families = [[n for n in names if n[0] == letter] for letter in "wb"]
        fig, axes = _panels(2)
        for ax, family in zip(axes, families):
            _draw_parameter_family(ax, groups, family, references)
        handles = _group_handles(groups, color="black")
    handles += _reference_handles(references, shared=len(names) > MAX_PANELS)
    handles += _mark_stops(axes, groups)
    for ax in axes:
        _epoch_axis(ax)
    fig.suptitle("Weights and bias per epoch")
    _legend(fig, handles)
    return _save(fig, path)


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
        else ("−" if value < 0 else "") + _log_tick_label(abs(value))))
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
    fig, ax = _new_figure()
    kinds = []
    for group in groups:
        columns = group.columns
        for kind, (_, style) in LOSS_KINDS.items():
            if kind in columns and np.isfinite(columns[kind]).any():
                ax.plot(np.arange(len(columns[kind])), columns[kind], color=group.color,
                        linewidth=_layered_width(group, groups),
                        **_marked(style, len(columns[kind])))
                kinds.append(kind)
    handles = _group_handles(groups, solid=True)
    for handle, group in zip(handles, groups):
        handle.set_linewidth(_layered_width(group, groups))
    handles += [Line2D([], [], color="gray", **style, label=label)
                for kind, (label, style) in LOSS_KINDS.items() if kind in kinds]
    handles += _mark_stops([ax], groups)
    _log_axis(ax)
    _epoch_axis(ax)
    ax.set_xlabel(EPOCH_LABEL)
    ax.set_ylabel("mean squared error")
    fig.suptitle("Loss per epoch")
    _legend(fig, handles)
    return _save(fig, path)


def _layered_width(group: RunGroup, groups: Sequence[RunGroup]) -> float:
    """Line styles here tell the kinds of loss apart, so groups whose losses
    coincide are told apart by width: the first drawn widest, under the others."""
    return 1.5 + 1.2 * (len(groups) - 1 - group.index)


# gap.png -----------------------------------------------------------------------------

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
    fig, (loss_ax, distance_ax) = _panels(2, rows=2)
    notes = [note for group in groups
             for note in _draw_gaps(loss_ax, distance_ax, group, reference)]
    handles = _group_handles(groups)
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
    handles += _mark_stops([loss_ax, distance_ax], groups)
    loss_ax.set_ylabel("full_loss − optimal loss")
    distance_ax.set_ylabel("‖θ − θ*‖")
    for ax in (loss_ax, distance_ax):
        _log_axis(ax)
        _epoch_axis(ax)
    _note(distance_ax, "\n".join(notes))
    fig.suptitle("Gap to the exact least-squares answer θ* (w, b)")
    _legend(fig, handles)
    return _save(fig, path)


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
        return _save(_identical_runs_figure(agreement.labels, list(agreement.abs_diff)), path)
    fig, ax = _new_figure()
    curves = _difference_curves(agreement.rel_diff)
    identical = [name for name, diff in curves.items() if not np.any(diff > 0)]
    _draw_difference_curves(ax, {n: d for n, d in curves.items() if n not in identical})
    ax.axhline(agreement.rtol, color="red", linestyle="--", linewidth=1,
               label=f"tolerance {agreement.rtol:g}")
    ax.axhline(np.finfo(np.float32).eps, color="gray", linestyle=":", linewidth=1,
               label="float32 rounding (machine epsilon)")
    _log_axis(ax)
    _epoch_axis(ax)
    epochs = max(max(len(diff) for diff in curves.values()) - 1, 1)
    ax.set_xlim(-0.05 * epochs, 1.05 * epochs)  # epoch 0 in view, as in the other figures
    ax.set_xlabel(EPOCH_LABEL)
    ax.set_ylabel("max |a − b| / max |value|")
    fig.suptitle(f"Largest relative difference between the {runs} runs, per epoch")
    _note(ax, _differences_note(identical, curves))
    _legend(fig, ax.get_legend_handles_labels()[0])
    return _save(fig, path)


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


# Shared parts ------------------------------------------------------------------------

def _new_figure(size: tuple[float, float] = (7.5, 5.0)):
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _panels(count: int, rows: int | None = None):
    """A figure with `count` panels sharing the epoch axis, in a near-square grid;
    each panel with no panel under it shows the epochs."""
    columns = 1 if rows else int(np.ceil(np.sqrt(count)))
    rows = rows or int(np.ceil(count / columns))
    size = (7.5, 6.0) if count == 2 and rows == 2 else \
        (max(7.5, 2.8 * columns), 1.6 + 2.4 * rows)
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for extra in grid[count:]:
        extra.remove()
    for ax in grid[max(count - columns, 0):count]:
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel(EPOCH_LABEL)
    return fig, list(grid[:count])


def _group_handles(groups: Sequence[RunGroup], color: str | None = None,
                   solid: bool = False) -> list:
    """Legend entries of the run groups, in their style (or one `color`, or solid
    lines in their colour where the line style means something else)."""
    handles = []
    for group in groups:
        style = dict(group.style)
        if color:
            style["color"] = color
        if solid:
            style.update(linestyle="-", marker=None)
        handles.append(Line2D([], [], **style, label=group.label))
    return handles


def _mark_stops(axes: Sequence, groups: Sequence[RunGroup]) -> list:
    """Vertical lines where a group stopped early and at the epoch whose weights it
    kept (EarlyStopping's best), on every axes; their legend entries."""
    marks = {}  # kind ("stop" or "best") -> [(epoch, colour, label)], one per group
    for group in groups:
        for kind, epoch, label in _stop_marks(group.history):
            marks.setdefault(kind, []).append((epoch, group.color, label))
    handles = []
    for kind, found in marks.items():
        style = {"linestyle": (0, (6, 3)) if kind == "stop" else (0, (1, 2)), "linewidth": 1.5}
        for ax in axes:
            for epoch, color, _ in found:
                ax.axvline(epoch, color=color, **style)
        labels = {label for _, _, label in found}
        label = labels.pop() if len(labels) == 1 else \
            {"stop": "stopped early (in each group's colour)",
             "best": "best epoch, weights kept (in each group's colour)"}[kind]
        handles.append(Line2D([], [], color=found[0][1] if len(found) == 1 else "gray",
                              **style, label=label))
    return handles


def _stop_marks(history) -> list[tuple[str, int, str]]:
    """(kind, epoch, label) of a run's early stop and of the epoch it kept, as
    `linfit.console.stop_line` tells them."""
    last, kept = history.rows - 1, history.final_row
    stopping = history.early_stopping or {}
    marks = []
    if history.stopped:
        monitor = f" ({stopping['monitor']})" if stopping else ""
        marks.append(("stop", history.epochs,
                      f"stopped early{monitor} after {_epochs(history.epochs)}"))
    best = stopping.get("best_after")
    if best is not None and (history.stopped or kept != last):
        kept_text = ", weights kept" if kept == best else ""
        marks.append(("best", best, f"best {stopping['monitor']} after {_epochs(best)}"
                      f"{kept_text}"))
    return marks


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _epoch_axis(ax) -> None:
    # Epochs are counted: a tick at 2.5 means nothing, and one past the last is noise.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _log_axis(ax) -> None:
    """A log y axis where something positive was drawn, with enough labelled ticks
    to read values off: 1, 2, 5, 10, ... when it spans few decades."""
    if not _has_positive(ax):  # an exact fit: a log scale of nothing is empty
        return
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    # Limits of 1e-300 and 1e30 (a loss gap reaching 0, a diverging run) overflow a ratio.
    decades = np.log10(high) - np.log10(low)
    if decades <= 3:
        subs = np.arange(1.0, 10.0) if decades <= 1 else (1.0, 2.0, 5.0)
        ax.yaxis.set_major_locator(LogLocator(subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_log_tick_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _log_tick_label(value: float, _position=None) -> str:
    """0.5, 2, 10, 200 as such; 1e-7 as 10⁻⁷ and 5e12 as 5×10¹²."""
    if value <= 0:
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    if -3 <= exponent <= 3:
        return f"{value:g}"
    mantissa = value / 10.0 ** exponent
    if abs(mantissa - 1) < 1e-6:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:.0f}\\times10^{{{exponent}}}$"


def _has_positive(ax) -> bool:
    return any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines())


def _note(ax, text: str) -> None:
    """Small text under the axes, where it covers nothing."""
    if not text:
        return
    # Wrapped: a line wider than the axes would make the layout shrink them.
    text = "\n".join(textwrap.fill(line, NOTE_WIDTH) for line in text.split("\n"))
    ax.annotate(text, xy=(0, 0), xycoords="axes fraction", xytext=(0, -32),
                textcoords="offset points", va="top", fontsize="small", color="dimgray")


def _legend(fig: Figure, handles: Sequence) -> None:
    """The figure's legend under the axes, in boxes of at most MAX_LEGEND_ENTRIES:
    one in the middle, or (rarely needed) two side by side."""
    handles = list(handles)
    if len(handles) <= MAX_LEGEND_ENTRIES:
        boxes = {"outside lower center": handles}
    else:
        half = (len(handles) + 1) // 2
        boxes = {"outside lower left": handles[:half], "outside lower right": handles[half:]}
    for place, box in boxes.items():
        fig.legend(handles=box[:MAX_LEGEND_ENTRIES], loc=place, fontsize="small",
                   ncol=min(len(box), 2 if len(boxes) == 1 else 1), frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    # Every figure is written here (the tests look at the figures by wrapping this).
    png = _png_bytes(fig)
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(png))


def _png_bytes(fig: Figure) -> bytes:
    """The figure as PNG at DPI, or at a lower resolution where that would be over
    MAX_PNG_BYTES (many noisy curves: every pixel differs and compresses badly)."""
    dpi = DPI
    while True:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=dpi, format="png")
        png = buffer.getvalue()
        if len(png) <= MAX_PNG_BYTES or dpi <= MIN_DPI:
            return png
        # Bytes go with the pixel count, as dpi squared.
        dpi = max(MIN_DPI, int(dpi * 0.95 * (MAX_PNG_BYTES / len(png)) ** 0.5))
