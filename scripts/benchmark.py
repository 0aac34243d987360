"""linfit's speed on the user's path, as ratios to baselines measured in the same run.

    python scripts/benchmark.py [--quick] [--pairs N] [--json runs/benchmark.json]

Every row times what a user runs: `Trainer.fit` from a fresh Trainer (in this
process, after TensorFlow has started), or `python -m linfit.train` as a
subprocess; and a baseline on the same data (NumPy reading the data once, the
guide's own eager loop, plain `keras.Model.fit`, `import tensorflow, keras,
matplotlib`, `python -c pass`). linfit and the baseline are run alternately,
A B A B ..., so both see the same machine; the table gives the median ratio
over the pairs and its range, against the issue's target. The load average is
printed before and after: a busy machine shows in it. Each pair's ratio (and
the start-up seconds) go to a JSON file (default runs/benchmark.json, which
git ignores).

--quick runs smaller sizes and fewer pairs: a smoke test, not the numbers.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="runs/benchmark.json",
                        help="where to write each pair's ratio (default: runs/benchmark.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller data, fewer pairs (a smoke test)")
    parser.add_argument("--pairs", type=int, default=5,
                        help="A/B pairs per row (default and at least 5)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help answers before TensorFlow loads

import linfit  # noqa: E402

tf = linfit.quiet_tensorflow()  # TensorFlow without its C++ start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

from linfit.data import synthetic_line  # noqa: E402

PYTHON = sys.executable
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def alternate(a, b, pairs: int) -> list[tuple[float, float]]:
    """(a's time, b's time) for each of `pairs` pairs, run A B A B ..."""
    return [(seconds(a), seconds(b)) for _ in range(pairs)]


# The guide's code, verbatim but for the data: the baseline of the small runs.

class GuideModel(tf.Module):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

    def __call__(self, x):
        return self.w * x + self.b


def guide_loss(target_y, predicted_y):
    return tf.reduce_mean(tf.square(target_y - predicted_y))


def guide_train(model, x, y, learning_rate):
    with tf.GradientTape() as t:
        current_loss = guide_loss(y, model(x))
    dw, db = t.gradient(current_loss, [model.w, model.b])
    model.w.assign_sub(learning_rate * dw)
    model.b.assign_sub(learning_rate * db)


def guide_loop(x, y, epochs: int) -> None:
    """The guide's training_loop: a step, then the loss on the data, each epoch."""
    model = GuideModel()
    for _ in range(epochs):
        guide_train(model, x, y, 0.1)
        guide_loss(y, model(x)).numpy()


def fresh_fit(x, y, epochs: int, **kwargs) -> None:
    """What a user writes: a new model, a new Trainer, fit."""
    features = None if np.ndim(x) == 1 else x.shape[1]
    linfit.Trainer(linfit.LinearModule(features=features)).fit(x, y, epochs=epochs, **kwargs)


def plain_fit(x, y, epochs: int) -> None:
    """Keras's own: LinearModel compiled and fit, as the Keras loop does it."""
    model = linfit.LinearModel()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=len(y), verbose=0)


def big_data(rows: int, features: int):
    rng = np.random.default_rng(0)
    shape = (rows,) if features == 1 else (rows, features)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    y = (3 * x if features == 1 else x @ np.linspace(-1, 1, features, dtype=np.float32)) + 2
    return x, y.astype(np.float32)


def read_once(x, y) -> None:
    """The memory floor: NumPy reads x and y once."""
    float(x.sum()) + float(y.sum())


