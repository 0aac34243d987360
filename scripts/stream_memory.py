"""Memory and throughput of streamed data, on the path users take (`Trainer.fit`).

    python scripts/stream_memory.py                 # a 2 GB CSV: 2e7 rows x 10 features
    python scripts/stream_memory.py --rows 2000000  # a quick look
    python scripts/stream_memory.py --npz           # NPZ too: the same rows, x and y float32

It writes a CSV of --rows rows (10 features and y; blocks of 100,000 rows
repeated) to --dir, then measures, each in a fresh process so every peak is
its own:

1. at rest: the interpreter, TensorFlow and linfit imported, the model built;
2. one epoch streamed by `Trainer.fit(files, None, batch_size=1024)`: its
   peak resident memory (VmHWM) above the rest, and its rows per second;
3. tf.data alone: the same files read and parsed into the same batches, no
   training: rows per second;
4. the in-memory path: one epoch of `Trainer.fit(x, y, batch_size=1024)` on
   the first --memory-rows rows, already in memory: rows per second;
5. the float64 least-squares reference from one streaming pass, against the
   in-memory one, on those --memory-rows rows.

Steps 2-4 run --repeats times (default 1: the run stays under 5 minutes),
alternating, so the ratios compare runs made under the same load; the file
stays in the page cache after it is written. With --npz, the same rows are
also written to an NPZ file (uncompressed, float32) and steps 2 and 3 are
measured on it too, in the same alternation, with one more baseline: the
in-memory path on all --rows rows (loaded from the NPZ file), so that both
sides of that ratio train the same rows and pay the same fixed costs.
Writing the NPZ copy takes about 2 minutes, once; `--npz --repeats 2` then
takes about 7.5 minutes here.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FEATURES = 10
BLOCK_ROWS = 100_000


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.normal(size=FEATURES)
    with path.open("w") as f:
        f.write(",".join([*(f"x{i}" for i in range(FEATURES)), "y"]) + "\n")
        written = 0
        while written < rows:
            n = min(BLOCK_ROWS, rows - written)
            x = rng.uniform(-2, 2, (n, FEATURES))
            table = np.column_stack([x, x @ w + 0.5 + rng.normal(0, 0.1, n)])
            np.savetxt(f, table, fmt="%.6f", delimiter=",")
            written += n


def write_npz(path: Path, csv_path: Path) -> None:
    """The CSV's rows as an NPZ file (x float32 [N, FEATURES], y float32 [N]), written
    block by block: no more than a block in memory."""
    import zipfile

    import numpy as np

    from linfit.streams import open_data_files

    files = open_data_files(csv_path)
    rows = files.num_examples
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, shape, columns in (("x", (rows, FEATURES), slice(0, FEATURES)),
                                     ("y", (rows,), FEATURES)):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, {
                    "descr": "<f4", "fortran_order": False, "shape": shape})
                for x, y in files.exact_chunks():
                    member.write(np.column_stack([x, y])[:, columns].astype("<f4").tobytes())


def peak_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def child(task: str, path: str, memory_rows: int) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np

    import linfit
    from linfit import pipeline
    from linfit.streams import open_data_files
    from linfit.streaming import StreamData

    linfit.quiet_tensorflow(start_devices=True)
    files = open_data_files(path)
    trainer = linfit.Trainer(linfit.LinearModule(features=FEATURES), learning_rate=0.01,
                             record_full_loss=False)
    trainer.predict(np.zeros((1, FEATURES), np.float32))  # built, traced: at rest
    rest = rss_kb()
    start = time.perf_counter()
    if task.startswith("stream"):  # "stream", or "stream npz" on the NPZ copy
        files = open_data_files(Path(path).with_suffix(".npz")) if "npz" in task else files
        trainer.fit(files, None, epochs=1, batch_size=1024)
        rows = files.num_examples
    elif task.startswith("tf.data"):
        files = open_data_files(Path(path).with_suffix(".npz")) if "npz" in task else files
        data = StreamData((), 1024, None, 1, files=files)
        rows = sum(int(y.shape[0]) for _, y in data.batches(0))
    elif task.startswith("memory"):  # "memory all": every row, loaded from the NPZ copy
        if "all" in task:
            with np.load(Path(path).with_suffix(".npz")) as arrays:
                x, y = arrays["x"], arrays["y"]
        else:
            x, y = files.sample(memory_rows)
        start = time.perf_counter()
        trainer.fit(x, y, epochs=1, batch_size=1024)
        rows = len(y)
    else:  # the reference, streamed and in memory, on the first memory_rows rows
        from linfit.reference import reference_from_chunks
        from linfit.streaming import value_chunks

        head = Path(path).with_suffix(".head.csv")
        with open(path) as source, open(head, "w") as target:
            for _ in range(memory_rows + 1):
                target.write(source.readline())
        streamed = reference_from_chunks(value_chunks(open_data_files(head)))
        # In memory: the whole table at once, read by linfit's own (NumPy) reader.
        exact = [np.concatenate(a) for a in zip(*open_data_files(head).exact_chunks())]
        in_memory = reference_from_chunks(iter([tuple(exact)]))
        head.unlink()
        return {"w_rel": float(np.max(np.abs(streamed.w - in_memory.w) / np.abs(in_memory.w))),
                "b_rel": abs(streamed.b - in_memory.b) / abs(in_memory.b)}
    seconds = time.perf_counter() - start
    return {"rows_per_s": rows / seconds, "seconds": seconds, "rest_mb": rest / 1024,
            "peak_above_rest_mb": (peak_kb() - rest) / 1024, "chunk": pipeline.FULL_PASS_ROWS}


def measure(task: str, path: Path, memory_rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", task, "--csv", str(path),
                          "--memory-rows", str(memory_rows)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--memory-rows", type=int, default=2_000_000)
    # One repeat keeps the default run under 5 minutes here (270 s, the file included);
    # --repeats 3 gives ranges.
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--npz", action="store_true", help="measure an NPZ copy too")
    parser.add_argument("--child")
    parser.add_argument("--csv")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.csv, args.memory_rows)))
        return
    path = Path(args.dir) / f"linfit-stream-{args.rows}.csv"
    began = time.perf_counter()
    if not path.exists():
        write_csv(path, args.rows)
    print(f"{path}: {path.stat().st_size / 1e9:.2f} GB, {args.rows} rows x {FEATURES} features "
          f"(written in {time.perf_counter() - began:.0f} s)")
    if args.npz and not path.with_suffix(".npz").exists():
        written = time.perf_counter()
        write_npz(path.with_suffix(".npz"), path)
        print(f"{path.with_suffix('.npz')}: {path.with_suffix('.npz').stat().st_size / 1e9:.2f}"
              f" GB (written in {time.perf_counter() - written:.0f} s)")
    results: dict[str, list[dict]] = {"stream": [], "tf.data": [], "memory": []}
    if args.npz:
        results.update({"stream npz": [], "tf.data npz": [], "memory all": []})
    for _ in range(args.repeats):
        for task in results:
            results[task].append(measure(task, path, args.memory_rows))
    reference = measure("reference", path, args.memory_rows)
    stream, tfdata, memory = (results[t] for t in ("stream", "tf.data", "memory"))
    ratio_memory = [s["rows_per_s"] / m["rows_per_s"] for s, m in zip(stream, memory)]
    ratio_tfdata = [s["rows_per_s"] / t["rows_per_s"] for s, t in zip(stream, tfdata)]
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {args.repeats} alternating repeats")
    print(f"at rest (interpreter, TensorFlow, model): {spread([s['rest_mb'] for s in stream])} MB")
    print(f"streamed epoch: peak {spread([s['peak_above_rest_mb'] for s in stream])} MB above "
          f"rest (target <= 300), {spread([s['rows_per_s'] for s in stream])} rows/s, "
          f"{spread([s['seconds'] for s in stream])} s")
    print(f"tf.data alone: {spread([t['rows_per_s'] for t in tfdata])} rows/s")
    print(f"in memory ({args.memory_rows} rows): {spread([m['rows_per_s'] for m in memory])} "
          "rows/s")
    print(f"streamed / in memory: {spread(ratio_memory)} (target >= 1.0)")
    print(f"streamed / tf.data alone: {spread(ratio_tfdata)} (target >= 0.5)")
    if args.npz:
        npz, npz_tfdata, everything = (results[t] for t in ("stream npz", "tf.data npz",
                                                             "memory all"))
        print(f"NPZ streamed epoch: peak {spread([s['peak_above_rest_mb'] for s in npz])} MB "
              f"above rest, {spread([s['rows_per_s'] for s in npz])} rows/s; tf.data alone "
              f"{spread([t['rows_per_s'] for t in npz_tfdata])} rows/s")
        print("NPZ streamed / in memory: "
              f"{spread([s['rows_per_s'] / m['rows_per_s'] for s, m in zip(npz, memory)])}; "
              "/ tf.data alone: "
              f"{spread([s['rows_per_s'] / t['rows_per_s'] for s, t in zip(npz, npz_tfdata)])}")
        print(f"in memory, all {args.rows} rows: "
              f"{spread([m['rows_per_s'] for m in everything])} rows/s; NPZ streamed / it: "
              f"{spread([s['rows_per_s'] / m['rows_per_s'] for s, m in zip(npz, everything)])}; "
              "CSV streamed / it: "
              f"{spread([s['rows_per_s'] / m['rows_per_s'] for s, m in zip(stream, everything)])}")
    print(f"reference, streamed vs in memory ({args.memory_rows} rows): largest relative "
          f"difference of w {reference['w_rel']:.1e}, of b {reference['b_rel']:.1e} "
          "(target <= 1e-10)")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
