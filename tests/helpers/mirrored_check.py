"""Run in a fresh process (logical devices must be set before TensorFlow starts):
train with MirroredStrategy over 2 logical CPUs and on one device, print the
largest relative differences as JSON."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

import linfit  # noqa: E402
from linfit.agreement import compare_histories  # noqa: E402
from linfit.config import DataConfig  # noqa: E402
from linfit.data import synthetic_line  # noqa: E402


def main() -> int:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = synthetic_line(DataConfig(true_w=(0.5, -1.2, 2.0), num_examples=201, seed=3))
    validation = synthetic_line(DataConfig(true_w=(0.5, -1.2, 2.0), num_examples=37, seed=4))
    results = {}
    # Full batch: 201 rows, split 101/100. Batches of 64: 64, 64, 64 and a
    # partial 9, split 5/4. Batches of 100: a last batch of one row, which
    # leaves one replica none. SGD's step is proportional to the gradient, so a
    # wrongly scaled gradient shows; Adam's is not, but it has per-slot state.
    # A metric, `mae`, is the mean of each batch's mean (1-D targets), as on one
    # device: Keras's own weighs the replicas' means alike, and NaN for none.
    for loop in ("manual", "keras"):
        for batch_size, optimizer in ((None, "sgd"), (64, "sgd"), (100, "adam")):
            runs = {}
            for name, scope in (("single", None), ("mirrored", strategy)):
                with (scope or tf.distribute.get_strategy()).scope():
                    model = linfit.LinearModel(features=3, init_w=0.0)
                trainer = linfit.Trainer(model, optimizer=optimizer, learning_rate=0.05,
                                         metrics=["mae"], strategy=scope)
                runs[name] = trainer.fit(data.x, data.y, epochs=5, loop=loop,
                                         batch_size=batch_size,
                                         validation_data=(validation.x, validation.y))
            agreement = compare_histories([runs["single"], runs["mirrored"]])
            results[f"{loop}-{batch_size or 'full'}-{optimizer}"] = {
                "by": agreement.max_rel,
                "epochs": runs["mirrored"].epochs,
                "replicas": strategy.num_replicas_in_sync,
                "final_w": np.asarray(runs["mirrored"].w[-1]).tolist()}
        results[f"{loop}-resumed"] = resumed_inside_an_epoch(strategy, data, loop)
        results[f"{loop}-streamed"] = streamed_and_in_memory(strategy, loop)
    results["manual-dense"] = users_dense_model(strategy)
    print(json.dumps(results))
    return 0


def users_dense_model(strategy) -> dict:
    """A user's Sequential (predictions of [N, 1] against 1-D targets: one metric value
    a row, not a batch) in the manual loop: its metrics as on one device."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (21, 1)).astype("float32")
    y = np.sin(x[:, 0])
    runs = []
    for scope in (None, strategy):
        keras.utils.set_random_seed(0)
        with (scope or tf.distribute.get_strategy()).scope():
            model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"),
                                      keras.layers.Dense(1)])
        runs.append(linfit.Trainer(model, learning_rate=0.05, metrics=["mae"], strategy=scope)
                    .fit(x, y, epochs=2, batch_size=4).logs["mae"])
    return {"by": {"mae": float(np.max(np.abs(np.subtract(*runs)) / np.abs(runs[0])))},
            "epochs": 2, "replicas": strategy.num_replicas_in_sync}


def streamed_and_in_memory(strategy, loop: str) -> dict:
    """Under the strategy, CSV shards streamed (shuffled in windows, validation
    files, a metric) against the same rows in memory: "same" when every History
    column and the weights are equal to the bit."""
    import tempfile

    from linfit.streams import open_data_files

    rng = np.random.default_rng(5)
    table = rng.uniform(-2, 2, (450, 3))
    table[:, 2] = table[:, :2] @ [1.5, -2.0] + 0.5
    with tempfile.TemporaryDirectory() as folder:
        for name, rows in (("part-0", table[:150]), ("part-1", table[150:370]),
                           ("val-0", table[370:])):
            np.savetxt(f"{folder}/{name}.csv", rows, delimiter=",", header="a,b,y",
                       comments="")
        files, validation = (open_data_files(f"{folder}/{name}-*.csv") for name in ("part", "val"))
        arrays = [np.concatenate([x for x, _ in f.exact_chunks()]).astype(np.float32)
                  for f in (files, validation)]
        targets = [np.concatenate([y for _, y in f.exact_chunks()]).astype(np.float32)
                   for f in (files, validation)]
        outcomes = []
        for inputs in ((files, None, validation), (arrays[0], targets[0],
                                                  (arrays[1], targets[1]))):
            with strategy.scope():
                model = linfit.LinearModule(features=2)
            trainer = linfit.Trainer(model, optimizer="adam", learning_rate=0.05,
                                     metrics=["mae"], strategy=strategy)
            history = trainer.fit(inputs[0], inputs[1], validation_data=inputs[2], epochs=2,
                                  loop=loop, batch_size=64, shuffle_seed=2, shuffle_buffer=100,
                                  shard_rows=files.rows)
            outcomes.append((history.columns(), [model.w.numpy().tolist(),
                                                 float(model.b.numpy())]))
    (streamed, streamed_weights), (in_memory, weights) = outcomes
    return {"same": streamed_weights == weights and streamed.keys() == in_memory.keys()
            and all(np.array_equal(streamed[name], in_memory[name], equal_nan=True)  # row 0's loss
                    for name in streamed),
            "columns": sorted(streamed)}


def resumed_inside_an_epoch(strategy, data, loop: str) -> dict:
    """Under the strategy, a run resumed from a checkpoint inside its second epoch
    against the run never stopped (the batches to skip are skipped before the
    strategy splits them: a distributed dataset cannot skip)."""
    import tempfile

    def fit(**options):
        with strategy.scope():
            model = linfit.LinearModel(features=3, init_w=0.0)
        trainer = linfit.Trainer(model, optimizer="adam", learning_rate=0.05,
                                 metrics=["mae"], strategy=strategy)
        history = trainer.fit(data.x, data.y, epochs=2, loop=loop, batch_size=40,
                              shuffle_seed=1, **options)
        return history, [v.numpy().tolist() for v in (model.w, model.b)]

    with tempfile.TemporaryDirectory() as folder:
        straight, weights = fit(checkpoint_dir=folder, checkpoint_every_batches=2)
        resumed, resumed_weights = fit(
            resume_from=f"{folder}/epoch-0001-batch-000002.weights.h5")
    return {"by": compare_histories([straight, resumed]).max_rel,
            "epochs": resumed.epochs, "replicas": strategy.num_replicas_in_sync,
            "same_weights": weights == resumed_weights}


if __name__ == "__main__":
    sys.exit(main())
