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
