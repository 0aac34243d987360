"""Figures a person would rather look at than read (issue 16, item 3).

`write_figures` is driven on real comparisons (tiny data, few epochs, trained
once per module) and the Figure objects it saves are inspected: legends,
lines, ticks and texts. They are caught by wrapping `plot_kit.save`, which every
figure goes through.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

import linfit
from linfit import plot_kit, plots
from linfit.agreement import compare_histories
from linfit.data import Data

TRUE_W, TRUE_B = np.array([0.5, -1.2, 2.0]), 0.3
EPOCH_FIGURES = ("weights.png", "loss.png", "gap.png")
# Where the old differences.png drew exact zeros.
OLD_FLOOR = 1e-12
# The issue: "at most 8 legend entries per axes".
MAX_LEGEND_ENTRIES = 8


def three_feature_data(n: int, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 3)).astype(np.float32)
    y = (x @ TRUE_W + TRUE_B + rng.normal(size=n)).astype(np.float32)
    return Data(x=x, y=y, source="synthetic", feature_names=("x0", "x1", "x2"),
                true_w=TRUE_W.astype(np.float32), true_b=TRUE_B)


def draw(out_dir: Path, data: Data, comparison) -> dict:
    """write_figures' Figures by file name, as they were saved."""
    figures = {}
    save = plot_kit.save

    def keep(fig, path):
        figures[Path(path).name] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plot_kit, "save", keep)
        written = plots.write_figures(out_dir, data, comparison)
    assert sorted(written) == sorted(figures)
    return figures


@pytest.fixture(scope="module")
def three():
    """Three features, the four runs full-batch: bitwise identical."""
    data = three_feature_data(40)
    return data, linfit.run_comparison(data.x, data.y, epochs=3)


@pytest.fixture(scope="module")
def three_figures(three, tmp_path_factory):
    return draw(tmp_path_factory.mktemp("three"), *three)


@pytest.fixture(scope="module")
def two_groups(three, tmp_path_factory):
    """The same runs, with keras-manual and keras-keras given another (shared) b."""
    data, comparison = three
    runs = [run if run.model_kind == "module" else with_other_b(run) for run in comparison.runs]
    agreement = compare_histories([run.history for run in runs], [run.label for run in runs])
    comparison = dataclasses.replace(comparison, runs=runs, agreement=agreement)
    return comparison, draw(tmp_path_factory.mktemp("groups"), data, comparison)


def with_other_b(run):
    b = [value + 1e-6 * epoch for epoch, value in enumerate(run.history.trajectory["b"])]
    history = dataclasses.replace(run.history, trajectory={**run.history.trajectory, "b": b})
    return dataclasses.replace(run, history=history)


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    """One run that EarlyStopping stops after 3 of 10 epochs, keeping epoch 1's weights."""
    x = np.linspace(-2, 2, 30, dtype=np.float32)
    y = 3 * x + 2
    # No later epoch improves on the first by 1e9: patience 2 runs out after epoch 3.
    stopper = lambda label: [keras.callbacks.EarlyStopping(  # noqa: E731
        monitor="loss", patience=2, min_delta=1e9, restore_best_weights=True)]
    comparison = linfit.run_comparison(x, y, models=("module",), loops=("manual",), epochs=10,
                                       callbacks=stopper)
    data = Data(x=x, y=y, source="synthetic", true_w=3.0, true_b=2.0)
    return comparison, draw(tmp_path_factory.mktemp("early"), data, comparison)


def legends(fig) -> list:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]


def legend_labels(fig) -> list[str]:
    return [text.get_text() for legend in legends(fig) for text in legend.get_texts()]


def all_text(fig) -> str:
    return "\n".join(text.get_text() for text in fig.findobj(Text))


def lines_equal_to(ax, values) -> int:
    """How many lines of `ax` draw exactly `values`."""
    return sum(np.array_equal(np.asarray(line.get_ydata(), dtype=float), values, equal_nan=True)
               for line in ax.get_lines())


def vertical_lines_at(ax) -> set[float]:
    return {float(line.get_xdata()[0]) for line in ax.get_lines()
            if len(set(np.asarray(line.get_xdata(), dtype=float))) == 1
            and len(line.get_xdata()) == 2}


def test_legends_have_at_most_eight_entries_and_cover_no_axes(three_figures, two_groups):
    for figures in (three_figures, two_groups[1]):
        for name, fig in figures.items():
            renderer = FigureCanvasAgg(fig).get_renderer()
            fig.draw(renderer)
            for legend in legends(fig):
                assert len(legend.get_texts()) <= MAX_LEGEND_ENTRIES, name
                box = legend.get_window_extent(renderer)
                for ax in fig.axes:
                    assert not box.overlaps(ax.get_window_extent(renderer)), name


def test_identical_runs_are_drawn_once(three, three_figures):
    data, comparison = three
    columns = comparison.runs[0].history.columns()
    weights = three_figures["weights.png"]
    for name in ("w_0", "w_1", "w_2", "b"):
        assert sum(lines_equal_to(ax, columns[name]) for ax in weights.axes) == 1, name
    loss_ax, = three_figures["loss.png"].axes
    assert lines_equal_to(loss_ax, columns["full_loss"]) == 1
    distance = comparison.reference.gaps(columns)["distance"]
    assert sum(lines_equal_to(ax, distance) for ax in three_figures["gap.png"].axes) == 1
    for name in EPOCH_FIGURES:
        assert "all 4 runs" in legend_labels(three_figures[name]), name


