"""Agreement between runs: aligned epoch by epoch, largest differences, first difference."""

import numpy as np
import pytest

from linfit.agreement import compare_columns


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
