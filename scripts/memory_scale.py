"""Peak memory of loading a big CSV and training one epoch of mini-batches.

    python scripts/memory_scale.py                 # 1,000,000 rows x 10 features
    python scripts/memory_scale.py --rows 100000   # quicker (too small to judge: see below)

Writes the CSV to a temporary directory, then, in a fresh process: imports
TensorFlow, Keras and linfit and measures the resident memory at rest (the
baseline); resets the peak; then does what a user does,
`python -m linfit.train --data big.csv --set data.batch_size=1024
--set train.epochs=1` (read the CSV, train both models with both loops,
write the run directory). Reports the peak above the baseline as a multiple
of the data's size in float32 (target: under 3x, for 100 MiB of data or
more: below that, a run's fixed cost of about 35 MiB is what the ratio
measures, and it is not judged). Linux only: it reads
/proc/self/status and resets the peak through /proc/self/clear_refs.
"""

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# Below this much data (float32) a run's fixed memory cost dominates the ratio.
MIN_DATA_MIB = 100


def memory_kib() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, in KiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def reset_peak() -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def write_csv(path: Path, rows: int, features: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        f.write(",".join([f"x{i}" for i in range(features)] + ["y"]) + "\n")
        for start in range(0, rows, 100_000):  # in chunks, to keep this process small
            n = min(100_000, rows - start)
            x = rng.uniform(-2, 2, size=(n, features))
            y = x @ np.linspace(-1, 1, features) + 0.5 + rng.normal(0, 0.1, n)
            np.savetxt(f, np.column_stack([x, y]), delimiter=",", fmt="%.6g")


def measure(path: Path, batch_size: int) -> dict:
    """In this process: the baseline, then the peak of a whole CLI run."""
    from linfit.runtime import import_tensorflow
    from linfit.train import main

    import_tensorflow()
    import linfit

    at_rest = memory_kib()["VmRSS"]
    reset_peak()
    start = time.perf_counter()
    data = linfit.read_csv(path)
    read_seconds = time.perf_counter() - start
    read_peak = memory_kib()["VmHWM"]
    data_bytes = data.x.nbytes + data.y.nbytes
    del data
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        status = main(["--data", path, "--out", Path(out) / "run", "--set", "train.epochs=1",
                       "--set", f"data.batch_size={batch_size}",
                       "--set", "train.learning_rate=0.05", "--set", "model.init_w=0"])
        run_seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"the run failed with status {status}")
    peak = memory_kib()["VmHWM"]
    return {
        "data_mib": data_bytes / 2**20, "rest_mib": at_rest / 1024,
        "read_peak_above_rest_mib": (read_peak - at_rest) / 1024,
        "peak_above_rest_mib": (peak - at_rest) / 1024,
        "ratio": (peak - at_rest) * 1024 / data_bytes,
        "read_seconds": read_seconds, "run_seconds": run_seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--measure", metavar="CSV", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.batch_size)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        start = time.perf_counter()
        write_csv(path, args.rows, args.features)
        seconds = time.perf_counter() - start
        print(f"wrote {args.rows:,} rows x {args.features} features "
              f"({path.stat().st_size / 2**20:.0f} MiB of CSV) in {seconds:.1f} s")
        child = subprocess.run([sys.executable, __file__, "--measure", str(path),
                                "--batch-size", str(args.batch_size)],
                               capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"data in float32:              {result['data_mib']:8.1f} MiB")
    print(f"interpreter + TF at rest:     {result['rest_mib']:8.1f} MiB")
    print(f"peak above rest, reading:     {result['read_peak_above_rest_mib']:8.1f} MiB")
    print(f"peak above rest, overall:     {result['peak_above_rest_mib']:8.1f} MiB")
    print(f"peak / data size:             {result['ratio']:8.2f}x   (target < 3x)")
    print(f"reading the CSV: {result['read_seconds']:.1f} s; the whole run (read, 4 x one "
          f"epoch in batches of {args.batch_size}, plots, report): {result['run_seconds']:.1f} s")
    if result["data_mib"] < MIN_DATA_MIB:
        # A run has a fixed cost (Keras's state, the figures: about 35 MiB here)
        # that small data cannot amortise: the ratio then measures that cost.
        print(f"(the target is for data of {MIN_DATA_MIB} MiB or more, where the fixed cost of "
              f"a run, about 35 MiB, is small beside it; with {result['data_mib']:.1f} MiB the "
              f"ratio measures that cost: not judged)")
        return 0
    return 0 if result["ratio"] < 3 else 1


if __name__ == "__main__":
    sys.exit(main())
