"""tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy equal one device.

Logical devices must be configured before TensorFlow starts, so these run in
fresh processes. Run them alone with `pytest -m distributed`.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linfit.train import main

pytestmark = pytest.mark.distributed
HERE = Path(__file__).resolve().parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_mirrored_over_two_cpus_equals_one_device():
    result = run(HERE / "helpers" / "mirrored_check.py")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    # A user's Dense(1) (predictions of [N, 1]) in the manual loop: its metrics too.
    assert results.pop("manual-dense")["by"]["mae"] <= 1e-6
    resumed = {loop: results.pop(f"{loop}-resumed") for loop in ("manual", "keras")}
    for loop in ("manual", "keras"):  # CSV shards streamed, split over the devices
        streamed = results.pop(f"{loop}-streamed")
        assert streamed["same"] and {"val_loss", "val_mae"} <= set(streamed["columns"]), loop
    assert set(results) == {f"{loop}-{batch}-{optimizer}" for loop in ("manual", "keras")
                            for batch, optimizer in (("full", "sgd"), ("64", "sgd"),
                                                     ("100", "adam"))}
    # Resumed inside an epoch: the weights to the bit; the epoch's mean loss to its
    # rounding (its sum, restored, is shared out over the replicas' trackers anew).
    for loop, outcome in resumed.items():
        assert outcome["same_weights"] and outcome["epochs"] == 2, loop
        assert max(outcome["by"].values()) <= 1e-6, (loop, outcome)
    for name, outcome in results.items():
        assert outcome["replicas"] == 2 and outcome["epochs"] == 5, name
        # loss, full_loss, val_loss, a metric, each w and b, every epoch
        assert set(outcome["by"]) == {"loss", "mae", "full_loss", "val_loss", "val_mae", "w_0",
                                      "w_1", "w_2", "b"}, name
        assert max(outcome["by"].values()) <= 1e-6, (name, outcome)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default run on one device, in one process: what the others must equal."""
    import contextlib
    import io

    out, stdout = tmp_path_factory.mktemp("single") / "run", io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["--out", str(out)]) == 0
    return out, stdout.getvalue()


def test_cli_devices_and_mirrored_print_the_default_numbers(tmp_path, default_run):
    mirrored = run("-m", "linfit.train", "--devices", "2", "--set", 'train.strategy="mirrored"',
                   "--out", "m", cwd=tmp_path)
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    single_dir, single_stdout = default_run
    assert_same_runs(tmp_path / "m", single_dir)
    guide_lines = [line for line in single_stdout.splitlines() if line.startswith("    W = ")]
    assert len(guide_lines) == 11  # the first run: the start and ten epochs
    assert [line for line in mirrored.stdout.splitlines()
            if line.startswith("    W = ")] == guide_lines
    # The console says what trained it, and so does metrics.json.
    assert ("Devices: MirroredStrategy over 2 devices (CPU:0, CPU:1)"
            in mirrored.stdout.splitlines())
    devices = json.loads((tmp_path / "m" / "metrics.json").read_text())["devices"]
    assert devices["strategy"] == "mirrored" and devices["replicas"] == 2
    assert "- **Devices**: MirroredStrategy over 2 devices" in \
        (tmp_path / "m" / "report.md").read_text()


def assert_same_runs(run_dir, reference_dir, rtol=1e-6):
    """The runs of two run directories: the same models and loops, and the same
    loss, full_loss, w and b every epoch, to rtol."""
    runs = [json.loads((path / "metrics.json").read_text())["runs"]
            for path in (run_dir, reference_dir)]
    assert [(r["model"], r["loop"]) for r in runs[0]] == \
        [(r["model"], r["loop"]) for r in runs[1]]
    assert {r["loop"] for r in runs[0]} == {"manual", "keras"}
    for a, b in zip(*runs):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=rtol)
        for key in ("full_loss", "w", "b"):
            np.testing.assert_allclose([row[key] for row in a["trajectory"]],
                                       [row[key] for row in b["trajectory"]], rtol=rtol)


