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

from linfit import (CheckpointError, DivergenceError, LinearModel, LinearModule, Trainer,
                    load_weights)
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
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        train("manual", "sgd", (16, 3), resume_from=tmp_path / "plain.weights.h5")


def test_periodic_checkpoints_keep_the_newest_and_each_loads(tmp_path):
    trainer, history = train("keras", "adam", (16, None), epochs=7, checkpoint_dir=tmp_path,
                             checkpoint_every=2, keep_checkpoints=2)
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names == ["epoch-0004.weights.h5", "epoch-0006.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary files left
    state = read_state(tmp_path / names[-1])
    assert state["epoch"] == 6 and len(state["history"]["logs"]["loss"]) == 6
    model = LinearModule()
    load_weights(model, tmp_path / names[-1])
    assert float(model.w.numpy()) == pytest.approx(float(np.asarray(history.w[6])), abs=0)


def test_divergence_stops_before_the_bad_update(tmp_path):
    model = LinearModule()
    trainer = Trainer(model, learning_rate=5.0)
    with pytest.raises(DivergenceError) as error:
        trainer.fit(DATA.x, DATA.y, epochs=100, checkpoint_dir=tmp_path, checkpoint_every=1)
    epoch = error.value.epoch
    assert error.value.batch == 0 and 5 < epoch < 100
    assert f"diverged at epoch {epoch}, batch 0" in str(error.value)
    # No update with a non-finite loss was applied: the weights are finite. The
    # history ends at the last epoch whose loss was finite, and so do the checkpoints.
    history = error.value.history
    assert np.isfinite(model.w.numpy()) and np.isfinite(history.full_loss).all()
    last_good = len(history.full_loss) - 1
    assert last_good in (epoch, epoch - 1)
    newest = list_checkpoints(tmp_path)[-1]
    assert newest.name == f"epoch-{last_good:04d}.weights.h5"
    restored = LinearModule()
    load_weights(restored, newest)
    assert float(restored.w.numpy()) == float(np.asarray(history.w[-1]))
    assert np.isfinite(restored.w.numpy())


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
    assert main(["--resume", tmp_path / "resumed", "--set", "train.epochs=6"]) == 0
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text())
               for name in ("straight", "resumed")]
    assert metrics[0]["runs"] == metrics[1]["runs"]
    # A finished run resumes to itself (its final checkpoints say where it stood).
    assert main(["--resume", tmp_path / "resumed", "--set", "train.epochs=6"]) == 0
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
    assert "has no config.toml" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_kill_test_script_survives_kills():
    """scripts/kill_test.py with a few kills (the note reports a run with 20)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "kill_test.py"),
                             "--kills", "3", "--epochs", "300", "--seed", "1"],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights identical, history identical" in result.stdout
    assert "during a checkpoint write" in result.stdout
