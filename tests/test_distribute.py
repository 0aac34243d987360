"""tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy equal one device.

Logical devices must be configured before TensorFlow starts, so these run in
fresh processes. Run them alone with `pytest -m distributed`.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.distributed
HERE = Path(__file__).resolve().parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_mirrored_over_two_cpus_equals_one_device():
    result = run(HERE / "helpers" / "mirrored_check.py")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results.pop("keras-full-refused") is True  # 201 rows over 2 replicas
    assert set(results) == {"manual-full", "manual-64", "keras-64"}  # 64: partial last 9
    for name, outcome in results.items():
        assert outcome["replicas"] == 2 and outcome["epochs"] == 5, name
        differences = dict(outcome["by"])
        if name.startswith("keras"):
            # Keras's own `loss` log averages per-replica means: with a partial last
            # batch split 5/4 it is not one device's mean. Everything else is.
            assert differences.pop("loss") < 1.0
        assert max(differences.values()) <= 1e-6, (name, outcome)


def test_cli_devices_and_mirrored_print_the_default_numbers(tmp_path):
    mirrored = run("-m", "linfit.train", "--devices", "2", "--set", 'train.strategy="mirrored"',
                   "--loop", "manual", "--out", "m", cwd=tmp_path)
    single = run("-m", "linfit.train", "--loop", "manual", "--out", "s", cwd=tmp_path)
    assert mirrored.returncode == 0 and single.returncode == 0, mirrored.stderr
    runs = [json.loads((tmp_path / name / "metrics.json").read_text())["runs"]
            for name in ("m", "s")]
    for a, b in zip(*runs):
        for key in ("full_loss", "b"):
            np.testing.assert_allclose([row[key] for row in a["trajectory"]],
                                       [row[key] for row in b["trajectory"]], rtol=1e-6)
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    last = [line for line in mirrored.stdout.splitlines() if line.startswith("    W = ")][-1]
    assert last in single.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", 'train.strategy="mirrored"'], "unless train.loop = \"manual\""),
    (["--set", 'train.strategy="everywhere"', "--loop", "manual"], "train.strategy"),
    (["--devices", "0", "--loop", "manual"], "--devices 0"),
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


def test_multiworker_two_processes_equal_one_and_only_the_chief_writes(tmp_path):
    import os

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    args = [sys.executable, "-m", "linfit.train", "--set", 'train.strategy="multiworker"',
            "--loop", "manual", "--set", "data.batch_size=64", "--out", "run"]
    workers = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CONFIG": json.dumps(
                                    {"cluster": cluster,
                                     "task": {"type": "worker", "index": index}})})
               for index in (0, 1)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert "the chief writes the run directory" in outputs[1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run directory
    single = run("-m", "linfit.train", "--loop", "manual", "--set", "data.batch_size=64",
                 "--out", str(tmp_path / "single"))
    assert single.returncode == 0
    runs = [json.loads((tmp_path / name / "metrics.json").read_text())["runs"]
            for name in ("run", "single")]
    for a, b in zip(*runs):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
        for key in ("full_loss", "b"):
            np.testing.assert_allclose([row[key] for row in a["trajectory"]],
                                       [row[key] for row in b["trajectory"]], rtol=1e-6)


def start_workers(cluster, args, cwd, indexes=(0, 1)):
    import os

    return {index: subprocess.Popen(
        [sys.executable, "-m", "linfit.train", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in indexes}


def test_a_dead_worker_fails_the_run_in_bounded_time_and_resume_completes(tmp_path):
    import signal
    import time

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    settings = ["--set", 'train.strategy="multiworker"', "--loop", "manual", "--model", "module",
                "--set", "data.batch_size=16", "--set", "train.epochs=120",
                "--set", "train.checkpoint_every=5", "--set", "train.worker_timeout=5"]
    workers = start_workers(cluster, [*settings, "--out", "run"], tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints" / "module-manual"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(checkpoints.glob("epoch-*.weights.h5")):
            time.sleep(0.1)
        assert list(checkpoints.glob("epoch-*.weights.h5")), "no checkpoint was written"
        workers[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = workers[0].communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        for worker in workers.values():
            worker.kill()
    assert workers[0].returncode == 4, stderr[-2000:]
    assert waited < 5 + 30  # the timeout, plus the collective that notices it
    assert "a worker of the cluster stopped responding" in stderr
    assert "Traceback" not in stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed"

    workers = start_workers(cluster, ["--resume", "run"], tmp_path)
    try:
        outputs = {index: worker.communicate(timeout=180) for index, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.kill()
    assert [worker.returncode for worker in workers.values()] == [0, 0], outputs
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["runs"][0]["loss"]) == 120