@pytest.mark.parametrize("args, message", [
    (["--set", 'train.strategy="everywhere"', "--loop", "manual"], "train.strategy"),
    (["--devices", "0", "--loop", "manual"], "--devices 0"),
    (["--devices", "100000", "--set", 'train.strategy="mirrored"'],  # minutes, deaf to signals
     "--devices 100000: give a number of devices from 1 to 64"),
])
def test_strategy_errors(tmp_path, args, message):
    result = run("-m", "linfit.train", *args, "--out", "o", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_whose_cluster_never_meets_stops_in_bounded_time(tmp_path):
    """Worker 1 of two, alone (worker 0 stopped at an error of its own, such as an
    --out that exists): it waited for ever, deaf to SIGTERM. Now it gives up after
    train.worker_timeout, with one error line and exit status 4."""
    import time

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "linfit.train", "--set", 'train.strategy="multiworker"',
         "--set", "train.worker_timeout=2", "--out", tmp_path / "two"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": 1}})})
    assert result.returncode == 4 and time.monotonic() - started < 60
    assert result.stderr == (
        "error: the cluster's other workers did not all join within 2 s "
        "(train.worker_timeout): start the same command on every worker of TF_CONFIG (one "
        "may have stopped at an error of its own)\n")
    assert not (tmp_path / "two").exists()


def readme_worker_commands(ports) -> list[str]:
    """The README's two multi-worker commands, on these ports instead of its own."""
    readme = (HERE.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
                 if "TF_CONFIG" in b)
    commands = [c.replace("\\\n", " ") for c in re.split(r"\n(?=TF_CONFIG=)", block)]
    for readme_port, port in zip(("12345", "12346"), ports):
        commands = [c.replace(readme_port, str(port)) for c in commands]
    return [c.replace("python ", f"{sys.executable} ", 1) for c in commands]


def test_the_readmes_two_worker_commands_equal_one_process_and_only_the_chief_writes(
        tmp_path, default_run):
    commands = readme_worker_commands([free_port(), free_port()])
    assert len(commands) == 2 and all("--out runs/two-workers" in c for c in commands)
    workers = [subprocess.Popen(["bash", "-c", command], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for command in commands]
    try:
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert "the chief writes the run directory" in outputs[1][0]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
            if p.is_dir() and p.name != "tb"] == ["runs", "runs/two-workers"]
    run_dir = tmp_path / "runs" / "two-workers"
    assert_same_runs(run_dir, default_run[0])
    assert_checkpoints_load_on_one_device(run_dir)


def assert_checkpoints_load_on_one_device(run_dir):
    """Every run's checkpoint loads into a new model, here on one device, with the
    run's final weights (and into the other variant: the files are interchangeable)."""
    import linfit

    for entry in json.loads((run_dir / "metrics.json").read_text())["runs"]:
        final = entry["trajectory"][-1]
        for model in (linfit.LinearModule(), linfit.LinearModel()):
            linfit.load_weights(model, run_dir / entry["checkpoint"])
            np.testing.assert_array_equal(np.atleast_1d(model.w.numpy()), final["w"])
            assert float(model.b.numpy()) == final["b"]


def assert_all_succeed(workers: dict, timeout: int) -> dict:
    """Wait for every worker (killing any left after the wait); each must exit 0.
    Returns index -> (stdout, stderr)."""
    try:
        outputs = {index: worker.communicate(timeout=timeout) for index, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.kill()
    assert [worker.returncode for worker in workers.values()] == [0, 0], outputs
    return outputs


def start_workers(cluster, args, cwd, indexes=(0, 1)):
    """Worker processes of `cluster`, each with its own TF_CONFIG and its own
    TMPDIR (cwd/tmp-INDEX), so what a worker leaves there can be checked."""
    import os

    workers = {}
    for index in indexes:
        (cwd / f"tmp-{index}").mkdir(exist_ok=True)
        workers[index] = subprocess.Popen(
            [sys.executable, "-m", "linfit.train", *args], cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TMPDIR": str(cwd / f"tmp-{index}"), "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}})})
    return workers


