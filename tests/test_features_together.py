"""Where features meet (issue 13): every file a run writes says the same thing.

- standardisation × periodic checkpoints × predict × resume
- early stopping × report × checkpoint × console × resume
- divergence × compile mode × loop
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from linfit import DivergenceError, LinearModule, Trainer, load_weights
from linfit.predict import main as predict_main
from linfit.train import main


def history_rows(run_dir, model, loop):
    with (run_dir / "history.csv").open() as f:
        return [row for row in csv.DictReader(f) if (row["model"], row["loop"]) == (model, loop)]


def weights(path, features=None):
    model = LinearModule(features=features)
    load_weights(model, path)
    return np.atleast_1d(model.w.numpy()).tolist(), float(model.b.numpy())


def assert_files_agree(run_dir, features=None):
    """metrics.json, history.csv, the final checkpoints and report.md agree, per run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = (run_dir / "report.md").read_text()
    for run in metrics["runs"]:
        rows = history_rows(run_dir, run["model"], run["loop"])
        assert len(rows) == len(run["trajectory"]) == run["epochs_run"] + 1
        for row, entry in zip(rows, run["trajectory"]):
            assert float(row["full_loss"]) == entry["full_loss"]
            assert float(row["b"]) == entry["b"]
        final = run["final"]
        assert final == run["trajectory"][final["epoch"]]
        assert weights(run_dir / run["checkpoint"], features) == (final["w"], final["b"])
        assert f"| {run['model']}-{run['loop']} | {final['epoch']} | " in report
        assert f"| {final['b']:.4f} | {final['full_loss']:.6g} |" in report
    return metrics


