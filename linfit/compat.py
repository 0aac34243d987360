"""Every place linfit relies on a private detail of Keras or TensorFlow.

Nothing else in linfit imports `keras.src` or touches a Keras object's
private attributes. Each function here says what it assumes, and
tests/test_compat.py pins each assumption against the installed Keras, so an
upgrade that breaks one fails there, by name, instead of somewhere in training.
"""

import contextlib

import keras
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.losses.losses import LossFunctionWrapper


def loss_from_function(function, name: str) -> keras.losses.Loss:
    """A loss function wrapped the way `compile(loss=function)` wraps it.

    Assumes: Keras's compile wraps a plain function in `LossFunctionWrapper`
    (mean over the batch, float32), so the manual loop reduces it as `fit` does.
    """
    return LossFunctionWrapper(function, name=name)


def tracked_loss(loss):
    """The value Keras's `train_step` gives its `loss` tracker for a replica's loss.

    Assumes: under tf.distribute, Keras scales each replica's loss down by the
    number of replicas and its tracker takes it back up with this function.
    """
    return unscale_loss_for_distribution(loss)


def update_metric_share(keras_model: keras.Model, y, prediction, share) -> None:
    """Update the compiled metrics with a worker's rows of a batch, `share` of its
    rows, so that the workers' updates add up to the batch's.

    Assumes: the compiled metrics are `keras_model._compile_metrics.metrics`,
    and they ignore sample weights (only `weighted_metrics` take them), so each
    is updated here. A `MeanMetricWrapper` (mae, mse, ...) of 1-D targets and
    1-D predictions takes one value per batch, its mean (it averages the last
    axis), so the worker's counts as `share` of one; against predictions of
    [N, 1] (a user's Dense(1)) it takes one per row, as other metrics do: those
    add the worker's rows as they are. A worker with no rows of the batch updates
    nothing (a metric of none is NaN).
    """
    import tensorflow as tf

    def update():
        for metric in keras_model._compile_metrics.metrics:
            per_batch = len(y.shape) == len(prediction.shape) == 1 and \
                isinstance(metric, keras.metrics.MeanMetricWrapper)
            metric.update_state(y, prediction, sample_weight=share if per_batch else None)
        return tf.constant(True)

    tf.cond(tf.shape(y)[0] > 0, update, lambda: tf.constant(False))