# Worker 0 is the chief: when it survives it records the failure; when it
# dies, the other worker fails alone and removes its temporary run directory.
@pytest.mark.parametrize("loop, dies", [("manual", 1), ("keras", 0)])
def test_a_dead_worker_fails_the_run_in_bounded_time_and_resume_completes(tmp_path, loop, dies):
    import signal
    import time

    survivor = 1 - dies
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    settings = ["--set", 'train.strategy="multiworker"', "--loop", loop, "--model", "module",
                "--set", "data.batch_size=32", "--set", "train.epochs=12",
                "--set", "train.checkpoint_every=2", "--set", "train.worker_timeout=5"]
    workers = start_workers(cluster, [*settings, "--out", "run"], tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints" / f"module-{loop}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(checkpoints.glob("epoch-*.weights.h5")):
            time.sleep(0.1)
        assert list(checkpoints.glob("epoch-*.weights.h5")), "no checkpoint was written"
        workers[dies].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = workers[survivor].communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        for worker in workers.values():
            worker.kill()
    assert workers[survivor].returncode == 4, stderr[-2000:]
    assert waited < 5 + 30  # the timeout, plus the collective that notices it
    assert "a worker of the cluster stopped responding" in stderr
    assert "Traceback" not in stderr
    if survivor == 0:
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["status"] == "failed"
    else:
        assert not list((tmp_path / "tmp-1").glob("linfit-worker-*"))

    left = set((tmp_path / "tmp-1").glob("linfit-worker-*"))  # by a SIGKILLed worker 1
    workers = start_workers(cluster, ["--resume", "run"], tmp_path)
    assert_all_succeed(workers, timeout=180)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["runs"][0]["loss"]) == 12
    assert set((tmp_path / "tmp-1").glob("linfit-worker-*")) == left


# Shuffled mini-batches with validation files, a metric and Adam, on two workers.
MINI_BATCHES = ["data.batch_size=256", "data.shuffle=true", "data.shuffle_buffer=500",
                'train.metrics=["mae"]', 'train.optimizer="adam"', 'data.validation_path="VAL"']


def streamed_settings(directory, settings: list[str], kind: str = "csv") -> list[str]:
    """The CLI arguments of a streamed run of three shards written in `directory`:
    CSV files, or NPZ files (x float64, y float32) whose arrays each start at another
    offset, as archives written by different programs do."""
    rng = np.random.default_rng(21)
    tables = []
    for rows in (3000, 700):  # training rows, validation rows
        x = rng.uniform(-2, 2, (rows, 2))
        tables.append(np.column_stack([x, x @ [1.5, -0.5] + 0.7 + rng.normal(0, 0.1, rows)]))
    parts = {**{f"part-{i}": part for i, part in enumerate(np.array_split(tables[0], 3))},
             "val-0": tables[1][:400], "val-1": tables[1][400:]}
    for index, (name, part) in enumerate(parts.items()):
        if kind == "npz":
            extra = {"note": np.arange(index * 7)}  # an array before x: moves x's and y's offsets
            np.savez(directory / f"{name}.npz", **extra, x=part[:, :2].astype(np.float64),
                     y=part[:, 2].astype(np.float32))
        else:
            np.savetxt(directory / f"{name}.csv", part, delimiter=",", header="a,b,y",
                       comments="", fmt="%.9g")
    settings = [s.replace("VAL", str(directory / f"val-*.{kind}")) for s in settings]
    return ["--data", str(directory / f"part-*.{kind}"), "--model", "module", "--loop",
            "manual", "--set", "data.streaming=true",
            *[item for s in settings for item in ("--set", s)]]


def assert_same_numbers(run_dir, alone_dir):
    """Every epoch's numbers of two runs, in metrics.json and history.csv, to 1e-6
    relative (and 1e-12 absolute: a standardised run's starting b in data units is 0
    up to float64 rounding, 4e-11, where relative differences mean nothing)."""
    two, alone = (json.loads((d / "metrics.json").read_text())["runs"][0]
                  for d in (run_dir, alone_dir))
    assert (two["model"], two["loop"]) == ("module", "manual")
    np.testing.assert_allclose(two["loss"], alone["loss"], rtol=1e-6, atol=1e-12)
    for key in ("full_loss", "w", "b", *(["val_loss"] if "val_loss" in alone["final"] else [])):
        np.testing.assert_allclose([row[key] for row in two["trajectory"]],
                                   [row[key] for row in alone["trajectory"]], rtol=1e-6, atol=1e-12)
    histories = [(d / "history.csv").read_text().splitlines() for d in (run_dir, alone_dir)]
    assert histories[0][0] == histories[1][0]  # the same columns: mae, val_loss, val_mae
    np.testing.assert_allclose(*[[[float(v) if v else np.nan for v in line.split(",")[2:]]
                                  for line in history[1:]] for history in histories],
                               rtol=1e-6, atol=1e-12)


