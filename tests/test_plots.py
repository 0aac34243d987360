"""Figures: written as PNG, of the right size, with something drawn on them."""

import matplotlib.image
import numpy as np
import pytest

from linfit import plots


def columns(w0, epochs=5, features=None):
    w = np.linspace(w0, 3, epochs + 1)
    result = {"loss": np.array([np.nan, *np.linspace(9, 1, epochs)]),
              "full_loss": np.linspace(10, 1, epochs + 1), "b": np.linspace(0, 2, epochs + 1)}
    if features:
        result.update({f"w_{i}": w + i for i in range(features)})
    else:
        result["w"] = w
    return result


def read_png(path):
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (450, 700)
    return image


@pytest.mark.parametrize("features", [None, 3])
def test_figures_are_written(tmp_path, features):
    x = np.linspace(-2, 2, 30, dtype=np.float32)
    if features:
        x = np.random.default_rng(0).normal(size=(30, features)).astype(np.float32)
    y = np.asarray(x if not features else x.sum(axis=1)) * 3 + 2
    for path in (plots.plot_data(tmp_path / "data.png", x, y, {"run": y + 0.1}, (3.0, 2.0)),
                 plots.plot_weights(tmp_path / "weights.png",
                                    {"a": columns(5, features=features),
                                     "b": columns(4, features=features)},
                                    [3.0] * (features or 1), 2.0),
                 plots.plot_loss(tmp_path / "loss.png", {"a": columns(5), "b": columns(4)})):
        image = read_png(path)
        # Drawn on: many distinct colours, not a blank canvas.
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50
        assert image.std() > 0.05


def test_gap_and_difference_figures(tmp_path):
    epochs = np.arange(11)
    gaps = {"a": {"distance": 3 * 0.8 ** epochs, "loss_gap": 9 * 0.64 ** epochs},
            "b": {"distance": 3 * 0.8 ** epochs, "loss_gap": np.r_[9 * 0.64 ** epochs[:-1], -1e-7]}}
    for path in (plots.plot_gap(tmp_path / "gap.png", gaps, contraction=0.8),
                 plots.plot_differences(tmp_path / "differences.png",
                                        {"w": np.zeros(11), "b": np.r_[0, np.full(10, 3e-8)],
                                         "loss": np.r_[0, np.inf, np.zeros(9)]}, rtol=1e-5)):
        image = read_png(path)
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50
