"""Targets of shape [N, k] and compiled metrics, end to end (issue 15, items 5 and 6):
the models, the float64 reference, both loops, checkpoints and resuming, the CLI's files
and predictions."""

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from linfit import DataError, LinearModel, LinearModule, Trainer, run_comparison
from linfit.reference import least_squares_reference

RNG = np.random.default_rng(7)
X = RNG.normal(size=(60, 3)).astype(np.float32)
TRUE_W = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -3.0]])
TRUE_B = np.array([0.5, -1.0])
Y = (X @ TRUE_W + TRUE_B + 0.1 * RNG.normal(size=(60, 2))).astype(np.float32)


def float64_gradient_descent(x, y, w, b, learning_rate, epochs):
    """Full-batch GD on Keras's MSE (the mean over examples and outputs), in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w, b = np.array(w, np.float64), np.array(b, np.float64)
    path = [(w.copy(), b.copy())]
    for _ in range(epochs):
        residual = x @ w + b - y
        scale = 2.0 / residual.size
        w, b = w - learning_rate * scale * x.T @ residual, b - learning_rate * scale * \
            residual.sum(axis=0)
        path.append((w.copy(), b.copy()))
    return path


def test_the_reference_is_each_outputs_least_squares_optimum():
    reference = least_squares_reference(X, Y)
    a = np.column_stack([X.astype(np.float64), np.ones(len(X))])
    for j in range(2):
        theta, *_ = np.linalg.lstsq(a, Y[:, j].astype(np.float64), rcond=None)
        np.testing.assert_allclose(reference.w[:, j], theta[:-1], rtol=1e-9)
        assert reference.b[j] == pytest.approx(theta[-1], rel=1e-9)
    predictions = a[:, :-1] @ reference.w + reference.b
    assert reference.loss == pytest.approx(np.mean((predictions - Y) ** 2), rel=1e-9)
    # Keras's MSE averages over the k outputs too: the curvature is 1/k of one output's.
    single = least_squares_reference(X, Y[:, 0])
    assert reference.lr_limit == pytest.approx(2 * single.lr_limit, rel=1e-12)


@pytest.mark.parametrize("model_class", [LinearModule, LinearModel])
@pytest.mark.parametrize("loop", ["manual", "keras"])
def test_both_loops_follow_float64_gradient_descent(model_class, loop):
    model = model_class(features=3, outputs=2, init_w=0.5, init_b=[0.0, 1.0])
    history = Trainer(model, learning_rate=0.2).fit(X, Y, epochs=12, loop=loop)
    expected = float64_gradient_descent(X, Y, np.full((3, 2), 0.5), [0.0, 1.0], 0.2, 12)
    for row, (w, b) in enumerate(expected):
        np.testing.assert_allclose(history.w[row], w, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(history.b[row], b, rtol=2e-5, atol=1e-6)
    assert history.w[0].shape == (3, 2) and history.b[0].shape == (2,)
    columns = history.columns()
    assert [name for name in columns if name[0] in "wb"] == [
        "w_0_0", "w_0_1", "w_1_0", "w_1_1", "w_2_0", "w_2_1", "b_0", "b_1"]
    np.testing.assert_array_equal(columns["w_2_1"], [w[2, 1] for w in history.w])


def test_the_stability_limit_holds_per_output():
    reference = least_squares_reference(X, Y)
    distances = {}
    for factor in (0.95, 1.05):
        history = Trainer(LinearModule(features=3, outputs=2, init_w=0.0),
                          learning_rate=factor * reference.lr_limit).fit(X, Y, epochs=80)
        distances[factor] = reference.gaps(history.columns())["distance"]
    assert distances[0.95][-1] < distances[0.95][0] / 2
    assert distances[1.05][-1] > distances[1.05][0] * 2


def test_a_scalar_x_with_several_outputs_and_the_shape_errors():
    x = np.linspace(-1, 1, 20, dtype=np.float32)
    y = np.stack([2 * x + 1, -x], axis=1)
    model = LinearModule(outputs=2, init_w=0.0)
    assert model.w.shape == (1, 2)
    Trainer(model, learning_rate=0.3).fit(x, y, epochs=200)
    np.testing.assert_allclose(model.w.numpy(), [[2.0, -1.0]], atol=1e-3)
    with pytest.raises(DataError, match=r"one output and takes y of shape \[N\], got \[20, 2\]: "
                                        "build it with outputs=2"):
        Trainer(LinearModule()).fit(x, y, epochs=1)
    with pytest.raises(DataError, match=r"has 3 outputs \(y of shape \[N, 3\]\)"):
        Trainer(LinearModule(outputs=3)).fit(x, y, epochs=1)


def test_a_resumed_multi_output_run_is_bitwise_the_uninterrupted_one(tmp_path):
    def trainer():
        return Trainer(LinearModel(features=3, outputs=2), optimizer="adam",
                       learning_rate=0.05, metrics=["mae"])

    whole = trainer().fit(X, Y, epochs=6, batch_size=16, shuffle_seed=3)
    trainer().fit(X, Y, epochs=3, batch_size=16, shuffle_seed=3, checkpoint_dir=tmp_path)
    (last,) = sorted(tmp_path.glob("*.weights.h5"))[-1:]
    resumed = trainer().fit(X, Y, epochs=6, batch_size=16, shuffle_seed=3, resume_from=last)
    assert resumed.logs["mae"] == whole.logs["mae"] and resumed.loss == whole.loss
    for a, b in zip(resumed.w + resumed.b, whole.w + whole.b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_standardised_multi_output_runs_report_the_datas_units():
    x = X * [1.0, 50.0, 0.02] + [0.0, 100.0, 3.0]
    comparison = run_comparison(x, Y, models=["module"], loops=["manual"], epochs=40,
                                standardize=True, learning_rate=0.3, metrics=["mae"])
    (run,) = comparison.runs
    trained = run.trainer.model(run.trainer.standardizer.transform(x))
    np.testing.assert_allclose(run.model(x), trained, rtol=1e-4, atol=1e-4)
    assert run.history.metrics == ["mae"] and len(run.history.logs["mae"]) == 40


def test_a_keras_dense_model_takes_vector_targets_in_both_loops():
    def dense():
        keras.utils.set_random_seed(3)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    histories = [Trainer(dense(), learning_rate=0.1, compile="function").fit(
        X, Y, epochs=3, batch_size=20, loop=loop) for loop in ("manual", "keras")]
    model = dense()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    expected = model.fit(X, Y, epochs=3, batch_size=20, shuffle=False, verbose=0).history
    for history in histories:
        assert history.loss == expected["loss"]


def test_the_cli_trains_reports_and_predicts_several_outputs_with_metrics(tmp_path):
    """One run through the CLI: the files, the console and the predictions agree."""
    with (tmp_path / "d.csv").open("w", encoding="utf-8-sig") as f:
        f.write("a,b,c,t1,t2\n")
        for row in np.column_stack([X, Y]):
            f.write(",".join(repr(float(v)) for v in row) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "linfit.train", "--data", "d.csv", "--model", "keras",
         "--set", 'data.target=["t1", "t2"]', "--set", 'train.metrics=["mae"]',
         "--set", "data.validation_split=0.25", "--set", "train.epochs=4",
         "--set", 'train.early_stopping={monitor = "val_mae", patience = 5}', "--out", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert list(rows[0])[3:] == ["loss", "mae", "full_loss", "val_loss", "val_mae", "w_0_0",
                                 "w_0_1", "w_1_0", "w_1_1", "w_2_0", "w_2_1", "b_0", "b_1"]
    metrics = json.loads((run / "metrics.json").read_text())
    for entry in metrics["runs"]:
        mine = [row for row in rows if row["loop"] == entry["loop"]]
        assert [float(row["mae"]) for row in mine[1:]] == entry["metrics"]["mae"]
        final = entry["trajectory"][-1]
        assert np.array(final["w"]).shape == (3, 2) and len(final["b"]) == 2
        assert f"b = [{final['b'][0]:1.2f}, {final['b'][1]:1.2f}]" in result.stdout
    assert "2 outputs (t1, t2)" in (run / "report.md").read_text()
    predicted = subprocess.run(
        [sys.executable, "-m", "linfit.predict", "--checkpoint", run / "keras-keras.weights.h5",
         "--data", tmp_path / "d.csv"], capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    table = list(csv.DictReader(predicted.stdout.splitlines()))
    assert list(table[0]) == ["a", "b", "c", "t1", "t2", "prediction_t1", "prediction_t2"]
    final = metrics["runs"][1]["trajectory"][-1]
    expected = X.astype(np.float64) @ np.array(final["w"]) + np.array(final["b"])
    np.testing.assert_allclose([[float(row["prediction_t1"]), float(row["prediction_t2"])]
                                for row in table], expected, rtol=1e-5, atol=1e-5)
    assert "loss=" in predicted.stderr


@pytest.mark.parametrize("targets, init_b, message", [
    ('["t1", "t2"]', "[1, 2, 3]",
     "model.init_b = [1.0, 2.0, 3.0], but the data has 2 targets: give one number, or a list "
     "of 2"),
    ('"t1"', "[1.0]", "model.init_b = [1.0], but the data has one target: give one number"),
])
def test_starting_biases_that_do_not_fit_the_targets_are_refused_first(tmp_path, capsys,
                                                                        targets, init_b,
                                                                        message):
    """Before any run directory is made (it was found by the model, after TensorFlow
    started, and left a failed run directory)."""
    from linfit.train import main

    np.savetxt(tmp_path / "d.csv", np.column_stack([X, Y]), delimiter=",",
               header="a,b,c,t1,t2", comments="")
    assert main(["--data", tmp_path / "d.csv", "--set", f"data.target={targets}", "--set",
                 f"model.init_b={init_b}", "--out", tmp_path / "run"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()