def test_two_workers_streaming_their_share_of_the_files_equal_one_process(tmp_path):
    """Full-batch gradient descent: each worker reads its share of the three shards
    (worker 0 the first and third, worker 1 the second) and sums its rows' gradient;
    the optimizer adds the two. The run equals one process streaming all of it.
    (Mini-batches, of CSV shards: the next test.) Standardised: each worker sums its
    shards' rows for the means and deviations, and the workers add their sums. NPZ
    shards: each worker reads its shards' arrays at their own offsets."""
    settings = streamed_settings(tmp_path, ["train.epochs=6", "data.standardize=true"], "npz")
    assert main([*settings, "--out", str(tmp_path / "one")]) == 0  # one process: this one
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = start_workers(cluster, [*settings, "--set", 'train.strategy="multiworker"',
                                      "--out", str(tmp_path / "two")], tmp_path)
    outputs = assert_all_succeed(workers, timeout=300)
    assert_same_numbers(tmp_path / "two", tmp_path / "one")
    # Only the chief reports the float64 reference: no other worker reads all the data for it.
    assert [bool(re.search(r"^\s*optimum\s", outputs[index][0], flags=re.M))
            for index in (0, 1)] == [True, False]


def test_two_streaming_workers_killed_in_the_middle_of_an_epoch_resume_as_one_process(tmp_path):
    """Shuffled mini-batches with validation files, `mae` and Adam: every global batch
    is one process's, each worker parsing its rows of it. Both workers SIGKILLed once a
    checkpoint inside epoch 2 of 3 exists and resumed from it (newer ones removed): the run
    equals one process's straight run, every column of history.csv."""
    import signal
    import time

    settings = streamed_settings(tmp_path, [*MINI_BATCHES, "train.epochs=3",
                                            "train.checkpoint_every_batches=4"])
    assert main([*settings, "--out", str(tmp_path / "one")]) == 0  # one process: this one
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = start_workers(cluster, [*settings, "--set", 'train.strategy="multiworker"',
                                      "--out", "two"], tmp_path)
    checkpoints = tmp_path / "two" / "checkpoints" / "module-manual"
    inside = "epoch-0001-batch-000008.weights.h5"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (checkpoints / inside).exists():
            time.sleep(0.02)
    finally:
        killed = {}
        for index, worker in workers.items():
            worker.send_signal(signal.SIGKILL)
            killed[index] = worker.communicate()
    assert (checkpoints / inside).exists()
    assert not any("eagerly has significant overhead" in err for _, err in killed.values())
    assert not (tmp_path / "two" / "module-manual.weights.h5").exists()  # killed while training
    for newer in [p for p in checkpoints.iterdir() if p.name > inside]:
        newer.unlink()
    older = {p.name: p.stat().st_mtime_ns for p in checkpoints.iterdir() if p.name <= inside}
    workers = start_workers(cluster, ["--resume", "two"], tmp_path)
    assert_all_succeed(workers, timeout=300)
    assert {name: (checkpoints / name).stat().st_mtime_ns for name in older} == older  # resumed
    assert_same_numbers(tmp_path / "two", tmp_path / "one")
    assert {"mae", "val_loss", "val_mae"} <= set(
        (tmp_path / "two" / "history.csv").read_text().splitlines()[0].split(","))


