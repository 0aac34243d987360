"""A hostile world (issue 14): corrupt files, bombs, signals, full disks, bad paths and odd
inputs each end in one clear `error:` line (or a clean stop), with nothing half-written.

The trusted tools of the kind test exactly these: TensorFlow's CheckpointManager
and failure_handler tests (signals, resume), SQLite's I/O-error and fuzz tests
(full disks, flipped bytes), h5py's own hardening (hostile HDF5).
"""

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from linfit import CheckpointError, LinearModule, Trainer, load_weights, save_weights
from linfit import weights_file
from linfit.train import main

QUICK = ["--model", "module", "--loop", "manual", "--set", "train.epochs=3"]
SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def cli(*args, cwd, env=None, timeout=120, limit=None, unprivileged=False):
    """`python -m linfit.train ARGS` in a fresh process (optionally under a file-size
    limit, or as root without the privilege to ignore file permissions)."""
    command = [sys.executable, "-m", "linfit.train", *map(str, args)]
    if unprivileged and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        command = [*SETPRIV, *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})},
                          preexec_fn=None if limit is None else lambda: resource.setrlimit(
                              resource.RLIMIT_FSIZE, (limit, limit)))


def assert_one_error_line(stderr, *fragments):
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


# 1-3. Damaged and hostile checkpoints.

def flipped_copies(path, positions):
    """Each position's copy of the file with that byte inverted, one at a time."""
    data = path.read_bytes()
    copy = path.with_name("flipped.weights.h5")
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        copy.write_bytes(bytes(damaged))
        yield copy


def assert_flips_load_or_refuse(path, model, positions):
    original = [np.copy(w) for w in model.get_weights()] if hasattr(model, "get_weights") \
        else None
    target = keras.models.clone_model(model) if isinstance(model, keras.Model) else \
        LinearModule(init_w=-1.0, init_b=-1.0)
    if isinstance(model, keras.Model):
        target.set_weights([np.full_like(w, -1.0) for w in model.get_weights()])
    outcomes = {"loaded": 0, "refused": 0}

    def state(m):
        return [np.copy(v.numpy()) for v in (m.weights if isinstance(m, keras.Model)
                                             else (m.w, m.b))]

    expected = state(model) if original is None else original
    for copy in flipped_copies(path, positions):
        before = state(target)
        try:
            load_weights(target, copy)
        except CheckpointError:
            assert all(np.array_equal(a, b) for a, b in zip(state(target), before))
            outcomes["refused"] += 1
        else:
            assert all(np.array_equal(a, b) for a, b in zip(state(target), expected))
            outcomes["loaded"] += 1
    return outcomes


def test_flipped_bytes_of_a_checkpoint_load_whole_or_are_refused(tmp_path, guide_data):
    # A seeded sample of 2000 positions (every one of its ~13,000 bytes was tried
    # once, by hand: 12,784 refused, 16 loaded with the original values).
    trainer = Trainer(LinearModule(), optimizer="adam")
    history = trainer.fit(guide_data.x, guide_data.y, epochs=3)
    path = trainer.save_checkpoint(tmp_path / "m.weights.h5", history)
    positions = random.Random(1).sample(range(path.stat().st_size), 2000)
    outcomes = assert_flips_load_or_refuse(path, trainer.model, positions)
    assert outcomes["refused"] > 1900 and sum(outcomes.values()) == 2000


def test_sampled_flipped_bytes_of_a_layered_keras_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3, activation="tanh"),
                            keras.layers.Dense(1)])
    path = save_weights(mlp, tmp_path / "mlp.weights.h5")
    positions = random.Random(0).sample(range(path.stat().st_size), 2000)
    outcomes = assert_flips_load_or_refuse(path, mlp, positions)
    assert outcomes["refused"] > 1900


def test_a_file_without_linfits_seal_still_fails_as_checkpoint_error(tmp_path):
    # Plain Keras writes no seal: whatever h5py raises on a damaged copy is ours.
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    plain.save_weights(tmp_path / "plain.weights.h5")
    refused = 0
    for copy in flipped_copies(tmp_path / "plain.weights.h5", range(0, 2048, 8)):
        try:
            load_weights(plain, copy)
        except CheckpointError:
            refused += 1
    assert refused > 0


def hostile(tmp_path, build, name="hostile.weights.h5"):
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        build(f)
    return path


