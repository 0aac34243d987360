"""Each private Keras detail linfit relies on (linfit/compat.py), pinned against the
installed Keras: an upgrade that breaks one fails here, by name.

The multiplication `tracked_loss` undoes under several replicas is pinned by
the distributed tests (tests/helpers/mirrored_check.py: the Keras loop's
`loss` log equals one device's).
"""

import keras
import numpy as np
import tensorflow as tf

from linfit import LinearModel, LinearModule, Trainer, compat


def test_loss_from_function_reduces_as_compile_does(guide_data):
    # Keras compiles a plain function into a mean over the batch: with the same
    # function, the manual loop (through the wrapper) and fit give the same bits.
    histories = [Trainer(LinearModule(), loss=keras.losses.mean_squared_error).fit(
        guide_data.x, guide_data.y, epochs=3, loop=loop, batch_size=64)
        for loop in ("manual", "keras")]
    assert histories[0].to_json() == histories[1].to_json()
    wrapped = compat.loss_from_function(keras.losses.mean_absolute_error, "mae")
    y, prediction = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 2.0])
    assert float(wrapped(y, prediction)) == 1.0


def test_tracked_loss_is_the_loss_on_one_device():
    loss = tf.constant(2.5)
    assert float(compat.tracked_loss(loss)) == 2.5
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert float(compat.tracked_loss(loss)) == 2.5


def test_a_model_remembers_the_strategy_it_was_created_in():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = LinearModel()
    assert model.distribute_strategy is strategy
    other = tf.distribute.OneDeviceStrategy("/cpu:0")
    with compat.strategy_from_scope(model, other):
        assert model.distribute_strategy is other  # taken from the scope
    assert model.distribute_strategy is strategy


def test_fit_uses_a_train_function_set_after_compile():
    model = LinearModel()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.make_train_function()
    made = model.train_function
    calls = []

    def counting(iterator):
        calls.append(1)
        return made(iterator)

    compat.use_train_function(model, counting)
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    model.fit(x, 2 * x, epochs=2, batch_size=8, verbose=0)
    assert len(calls) == 2 and float(model.w.numpy()) != 5.0


def test_symbolic_build_builds_without_calling_the_model():
    class Counting(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)
            self.calls = 0

        def call(self, x):
            self.calls += 1  # a Python count: traced calls count too
            return self.dense(x)

    model = Counting()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = np.zeros((5, 3), np.float32), np.zeros((5, 2), np.float32)
    compat.symbolic_build(model, x, y)
    assert model.built and [v.shape for v in model.trainable_variables] == [(3, 2), (2,)]
    assert "mae" in model.get_metrics_result()  # the compiled metrics are built too
    traced = model.calls
    compat.symbolic_build(model, x, y)  # nothing left to build: no more traces
    assert model.calls == traced


def test_a_kept_compile_config_is_what_a_saved_model_names(tmp_path):
    model = LinearModel()
    model.compile(optimizer="sgd", loss="mae")
    with compat.compile_config_kept(model):
        model.compile(optimizer="sgd", loss="mse")
        model.save(tmp_path / "m.keras")
    assert model.get_compile_config()["loss"] == "mse"  # the method is back
    assert keras.saving.load_model(tmp_path / "m.keras").get_compile_config()["loss"] == "mae"


def test_many_trainers_in_one_process_log_no_retracing_warning(guide_data):
    """A sweep of fresh Trainers traces linfit's functions once each; TensorFlow's
    warning about it, which names the function, is dropped (and only that one)."""
    records = []

    class Keep:
        def filter(self, record):
            records.append(record.getMessage())
            return True

    logger = tf.get_logger()
    keep = Keep()
    logger.addFilter(keep)  # runs after linfit's filter: it sees what gets through
    try:
        for rate in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07):
            Trainer(LinearModule(), learning_rate=rate, compile="function").fit(
                guide_data.x, guide_data.y, epochs=40)
        tf.get_logger().warning("5 out of the last 5 calls to <function user_fn at 0x1> "
                                "triggered tf.function retracing. Tracing is expensive")
    finally:
        logger.removeFilter(keep)
    assert [m for m in records if "retracing" in m] == [
        "5 out of the last 5 calls to <function user_fn at 0x1> triggered tf.function "
        "retracing. Tracing is expensive"]


def test_metric_shares_of_a_batch_add_up_to_the_batch():
    """A worker's rows of a batch, updated as their share of it: the two workers'
    updates (3 and 5 of 8 rows) give the metrics of one update with the batch,
    for 1-D targets (mae: one value per batch) and 2-D (one per row), and for a
    metric that sums rows (R2Score)."""
    rng = np.random.default_rng(3)
    for outputs in (None, 2):
        model = LinearModel(features=1, outputs=outputs)
        extra = [keras.metrics.R2Score()] if outputs else []  # it takes 2-D targets only
        Trainer(model, metrics=["mae", "mse", *extra]).fit(
            rng.normal(size=(8, 1)).astype(np.float32),
            rng.normal(size=(8,) if outputs is None else (8, 2)).astype(np.float32),
            epochs=1, verbose=0)
        shape = (8,) if outputs is None else (8, 2)
        y, prediction = (tf.constant(rng.normal(size=shape), tf.float32) for _ in range(2))
        results = []
        for parts in ((slice(0, 8),), (slice(0, 3), slice(3, 8))):
            for metric in model.metrics:
                metric.reset_state()
            for part in parts:
                compat.update_metric_share(model, y[part], prediction[part],
                                           (part.stop - part.start) / 8)
            results.append({name: value for name, value in model.get_metrics_result().items()
                            if name != "loss"})
        assert set(results[0]) == {"mae", "mse", *(["r2_score"] if outputs else [])}
        for name in results[0]:
            np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-6)
        for metric in model.metrics:  # and one update is Keras's own
            metric.reset_state()
        model.compute_metrics(None, y, prediction)
        for name in results[0]:
            np.testing.assert_allclose(model.get_metrics_result()[name], results[0][name],
                                       rtol=1e-6)


def test_a_model_compiled_without_metrics_has_no_compile_metrics():
    model = LinearModel()
    model.compile(optimizer="sgd", loss="mse")
    assert model._compile_metrics is None
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    assert model._compile_metrics is not None


def test_the_coordination_service_can_be_configured_with_a_deadline_to_join():
    """`compat.cluster_joined_within`'s pieces (its effect is tested in
    test_distribute.py: a lone worker stops in bounded time)."""
    import inspect

    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import collective_all_reduce_strategy, multi_worker_util
    from tensorflow.python.eager import context

    assert "cluster_register_timeout_in_ms" in inspect.signature(
        context.Context.configure_coordination_service).parameters
    assert coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=2).num_tasks == 2
    assert callable(multi_worker_util.coordination_leader)
    # The strategy configures the service only when none is configured yet.
    assert "coordination_service is None" in inspect.getsource(collective_all_reduce_strategy)
