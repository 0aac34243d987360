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


@pytest.mark.parametrize("arguments, error, message", [
    # A hostile review's: each was a raw NumPy, LAPACK or Keras error.
    ({"x": [float("nan"), 1.0, 2.0]}, "DataError", "x has a non-finite value in row 0"),
    ({"y": [1.0, 2.0]}, "DataError", r"N = len\(y\) = 2"),
    ({"models": ("modul",)}, "ConfigError", "models=.*: give one or more of module, keras"),
    ({"loops": ()}, "ConfigError", "loops=.*: give one or more of manual, keras"),
    ({"seed": 1.5}, "ConfigError", "seed=1.5"),
    ({"optimizer": None}, "ConfigError", "run_comparison makes one optimizer per run"),
    ({"validation_data": ([1.0, 2.0], [1.0, 2.0], [1.0, 1.0])}, "ConfigError",
     "validation_data must be"),
])
def test_bad_arguments_are_one_linfit_error(arguments, error, message):
    import linfit

    options = {"x": [0.0, 1.0, 2.0], "y": [1.0, 3.0, 5.0], **arguments}
    with pytest.raises(getattr(linfit, error), match=message):
        run_comparison(options.pop("x"), options.pop("y"), epochs=1, **options)


def test_a_single_name_is_one_name(guide_data):
    """models="keras" was read letter by letter (KeyError: 'k'), metrics="mae" too."""
    comparison = run_comparison(guide_data.x, guide_data.y, models="keras", loops="manual",
                                metrics="mae", epochs=1)
    assert [str(run.label) for run in comparison.runs] == ["keras-manual"]
    assert "mae" in comparison.runs[0].history.logs