def test_a_state_bomb_and_a_deep_state_are_refused_unread(tmp_path):
    def big_state(f):
        group = f.create_group("vars")
        group.create_dataset("0", data=np.float32(1.0))
        group.create_dataset("1", data=np.float32(0.0))
        f.create_dataset(weights_file.STATE, shape=(2**30,), dtype=np.uint8, chunks=(4096,))

    def deep_state(f):
        group = f.create_group("vars")
        group.create_dataset("0", data=np.float32(1.0))
        group.create_dataset("1", data=np.float32(0.0))
        text = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
        f.create_dataset(weights_file.STATE, data=np.frombuffer(text.encode(), np.uint8))

    from linfit.checkpoint import read_state

    with pytest.raises(CheckpointError, match="not the text linfit writes"):
        read_state(hostile(tmp_path, big_state))
    with pytest.raises(CheckpointError, match="not valid JSON|nested too deeply"):
        read_state(hostile(tmp_path, deep_state, "deep.weights.h5"))


def test_a_hostile_file_for_a_layered_model_is_a_checkpoint_error(tmp_path):
    """A CheckpointError raised inside h5py's visitor once came out as SystemError."""
    mlp = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2), keras.layers.Dense(1)])

    def soft_link(f):
        f.create_group("layers")
        f["layers/dense"] = h5py.SoftLink("/elsewhere")

    with pytest.raises(CheckpointError, match="SoftLink"):
        load_weights(mlp, hostile(tmp_path, soft_link))