def run(*command, cwd=None) -> None:
    subprocess.run([PYTHON, *command], cwd=cwd, env=QUIET, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# The rows: each returns its pairs' ratios (linfit over baseline, or as the target reads).

def cli_marginal_epoch(sizes, repeats) -> list[float]:
    """The CLI's cost of an epoch between the two largest sizes over that between the
    two smallest, from the runs' training times (timing.json), per repetition."""
    ratios = []
    for repeat in range(repeats):
        totals = {}
        order = sizes if repeat % 2 == 0 else sizes[::-1]  # alternate the order too
        for epochs in order:
            with tempfile.TemporaryDirectory() as tmp:
                run("-m", "linfit.train", "--set", f"train.epochs={epochs}", "--out", "run",
                    cwd=tmp)
                timing = json.loads((Path(tmp) / "run" / "timing.json").read_text())
                totals[epochs] = sum(r["seconds"] for r in timing["runs"])
        a, b, c, d = sizes
        ratios.append(((totals[d] - totals[c]) / (d - c)) / ((totals[b] - totals[a]) / (b - a)))
    return ratios


def per_epoch_vs_floor(rows, features, epochs, pairs) -> list[float]:
    x, y = big_data(rows, features)
    fresh_fit(x[:1000], y[:1000], 2)  # TensorFlow's own start, once
    return [a / epochs / b for a, b in alternate(lambda: fresh_fit(x, y, epochs),
                                                 lambda: read_once(x, y), pairs)]


def few_epochs_vs_many(rows, pairs) -> list[float]:
    x, y = big_data(rows, 1)
    return [(a / 5) / (b / 50) for a, b in alternate(lambda: fresh_fit(x, y, 5),
                                                     lambda: fresh_fit(x, y, 50), pairs)]


def small_runs(pairs) -> dict[str, list[float]]:
    data = synthetic_line()
    x, y = tf.constant(data.x), tf.constant(data.y)
    guide_loop(x, y, 2)
    fresh_fit(data.x, data.y, 2)
    plain_fit(data.x, data.y, 2)
    cold = alternate(lambda: fresh_fit(data.x, data.y, 10), lambda: guide_loop(x, y, 10), pairs)
    keras_loop = alternate(lambda: fresh_fit(data.x, data.y, 100, loop="keras"),
                           lambda: plain_fit(data.x, data.y, 100), pairs)
    long = alternate(lambda: fresh_fit(data.x, data.y, 1000),
                     lambda: guide_loop(x, y, 1000), pairs)
    return {"cold_fit": [a / b for a, b in cold],
            "keras_loop": [a / b for a, b in keras_loop],
            "long_fit_speedup": [b / a for a, b in long]}


def start_up(pairs) -> dict[str, list[float]]:
    help_times = alternate(lambda: run("-m", "linfit.train", "--help"),
                           lambda: run("-c", "pass"), pairs)
    with tempfile.TemporaryDirectory() as tmp:
        default = alternate(
            lambda: run("-m", "linfit.train", "--out", f"run{time.monotonic_ns()}", cwd=tmp),
            lambda: run("-c", "import tensorflow, keras, matplotlib.pyplot"), pairs)
    return {"help_seconds": [a for a, _ in help_times],
            "python_pass_seconds": [b for _, b in help_times],
            "default_run": [a / b for a, b in default]}


ROWS = [  # key, what, target (the ratio must be <= it, or >= it for a speed-up)
    ("cli_marginal", "CLI, guide data: an epoch's cost at {sizes}", "<= 1.1"),
    ("big_1", "fit(epochs=50) per epoch, {rows} x 1 / NumPy reading x and y once", "<= 3"),
    ("big_10", "the same, {rows} x 10", "<= 2"),
    ("few_epochs", "fit(epochs=5) per epoch / fit(epochs=50) per epoch, {rows} x 1", "<= 1.2"),
    ("cold_fit", "a fresh Trainer's 10-epoch fit / the guide's eager loop", "<= 1.5"),
    ("keras_loop", "Keras loop, 100 epochs / plain keras.Model.fit", "<= 1.0"),
    ("help_seconds", "python -m linfit.train --help, seconds", "<= 0.15"),
    ("default_run", "python -m linfit.train / import tensorflow, keras, matplotlib.pyplot",
     "<= 1.3"),
    ("long_fit_speedup", "guide's eager loop / a fresh Trainer's fit, 1000 epochs (speed-up)",
     ">= 30"),
]


def met(values: list[float], target: str) -> bool:
    sign, bound = target.split()
    median = statistics.median(values)
    return median <= float(bound) if sign == "<=" else median >= float(bound)


def main(args: argparse.Namespace) -> int:
    pairs = 3 if args.quick else max(args.pairs, 5)
    rows = 10**6 if args.quick else 10**7
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}",
               "tensorflow": tf.__version__, "keras": keras.__version__,
               "pairs": pairs, "rows": rows}
    print(f"load average before: {load_before[0]:.2f}", flush=True)
    ratios = {
        "cli_marginal": cli_marginal_epoch((100, 200, 500, 1000) if args.quick else
                                           (300, 600, 1500, 3000), 2 if args.quick else 3),
        "big_1": per_epoch_vs_floor(rows, 1, 50, pairs),
        "big_10": per_epoch_vs_floor(rows, 10, 50, pairs),
        "few_epochs": few_epochs_vs_many(rows, pairs),
        **small_runs(pairs + 2),
        **start_up(pairs),
    }
    load_after = os.getloadavg()
    results.update(ratios=ratios, load_before=load_before[0], load_after=load_after[0],
                   seconds=time.perf_counter() - start)
    print(f"\n{'measurement':<74} {'median':>7}  {'range':<15} {'target':<8} met")
    for key, what, target in ROWS:
        values = ratios[key]
        spread = f"{min(values):.3g}-{max(values):.3g}"
        what = what.format(rows=f"1e{round(np.log10(rows))}",
                           sizes="500-1,000 / at 100-200 epochs" if args.quick else
                           "1,500-3,000 / at 300-600 epochs")
        print(f"{what:<74} {statistics.median(values):>7.3g}  {spread:<15} {target:<8} "
              f"{'yes' if met(values, target) else 'NO'}")
    print(f"\n{results['date']}, {results['machine']}, TensorFlow {tf.__version__}, Keras "
          f"{keras.__version__}; {pairs} pairs a row (the CLI row: its repetitions); load "
          f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{results['seconds']:.0f} s in all")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"each pair's ratio: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