def test_runs_that_differ_are_drawn_once_per_group(two_groups):
    comparison, figures = two_groups
    groups = ("module-manual, module-keras", "keras-manual, keras-keras")
    for name in EPOCH_FIGURES:
        assert all(label in legend_labels(figures[name]) for label in groups), name
    b_panel = next(ax for ax in figures["weights.png"].axes if ax.get_title() == "b")
    for run in comparison.runs:
        assert lines_equal_to(b_panel, run.history.columns()["b"]) == 1


def test_no_line_at_a_made_up_floor(three_figures, two_groups):
    identical = three_figures["differences.png"]
    assert "All 4 runs are bitwise identical" in all_text(identical)
    for fig in (identical, two_groups[1]["differences.png"]):
        for ax in fig.axes:
            for line in ax.get_lines():
                y = np.asarray(line.get_ydata(), dtype=float)
                assert not np.any(y[np.isfinite(y)] <= 10 * OLD_FLOOR)
    # The runs differ in b only: the quantities that never differ are named, not drawn.
    differing = two_groups[1]["differences.png"]
    assert [line.get_label() for line in differing.axes[0].get_lines()
            if not line.get_label().startswith(("tolerance", "float32"))] == ["b"]
    assert "not drawn: loss, full_loss, w_0, w_1, w_2" in all_text(differing)


def test_epoch_ticks_are_integers(three_figures, two_groups, early):
    for figures in (three_figures, two_groups[1], early[1]):
        for name, fig in figures.items():
            if name == "data.png":
                continue
            for ax in fig.axes:
                low, high = ax.get_xlim()
                ticks = [t for t in ax.get_xticks() if low <= t <= high]
                assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_true_values_only_for_synthetic_data(three, three_figures, tmp_path):
    data, comparison = three
    csv = dataclasses.replace(data, source="data.csv", true_w=None, true_b=None)
    from_file = draw(tmp_path, csv, comparison)
    for name, fig in from_file.items():
        assert "true" not in all_text(fig).lower(), name
    assert "true value (synthetic data)" in legend_labels(three_figures["weights.png"])
    # Both draw the optimum, a labelled line at the least-squares value in each panel.
    for figures in (three_figures, from_file):
        assert "optimum (float64 least squares)" in legend_labels(figures["weights.png"])
        w_0 = next(ax for ax in figures["weights.png"].axes if ax.get_title().startswith("w_0"))
        assert any(np.allclose(line.get_ydata(), comparison.reference.w[0])
                   for line in w_0.get_lines())


def test_early_stop_and_best_epoch_are_marked(early):
    comparison, figures = early
    history = comparison.runs[0].history
    assert history.stopped and history.epochs == 3 and history.final()["epoch"] == 1
    for name in EPOCH_FIGURES:
        for ax in figures[name].axes:
            assert vertical_lines_at(ax) == {3.0, 1.0}, name
        labels = legend_labels(figures[name])
        assert "stopped early (loss) after 3 epochs" in labels, name
        assert "best loss after 1 epoch, weights kept" in labels, name


def test_gap_has_one_quantity_per_axes(three_figures):
    gap = three_figures["gap.png"]
    assert [ax.get_ylabel() for ax in gap.axes] == ["full_loss − optimal loss", "‖θ − θ*‖"]


def test_loss_has_one_y_axis_with_readable_ticks(three, tmp_path):
    # The guide's losses, 10.6 down to 0.97: a log axis labelled only 1 and 10 is unreadable.
    data, comparison = three
    runs = [with_losses(run, np.geomspace(10.6, 0.97, 4)) for run in comparison.runs]
    loss_ax, = draw(tmp_path, data, dataclasses.replace(comparison, runs=runs))[
        "loss.png"].axes  # one y axis: no twin
    low, high = loss_ax.get_ylim()
    labelled = [label.get_text() for minor in (False, True)
                for label, at in zip(loss_ax.yaxis.get_ticklabels(minor=minor),
                                     loss_ax.yaxis.get_ticklocs(minor=minor))
                if label.get_text() and low <= at <= high]
    assert len(labelled) >= 3, labelled


def with_losses(run, full_loss):
    history = dataclasses.replace(run.history, logs={"loss": list(full_loss[1:] * 1.1)},
                                  trajectory={**run.history.trajectory,
                                              "full_loss": list(full_loss)})
    return dataclasses.replace(run, history=history)


def test_figures_stay_small_with_many_points_and_groups(two_groups, tmp_path):
    comparison, _ = two_groups
    draw(tmp_path, three_feature_data(20000, seed=1), comparison)
    for path in tmp_path.glob("*.png"):
        assert path.stat().st_size < 150_000, path.name


def test_many_parameters_share_two_panels(tmp_path):
    """More than MAX_PANELS parameters: a colour each on one w and one b axes."""
    history = linfit.History(logs={"loss": [2.0, 1.0]}, trajectory={
        "full_loss": [3.0, 2.0, 1.0], "w": [np.full(15, v, np.float32) for v in (0.0, 1, 2)],
        "b": [0.0, 0.5, 1.0]})
    run = dataclasses.make_dataclass("Run", ["history"])(history)
    groups = [plot_kit.RunGroup("run", (run,), 0, history.columns())]
    fig = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plot_kit, "save", lambda figure, path: fig.setdefault("weights", figure))
        plots.plot_weights(tmp_path / "weights.png", groups, optimum=(np.ones(15), 1.0))
    assert [ax.get_title() for ax in fig["weights"].axes] == [
        "w: 15 values, one colour each", "b"]
    assert len(legend_labels(fig["weights"])) <= MAX_LEGEND_ENTRIES
