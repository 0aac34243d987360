"""`python -m linfit.predict`: a checkpoint's predictions for new data."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from linfit import LinearModule, Trainer, save_weights
from linfit.predict import main
from linfit.train import main as train_main


@pytest.fixture(scope="module")
def standardized_run(tmp_path_factory):
    """A run on features of very different scales, trained standardised."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(120, 2)) * [10, 0.1] + [100, -1]).astype(np.float32)
    y = (x.astype(np.float64) @ [0.3, 5.0] - 2 + rng.normal(0, 0.1, 120)).astype(np.float32)
    data = root / "train.csv"
    np.savetxt(data, np.column_stack([x, y]), delimiter=",", header="size,rate,y", comments="",
               fmt="%.9g")
    assert train_main(["--data", data, "--out", root / "run", "--model", "keras", "--loop",
                       "keras", "--set", "data.standardize=true", "--set",
                       "train.epochs=30"]) == 0
    return root, x, y


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predictions_reproduce_the_trained_model_on_raw_data(standardized_run, capsys):
    root, x, y = standardized_run
    checkpoint = root / "run" / "keras-keras.weights.h5"
    new = root / "new.csv"
    new.write_text("rate,size\n" + "".join(f"{r:.9g},{s:.9g}\n" for s, r in x[:5]))
    assert main(["--checkpoint", checkpoint, "--data", new, "--out", root / "preds.csv"]) == 0
    rows = read_rows(root / "preds.csv")
    model = LinearModule(features=2)
    from linfit import load_weights
    load_weights(model, checkpoint)
    expected = Trainer(model).predict(x[:5])
    np.testing.assert_allclose([float(r["prediction"]) for r in rows], expected, rtol=1e-6)
    assert list(rows[0]) == ["size", "rate", "prediction"]  # the training columns, by name
    assert "loss" not in capsys.readouterr().out  # no target in the file


def test_loss_is_reported_when_the_file_has_a_target(standardized_run, capsys):
    root, x, y = standardized_run
    assert main(["--checkpoint", root / "run" / "keras-keras.weights.h5",
                 "--data", root / "train.csv"]) == 0
    captured = capsys.readouterr()
    predictions = np.array([float(r["prediction"]) for r in csv.DictReader(
        captured.out.splitlines())])
    loss = float(captured.err.split("loss=")[1].split()[0])
    assert loss == pytest.approx(np.mean((predictions - y) ** 2), rel=1e-4)


