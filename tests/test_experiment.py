"""Experiments: every model × loop from the same start, compared (`run_comparison`)."""

import warnings

import pytest

from linfit.comparison import run_comparison
from linfit.reference import least_squares_reference


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
