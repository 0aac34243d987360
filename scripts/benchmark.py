"""linfit against its baselines, measured in one process and one run.

    python scripts/benchmark.py [--json runs/benchmark.json] [--quick]

Prints a table of ratios (linfit's time over the baseline's, medians of
repeats; under 1 is faster) with the target for each, and writes the raw
numbers as JSON. The baselines are measured here, now, on the same data:
the guide's eager loop, a hand-written tf.function step, plain
`keras.Model.fit`, NumPy's read rate of the same arrays (the memory floor),
and `import tensorflow, keras, matplotlib`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="runs/benchmark.json",
                        help="where to write raw numbers (default: runs/benchmark.json)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help answers before TensorFlow loads

from linfit.runtime import quiet_tensorflow  # noqa: E402

tf = quiet_tensorflow()  # TensorFlow without its C++ start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import linfit  # noqa: E402
from linfit.data import synthetic_line  # noqa: E402


def median_time(function, repeats: int) -> float:
    """Median wall time of `function()` over `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# The guide's code, verbatim but for the data.

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


def guide_epochs(x, y, epochs):
    """The guide's training_loop: a step, then the loss on the data, per epoch."""
    model = GuideModel()
    for _ in range(epochs):
        guide_train(model, x, y, 0.1)
        guide_loss(y, model(x)).numpy()


class EveryBatch(keras.callbacks.Callback):
    """A callback that wants every batch: the manual loop then goes batch by batch."""

    def on_train_batch_end(self, batch, logs=None):
        pass


def linfit_fit(x, y, epochs, loop="manual", trainer=None, **kwargs):
    trainer = trainer or linfit.Trainer(linfit.LinearModule(), learning_rate=0.1)
    trainer.fit(x, y, epochs=epochs, loop=loop, **kwargs)
    return trainer


def guide_scale(results: dict, repeats: int) -> None:
    data = synthetic_line()
    x, y = tf.constant(data.x), tf.constant(data.y)
    epochs = 200
    results["guide_eager_epoch"] = median_time(lambda: guide_epochs(x, y, epochs), repeats) / epochs

    model = GuideModel()
    step = tf.function(guide_train)
    step(model, x, y, 0.1)

    def hand_written():
        for _ in range(epochs):
            step(model, x, y, 0.1)
    results["tf_function_step"] = median_time(hand_written, repeats) / epochs

    fused = linfit_fit(data.x, data.y, 5, trainer=linfit.Trainer(linfit.LinearModule(),
                                                                   compile="function"))
    results["linfit_manual_epoch"] = median_time(
        lambda: linfit_fit(data.x, data.y, 1000, trainer=fused), repeats) / 1000
    unfused = linfit_fit(data.x, data.y, 5, trainer=linfit.Trainer(
        linfit.LinearModule(), steps_per_call=1), callbacks=[EveryBatch()])
    results["linfit_manual_unfused_epoch"] = median_time(
        lambda: linfit_fit(data.x, data.y, epochs, trainer=unfused,
                           callbacks=[EveryBatch()]), repeats) / epochs

    keras_trainer = linfit_fit(data.x, data.y, 3, loop="keras",
                               trainer=linfit.Trainer(linfit.LinearModel()))
    results["linfit_keras_epoch"] = median_time(
        lambda: linfit_fit(data.x, data.y, epochs, "keras", trainer=keras_trainer),
        repeats) / epochs
    plain = linfit.LinearModel()
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    dataset = tf.data.Dataset.from_tensors((data.x, data.y))
    plain.fit(dataset, epochs=3, verbose=0)
    results["plain_fit_epoch"] = median_time(
        lambda: plain.fit(dataset, epochs=epochs, verbose=0), repeats) / epochs

    # Cold start: a whole 10-epoch run from nothing, tracing included.
    results["linfit_cold_10"] = median_time(lambda: linfit_fit(data.x, data.y, 10), repeats)
    results["guide_eager_10"] = median_time(lambda: guide_epochs(x, y, 10), repeats)


def large_n(results: dict, rows_list, repeats: int) -> None:
    rng = np.random.default_rng(0)
    for rows in rows_list:
        for features in (1, 10):
            x = rng.uniform(-2, 2, size=(rows, features)).astype(np.float32)
            if features == 1:
                x = x[:, 0]
            y = rng.normal(size=rows).astype(np.float32)
            key = f"{rows:.0e}x{features}".replace("+0", "")
            read = median_time(lambda: (x.sum(), y.sum()), repeats)
            results[f"floor_{key}"] = read
            model = linfit.LinearModule(features=None if features == 1 else features,
                                        init_w=0.0)
            trainer = linfit.Trainer(model, learning_rate=0.01, compile="function")
            trainer.fit(x, y, epochs=2)  # traces
            # Per epoch in steady state: the difference of a long and a short fit, so
            # a fit's one-off work (checking the data for NaN, handing it over) cancels.
            short = median_time(lambda: trainer.fit(x, y, epochs=2), max(1, repeats // 3))
            long = median_time(lambda: trainer.fit(x, y, epochs=12), max(1, repeats // 3))
            results[f"linfit_step_{key}"] = (long - short) / 10


def minibatches(results: dict, rows: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(rows, 10)).astype(np.float32)
    y = (x @ np.linspace(-1, 1, 10) + rng.normal(0, 0.1, rows)).astype(np.float32)
    trainer = linfit.Trainer(linfit.LinearModel(features=10, init_w=0.0), learning_rate=0.01)
    trainer.fit(x, y, epochs=1, batch_size=1024)
    results["linfit_minibatch_epoch"] = median_time(
        lambda: trainer.fit(x, y, epochs=1, batch_size=1024), repeats)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(1024)
    for steps in (1, 50):
        plain = linfit.LinearModel(features=10, init_w=0.0)
        plain.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                      steps_per_execution=steps)
        plain.fit(dataset, epochs=1, verbose=0)
        results[f"plain_fit_minibatch_spe{steps}"] = median_time(
            lambda: plain.fit(dataset, epochs=1, verbose=0), repeats)
    results["minibatch_rows"] = rows


def command_line(results: dict, repeats: int) -> None:
    def run(*args):
        subprocess.run([sys.executable, *args], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})

    results["help_seconds"] = median_time(lambda: run("-m", "linfit.train", "--help"), repeats)
    results["import_seconds"] = median_time(
        lambda: run("-c", "import tensorflow, keras, matplotlib"), repeats)
    import tempfile

    def default_run():
        with tempfile.TemporaryDirectory() as out:
            run("-m", "linfit.train", "--out", os.path.join(out, "run"))
    results["default_run_seconds"] = median_time(default_run, repeats)


def table(r: dict) -> list[tuple]:
    """(what, linfit, baseline, ratio, target, met) rows."""
    ms = 1e3
    rows = [
        ("manual loop per epoch, N=201 (default: fused) vs the guide's eager loop",
         r["linfit_manual_epoch"] * ms, r["guide_eager_epoch"] * ms, "<= 1/20"),
        ("manual loop per epoch, not fused, vs a hand-written tf.function step",
         r["linfit_manual_unfused_epoch"] * ms, r["tf_function_step"] * ms, "<= 1.1"),
        ("manual loop per epoch, fused, vs a hand-written tf.function step",
         r["linfit_manual_epoch"] * ms, r["tf_function_step"] * ms, "< 1"),
        ("keras loop per epoch vs plain keras.Model.fit",
         r["linfit_keras_epoch"] * ms, r["plain_fit_epoch"] * ms, "<= 1.05"),
        ("cold 10-epoch run (tracing included) vs the guide's eager loop",
         r["linfit_cold_10"] * ms, r["guide_eager_10"] * ms, "<= 1"),
    ]
    for key in [k[len("floor_"):] for k in r if k.startswith("floor_")]:
        target = "<= 2" if key.startswith("1e7") else ""
        rows.append((f"full-batch epoch (step + full_loss), {key} rows x features, vs the "
                     "memory floor", r[f"linfit_step_{key}"] * ms, r[f"floor_{key}"] * ms,
                     target))
    rows += [
        (f"mini-batch epoch ({r['minibatch_rows']:.0e} x 10, batch 1024) vs plain fit, "
         "steps_per_execution 1", r["linfit_minibatch_epoch"] * ms,
         r["plain_fit_minibatch_spe1"] * ms, "<= 1/2"),
        ("  the same vs plain fit, steps_per_execution 50", r["linfit_minibatch_epoch"] * ms,
         r["plain_fit_minibatch_spe50"] * ms, "<= 1"),
        ("python -m linfit.train --help (s, vs 0.3 s)", r["help_seconds"], 0.3, "< 1"),
        ("default run vs import tensorflow, keras, matplotlib", r["default_run_seconds"],
         r["import_seconds"], "<= 1.5"),
    ]
    return [(what, ours, base, ours / base, target, _met(ours / base, target))
            for what, ours, base, target in rows]


def _met(ratio: float, target: str) -> str:
    if not target:
        return ""
    op, _, value = target.partition(" ")
    bound = eval(value.replace("1/", "1.0/"))  # "1/20" and the like, written here
    return "yes" if (ratio < bound if op == "<" else ratio <= bound) else "NO"


def main(args: argparse.Namespace) -> int:
    repeats = 3 if args.quick else 7
    results = {"tensorflow": tf.__version__, "keras": keras.__version__,
               "cpus": os.cpu_count()}
    start = time.perf_counter()
    guide_scale(results, repeats)
    large_n(results, [10**5] if args.quick else [10**6, 10**7], repeats)
    minibatches(results, 10**5 if args.quick else 10**6, repeats)
    command_line(results, 3)
    results["benchmark_seconds"] = time.perf_counter() - start
    rows = table(results)
    results["table"] = [dict(zip(("what", "linfit", "baseline", "ratio", "target", "met"), row))
                        for row in rows]
    print(f"{'measurement':<92} {'linfit':>9} {'baseline':>9} {'ratio':>7}  target   met")
    for what, ours, base, ratio, target, met in rows:
        print(f"{what:<92} {ours:>9.3f} {base:>9.3f} {ratio:>7.3f}  {target:<8} {met}")
    print("(times in ms, except the two command-line rows, in s)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"raw numbers: {args.json}; the whole benchmark took "
          f"{results['benchmark_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