@pytest.fixture(scope="module")
def scaled_csv(tmp_path_factory):
    """Three features five orders of magnitude apart: training needs standardising."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * [1, 100, 0.01] + [0, 500, 3]
    y = x @ [0.5, -0.02, 40] + 1 + rng.normal(0, 0.1, 200)
    path = tmp_path_factory.mktemp("scaled") / "scaled.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,y", comments="",
               fmt="%.9g")
    return path, x.astype(np.float32), y.astype(np.float32)


def test_standardised_checkpoints_predict_on_raw_data_and_resume_exactly(scaled_csv, tmp_path,
                                                                         capsys):
    path, x, y = scaled_csv
    settings = ["--data", path, "--loop", "manual", "--set", "data.standardize=true",
                "--set", "train.checkpoint_every=5", "--set", "train.learning_rate=0.3"]
    assert main([*settings, "--set", "train.epochs=20", "--out", tmp_path / "straight"]) == 0
    assert main([*settings, "--set", "train.epochs=10", "--out", tmp_path / "resumed"]) == 0
    assert main(["--resume", tmp_path / "resumed", "--set", "train.epochs=20"]) == 0
    straight = assert_files_agree(tmp_path / "straight", features=3)
    resumed = assert_files_agree(tmp_path / "resumed", features=3)
    assert resumed["runs"] == straight["runs"]  # bitwise, through a standardised resume
    for run_dir in (tmp_path / "straight", tmp_path / "resumed"):
        for run in straight["runs"]:
            label = f"{run['model']}-{run['loop']}"
            for epoch in (5, 10, 15, 20):  # every checkpoint is in the data's units
                checkpoint = run_dir / "checkpoints" / label / f"epoch-{epoch:04d}.weights.h5"
                row = run["trajectory"][epoch]
                assert weights(checkpoint, 3) == (row["w"], row["b"])
                model = LinearModule(features=3)
                load_weights(model, checkpoint)
                raw_loss = np.mean((model(x).numpy().astype(np.float64) - y) ** 2)
                assert raw_loss == pytest.approx(row["full_loss"], rel=1e-4)
    capsys.readouterr()
    periodic = tmp_path / "resumed" / "checkpoints" / "module-manual" / "epoch-0015.weights.h5"
    assert predict_main(["--checkpoint", periodic, "--data", path,
                         "--out", tmp_path / "p.csv"]) == 0
    reported = float(capsys.readouterr().out.split("loss=")[1].split()[0])
    assert reported == pytest.approx(straight["runs"][0]["trajectory"][15]["full_loss"],
                                     rel=1e-4)


EARLY_STOPPING = ["--set", "data.validation_split=0.2", "--set", "train.learning_rate=0.05",
                  "--set", 'train.early_stopping={monitor="val_loss", patience=3}',
                  "--set", "train.checkpoint_every=1", "--loop", "both", "--model", "module"]


def test_early_stopping_what_is_saved_is_what_is_reported_and_resumed(tmp_path, capsys):
    assert main([*EARLY_STOPPING, "--set", "train.epochs=200", "--out", tmp_path / "a"]) == 0
    console = capsys.readouterr().out
    metrics = assert_files_agree(tmp_path / "a")
    for run in metrics["runs"]:
        stopping, final = run["early_stopping"], run["final"]
        assert run["stopped_early"] and 10 < run["epochs_run"] < 200
        assert stopping == {"monitor": "val_loss", "best_after": final["epoch"],
                            "restored": True}
        assert final["epoch"] < run["epochs_run"]  # the best epoch, not the last
        assert min(row["val_loss"] for row in run["trajectory"][1:]) == final["val_loss"]
        assert (f"Stopped early after {run['epochs_run']} of 200 epochs (EarlyStopping on "
                f"val_loss, best after {final['epoch']} epochs); kept its best weights, from "
                f"after {final['epoch']} epochs: W = {final['w'][0]:1.2f}, "
                f"b = {final['b']:1.2f}, loss={final['full_loss']:2.5f}") in console
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Early stopping" in report and "Stopped early after" in report
    # Interrupted after 10 epochs and resumed: the same decision, bit for bit,
    # since the checkpoint kept EarlyStopping's patience and best weights.
    assert main([*EARLY_STOPPING, "--set", "train.epochs=10", "--out", tmp_path / "b"]) == 0
    assert main(["--resume", tmp_path / "b", "--set", "train.epochs=200"]) == 0
    resumed = assert_files_agree(tmp_path / "b")
    assert resumed["runs"] == metrics["runs"]


@pytest.mark.parametrize("loop", ["manual", "keras"])
def test_a_run_stopped_early_and_resumed_keeps_its_decision_and_its_best_weights(tmp_path,
                                                                                  loop):
    """EarlyStopping stops at the end of epoch 2 and restores epoch 1's weights. Resumed
    from its final checkpoint, the run trains no further (it trained a 3rd epoch); killed
    before that checkpoint, the newest periodic one is not of the stopping epoch (whose
    weights are not the restored ones), and the run resumed from it stops as it did."""
    import keras

    x = np.linspace(-2, 2, 40, dtype=np.float32)
    y = 3 * x + 2

    def fit(**options):
        stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=100,
                                                restore_best_weights=True)
        trainer = Trainer(LinearModule(), learning_rate=0.05)
        return trainer, trainer.fit(x, y, epochs=10, batch_size=10, loop=loop,
                                    callbacks=[stopper], **options)

    trainer, straight = fit(checkpoint_dir=tmp_path / "periodic", checkpoint_every=1)
    assert straight.stopped and straight.epochs == 2
    assert sorted(p.name for p in (tmp_path / "periodic").iterdir()) == ["epoch-0001.weights.h5"]
    trainer.save_checkpoint(tmp_path / "final.weights.h5", straight)
    for checkpoint in ("final.weights.h5", "periodic/epoch-0001.weights.h5"):
        model_trainer, resumed = fit(resume_from=tmp_path / checkpoint)
        assert (resumed.epochs, resumed.loss, resumed.w, resumed.b) == \
            (straight.epochs, straight.loss, straight.w, straight.b)
        assert float(model_trainer.model.w.numpy()) == float(trainer.model.w.numpy())


@pytest.mark.parametrize("loop", ["manual", "keras"])
def test_divergence_keeps_every_finite_epoch_in_every_mode(guide_data, loop):
    """Issue 13.5: the fused loop once lost all but epoch 0 of a diverging run."""
    outcomes = {}
    for mode in ("eager", "function", "xla"):
        with pytest.raises(DivergenceError) as error:
            Trainer(LinearModule(), learning_rate=5.0, compile=mode).fit(
                guide_data.x, guide_data.y, epochs=50, loop=loop)
        history = error.value.history
        assert error.value.batch is None and len(history.full_loss) == error.value.epoch + 1
        assert np.isfinite(history.full_loss).all() and np.isfinite(history.b).all()
        outcomes[mode] = (error.value.epoch, history)
    assert {epoch for epoch, _ in outcomes.values()} == {16}
    # Eager and compiled: the same bits. XLA fuses the arithmetic: float32 rounding.
    assert outcomes["eager"][1].to_json() == outcomes["function"][1].to_json()
    np.testing.assert_allclose(outcomes["xla"][1].full_loss, outcomes["eager"][1].full_loss,
                               rtol=1e-5)


@pytest.mark.parametrize("loop", ["manual", "keras"])
def test_a_diverged_run_directory_keeps_its_history(tmp_path, loop):
    out = tmp_path / "run"
    assert main(["--model", "module", "--loop", loop, "--set", "train.learning_rate=5",
                 "--set", "train.epochs=50", "--out", out]) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    (run,) = metrics["runs"]
    assert metrics["status"] == run["status"] == "diverged"
    assert run["stopped_at"] == {"epoch": 16, "batch": None}
    assert len(history_rows(out, "module", loop)) == len(run["trajectory"]) == 17


def test_divergence_before_the_first_row_is_one_line_and_recorded(tmp_path):
    """Issue 13.6: the loss is not finite before any update."""
    result = subprocess.run([sys.executable, "-m", "linfit.train", "--model", "module",
                             "--loop", "manual", "--set", "train.epochs=3",
                             "--set", "model.init_w=1e30", "--out", "run"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "training cannot start: before any update the loss on the training data is not " \
           "finite" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["runs"][0]["trajectory"] == []


def test_the_divergence_message_names_the_epoch_that_ran(tmp_path, capsys):
    """Issue 13.7: a loss that overflows after the first update diverged in epoch 0."""
    path = tmp_path / "big.csv"
    path.write_text("x,y\n1e10,1\n-1e10,2\n3e9,3\n")
    assert main(["--data", path, "--model", "module", "--loop", "manual",
                 "--set", "train.epochs=2", "--out", tmp_path / "run"]) == 3
    err = capsys.readouterr().err
    assert "training diverged at epoch 0: after it the loss on the whole training set is " \
           "not finite" in err and "epoch 2" not in err