def test_streaming_workers_that_diverge_stop_together_at_the_same_batch(tmp_path):
    """In order, batches 0-9 are all worker 0's rows: worker 1, which has none of
    batch 9's, still stops there with the divergence, not on a lost peer. Four
    updates a call: the call that meets it is undone and run again one by one."""
    settings = streamed_settings(tmp_path, ["data.batch_size=100", "train.learning_rate=40",
                                            "train.worker_timeout=10", "train.steps_per_call=4"])
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = start_workers(cluster, [*settings, "--set", 'train.strategy="multiworker"',
                                      "--out", "two"], tmp_path)
    outputs = {index: worker.communicate(timeout=120) for index, worker in workers.items()}
    assert [workers[index].returncode for index in (0, 1)] == [3, 3]
    errors = [outputs[index][1].strip().splitlines()[-1] for index in (0, 1)]
    assert errors[0] == errors[1] and errors[0].startswith(
        "error: module-manual: training diverged at epoch 0, batch 9:")


def test_a_bad_row_in_the_chiefs_share_stops_both_workers_with_one_line_each(tmp_path):
    """The chief finds the row (its reference pass reads every file); the other worker,
    which skips that pass, loses the chief while making its variables: exit 4, one line."""
    settings = streamed_settings(tmp_path, ["train.epochs=2", "data.batch_size=100",
                                            "train.worker_timeout=5"])
    lines = (tmp_path / "part-2.csv").read_text().splitlines()
    lines[800] = "1,abc,2"
    (tmp_path / "part-2.csv").write_text("\n".join(lines) + "\n")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = start_workers(cluster, [*settings, "--set", 'train.strategy="multiworker"',
                                      "--out", "two"], tmp_path)
    outputs = {index: worker.communicate(timeout=120) for index, worker in workers.items()}
    assert [workers[index].returncode for index in (0, 1)] == [2, 4]
    errors = [[line for line in outputs[index][1].splitlines() if line.startswith("error:")]
              for index in (0, 1)]
    assert errors[0] == [f"error: {tmp_path / 'part-2.csv'}, line 801, column 'b': "
                         "'abc' is not a number"]
    assert len(errors[1]) == 1 and "a worker of the cluster stopped responding" in errors[1][0]
    assert all("Traceback" not in outputs[index][1] for index in (0, 1))


def test_streaming_on_local_devices_equals_one_device(tmp_path):
    """`--devices 2` with train.strategy = "mirrored" streams a CSV file (it was
    refused): both loops equal one device's streaming run."""
    table = np.random.default_rng(2).uniform(-1, 1, size=(150, 3))
    table[:, 2] = table[:, :2] @ [2.0, -1.0] + 0.3
    np.savetxt(tmp_path / "d.csv", table, delimiter=",", header="a,b,y", comments="")
    settings = ["--data", tmp_path / "d.csv", "--model", "module", "--set",
                "data.streaming=true", "--set", "data.batch_size=40", "--set", "train.epochs=4"]
    mirrored = run("-m", "linfit.train", *settings, "--devices", "2", "--set",
                   'train.strategy="mirrored"', "--out", tmp_path / "mirrored")
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    assert "MirroredStrategy over 2 devices" in mirrored.stdout
    assert main([*settings, "--out", tmp_path / "one"]) == 0
    assert json.loads((tmp_path / "mirrored" / "metrics.json").read_text())["data"]["streamed"]
    assert_same_runs(tmp_path / "mirrored", tmp_path / "one")


def test_a_streamed_full_batch_too_big_for_one_chunk_is_refused_on_local_devices():
    """Local devices split each batch whole: a full batch above one chunk would be
    held in memory (the manual loop sums it in chunks on one device or per worker)."""
    from types import SimpleNamespace

    from linfit import ConfigError
    from linfit.fit_inputs import check_streamable
    from linfit.pipeline import FULL_PASS_ROWS

    devices = SimpleNamespace(num_replicas_in_sync=2)
    check_streamable(FULL_PASS_ROWS, None, ("manual",), devices)  # one chunk: taken whole
    check_streamable(10 * FULL_PASS_ROWS, 1024, ("manual", "keras"), devices)
    with pytest.raises(ConfigError, match=f"a full batch of {FULL_PASS_ROWS + 1} streamed rows "
                       "on several local devices would be held whole: set data.batch_size"):
        check_streamable(FULL_PASS_ROWS + 1, None, ("manual",), devices)