def peak_memory_mb(command, cwd):
    """The peak resident memory (MB) of a child process running `command`."""
    code = ("import resource, subprocess, sys\n"
            f"subprocess.run({command!r}, cwd={str(cwd)!r}, capture_output=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    return float(result.stdout.strip())


def test_bombs_cost_no_memory(tmp_path):
    """An 8 KB checkpoint that declares a huge w, and a 2 MB NPZ that inflates to
    2 GB, are refused from their headers: within 100 MB of the interpreter's own."""
    def huge_w(f):
        group = f.create_group("vars")
        group.create_dataset("0", shape=(2**28,), dtype="<f8", chunks=(1024,))
        group.create_dataset("1", data=np.float64(0.0))

    bomb = hostile(tmp_path, huge_w)
    assert bomb.stat().st_size < 16_000
    (tmp_path / "d.csv").write_text("x\n1\n")
    npz = tmp_path / "bomb.npz"
    import io
    import zipfile

    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (2**28,)})
            for _ in range(2**31 // 2**24):
                f.write(bytes(2**24))
        buffer = io.BytesIO()
        np.save(buffer, np.arange(3.0))
        archive.writestr("y.npy", buffer.getvalue())
    assert npz.stat().st_size < 3_000_000
    python = [sys.executable, "-c", "import linfit.train, linfit.predict"]
    baseline = peak_memory_mb(python, tmp_path)
    predict = [sys.executable, "-m", "linfit.predict", "--checkpoint", str(bomb), "--data",
               str(tmp_path / "d.csv")]
    train = [sys.executable, "-m", "linfit.train", "--data", str(npz), "--out", "o"]
    for command in (predict, train):
        assert peak_memory_mb(command, tmp_path) < baseline + 100
    result = subprocess.run(predict, capture_output=True, text=True, timeout=60)
    assert_one_error_line(result.stderr, "is not a checkpoint of f(x) = x·W + b")


# 4. Signals.

SLOW = ["--model", "module", "--loop", "manual", "--set", "data.num_examples=2000",
        "--set", "data.batch_size=20", "--set", "train.epochs=80",
        "--set", "train.checkpoint_every=10", "--set", "train.learning_rate=0.01"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals") / "straight"
    assert main([*SLOW, "--out", out]) == 0
    return json.loads((out / "metrics.json").read_text())["runs"]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_safe_point_and_resume_finishes_the_run(tmp_path, uninterrupted,
                                                                     signum, status):
    # As from a terminal: pytest started in the background (`pytest &`, nohup) passes on
    # an ignored SIGINT, which linfit rightly leaves ignored, and the run would finish.
    process = subprocess.Popen([sys.executable, "-m", "linfit.train", *SLOW, "--out", "run"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                           signal.SIG_DFL))
    history = tmp_path / "run" / "history.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (
            not history.exists() or history.read_text().count("\n") < 12):
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith("interrupted at epoch ") and "resume with --resume run" in stderr
    epochs = int(stderr.split("interrupted at epoch ")[1].split(":")[0])
    assert 10 <= epochs < 80
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert metrics["runs"][0]["status"] == "interrupted"
    assert metrics["runs"][0]["epochs_run"] == epochs
    # That epoch's checkpoint is written (checkpoint_every=10 would hide its absence:
    # a resume from the one before it finishes bitwise too).
    from linfit.checkpoint import read_state

    assert read_state(tmp_path / "run" / "module-manual.weights.h5")["epoch"] == epochs
    assert main(["--resume", tmp_path / "run"]) == 0
    finished = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert finished["status"] == "complete" and finished["runs"] == uninterrupted


# 5. A full disk.

# history.csv meets the limit first; or a checkpoint does (HDF5 failed to close it,
# h5py failed again as it was freed, and the process crashed at exit).
@pytest.mark.parametrize("epochs, every, limit", [(20000, 500, 200_000), (200, 10, 20_480)])
def test_a_full_disk_is_one_line_and_leaves_only_whole_files(tmp_path, epochs, every, limit):
    result = cli("--model", "module", "--loop", "manual", "--set", f"train.epochs={epochs}",
                 "--set", f"train.checkpoint_every={every}", "--out", "run", cwd=tmp_path,
                 limit=limit)
    assert result.returncode == 2, result.stderr[-3000:]
    assert_one_error_line(result.stderr, "cannot write", "run/",
                          "the file would pass the file-size limit")
    run = tmp_path / "run"
    assert not list(run.rglob(".*.tmp*"))  # no temporary file left
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("model,loop,epoch") and len(rows) > 20
    assert all(row.count(",") == 6 and row.split(",")[2].isdigit() for row in rows[1:])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "cannot write" in metrics["error"]
    for checkpoint in run.rglob("*.weights.h5"):
        load_weights(LinearModule(), checkpoint)  # whole, or it would raise


# 6-9. Output paths and inputs: one error line, exit 2, no run directory.

def test_out_in_a_read_only_directory_and_under_an_unwritable_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for out in ("locked/run", "locked/deeper/run"):
        result = cli(*QUICK, "--out", out, cwd=tmp_path, unprivileged=True)
        assert result.returncode == 2
        assert_one_error_line(result.stderr, "cannot write the run directory",
                              "Permission denied")
    assert list(locked.iterdir()) == []


def test_an_unreadable_data_or_config_file(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n1,2\n")
    (tmp_path / "c.toml").write_text("[train]\nepochs = 2\n")
    (tmp_path / "d.csv").chmod(0)
    (tmp_path / "c.toml").chmod(0)
    for args, fragment in ((["--data", "d.csv"], "data file d.csv cannot be read"),
                           (["--config", "c.toml"], "config file c.toml cannot be read")):
        result = cli(*QUICK, *args, "--out", "o", cwd=tmp_path, unprivileged=True)
        assert result.returncode == 2
        assert_one_error_line(result.stderr, fragment, "Permission denied")
        assert not (tmp_path / "o").exists()


def test_predict_out_a_directory_is_refused_before_anything(tmp_path):
    save_weights(LinearModule(), tmp_path / "m.weights.h5")
    (tmp_path / "d.csv").write_text("x\n1\n")
    result = subprocess.run([sys.executable, "-m", "linfit.predict", "--checkpoint",
                             "m.weights.h5", "--data", "d.csv", "--out", "."], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "--out . is a directory")


def npz_bytes(**arrays):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def declaring_npz(shape):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue())
        archive.writestr("y.npy", header.getvalue())
    return buffer.getvalue()


BAD_INPUTS = {
    "non-UTF-8 after 8 KB": ("d.csv", b"x,y\n" + b"1,2\n" * 3000 + b"3,\xff4\n",
                             "d.csv, line 3002: not UTF-8 text"),
    "a header field over 131072 characters": ("d.csv", b"x," + b"y" * 140_000 + b"\n1,2\n",
                                              "d.csv, line 1: field larger than field limit"),
    ".npy renamed .npz": ("d.npz", npy_bytes(np.arange(3.0)), "d.npz is not an NPZ archive"),
    "a text file named .npz": ("d.npz", b"x,y\n1,2\n", "d.npz is not an NPZ archive"),
    "an upper-case .NPZ of text": ("d.NPZ", b"x,y\n1,2\n", "d.NPZ is not an NPZ archive"),
    "a truncated .npz": ("d.npz", npz_bytes(x=np.arange(99.0), y=np.arange(99.0))[:900],
                         "d.npz is damaged or truncated"),
    "an NPZ declaring 2**40 values": ("d.npz", declaring_npz((2**40,)),
                                      "declares [1099511627776] values of float64 but holds"),
    "an NPZ x of shape [N, 0]": ("d.npz", npz_bytes(x=np.zeros((3, 0)), y=np.zeros(3)),
                                 "d.npz: x has 0 features"),
    "an NPZ y of shape [N, 0]": ("d.npz", npz_bytes(x=np.zeros((3, 2)), y=np.zeros((3, 0))),
                                 "d.npz: y has 0 targets"),
    "timedelta NPZ values": ("d.npz", npz_bytes(x=np.arange(3).astype("m8[s]"), y=np.zeros(3)),
                             "d.npz: x must be real numbers, got timedelta64[s]"),
    "complex NPZ values": ("d.npz", npz_bytes(x=np.arange(3) + 1j, y=np.zeros(3)),
                           "d.npz: x must be real numbers"),
    "1_000 in a cell": ("d.csv", b"x,y\n1,2\n1_000,3\n", "d.csv, line 3, column 'x': '1_000'"),
    "full-width digits": ("d.csv", "x,y\n1,2\n１２,3\n".encode(), "line 3, column 'x': '１２'"),
    "1e39 in a CSV": ("d.csv", b"x,y\n1,2\n1e39,3\n", "line 3, column 'x': 1e+39 overflows"),
    "1e39 in a float64 NPZ": ("d.npz", npz_bytes(x=np.array([1.0, 1e39]), y=np.zeros(2)),
                              "x in row 1: 1e+39 overflows float32"),
    "a constant feature to standardise": ("d.csv", b"a,b,y\n1,5,2\n2,5,3\n",
                                          "feature(s) b are constant"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line_and_no_run_directory(tmp_path, capfd, case):
    name, content, fragment = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(content)
    extra = ["--set", "data.standardize=true"] if "standardise" in case else []
    assert main([*QUICK, "--data", tmp_path / name, *extra, "--out", tmp_path / "o"]) == 2
    captured = capfd.readouterr()
    assert_one_error_line(captured.err, fragment)
    assert captured.out == "" and not (tmp_path / "o").exists()


def test_cr_only_line_endings_and_blank_lines_are_read(tmp_path):
    from linfit.data import read_data_file

    (tmp_path / "mac.csv").write_bytes(b"x,y\r1,2\r   \r3,4\r\r5,7\r")
    data = read_data_file(tmp_path / "mac.csv")
    np.testing.assert_array_equal(data.x, [1, 3, 5])
    np.testing.assert_array_equal(data.y, [2, 4, 7])


@pytest.mark.parametrize("settings, fragment", [
    (["--set", "train.seed=4294967296"], "train.seed = 4294967296 is impossible"),
    (["--set", "data.num_examples=100000000000"], "needs about"),
    (["--set", "data.true_w=1e39", "--set", "data.num_examples=10"], "finite in float32"),
    (["--set", 'train.strategy="multiworker"'], "TF_CONFIG's cluster must map"),
    (["--set", 'train.strategy="multiworker"'], "TF_CONFIG's task index 5"),
], ids=["seed", "num-examples", "synthetic-overflow", "tf-config-cluster", "tf-config-index"])
def test_errors_known_before_tensorflow_are_said_before_it_loads(tmp_path, settings, fragment):
    tf_config = {"cluster": ["127.0.0.1:1"], "task": {"type": "worker", "index": 0}} \
        if "cluster" in fragment else \
        {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 5}}
    code = ("import sys\nfrom linfit.train import main\n"
            f"status = main({[*QUICK, *settings, '--out', 'o']!r})\n"
            "print('tensorflow' in sys.modules)\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "TF_CONFIG": json.dumps(tf_config)})
    assert result.returncode == 2 and result.stdout == "False\n"
    assert_one_error_line(result.stderr, fragment)
    assert not (tmp_path / "o").exists()


def test_a_pipe_or_a_device_is_named_for_what_it_is(tmp_path, capfd):
    os.mkfifo(tmp_path / "pipe.csv")
    os.mkfifo(tmp_path / "pipe.weights.h5")
    (tmp_path / "d.csv").write_text("x\n1\n")
    assert main([*QUICK, "--data", tmp_path / "pipe.csv", "--out", tmp_path / "o"]) == 2
    assert_one_error_line(capfd.readouterr().err, "is not a regular file (a pipe")
    assert main([*QUICK, "--config", "/dev/null", "--out", tmp_path / "o"]) == 2
    assert_one_error_line(capfd.readouterr().err, "/dev/null is not a regular file")
    from linfit.predict import main as predict

    assert predict(["--checkpoint", tmp_path / "pipe.weights.h5", "--data",
                    tmp_path / "d.csv"]) == 2
    assert_one_error_line(capfd.readouterr().err, "is not a regular file (a pipe?)")
    assert not (tmp_path / "o").exists()


def test_a_path_of_5000_characters(tmp_path, capfd):
    long = tmp_path / ("d" * 5000 + ".csv")
    assert main([*QUICK, "--data", long, "--out", tmp_path / "o"]) == 2
    assert_one_error_line(capfd.readouterr().err, "cannot be read: File name too long",
                          "characters)")
    assert main([*QUICK, "--out", tmp_path / ("o" * 5000)]) == 2
    assert_one_error_line(capfd.readouterr().err, "File name too long")


# 10. A successful run says nothing on stderr.

@pytest.mark.parametrize("args", [
    ["--set", "train.optimizer=adam", "--set", "data.batch_size=32", "--set",
     "data.shuffle=true", "--set", "data.validation_split=0.2", "--set", "train.epochs=40"],
    ["--config", "configs/three_features.toml", "--set", "data.validation_split=0.2",
     "--set", "data.standardize=true"],
    ["--data", "EXACT", "--set", "model.init_w=2", "--set", "model.init_b=0"],
    ["--set", "train.compile=xla", "--set", "train.epochs=3"],
], ids=["adam-shuffled-validation", "three-features-standardised", "exact-fit-log-scale", "xla"])
def test_a_successful_run_says_nothing_on_stderr(tmp_path, capfd, monkeypatch, args):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    (tmp_path / "exact.csv").write_text("x,y\n1,2\n2,4\n3,6\n")
    args = [str(tmp_path / "exact.csv") if a == "EXACT" else a for a in args]
    assert main([*args, "--out", tmp_path / "run"]) == 0
    assert capfd.readouterr().err == ""


# 11. Two processes on one run directory.

def test_a_second_process_on_a_running_directory_is_refused(tmp_path):
    endless = [*SLOW, "--set", "train.epochs=100000"]  # killed below, still running
    process = subprocess.Popen([sys.executable, "-m", "linfit.train", *endless, "--out", "run"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        history = tmp_path / "run" / "history.csv"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not history.exists():
            time.sleep(0.05)
        result = cli("--resume", "run", cwd=tmp_path)
        assert result.returncode == 2
        assert_one_error_line(result.stderr, "is in use by another linfit process",
                              f"(pid {process.pid})")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_file_that_changes_before_the_second_run_keeps_the_first(tmp_path, monkeypatch,
                                                                    capsys):
    """A streamed file appended to once module-manual has finished: module-keras stops
    with one line (exit 2), and the finished run keeps its final checkpoint, its
    metrics.json entry and its history.csv rows, as a diverged run's would."""
    from linfit import experiment

    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i / 10},{i / 5 + 1}\n" for i in range(50)))
    train_one = experiment._train_one

    def appending_before_the_second(experiment_, inputs, y, label, *args):
        if str(label) == "module-keras":
            with data.open("a") as f:
                f.write("9,9\n")
        return train_one(experiment_, inputs, y, label, *args)

    monkeypatch.setattr(experiment, "_train_one", appending_before_the_second)
    run = tmp_path / "run"
    assert main(["--data", data, "--set", "data.streaming=true", "--model", "module",
                 "--set", "train.epochs=3", "--out", run]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has changed since it was checked" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert [entry["model"] + "-" + entry["loop"] for entry in metrics["runs"]] == [
        "module-manual"]
    saved = LinearModule()
    load_weights(saved, run / "module-manual.weights.h5")
    assert float(saved.b.numpy()) == metrics["runs"][0]["final"]["b"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4 and all(line.startswith("module,manual,") for line in history[1:])
