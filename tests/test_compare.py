"""Comparison: agreement between runs, the exact answer, and comparing run directories."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import normal_equations
from linfit import LinearModule, Trainer
from linfit.compare import (compare_columns, least_squares_reference, main, run_comparison)
from linfit.config import DataConfig
from linfit.data import synthetic_line
from linfit.train import main as train_main


def run(epochs=5, **changes):
    columns = {"loss": np.array([np.nan, *np.linspace(9, 1, epochs)]),
               "full_loss": np.linspace(10, 1, epochs + 1),
               "w": np.linspace(5, 3, epochs + 1), "b": np.linspace(0, 2, epochs + 1)}
    for name, (epoch, value) in changes.items():
        columns[name] = columns[name].copy()
        columns[name][epoch] = value
    return columns


def test_identical_runs_agree_with_zero_difference():
    agreement = compare_columns([run(), run(), run()])
    assert agreement.agree and agreement.first_difference is None
    assert set(agreement.max_abs.values()) == {0.0} and set(agreement.max_rel.values()) == {0.0}
    assert agreement.values["w"].shape == (3, 6)


def test_planted_difference_is_found_at_its_epoch_and_quantity():
    base = run()
    planted = run(b=(3, base["b"][3] * (1 + 1e-3)), w=(4, base["w"][4] * (1 + 1e-4)))
    agreement = compare_columns([base, planted], ["base", "planted"])
    assert not agreement.agree
    assert agreement.first_difference == (3, "b")
    assert agreement.max_rel["b"] == pytest.approx(1e-3 / (1 + 1e-3), rel=1e-6)
    assert agreement.max_abs["w"] == pytest.approx(base["w"][4] * 1e-4, rel=1e-6)
    assert agreement.max_abs["full_loss"] == 0.0
    assert np.flatnonzero(agreement.abs_diff["b"]).tolist() == [3]
    assert "DIFFER, first at epoch 3 in b" in agreement.summary_lines()[0]


def test_float32_rounding_agrees_and_tolerance_is_relative():
    base = run()
    rounded = {name: values.astype(np.float32).astype(np.float64) for name, values in base.items()}
    assert compare_columns([base, rounded]).agree
    slightly = run(full_loss=(2, base["full_loss"][2] * (1 + 5e-6)))
    assert compare_columns([base, slightly], rtol=1e-5).agree
    assert not compare_columns([base, slightly], rtol=1e-6).agree


def test_nan_in_one_run_only_is_a_difference():
    agreement = compare_columns([run(), run(full_loss=(5, np.nan))])
    assert agreement.first_difference == (5, "full_loss")
    assert agreement.max_abs["full_loss"] == np.inf


def test_runs_of_different_lengths_compare_their_common_epochs_but_do_not_agree():
    agreement = compare_columns([run(epochs=5), run(epochs=8)])
    assert agreement.max_abs["full_loss"] > 0  # the linspaces differ
    same_start = compare_columns([run(epochs=5), {k: np.append(v, v[-1]) for k, v in
                                                  run(epochs=5).items()}])
    assert same_start.epochs == (5, 6) and same_start.max_abs["w"] == 0
    assert not same_start.agree and same_start.first_difference == (6, "epochs")


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


def test_gap_contracts_as_predicted(guide_data):
    comparison = run_comparison(guide_data.x, guide_data.y, models=["module"], loops=["manual"],
                                epochs=8, learning_rate=0.3)
    distance = comparison.reference.gaps(comparison.runs[0].history.columns())["distance"]
    # Here the modes of H contract by 0.4 and 0.19 per epoch: after a few
    # epochs the slower one dominates and the ratio is the prediction's 0.4
    # (later, float32 rounding of θ would dominate the tiny distance).
    assert comparison.contraction == pytest.approx(0.4, abs=0.01)
    assert distance[-1] / distance[-2] == pytest.approx(comparison.contraction, rel=1e-2)


def test_unstable_learning_rate_warns_before_training_and_stable_does_not(guide_data):
    limit = least_squares_reference(guide_data.x, guide_data.y).lr_limit
    with pytest.warns(UserWarning, match=rf"learning rate 1.2 is above the stability limit "
                                         rf"{limit:.3g} for this data: training will diverge"):
        run_comparison(guide_data.x, guide_data.y, models=["module"], loops=["manual"],
                       epochs=1, learning_rate=1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comparison = run_comparison(guide_data.x, guide_data.y, epochs=3,
                                    learning_rate=0.95 * limit)
    assert comparison.agreement.agree and len(comparison.runs) == 4


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    common = ["--set", "train.epochs=3", "--model", "module"]
    for name, extra in (("a", []), ("b", []), ("c", ["--set", "train.learning_rate=0.11"])):
        assert train_main([*common, *extra, "--out", root / name]) == 0
    return root


def test_compare_cli_agreeing_runs_exit_0(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "b")]) == 0
    out = capsys.readouterr().out
    assert "module-manual:" in out and "module-keras:" in out
    assert "All 2 compared runs agree." in out


def test_compare_cli_differing_runs_exit_1(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "c")]) == 1
    out = capsys.readouterr().out
    # Same start: the loss before the first update agrees; after it, full_loss differs.
    assert "DIFFER, first at epoch 1 in full_loss" in out
    assert "They differ in module-manual, module-keras." in out


def test_compare_cli_bad_input_exit_2(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    for other, message in ((tmp_path / "nope", "does not exist"),
                           (tmp_path / "empty", "has no metrics.json"),
                           (tmp_path / "broken", "is not a linfit metrics file")):
        result = subprocess.run([sys.executable, "-m", "linfit.compare", str(two_runs / "a"),
                                 str(other)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert result.stderr.startswith("error: ") and message in result.stderr


def test_metrics_carry_reference_and_agreement(two_runs, guide_data):
    metrics = json.loads((two_runs / "a" / "metrics.json").read_text())
    reference = least_squares_reference(guide_data.x, guide_data.y)
    assert metrics["reference"]["w"] == pytest.approx([float(reference.w)], rel=1e-12)
    assert metrics["reference"]["lr_limit"] == pytest.approx(reference.lr_limit, rel=1e-12)
    assert metrics["agreement"]["agree"] is True
    assert set(metrics["agreement"]["max_rel"]) == {"loss", "full_loss", "w", "b"}
