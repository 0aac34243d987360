"""Training checkpoints: exact resume, periodic atomic saves, divergence, determinism,
surviving kills, never losing a run."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from linfit import (CheckpointError, ConfigError, DivergenceError, LinearModel, LinearModule,
                    Trainer, load_weights)
from linfit.checkpoint import list_checkpoints, read_state
from linfit.config import DataConfig
from linfit.data import synthetic_line
from linfit.train import main

ROOT = Path(__file__).resolve().parent.parent
DATA = synthetic_line(DataConfig(num_examples=50))
SETTINGS = list(itertools.product(["manual", "keras"], ["sgd", "adam"],
                                  [(None, None), (16, 3)]))


def train(loop, optimizer, batching, epochs=6, **kwargs):
    batch_size, shuffle_seed = batching
    trainer = Trainer(LinearModel(), optimizer=optimizer, learning_rate=0.05)
    history = trainer.fit(DATA.x, DATA.y, epochs=epochs, loop=loop, batch_size=batch_size,
                          shuffle_seed=shuffle_seed, **kwargs)
    return trainer, history


def datasets(path):
    with h5py.File(path) as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj[()]})
                     if isinstance(obj, h5py.Dataset) else None)
        return found


@pytest.mark.parametrize("loop, optimizer, batching", SETTINGS,
                         ids=[f"{lp}-{o}-{'full' if b[0] is None else 'shuffled16'}"
                              for lp, o, b in SETTINGS])
def test_stop_and_resume_is_bitwise_identical(tmp_path, loop, optimizer, batching):
    straight, expected = train(loop, optimizer, batching)
    train(loop, optimizer, batching, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    stopped_at = tmp_path / "epoch-0002.weights.h5"
    resumed, history = train(loop, optimizer, batching, resume_from=stopped_at)
    assert history.to_json() == expected.to_json()
    assert resumed.model.w.numpy() == straight.model.w.numpy()
    assert resumed.model.b.numpy() == straight.model.b.numpy()
    for a, b in zip(resumed.optimizer.variables, straight.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # Adam's moments, the count


def test_resume_refuses_other_settings_and_weights_only_files(tmp_path):
    train("manual", "sgd", (16, 3), epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(Exception, match="batch_size=16, not 8"):
        train("manual", "sgd", (8, 3), resume_from=tmp_path / "epoch-0002.weights.h5")
    LinearModel().save_weights(tmp_path / "plain.weights.h5")
    with pytest.raises(CheckpointError, match="weights-only checkpoint"):
        train("manual", "sgd", (16, 3), resume_from=tmp_path / "plain.weights.h5")


def test_periodic_checkpoints_keep_the_newest_and_each_loads(tmp_path):
    trainer, history = train("keras", "adam", (16, None), epochs=7, checkpoint_dir=tmp_path,
                             checkpoint_every=2, keep_checkpoints=2)
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names == ["epoch-0004.weights.h5", "epoch-0006.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary files left
    batches = -(-len(DATA.x) // 16)
    for name, epoch in zip(names, (4, 6)):  # each kept one holds its own epoch
        state = read_state(tmp_path / name)
        assert state["epoch"] == epoch and len(state["history"]["logs"]["loss"]) == epoch
        assert datasets(tmp_path / name)["optimizer/vars/0"] == epoch * batches  # iterations
        model = LinearModule()
        load_weights(model, tmp_path / name)
        assert float(model.w.numpy()) == float(np.asarray(history.w[epoch]))
        assert float(model.b.numpy()) == float(np.asarray(history.b[epoch]))


def test_divergence_stops_before_the_bad_update(tmp_path):
    model = LinearModule()
    trainer = Trainer(model, learning_rate=5.0)
    with pytest.raises(DivergenceError) as error:
        trainer.fit(DATA.x, DATA.y, epochs=100, checkpoint_dir=tmp_path, checkpoint_every=1)
    epoch = error.value.epoch
    # Full batch: after epoch 16 the loss on the data overflows float32, so the
    # next update is never tried; the message says so, not "epoch 17, batch 0".
    assert error.value.batch is None and 5 < epoch < 100
    assert f"diverged at epoch {epoch}: after it the loss on the whole training set" in \
        str(error.value)
    # No update with a non-finite loss was applied: the weights are finite. The
    # history ends at the last epoch whose loss was finite, and so do the checkpoints.
    history = error.value.history
    assert np.isfinite(model.w.numpy()) and np.isfinite(history.full_loss).all()
    assert len(history.full_loss) - 1 == epoch
    newest = list_checkpoints(tmp_path)[-1]
    assert newest.name == f"epoch-{epoch:04d}.weights.h5"
    restored = LinearModule()
    load_weights(restored, newest)
    assert float(restored.w.numpy()) == float(np.asarray(history.w[-1]))
    assert np.isfinite(restored.w.numpy())


@pytest.mark.parametrize("compile", ["eager", "function"])
def test_a_batch_whose_loss_is_not_finite_is_never_applied(compile):
    # Mini-batches at a rate this high blow the weights up within an epoch: the
    # guard meets a non-finite batch loss mid-epoch (eagerly, in epoch 6 at batch
    # 3 of 4; compiled, where the fused call is undone and replayed epoch by epoch,
    # a step later, as the graph rounds the last finite steps differently).
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    trainer = Trainer(LinearModule(), learning_rate=2.0, compile=compile)
    with pytest.raises(DivergenceError) as error:
        trainer.fit(x, 3 * x, epochs=200, batch_size=16)
    epoch, batch = error.value.epoch, error.value.batch
    assert batch is not None and 5 <= epoch <= 7
    assert f"at epoch {epoch}, batch {batch}: that batch's loss is not finite, so its update " \
           "was not applied" in str(error.value)
    # Every update before that batch was applied, and that one was not; the history
    # holds the start and the 6 epochs completed, all finite.
    assert int(trainer.optimizer.iterations.numpy()) == epoch * 4 + batch
    assert len(error.value.history.full_loss) == epoch + 1
    assert np.isfinite(error.value.history.full_loss).all()
    assert np.isfinite(trainer.model.w.numpy()) and np.isfinite(trainer.model.b.numpy())


def test_the_keras_loop_never_applies_a_batch_whose_loss_is_not_finite():
    """As above, in the Keras loop: eagerly it names the batch; compiled, Keras's
    `fit` learns of it only at the epoch's end, but the update was not applied
    either: the weights are the eager run's, finite."""
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    stopped = {}
    for compile in ("eager", "function"):
        trainer = Trainer(LinearModule(), learning_rate=2.0, compile=compile)
        with pytest.raises(DivergenceError) as error:
            trainer.fit(x, 3 * x, epochs=200, batch_size=16, loop="keras")
        history = error.value.history
        assert len(history.full_loss) == error.value.epoch + 1
        assert np.isfinite(history.full_loss).all()
        if compile == "eager":  # every update before that batch was applied
            assert int(trainer.optimizer.iterations.numpy()) == \
                error.value.epoch * 4 + error.value.batch
        stopped[compile] = (error.value.epoch, error.value.batch,
                            trainer.model.w.numpy(), trainer.model.b.numpy())
    (epoch, batch, *weights), (compiled_epoch, compiled_batch, *compiled_weights) = \
        stopped.values()
    assert batch is not None and 5 <= epoch <= 7
    assert (compiled_epoch, compiled_batch) == (epoch, None)
    assert np.isfinite(weights).all() and weights == compiled_weights


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "linfit.train", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_diverged_run_exits_3_and_keeps_its_last_good_checkpoint(tmp_path):
    result = run_cli("--set", "train.learning_rate=5", "--set", "train.epochs=200",
                     "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=2",
                     "--model", "module", "--out", "run", cwd=tmp_path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: learning rate 5 is above the stability limit 0.743")
    assert lines[1].startswith("error: module-manual: training diverged at epoch ")
    assert "full_loss per epoch so far: [10.65, " in lines[1]
    assert "the stability limit of the learning rate for this data is 0.743" in lines[1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["error"] in lines[1]
    assert metrics["runs"][0]["status"] == "diverged"
    newest = list_checkpoints(tmp_path / "run" / "checkpoints" / "module-manual")[-1]
    model = LinearModule()
    load_weights(model, newest)
    assert np.isfinite(model.w.numpy()) and np.isfinite(model.b.numpy())


def test_cli_resume_extends_a_run_bitwise(tmp_path, capsys):
    common = ["--set", "data.batch_size=16", "--set", "data.shuffle=true",
              "--set", "train.optimizer=adam", "--set", "train.checkpoint_every=1"]
    assert main([*common, "--set", "train.epochs=6", "--out", tmp_path / "straight"]) == 0
    assert main([*common, "--set", "train.epochs=2", "--out", tmp_path / "resumed"]) == 0
    capsys.readouterr()
    assert main(["--resume", tmp_path / "resumed", "--set", "train.epochs=6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["module-manual (LinearModule, GradientTape loop)",
                         "resumed module-manual after 2 epochs"]
    assert lines[2] == "Epoch  1:"  # where it stood, then the new epochs
    assert any(line.startswith("keras-keras (LinearModel, Keras fit): resumed after 2 epochs; "
                               "6 epochs, bitwise identical to module-manual (") for line in lines)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text())
               for name in ("straight", "resumed")]
    assert metrics[0]["runs"] == metrics[1]["runs"]
    # A finished run resumes to itself (its final checkpoints say where it stood), and
    # keys that change no number may change.
    assert main(["--resume", tmp_path / "resumed", "--set", "train.epochs=6",
                 "--set", "train.print_every=2", "--set", "train.checkpoint_every=3"]) == 0
    again = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert again["runs"] == metrics[0]["runs"]
    capsys.readouterr()
    assert main(["--resume", tmp_path / "resumed", "--set", "train.lr=1"]) == 2
    assert "--resume continues a run as it was configured" in capsys.readouterr().err


def test_same_config_same_bits(tmp_path, capsys):
    args = ["--set", "data.batch_size=32", "--set", "data.shuffle=true", "--set",
            "train.epochs=3"]
    for name in ("a", "b"):
        assert main([*args, "--out", tmp_path / name]) == 0
    assert (tmp_path / "a" / "metrics.json").read_bytes() == \
        (tmp_path / "b" / "metrics.json").read_bytes()
    for checkpoint in (tmp_path / "a").glob("*.weights.h5"):
        first, second = datasets(checkpoint), datasets(tmp_path / "b" / checkpoint.name)
        assert first.keys() == second.keys() and len(first) > 2
        for name in first:
            assert np.array_equal(first[name], second[name]), name
    assert main([*args, "--set", "data.seed=1", "--out", tmp_path / "c"]) == 0
    assert (tmp_path / "c" / "metrics.json").read_bytes() != \
        (tmp_path / "a" / "metrics.json").read_bytes()


def test_overwrite_replaces_only_a_run_directory(tmp_path, capsys):
    assert main(["--set", "train.epochs=1", "--model", "module", "--out", tmp_path / "r"]) == 0
    assert main(["--set", "train.epochs=2", "--model", "module", "--out", tmp_path / "r"]) == 2
    assert main(["--set", "train.epochs=2", "--model", "module", "--out", tmp_path / "r",
                 "--overwrite"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert len(metrics["runs"][0]["loss"]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["--out", tmp_path / "mine", "--overwrite"]) == 2
    assert "has no .linfit-run marker" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_kill_test_script_survives_kills():
    """scripts/kill_test.py with a few kills (the note reports a run with 20)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "kill_test.py"),
                             "--kills", "3", "--epochs", "40", "--seed", "1"],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights identical, history identical" in result.stdout
    # At least one of the kills hit a checkpoint being written (the line is printed
    # with 0 too).
    assert int(result.stdout.split(" during a checkpoint write")[0].rsplit("(", 1)[1]) >= 1


# Resuming from the command line: everything is checked before anything is
# touched (issue 13, items 9 and 10).

RESUMABLE = ["--model", "module", "--loop", "manual", "--set", "train.checkpoint_every=2"]


def snapshot(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def half_run(tmp_path):
    """A run of 6 epochs stopped after 4: its final files removed, its periodic
    checkpoints kept, as a kill leaves it."""
    folder = tmp_path / "run"
    assert main([*RESUMABLE, "--set", "train.epochs=6", "--out", folder]) == 0
    for name in ("metrics.json", "module-manual.weights.h5"):
        (folder / name).unlink()
    (folder / "checkpoints" / "module-manual" / "epoch-0006.weights.h5").unlink()
    return folder


@pytest.mark.parametrize("edit, key", [
    (("learning_rate = 0.1", "learning_rate = 0.2"), "train.learning_rate was 0.1, now 0.2"),
    (("optimizer = \"sgd\"", "optimizer = \"adam\""), "train.optimizer was 'sgd', now 'adam'"),
    (("noise_stddev = 1.0\\nseed = 0", "noise_stddev = 1.0\\nseed = 1"), "data.seed was 0, now 1"),
    (("init_b = 0.0", "init_b = 1.0"), "model.init_b was 0.0, now 1.0"),
])
def test_resume_refuses_a_config_edited_since(half_run, capsys, edit, key):
    config = half_run / "config.toml"
    text = config.read_text()
    old, new = (part.replace("\\n", "\n") for part in edit)
    assert old in text
    config.write_text(text.replace(old, new, 1))
    before = snapshot(half_run)
    assert main(["--resume", half_run]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: ") and err.count("\n") == 1 and key in err
    assert snapshot(half_run) == before  # nothing rewritten, nothing removed


def test_resume_refuses_data_that_changed(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(20)))
    folder = tmp_path / "run"
    assert main([*RESUMABLE, "--data", data, "--set", "train.epochs=4",
                 "--set", "train.learning_rate=0.001", "--out", folder]) == 0
    capsys.readouterr()
    # The same values under another name: predictions would look for the new name.
    data.write_text("size,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(20)))
    assert main(["--resume", folder, "--set", "train.epochs=8"]) == 2
    assert "the data is not what the run was trained on" in capsys.readouterr().err
    data.write_text("x,y\n" + "".join(f"{i},{2 * i + 2}\n" for i in range(20)))
    assert main(["--resume", folder, "--set", "train.epochs=8"]) == 2
    assert "the data is not what the run was trained on" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", ["false", "true"])
def test_resume_refuses_data_changed_anywhere_in_a_large_file(tmp_path, capsys, streaming):
    """One digit of 12,000 rows (260 KB), in the middle, the file's size kept: read
    into memory or streamed, the run that resumes on it is refused."""
    data = tmp_path / "d.csv"
    rows = [f"{i / 1000:.3f},{2 * i / 1000 + 1:.3f}\n" for i in range(12_000)]
    data.write_text("x,y\n" + "".join(rows))
    folder = tmp_path / "run"
    assert main([*RESUMABLE, "--data", data, "--set", "train.epochs=2", "--set",
                 f"data.streaming={streaming}", "--out", folder]) == 0
    rows[6001] = rows[6001].replace("6.001", "6.002")
    data.write_text("x,y\n" + "".join(rows))
    capsys.readouterr()
    assert main(["--resume", folder, "--set", "train.epochs=4"]) == 2
    assert "the data is not what the run was trained on" in capsys.readouterr().err


def test_resume_of_a_complete_run_does_nothing(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*RESUMABLE, "--set", "train.epochs=4", "--out", folder]) == 0
    before = snapshot(folder)
    capsys.readouterr()
    assert main(["--resume", folder]) == 0
    assert "is complete: nothing to do" in capsys.readouterr().out
    assert snapshot(folder) == before
    assert main(["--resume", folder, "--set", "train.epochs=2"]) == 2  # fewer: refused
    assert "has trained 4 epochs: --resume only goes on" in capsys.readouterr().err
    assert snapshot(folder) == before
    # Killed after the runs' final checkpoints, before the results: --resume writes
    # them, training nothing (it said "complete: nothing to do", and left no metrics.json).
    for name in ("metrics.json", "report.md", "timing.json", "loss.png"):
        (folder / name).unlink()
    assert main(["--resume", folder]) == 0
    after = snapshot(folder)
    assert {name: after[name] for name in ("metrics.json", "history.csv", "config.toml")} == \
        {name: before[name] for name in ("metrics.json", "history.csv", "config.toml")}
    assert set(after) == set(before)


def test_resume_of_an_early_stopped_run_keeps_its_decision(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*RESUMABLE, "--set", "data.validation_split=0.2", "--set", "train.epochs=200",
                 "--set", 'train.early_stopping={monitor="val_loss", patience=2}',
                 "--out", folder]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"][0]["stopped_early"] and metrics["runs"][0]["epochs_run"] < 200
    before = snapshot(folder)
    assert main(["--resume", folder, "--set", "train.epochs=300"]) == 0
    assert "is complete: nothing to do" in capsys.readouterr().out
    assert snapshot(folder) == before


def test_a_finished_run_keeps_its_early_stopping_progress_when_another_is_resumed(tmp_path):
    """Two runs: the first finished, the second killed after 4 of 6 epochs, then
    --resume. The first's final checkpoint, written again, kept its EarlyStopping
    progress (it lost it, so extending the run later trained past the stop), and
    metrics.json and history.csv are the straight run's, to the byte (the order of
    early_stopping's keys differed)."""
    settings = ["--model", "module", "--set", "train.checkpoint_every=2", "--set",
                'train.early_stopping={monitor="loss", min_delta=100.0, patience=7}',
                "--set", "train.learning_rate=0.001", "--set", "train.epochs=6"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        assert main([*settings, "--out", folder]) == 0
    for name in ("metrics.json", "module-keras.weights.h5",
                 "checkpoints/module-keras/epoch-0006.weights.h5"):
        (killed / name).unlink()
    assert main(["--resume", killed]) == 0
    assert snapshot(killed).keys() == snapshot(straight).keys()
    for name in ("metrics.json", "history.csv"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    for name in ("module-manual.weights.h5", "module-keras.weights.h5"):
        assert "callbacks" in read_state(straight / name)
        assert read_state(killed / name) == read_state(straight / name), name
    for folder in (straight, killed):  # both stop after 8 epochs: the 7 without a gain
        assert main(["--resume", folder, "--set", "train.epochs=12"]) == 0
        runs = json.loads((folder / "metrics.json").read_text())["runs"]
        assert [run["epochs_run"] for run in runs] == [8, 8]
    assert (killed / "metrics.json").read_bytes() == (straight / "metrics.json").read_bytes()


def test_the_newest_damaged_checkpoint_is_passed_over(half_run, capsys):
    history = (half_run / "history.csv").read_text()  # the straight run's, whole
    newest = half_run / "checkpoints" / "module-manual" / "epoch-0004.weights.h5"
    newest.write_bytes(newest.read_bytes()[:200])  # a torn write
    capsys.readouterr()
    assert main(["--resume", half_run]) == 0
    assert "resumed module-manual after 2 epochs" in capsys.readouterr().out  # not 0, not 4
    metrics = json.loads((half_run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["runs"][0]["epochs_run"] == 6
    assert (half_run / "history.csv").read_text() == history  # as if never stopped


def test_a_run_whose_checkpoints_are_all_damaged_is_not_started_over(half_run, capsys):
    """--resume refuses, naming the newest checkpoint and its damage, and changes
    nothing (it retrained from epoch 0 and replaced history.csv)."""
    checkpoints = sorted((half_run / "checkpoints" / "module-manual").iterdir())
    for path in checkpoints:
        data = bytearray(path.read_bytes())
        data[5000] ^= 0xFF
        path.write_bytes(bytes(data))
    before = {path: path.read_bytes() for path in half_run.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert main(["--resume", half_run]) == 2
    captured = capsys.readouterr()
    assert "Epoch" not in captured.out and captured.err.count("\n") == 1
    assert captured.err.startswith(
        f"error: module-manual: none of its checkpoints reads whole, so it cannot go on from "
        f"one ({checkpoints[-1]} is damaged: ")
    assert captured.err.endswith("restore one from a copy, or start a new run\n")
    assert {path: path.read_bytes() for path in half_run.rglob("*") if path.is_file()} == before


def test_a_checkpoint_too_big_to_read_back_is_never_written(tmp_path, monkeypatch):
    from linfit import weights_file

    trainer, history = train("manual", "sgd", (None, None), epochs=3)
    monkeypatch.setattr(weights_file, "MAX_STATE_BYTES", 600)
    with pytest.raises(CheckpointError, match="its training state, most of it the run's "
                       "history, is more than the 0 MiB a checkpoint holds: train fewer"):
        trainer.save_checkpoint(tmp_path / "m.weights.h5", history)
    assert list(tmp_path.iterdir()) == []


# Trainer.fit(resume_from=...): all or nothing (issue 13.11).

def rewrite_state(path, change):
    """Edit a checkpoint's training state as a program (not damage) would: resealed."""
    from linfit import weights_file

    path.write_bytes(path.read_bytes()[:-weights_file.SEAL_SIZE])
    with h5py.File(path, "a") as f:
        state = json.loads(f[weights_file.STATE][()].tobytes())
        change(state)
        del f[weights_file.STATE]
        f[weights_file.STATE] = np.frombuffer(json.dumps(state).encode(), np.uint8)
    weights_file.seal(path)


@pytest.mark.parametrize("change, error, message", [
    (lambda s: s.update(batch_size=8), ConfigError, "batch_size=8, not 16"),
    (lambda s: s.update(epoch="abc"), CheckpointError, "epoch='abc'"),
    (lambda s: s.update(history={}), CheckpointError, "history does not hold"),
    (lambda s: s.update(epoch=5), CheckpointError, "history does not hold 5 epochs"),
    (lambda s: s.update(callbacks="x"), CheckpointError, "progress is damaged"),
    (lambda s: s.update(resume_weights=[[1.0, 2.0], 3.0]), CheckpointError, "do not fit"),
], ids=["settings", "epoch", "history", "epoch-count", "callbacks", "weights"])
def test_a_bad_training_state_changes_nothing(tmp_path, change, error, message):
    train("manual", "adam", (16, 3), epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    path = tmp_path / "epoch-0002.weights.h5"
    rewrite_state(path, change)
    trainer = Trainer(LinearModel(init_w=1.5), optimizer="adam", learning_rate=0.05)
    trainer.fit(DATA.x, DATA.y, epochs=1, batch_size=16, shuffle_seed=3)  # some state
    before = [v.numpy().copy() for v in (*trainer.model.weights, *trainer.optimizer.variables)]
    with pytest.raises(error, match=message):
        trainer.fit(DATA.x, DATA.y, epochs=6, batch_size=16, shuffle_seed=3, resume_from=path)
    after = [v.numpy() for v in (*trainer.model.weights, *trainer.optimizer.variables)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_resume_from_python_refuses_other_data_or_optimizer(tmp_path):
    train("manual", "sgd", (None, None), epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    path = tmp_path / "epoch-0002.weights.h5"
    with pytest.raises(ConfigError, match="data="):
        Trainer(LinearModel(), learning_rate=0.05).fit(DATA.x, DATA.y + 1, epochs=4,
                                                      resume_from=path)
    with pytest.raises(ConfigError, match="optimizer="):
        Trainer(LinearModel(), learning_rate=0.5).fit(DATA.x, DATA.y, epochs=4,
                                                     resume_from=path)


def test_checkpoints_are_the_same_bytes_whatever_the_hash_seed(tmp_path):
    """Issue 13.13: no stored structure depends on PYTHONHASHSEED."""
    import os

    states = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        subprocess.run([sys.executable, "-m", "linfit.train", *RESUMABLE,
                        "--set", "train.epochs=4", "--set", "data.validation_split=0.2",
                        "--set", 'train.early_stopping={monitor="val_loss", patience=9}',
                        "--out", str(out)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
        with h5py.File(out / "checkpoints" / "module-manual" / "epoch-0002.weights.h5") as f:
            states.append(f["linfit_state"][()].tobytes())
        states.append((out / "metrics.json").read_bytes() + (out / "history.csv").read_bytes())
    assert states[0] == states[2] and states[1] == states[3]


def test_a_metric_that_is_nan_is_checkpointed_and_resumed(tmp_path):
    """A user's metric may be NaN (a batch it cannot score): the checkpoints hold it
    (their JSON refused it, and fit stopped with a ValueError), and a resume from
    one gives the straight run's history and weights."""
    import keras

    def undefined(y, prediction):
        return keras.ops.mean(prediction * 0.0) / 0.0

    def fit(**options):
        trainer = Trainer(LinearModule(), optimizer="adam", metrics=[undefined])
        return trainer, trainer.fit(DATA.x, DATA.y, epochs=4, batch_size=16, **options)

    straight, history = fit(checkpoint_dir=tmp_path, checkpoint_every=1)
    assert np.isnan(history.logs["undefined"]).all() and len(history.logs["undefined"]) == 4
    assert np.isnan(read_state(tmp_path / "epoch-0002.weights.h5")["history"]["logs"][
        "undefined"]).all()
    resumed, again = fit(resume_from=tmp_path / "epoch-0002.weights.h5")
    for name, values in history.columns().items():
        np.testing.assert_array_equal(again.columns()[name], values, err_msg=name)
    assert float(resumed.model.w.numpy()) == float(straight.model.w.numpy())


@pytest.mark.parametrize("where", ["resume", "results"])
def test_a_file_it_may_not_read_or_change_is_one_error_line(half_run, monkeypatch, capsys, where):
    """A permission error (a run directory made read-only, a checkpoint chmod 000)
    while --resume reads the checkpoints, or while the results are written, was a
    traceback. (The tests run as root, which no permission stops: it is raised.)"""
    import errno

    from linfit import checkpoint
    from linfit.rundir import RunDir

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    if where == "resume":
        monkeypatch.setattr(checkpoint, "verify", refused)
    else:
        monkeypatch.setattr(RunDir, "write_results", lambda self, *a: refused(self.path))
    capsys.readouterr()
    assert main(["--resume", half_run]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and ": no permission: " in err


def test_a_resumed_runs_time_per_epoch_is_over_the_epochs_it_trained(half_run):
    """timing.json divided the time since the resume by every epoch, trained before
    or not (the report too)."""
    assert main(["--resume", half_run]) == 0  # epochs 5 and 6, after 4
    (run,) = json.loads((half_run / "timing.json").read_text())["runs"]
    assert run["seconds_per_epoch"] == pytest.approx(run["seconds"] / 2, abs=1e-4)
    row = next(line for line in (half_run / "report.md").read_text().splitlines()
               if line.startswith("| module-manual | ") and line.endswith(" ms |"))
    seconds, per_epoch = row.split("|")[2:4]
    assert float(per_epoch.split()[0]) == pytest.approx(float(seconds) / 2 * 1000, abs=0.3)


def test_resume_reads_relative_data_paths_where_the_run_was_started(tmp_path, monkeypatch):
    """config.toml keeps data.path as given ("d.csv"), relative to where the run was
    started; --resume from another directory could not find it, and refused --data."""
    (tmp_path / "data").mkdir()
    x = np.linspace(0, 1, 30)
    np.savetxt(tmp_path / "data" / "d.csv", np.column_stack([x, 2 * x + 1]), delimiter=",",
               header="x,y", comments="")
    monkeypatch.chdir(tmp_path / "data")
    assert main([*RESUMABLE, "--data", "d.csv", "--set", "train.epochs=3",
                 "--out", tmp_path / "run"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["--resume", "run", "--set", "train.epochs=5"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["runs"][0]["epochs_run"] == 5
    assert 'path = "d.csv"' in (tmp_path / "run" / "config.toml").read_text()