def test_the_runs_target_is_found_by_name_when_the_file_has_it(tmp_path, capsys):
    """A run on a CSV whose target is its last column, `price` (not `y`), records it;
    predicting on that file writes and scores it; a file without it (new data) is
    predicted all the same, as is one without a target named by data.target."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 2))
    table = np.column_stack([x, x @ [2.0, -1.0] + 0.5])
    np.savetxt(tmp_path / "houses.csv", table, delimiter=",", header="rooms,age,price",
               comments="", fmt="%.9g")
    np.savetxt(tmp_path / "new.csv", table[:, :2], delimiter=",", header="rooms,age",
               comments="", fmt="%.9g")
    common = ["--model", "module", "--loop", "manual", "--set", "train.epochs=20"]
    assert train_main(["--data", tmp_path / "houses.csv", *common, "--out", tmp_path / "a"]) == 0
    assert train_main(["--data", tmp_path / "houses.csv", *common, "--set",
                       'data.target="price"', "--out", tmp_path / "b"]) == 0
    capsys.readouterr()
    for run in ("a", "b"):
        checkpoint = tmp_path / run / "module-manual.weights.h5"
        assert main(["--checkpoint", checkpoint, "--data", tmp_path / "houses.csv",
                     "--out", tmp_path / f"scored-{run}.csv"]) == 0
        rows = read_rows(tmp_path / f"scored-{run}.csv")
        assert list(rows[0]) == ["rooms", "age", "price", "prediction"]
        predictions = np.array([float(r["prediction"]) for r in rows])
        loss = float(capsys.readouterr().out.split("loss=")[1].split()[0])
        assert loss == pytest.approx(np.mean((predictions - table[:, 2]) ** 2), abs=1e-5)
        assert main(["--checkpoint", checkpoint, "--data", tmp_path / "new.csv",
                     "--out", tmp_path / f"new-{run}.csv"]) == 0
        assert "loss=" not in capsys.readouterr().out
        new_rows = read_rows(tmp_path / f"new-{run}.csv")
        assert list(new_rows[0]) == ["rooms", "age", "prediction"]
        assert [r["prediction"] for r in new_rows] == [r["prediction"] for r in rows]


def test_a_bare_checkpoint_uses_column_count(tmp_path, capsys):
    save_weights(LinearModule(init_w=2.0, init_b=1.0), tmp_path / "m.weights.h5")
    (tmp_path / "d.csv").write_text("x\n1\n2\n")
    assert main(["--checkpoint", tmp_path / "m.weights.h5", "--data", tmp_path / "d.csv"]) == 0
    assert [r["prediction"] for r in csv.DictReader(capsys.readouterr().out.splitlines())] == [
        "3", "5"]


def test_an_empty_target_name_is_refused(standardized_run, capsys):
    """--target , scored nothing and wrote no target, silently."""
    root, _, _ = standardized_run
    assert main(["--checkpoint", root / "run" / "keras-keras.weights.h5", "--data",
                 root / "train.csv", "--target", ","]) == 2
    assert capsys.readouterr().err == ("error: --target ',': name each target column, "
                                       "comma-separated\n")


def test_a_prediction_float32_cannot_hold_is_refused(tmp_path, capsys):
    """3e38 is finite in float32, 5 × 3e38 is not: it was written as inf, with exit 0."""
    save_weights(LinearModule(), tmp_path / "m.weights.h5")
    (tmp_path / "d.csv").write_text("x\n1\n3e38\n")
    assert main(["--checkpoint", tmp_path / "m.weights.h5", "--data", tmp_path / "d.csv",
                 "--out", tmp_path / "p.csv"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'd.csv'}, data row 2: the prediction overflows float32 (the "
        "features are too large for the model): check or rescale that row\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["d.csv", "m.weights.h5"]


@pytest.mark.parametrize("text, message", [
    ("a,b,c,d\n1,2,3,4\n",
     "has 4 feature column(s) (a, b, c, d) but the checkpoint's model takes 1"),
    ("a,b\n1,2\n", "has 2 feature column(s) (a, b) but the checkpoint's model takes 1"),
    ("a,y\n1,zz\n", "line 2, column 'y': 'zz' is not a number"),
])
def test_features_that_do_not_fit_the_checkpoint_exit_2(tmp_path, text, message):
    save_weights(LinearModule(), tmp_path / "m.weights.h5")
    (tmp_path / "d.csv").write_text(text)
    result = subprocess.run([sys.executable, "-m", "linfit.predict", "--checkpoint",
                             tmp_path / "m.weights.h5", "--data", tmp_path / "d.csv",
                             "--out", tmp_path / "p.csv"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_an_npz_file_predicts_as_the_csv_it_was_converted_from(standardized_run, tmp_path,
                                                                capsys):
    """linfit.convert's NPZ (x_names, y_names) gives the CSV's predictions, columns and
    loss; new data as x alone (compressed, float64) the same predictions, no loss;
    x's columns in another order, or a y named other than the run's target, are
    refused (it was scored against its own names)."""
    from linfit.convert import main as convert_main

    root, x, _ = standardized_run
    checkpoint = root / "run" / "keras-keras.weights.h5"
    assert convert_main(["--data", root / "train.csv", "--out", tmp_path]) == 0
    outputs = {}
    for data in (root / "train.csv", tmp_path / "train.npz"):
        capsys.readouterr()
        assert main(["--checkpoint", checkpoint, "--data", data, "--out",
                     tmp_path / f"{data.suffix[1:]}.csv"]) == 0
        outputs[data.suffix] = (tmp_path / f"{data.suffix[1:]}.csv").read_text(), \
            capsys.readouterr().out.split("loss=")[1]
    assert outputs[".npz"] == outputs[".csv"]
    assert outputs[".csv"][0].startswith("size,rate,y,prediction\n")
    np.savez_compressed(tmp_path / "new.npz", x=x.astype(np.float64),
                        x_names=np.array(["size", "rate"]))
    assert main(["--checkpoint", checkpoint, "--data", tmp_path / "new.npz", "--out",
                 tmp_path / "new.csv"]) == 0
    assert "loss=" not in capsys.readouterr().out
    new = read_rows(tmp_path / "new.csv")
    assert list(new[0]) == ["size", "rate", "prediction"]
    assert [r["prediction"] for r in new] == [r["prediction"] for r in read_rows(
        tmp_path / "csv.csv")]
    np.savez(tmp_path / "swapped.npz", x=x[:, ::-1], x_names=np.array(["rate", "size"]))
    assert main(["--checkpoint", checkpoint, "--data", tmp_path / "swapped.npz"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'swapped.npz'} names x's columns rate, size but the model was "
        "trained on size, rate: store x_names (linfit.convert writes them) with the training "
        "data's features in that order\n")
    np.savez(tmp_path / "retargeted.npz", x=x, y=np.zeros(len(x)),
             x_names=np.array(["size", "rate"]), y_names=np.array(["cost"]))
    assert main(["--checkpoint", checkpoint, "--data", tmp_path / "retargeted.npz"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'retargeted.npz'} names y's columns cost but the model was "
        "trained to predict y: store y_names (linfit.convert writes them) with the training "
        "data's targets in that order, or leave y out\n")


def test_a_model_of_one_output_column_scores_a_target_of_one_column(tmp_path, capsys):
    """w of [d, 1] (trained on an NPZ's y of [N, 1]) against a CSV's target or an NPZ's
    y of [N]: the loss is the mean over the rows (it was refused, as "1 column(s)
    but ... 1 output(s)")."""
    save_weights(LinearModule(features=2, outputs=1, init_w=[[2.0], [-1.0]], init_b=[0.5]),
                 tmp_path / "m.weights.h5")
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
    y = np.array([1.0, 2.0, 3.0])
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",", header="a,b,y",
               comments="")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    expected = np.mean((x @ [2.0, -1.0] + 0.5 - y) ** 2)
    for data in ("d.csv", "d.npz"):
        assert main(["--checkpoint", tmp_path / "m.weights.h5", "--data", tmp_path / data]) == 0
        captured = capsys.readouterr()
        assert captured.out.splitlines()[0].endswith(",y,prediction_y")
        assert float(captured.err.split("loss=")[1].split()[0]) == pytest.approx(expected)


def test_more_features_than_the_run_trained_on_is_refused(standardized_run, tmp_path):
    root, _, _ = standardized_run
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,3\n")
    result = subprocess.run([sys.executable, "-m", "linfit.predict", "--checkpoint",
                             root / "run" / "keras-keras.weights.h5", "--data",
                             tmp_path / "d.csv"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "lacks the column(s) size, rate the model was trained on" in result.stderr


def test_a_checkpoint_that_is_not_a_line_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "m.weights.h5", "w") as f:
        f.create_group("vars").create_dataset("0", data=np.zeros((2, 2), np.float32))
    (tmp_path / "d.csv").write_text("x\n1\n")
    result = subprocess.run([sys.executable, "-m", "linfit.predict", "--checkpoint",
                             tmp_path / "m.weights.h5", "--data", tmp_path / "d.csv"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a checkpoint of f(x) = x·W + b" in result.stderr


def test_out_replaces_a_file_only_when_asked_and_never_a_file_it_reads(standardized_run,
                                                                       tmp_path, capsys):
    root, _, _ = standardized_run
    checkpoint = root / "run" / "keras-keras.weights.h5"
    data = tmp_path / "d.csv"
    data.write_bytes((root / "train.csv").read_bytes())
    mine = tmp_path / "mine.csv"
    mine.write_text("mine\n")
    files = (data, checkpoint, mine)
    before = [path.read_bytes() for path in files]
    for out, extra, message in ((mine, [], f"--out {mine} exists: give another file, or add "
                                            "--overwrite to replace it"),
                                (data, ["--overwrite"], f"--out {data} is the --data file"),
                                (checkpoint, ["--overwrite"], "is the --checkpoint file")):
        assert main(["--checkpoint", checkpoint, "--data", data, "--out", out, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
        assert [path.read_bytes() for path in files] == before
    assert main(["--checkpoint", checkpoint, "--data", data, "--out", mine, "--overwrite"]) == 0
    assert mine.read_text().startswith("size,rate,y,prediction\n")


def test_a_periodic_checkpoint_finds_its_runs_columns_whatever_their_order(tmp_path, capsys):
    """RUN/checkpoints/<run>/epoch-N.weights.h5 reads RUN's metrics.json (it fell back to
    the columns' order: 4 features for 2); the targets named in another order
    (--target t2,t1) are still the model's t1 and t2; a text column the model does
    not read (an id) is kept out of it; a file without targets names the
    predictions after the run's."""
    from linfit.checkpoint import read_line

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    y = np.column_stack([x @ [1.0, 2.0] + 1, x @ [-1.0, 0.5]])
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",",
               header="a,b,t1,t2", comments="", fmt="%.9g")
    assert train_main(["--data", tmp_path / "d.csv", "--model", "module", "--loop", "manual",
                       "--set", 'data.target=["t1", "t2"]', "--set", "train.epochs=4",
                       "--set", "train.checkpoint_every=2", "--out", tmp_path / "run"]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "module-manual" / "epoch-0002.weights.h5"
    w, b = read_line(checkpoint)
    expected = x.astype(np.float32).astype(np.float64) @ w + b
    with (tmp_path / "shuffled.csv").open("w") as f:
        f.write("t2,id,b,t1,a\n" + "".join(f"{t2:.9g},house {i},{bb:.9g},{t1:.9g},{a:.9g}\n"
                                           for i, ((a, bb), (t1, t2)) in enumerate(zip(x, y))))
    losses = []
    for target, out in (([], "p1.csv"), (["--target", "t2,t1"], "p2.csv")):
        capsys.readouterr()
        assert main(["--checkpoint", checkpoint, "--data", tmp_path / "shuffled.csv",
                     "--out", tmp_path / out, *target]) == 0
        losses.append(capsys.readouterr().out.split("loss=")[1])
        rows = read_rows(tmp_path / out)
        assert list(rows[0]) == ["a", "b", "t1", "t2", "prediction_t1", "prediction_t2"]
        np.testing.assert_allclose([[float(r["prediction_t1"]), float(r["prediction_t2"])]
                                    for r in rows], expected, rtol=1e-6, atol=1e-6)
    assert losses[0] == losses[1]
    np.savetxt(tmp_path / "new.csv", x, delimiter=",", header="a,b", comments="",
               fmt="%.9g")
    assert main(["--checkpoint", checkpoint, "--data", tmp_path / "new.csv"]) == 0
    assert capsys.readouterr().out.startswith("a,b,prediction_t1,prediction_t2\n")


def test_sigterm_leaves_no_predictions_and_exits_143(standardized_run, tmp_path, monkeypatch,
                                                      capsys):
    """As Ctrl-C does (a scheduler's or `timeout`'s SIGTERM left a hidden temporary file)."""
    import os
    import signal

    from linfit import predict

    root, _, _ = standardized_run
    write = predict.PredictionWriter.write

    def write_then_terminate(self, *args):
        write(self, *args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(predict.PredictionWriter, "write", write_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["--checkpoint", root / "run" / "keras-keras.weights.h5", "--data",
                 root / "train.csv", "--out", tmp_path / "p.csv"]) == 143
    assert capsys.readouterr().err == "interrupted: no predictions written\n"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before
