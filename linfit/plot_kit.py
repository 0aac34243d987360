"""How linfit's figures are drawn: runs grouped where they are bitwise identical,
their colours and styles, panels sharing the epoch axis, legends outside the
axes, integer epoch ticks, readable log axes, notes, and the PNG file.

The figures themselves are in `linfit.plots` (the data, the weights, the loss)
and `linfit.plot_comparison` (the gap to the optimum, the runs' differences).
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

# The columns of w and b in `History.columns()`: w, w_0, w_0_1, b, b_1, ...
LINE_COLUMN = re.compile(r"[wb](_[0-9]+)*")
# More points than this make a scatter plot a blot, slow to draw and a large file.
MAX_POINTS = 2000
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
        return marked({"color": GROUP_COLORS[self.index % len(GROUP_COLORS)],
                        "linestyle": LINESTYLES[self.index % len(LINESTYLES)],
                        "marker": MARKERS[self.index % len(MARKERS)], "markersize": 3},
                       len(self.history.full_loss or self.history.loss))

    @property
    def color(self) -> str:
        return self.style["color"]


def marked(style: dict, epochs: int) -> dict:
    """`style`, without its marker for a long run: a marker per epoch would be a
    smear (and a large file)."""
    return style if epochs <= MAX_MARKED_EPOCHS else {**style, "marker": None}


def group_runs(runs: Sequence) -> list[RunGroup]:
    """The runs, grouped where their `History.columns()` are bitwise identical."""
    groups = {}  # bitwise key -> (columns, runs)
    for run in runs:
        columns = run.history.columns()
        groups.setdefault(bitwise_key(columns), (columns, []))[1].append(run)
    return [RunGroup(group_label(members, len(runs)), tuple(members), i, columns)
            for i, (columns, members) in enumerate(groups.values())]


def bitwise_key(columns: Mapping[str, np.ndarray]) -> tuple:
    # Bytes, not values: NaN equals NaN, and -0.0 differs from 0.0, as "bitwise" says.
    return tuple((name, np.asarray(values, dtype=np.float64).tobytes())
                 for name, values in columns.items())


def group_label(group: Sequence, total: int) -> str:
    if len(group) == total and total > 1:
        return f"all {total} runs"
    return ", ".join(str(run.label) for run in group)




def new_figure(size: tuple[float, float] = (7.5, 5.0)):
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def panels(count: int, rows: int | None = None):
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


def group_handles(groups: Sequence[RunGroup], color: str | None = None,
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


def mark_stops(axes: Sequence, groups: Sequence[RunGroup]) -> list:
    """Vertical lines where a group stopped early and at the epoch whose weights it
    kept (EarlyStopping's best), on every axes; their legend entries."""
    marks = {}  # kind ("stop" or "best") -> [(epoch, colour, label)], one per group
    for group in groups:
        for kind, epoch, label in stop_marks(group.history):
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


def stop_marks(history) -> list[tuple[str, int, str]]:
    """(kind, epoch, label) of a run's early stop and of the epoch it kept, as
    `linfit.console.stop_line` tells them."""
    last, kept = history.rows - 1, history.final_row
    stopping = history.early_stopping or {}
    marks = []
    if history.stopped:
        monitor = f" ({stopping['monitor']})" if stopping else ""
        marks.append(("stop", history.epochs,
                      f"stopped early{monitor} after {epochs(history.epochs)}"))
    best = stopping.get("best_after")
    if best is not None and (history.stopped or kept != last):
        kept_text = ", weights kept" if kept == best else ""
        marks.append(("best", best, f"best {stopping['monitor']} after {epochs(best)}"
                      f"{kept_text}"))
    return marks


def epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def epoch_axis(ax) -> None:
    # Epochs are counted: a tick at 2.5 means nothing, and one past the last is noise.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def log_axis(ax) -> None:
    """A log y axis where something positive was drawn, with enough labelled ticks
    to read values off: 1, 2, 5, 10, ... when it spans few decades."""
    if not has_positive(ax):  # an exact fit: a log scale of nothing is empty
        return
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    # Limits of 1e-300 and 1e30 (a loss gap reaching 0, a diverging run) overflow a ratio.
    decades = np.log10(high) - np.log10(low)
    if decades <= 3:
        subs = np.arange(1.0, 10.0) if decades <= 1 else (1.0, 2.0, 5.0)
        ax.yaxis.set_major_locator(LogLocator(subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(log_tick_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def log_tick_label(value: float, _position=None) -> str:
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


def has_positive(ax) -> bool:
    return any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines())


def note(ax, text: str) -> None:
    """Small text under the axes, where it covers nothing."""
    if not text:
        return
    # Wrapped: a line wider than the axes would make the layout shrink them.
    text = "\n".join(textwrap.fill(line, NOTE_WIDTH) for line in text.split("\n"))
    ax.annotate(text, xy=(0, 0), xycoords="axes fraction", xytext=(0, -32),
                textcoords="offset points", va="top", fontsize="small", color="dimgray")


def legend(fig: Figure, handles: Sequence) -> None:
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


def save(fig: Figure, path: Path) -> Path:
    # Every figure is written here (the tests look at the figures by wrapping this).
    png = png_bytes(fig)
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(png))


def png_bytes(fig: Figure) -> bytes:
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