def update_metrics_of_replica(keras_model: keras.Model, y, prediction) -> bool:
    """Under several replicas, update the compiled metrics with this replica's rows
    as its share of the global batch (`update_metric_share`), and not at all when
    it has none; so that, added over the replicas (Keras adds a metric's
    variables), they are one device's. Returns False, updating nothing, with one
    replica (where the plain update is the same) or no compiled metrics.

    Assumes: `keras_model._compile_metrics` is None when nothing was compiled.

    Keras's own update counts each replica's mean of a 1-D target as a batch's:
    the epoch's mean then weighs the replicas' rows unequally, and a replica
    with no rows (a last batch of one row) makes it NaN.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1 or \
            keras_model._compile_metrics is None:
        return False
    size = tf.shape(y)[0]
    share = tf.cast(size, tf.float32) / tf.cast(context.all_reduce("SUM", size), tf.float32)
    update_metric_share(keras_model, y, prediction, share)
    return True


@contextlib.contextmanager
def strategy_from_scope(keras_model: keras.Model, strategy):
    """Run `fit` in `strategy`'s scope with the model's remembered strategy unset.

    A model created in a strategy's scope remembers it (`_distribute_strategy`),
    and Keras's `fit` then first builds it symbolically on the MEAN over
    replicas of the first batch's shards, which fails when they differ in
    size (201 rows over 2 replicas: "Inputs to operation AddN ... must have
    the same size"). linfit builds the model and optimizer itself, so that
    build is skipped by taking the strategy from the scope instead, as Keras
    does for a model created outside one.

    Assumes: `keras.Model._distribute_strategy` holds the creation strategy
    and `distribute_strategy` falls back to the current scope's when it is None.
    """
    remembered = keras_model._distribute_strategy
    keras_model._distribute_strategy = None
    try:
        with strategy.scope():
            yield
    finally:
        keras_model._distribute_strategy = remembered


def use_train_function(keras_model: keras.Model, train_function) -> None:
    """Make `fit` call `train_function(iterator)` for each execution.

    Assumes: `fit` uses `model.train_function` when it is already set after
    `compile` (Keras's `make_train_function` returns it unless forced).
    """
    keras_model.train_function = train_function


def symbolic_build(keras_model: keras.Model, x, y) -> None:
    """Build the model, its compiled metrics and loss as `fit` does: symbolically,
    from the shapes of a batch, without calling the model on data.

    Assumes: `Trainer._symbolic_build(data_batch=...)` takes arrays for their
    shape and dtype only, and builds nothing already built.
    """
    keras_model._symbolic_build(data_batch=(x, y))


@contextlib.contextmanager
def compile_config_kept(keras_model: keras.Model):
    """While the context lasts, the model reports the compile config it has now,
    whatever it is compiled with: a `.keras` file saved during `fit` (by
    ModelCheckpoint) names the user's loss, not linfit's training loss.

    Assumes: Keras's saving reads `model.get_compile_config()` (an instance
    attribute shadows the method).
    """
    config = keras_model.get_compile_config()
    keras_model.get_compile_config = lambda: config
    try:
        yield
    finally:
        del keras_model.get_compile_config


def keras_jit_compile(keras_model: keras.Model, wanted: bool) -> bool:
    """`jit_compile` for `keras_model.compile`: `wanted`, unless Keras would turn it off
    with a warning on stderr, as it does while TensorFlow's op determinism is on (the
    CLI turns it on for bitwise reruns): the Keras loop then runs as a tf.function.

    Assumes: `keras.src.trainers.trainer.model_supports_jit` is what `compile` asks.
    """
    from keras.src.trainers.trainer import model_supports_jit

    return wanted and model_supports_jit(keras_model)


class _LinfitRetracing:
    """Drops TensorFlow's "triggered tf.function retracing" warnings about linfit's own
    functions: each Trainer traces its steps once for its model's variables, so a
    process that trains five models (a sweep, the CLI's runs) would be told to
    "define your @tf.function outside of the loop", which it cannot."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        # linfit's functions are bound methods: "<bound method X.f of <linfit.module.X ...>>".
        return not ("triggered tf.function retracing" in message and " of <linfit." in message)


def quiet_linfit_retracing() -> None:
    """Install `_LinfitRetracing` on TensorFlow's logger (once).

    Assumes: TensorFlow logs the warning through `tf.get_logger()` with the
    function's repr, which names its module (tests/test_compat.py pins it).
    """
    import tensorflow as tf

    logger = tf.get_logger()
    if not any(isinstance(f, _LinfitRetracing) for f in logger.filters):
        logger.addFilter(_LinfitRetracing())


def cluster_joined_within(seconds: int) -> None:
    """Make this task of a TF_CONFIG cluster give up, with a DeadlineExceededError,
    when the others have not all joined within `seconds` (a worker that refused its
    arguments and exited): MultiWorkerMirroredStrategy waits for them for ever.
    Not task 0: the coordination service runs there, and waits without a deadline.

    Assumes: the strategy configures TensorFlow's coordination service only when
    none is configured yet (`collective_all_reduce_strategy`), as "standalone",
    led by the cluster's coordination leader, over its chief and worker jobs: the
    same, here, with a deadline to register.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
    from tensorflow.python.eager import context

    resolver = TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    jobs = [job for job in ("chief", "worker") if job in spec.jobs]
    if resolver.task_type not in jobs:
        return
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(
            name=job, num_tasks=spec.num_tasks(job)) for job in jobs],
        cluster_register_timeout_in_ms=seconds * 1000)


def devices_started() -> bool:
    """Whether TensorFlow's devices have started (after which they cannot be configured).

    Assumes: the eager context holds a handle once its devices are initialised.
    """
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None
