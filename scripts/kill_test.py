"""Kill a training run again and again; it must always resume to the same result.

    python scripts/kill_test.py --kills 20

Trains the guide's data in shuffled mini-batches with Adam, saving a
checkpoint every epoch (keeping 3), once without interruption (the
reference) and once under fire: the run is started, SIGKILLed, resumed with
`--resume`, killed again, ... `--kills` times. The kills take turns: at a
random moment of start-up, at a random moment of training, and while a
checkpoint write is in progress (a temporary file beside the checkpoints;
the killed runs start through a wrapper that holds each checkpoint write
open for 10 ms before its rename, so that it can be caught). After every kill, every checkpoint
under its final name must load, with finite values. Finally the run is
resumed to the end, and its weights and metrics.json must equal the
reference's, bit for bit. Exits 0 when all of that holds.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABEL = "module-manual"
SETTINGS = ["--model", "module", "--loop", "manual", "--set", "train.optimizer=adam",
            "--set", "train.learning_rate=0.05", "--set", "data.batch_size=16",
            "--set", "data.shuffle=true", "--set", "train.checkpoint_every=1",
            "--set", "train.keep_checkpoints=3"]


# `python -m linfit.train`, with each checkpoint's rename delayed by 10 ms:
# the delay is this script's, injected into the process it kills.
SLOW_WRITES = """
import os, runpy, sys, time
replace = os.replace
def slow_replace(source, target, *args, **kwargs):
    if str(source).endswith(".tmp.weights.h5"):
        time.sleep(0.01)
    return replace(source, target, *args, **kwargs)
os.replace = slow_replace
sys.argv[0] = "linfit.train"
runpy.run_module("linfit.train", run_name="__main__", alter_sys=True)
"""


def train_command(*args: str, slow_writes: bool = False) -> list[str]:
    if slow_writes:
        return [sys.executable, "-c", SLOW_WRITES, *args]
    return [sys.executable, "-m", "linfit.train", *args]


def run_to_end(args: list[str], env: dict) -> None:
    result = subprocess.run(train_command(*args), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training failed ({result.returncode}):\n{result.stderr}")


def checkpoints(run_dir: Path) -> list[Path]:
    directory = run_dir / "checkpoints" / LABEL
    found = sorted(directory.glob("epoch-*.weights.h5")) if directory.is_dir() else []
    final = run_dir / f"{LABEL}.weights.h5"
    return found + ([final] if final.exists() else [])


def temporary_files(run_dir: Path) -> set[Path]:
    directory = run_dir / "checkpoints" / LABEL
    return set(directory.glob(".*.tmp.weights.h5")) if directory.is_dir() else set()


def check_checkpoints_load(run_dir: Path) -> int:
    """Every checkpoint under its final name loads and is finite; returns the newest epoch."""
    from linfit.checkpoint import read_state, read_weights

    newest = 0
    for path in checkpoints(run_dir):
        arrays = read_weights(path)  # raises on a damaged file
        if not all(np.isfinite(a).all() for a in arrays):
            raise SystemExit(f"{path} holds non-finite weights")
        newest = max(newest, read_state(path)["epoch"])
    return newest




def kill_once(run_dir: Path, env: dict, first: bool, mode: str, rng: random.Random) -> str:
    """Start (or resume) the run and SIGKILL it; returns what the kill hit.

    mode: "start-up" kills at a random moment of the first seconds (while
    TensorFlow is imported); "mid-write" once training runs, as soon as a
    checkpoint write is in progress; "training" at a random moment of the
    first 0.4 s of training.
    """
    args = [*SETTINGS, "--out", str(run_dir)] if first else ["--resume", str(run_dir)]
    before, leftovers = checkpoints(run_dir), temporary_files(run_dir)

    def write_in_progress() -> bool:  # a write this process started (not a leftover)
        return bool(temporary_files(run_dir) - leftovers)

    process = subprocess.Popen(train_command(*args, slow_writes=True), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_until(condition, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not condition() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)

    if mode == "start-up":
        time.sleep(rng.uniform(0.2, 3.0))
    else:
        wait_until(lambda: write_in_progress() or checkpoints(run_dir) != before)
        if mode == "mid-write":
            wait_until(write_in_progress)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
    hit = "a checkpoint write" if write_in_progress() else mode
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode == 0:
        raise SystemExit("the run finished before it could be killed: give more --epochs")
    return hit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    settings = [*SETTINGS, "--set", f"train.epochs={args.epochs}"]
    SETTINGS[:] = settings
    with tempfile.TemporaryDirectory() as tmp:
        reference, run_dir = Path(tmp) / "reference", Path(tmp) / "killed"
        run_to_end([*settings, "--out", str(reference)], env)
        hits = []
        for kill in range(args.kills):
            mode = ("training", "mid-write", "start-up")[kill % 3]
            hit = kill_once(run_dir, env, first=kill == 0, mode=mode, rng=rng)
            newest = check_checkpoints_load(run_dir)
            hits.append(hit)
            print(f"kill {kill + 1:2d}: hit {hit}; newest checkpoint: epoch {newest}")
        run_to_end(["--resume", str(run_dir)], env)
        same_weights = all(
            np.array_equal(a, b) for a, b in zip(
                read(reference / f"{LABEL}.weights.h5"), read(run_dir / f"{LABEL}.weights.h5")))
        same_metrics = (json.loads((reference / "metrics.json").read_text())["runs"]
                        == json.loads((run_dir / "metrics.json").read_text())["runs"])
    mid_write = sum(hit == "a checkpoint write" for hit in hits)
    print(f"{args.kills} kills ({mid_write} during a checkpoint write); every checkpoint "
          f"loaded after each; resumed to the end: weights "
          f"{'identical' if same_weights else 'DIFFERENT'}, history "
          f"{'identical' if same_metrics else 'DIFFERENT'} to the uninterrupted run")
    return 0 if same_weights and same_metrics else 1


def read(path: Path) -> list[np.ndarray]:
    from linfit.checkpoint import read_weights

    return read_weights(path)


if __name__ == "__main__":
    sys.exit(main())
