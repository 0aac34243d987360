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
from linfit.compare import compare_histories  # noqa: E402
from linfit.config import DataConfig  # noqa: E402
from linfit.data import synthetic_line  # noqa: E402


def main() -> int:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = synthetic_line(DataConfig(true_w=(0.5, -1.2, 2.0), num_examples=201, seed=3))
    results = {}
    # 64: batches of 64, 64, 64 and a partial 9. The Keras loop cannot start on
    # the full batch of 201 (see _check_keras_can_distribute), hence 64 only.
    for loop, batch_size in (("manual", None), ("manual", 64), ("keras", 64)):
        runs = {}
        for name, scope in (("single", None), ("mirrored", strategy)):
            with (scope or tf.distribute.get_strategy()).scope():
                model = linfit.LinearModel(features=3, init_w=0.0)
            trainer = linfit.Trainer(model, optimizer="adam", learning_rate=0.05,
                                     strategy=scope)
            runs[name] = trainer.fit(data.x, data.y, epochs=5, loop=loop,
                                     batch_size=batch_size)
        agreement = compare_histories([runs["single"], runs["mirrored"]])
        results[f"{loop}-{batch_size or 'full'}"] = {
            "by": agreement.max_rel,
            "epochs": runs["mirrored"].epochs,
            "replicas": strategy.num_replicas_in_sync,
            "final_w": np.asarray(runs["mirrored"].w[-1]).tolist()}
    with strategy.scope():
        model = linfit.LinearModel(features=3)
    try:
        linfit.Trainer(model, strategy=strategy).fit(data.x, data.y, epochs=1, loop="keras")
        results["keras-full-refused"] = False
    except linfit.ConfigError as error:
        results["keras-full-refused"] = "does not split evenly" in str(error)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
