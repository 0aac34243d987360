"""The exact answer: the float64 least-squares optimum and the stability limit."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.references import normal_equations
from linfit import LinearModule, Trainer
from linfit.config import DataConfig
from linfit.data import synthetic_line
from linfit.reference import least_squares_reference


@pytest.mark.parametrize("true_w", [3.0, (0.5, -1.2, 2.0)], ids=["guide", "3-features"])
def test_reference_is_the_least_squares_optimum(true_w):
    data = synthetic_line(DataConfig(true_w=true_w, seed=4))
    reference = least_squares_reference(data.x, data.y)
    theta, a = normal_equations(data.x, data.y)
    np.testing.assert_allclose(np.append(np.atleast_1d(reference.w), reference.b), theta,
                               rtol=1e-9)
    y = data.y.astype(np.float64)
    assert reference.loss == pytest.approx(np.mean((a @ theta - y) ** 2), rel=1e-9)
    # At the optimum the gradient of the MSE vanishes.
    np.testing.assert_allclose(a.T @ (a @ theta - y) / len(y), 0, atol=1e-9)
    lstsq, *_ = np.linalg.lstsq(a, y, rcond=None)
    np.testing.assert_allclose(np.append(np.atleast_1d(reference.w), reference.b), lstsq,
                               rtol=1e-9)


def test_chunked_reference_equals_one_shot_lstsq_even_ill_conditioned():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 3)) * [1, 100, 0.01] + [0, 500, 3]
    y = x @ [0.5, -0.02, 40] + 1 + rng.normal(0, 0.1, 1000)
    a = np.column_stack([x, np.ones(1000)])
    lstsq, (residual,), *_ = np.linalg.lstsq(a, y, rcond=None)
    for chunk_rows in (7, 100, 5000):
        reference = least_squares_reference(x, y, chunk_rows=chunk_rows)
        np.testing.assert_allclose([*reference.w, reference.b], lstsq, rtol=1e-9)
        assert reference.loss == pytest.approx(residual / 1000, rel=1e-9)


def test_reference_of_rank_deficient_data_is_lstsqs_minimum_norm_solution():
    x = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # second feature = 2 × first
    y = np.array([1.0, 2.0, 2.5])
    a = np.column_stack([x, np.ones(3)])
    lstsq, *_ = np.linalg.lstsq(a, y, rcond=None)
    reference = least_squares_reference(x, y)
    np.testing.assert_allclose([*reference.w, reference.b], lstsq, rtol=1e-9)


def test_stability_limit_closed_form_for_one_feature(guide_data):
    x = guide_data.x.astype(np.float64)
    n = len(x)
    # H = (2/N)·[[Σx², Σx], [Σx, N]]: the larger eigenvalue of a symmetric 2×2.
    p, q, r = 2 * np.sum(x * x) / n, 2 * np.sum(x) / n, 2.0
    largest = (p + r) / 2 + np.sqrt(((p - r) / 2) ** 2 + q * q)
    reference = least_squares_reference(guide_data.x, guide_data.y)
    assert reference.lr_limit == pytest.approx(2 / largest, rel=1e-12)
    smallest = (p + r) / 2 - np.sqrt(((p - r) / 2) ** 2 + q * q)
    assert reference.contraction(0.1) == pytest.approx(
        max(abs(1 - 0.1 * largest), abs(1 - 0.1 * smallest)), rel=1e-12)


@pytest.mark.parametrize("factor, converges", [(0.97, True), (1.03, False)])
def test_just_below_the_limit_converges_and_just_above_diverges(guide_data, factor, converges):
    reference = least_squares_reference(guide_data.x, guide_data.y)
    history = Trainer(LinearModule(), learning_rate=factor * reference.lr_limit).fit(
        guide_data.x, guide_data.y, epochs=60)
    gaps = reference.gaps(history.columns())["distance"]
    assert (gaps[-1] < gaps[0] / 2) == converges
    assert (gaps[-1] > gaps[0] * 2) == (not converges)


LONGLEY = Path(__file__).resolve().parent / "data" / "longley.csv"
# NIST StRD, Longley: the certified least-squares coefficients (intercept first).
LONGLEY_CERTIFIED = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01,
                     -2.02022980381683, -1.03322686717359, -0.511041056535807e-01,
                     1829.15146461355]


def test_the_cli_reference_is_nists_certified_longley_fit(tmp_path):
    """Issue 13.14: the reference is of the values as read (float64), as statsmodels
    and scikit-learn compute it, not of training's float32 copy (1.3e-5 off)."""
    from linfit.train import main

    assert main(["--data", LONGLEY, "--model", "module", "--loop", "manual",
                 "--set", "train.epochs=1", "--set", "data.standardize=true",
                 "--out", tmp_path / "run"]) == 0
    reference = json.loads((tmp_path / "run" / "metrics.json").read_text())["reference"]
    np.testing.assert_allclose([reference["b"], *reference["w"]], LONGLEY_CERTIFIED, rtol=1e-9)
