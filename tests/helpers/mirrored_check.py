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
    print(json.dumps(results))
    return 0


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
        history = trainer.fit(data.x, data.y, epochs=3, loop=loop, batch_size=20,
                              shuffle_seed=1, **options)
        return history, [v.numpy().tolist() for v in (model.w, model.b)]

    with tempfile.TemporaryDirectory() as folder:
        straight, weights = fit(checkpoint_dir=folder, checkpoint_every_batches=4)
        resumed, resumed_weights = fit(
            resume_from=f"{folder}/epoch-0001-batch-000004.weights.h5")
    return {"by": compare_histories([straight, resumed]).max_rel,
            "epochs": resumed.epochs, "replicas": strategy.num_replicas_in_sync,
            "same_weights": weights == resumed_weights}


if __name__ == "__main__":
    sys.exit(main())
