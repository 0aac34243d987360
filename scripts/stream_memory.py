"""Memory and throughput of streamed data, on the path users take (`Trainer.fit`).

    python scripts/stream_memory.py                 # a 2 GB CSV: 2e7 rows x 10 features
    python scripts/stream_memory.py --rows 2000000  # a quick look
    python scripts/stream_memory.py --npz           # NPZ too: the same rows, x and y float32

It writes a CSV of --rows rows (10 features and y; blocks of 100,000 rows
repeated) to --dir, then measures, each in a fresh process so every peak is
its own:

1. at rest: the interpreter, TensorFlow and linfit imported, the model built;
2. one epoch streamed by `Trainer.fit(files, None, batch_size=1024)`, its
   pre-flight (`open_data_files`: headers checked, rows counted) included:
   its peak resident memory (VmHWM) above the rest, and its rows per second;
3. tf.data alone: the same files read and parsed into the same batches, no
   training: rows per second;
4. the in-memory path, as `data.streaming = false` takes it: the file read
   by `read_data_file`, then one epoch of `Trainer.fit(x, y,
   batch_size=1024)`: rows per second of the two together, and of the epoch
   alone (the rows already in memory, as when a run trains many epochs);
5. the float64 least-squares reference from one streaming pass, against the
   in-memory one, on the first --memory-rows rows.

Steps 2-4 run --repeats times (default 1: the run stays under 5 minutes),
alternating, so the ratios compare runs made under the same load; the file
stays in the page cache after it is written. With --npz, the same rows are
also written to an NPZ file (uncompressed, float32, as `linfit.convert`
writes them) and steps 2-4 are measured on it too, in the same alternation.
Writing the NPZ copy takes about 2 minutes, once; `--npz --repeats 3` then
takes about 9.5 minutes here.
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
    from linfit.streams import open_data_files
    from linfit.streaming import StreamData

    linfit.quiet_tensorflow(start_devices=True)
    trainer = linfit.Trainer(linfit.LinearModule(features=FEATURES), learning_rate=0.01,
                             record_full_loss=False)
    trainer.predict(np.zeros((1, FEATURES), np.float32))  # built, traced: at rest
    rest = rss_kb()
    start = time.perf_counter()
    source = Path(path).with_suffix(".npz") if "npz" in task else Path(path)
    if task.startswith("stream"):  # "stream", or "stream npz" on the NPZ copy
        files = open_data_files(source)  # its pre-flight (rows counted) is timed too
        trainer.fit(files, None, epochs=1, batch_size=1024)
        rows = files.num_examples
    elif task.startswith("tf.data"):
        files = open_data_files(source)
        data = StreamData((), 1024, None, 1, files=files)
        rows = sum(int(y.shape[0]) for _, y in data.batches(0))
    elif task.startswith("memory"):  # "memory", or "memory npz": the in-memory path
        from linfit.data import read_data_file  # what data.streaming = false reads with

        data = read_data_file(source)
        x, y = data.x, data.y
        read = time.perf_counter() - start
        trainer.fit(x, y, epochs=1, batch_size=1024)
        rows = len(y)
        epoch = time.perf_counter() - start - read
        return {**_timed(rows, read + epoch, rest), "read_seconds": read,
                "epoch_rows_per_s": rows / epoch}
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
    return _timed(rows, time.perf_counter() - start, rest)


def _timed(rows: int, seconds: float, rest: int) -> dict:
    return {"rows_per_s": rows / seconds, "seconds": seconds, "rest_mb": rest / 1024,
            "peak_above_rest_mb": (peak_kb() - rest) / 1024}


def measure(task: str, path: Path, memory_rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", task, "--csv", str(path),
                          "--memory-rows", str(memory_rows)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


def ratios(numerators: list[dict], denominators: list[dict], key: str = "rows_per_s") -> str:
    """The spread of the ratios of runs made next to each other."""
    return spread([n["rows_per_s"] / d[key] for n, d in zip(numerators, denominators)])


def report(kind: str, stream: list[dict], tfdata: list[dict], memory: list[dict]) -> None:
    rate = "rows_per_s"
    print(f"{kind} streamed epoch: peak {spread([s['peak_above_rest_mb'] for s in stream])} MB "
          f"above rest (target <= 300), {spread([s[rate] for s in stream])} rows/s, "
          f"{spread([s['seconds'] for s in stream])} s")
    print(f"{kind} tf.data alone: {spread([t[rate] for t in tfdata])} rows/s; streamed / it: "
          f"{ratios(stream, tfdata)} (target >= 0.5)")
    print(f"{kind} in memory: read {spread([m['read_seconds'] for m in memory])} s and one "
          f"epoch: {spread([m[rate] for m in memory])} rows/s, peak "
          f"{spread([m['peak_above_rest_mb'] for m in memory])} MB above rest; the epoch "
          f"alone: {spread([m['epoch_rows_per_s'] for m in memory])} rows/s")
    print(f"{kind} streamed / in memory (target >= 1.0): read and one epoch "
          f"{ratios(stream, memory)}; the epoch alone {ratios(stream, memory, 'epoch_rows_per_s')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--memory-rows", type=int, default=2_000_000,
                        help="rows of the reference's comparison")
    # One repeat keeps the default run under 5 minutes here (154 s on 2026-11-29, and
    # about 75 s more to write the CSV first); --repeats 3 gives ranges.
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
    kinds = ("", " npz") if args.npz else ("",)
    results: dict[str, list[dict]] = {f"{task}{kind}": [] for kind in kinds
                                      for task in ("stream", "tf.data", "memory")}
    for _ in range(args.repeats):
        for task in results:
            results[task].append(measure(task, path, args.memory_rows))
    reference = measure("reference", path, args.memory_rows)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {args.repeats} alternating repeats")
    print(f"at rest (interpreter, TensorFlow, model): "
          f"{spread([s['rest_mb'] for s in results['stream']])} MB")
    for kind in kinds:
        report(kind.strip().upper() or "CSV", *(results[f"{task}{kind}"]
                                                 for task in ("stream", "tf.data", "memory")))
    print(f"reference, streamed vs in memory ({args.memory_rows} rows): largest relative "
          f"difference of w {reference['w_rel']:.1e}, of b {reference['b_rel']:.1e} "
          "(target <= 1e-10)")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
