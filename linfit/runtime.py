"""The process around training: a quiet TensorFlow import, the tf.distribute
strategy, and which process of a cluster writes the run directory.
"""

import contextlib
import json
import os
import sys

from linfit.errors import ConfigError


@contextlib.contextmanager
def stderr_silenced(enabled: bool = True):
    """Send file descriptor 2 to /dev/null, to hide C++ log lines printed on import.

    TensorFlow prints oneDNN/CUDA lines while it imports and initialises its
    devices, even with TF_CPP_MIN_LOG_LEVEL=2, from C++ where Python's
    sys.stderr cannot catch them.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow(show_logs: bool = False, devices: int | None = None,
                      strategy: str = "default", worker_timeout: int = 60):
    """Import TensorFlow and Keras and start TensorFlow's devices, quietly, and turn
    on TensorFlow's op determinism.

    Args:
      show_logs: let TensorFlow's own log lines through.
      devices: split the CPU into that many logical devices.
      strategy: `train.strategy`; made here, before any op runs, as a
        multi-worker strategy must be.

    Returns:
      The tf.distribute strategy (None for one device).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if show_logs else "2")
    with stderr_silenced(not show_logs):
        import tensorflow as tf

        if devices:  # before anything starts the devices
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
        import keras  # noqa: F401  (its import logs too)

        made = make_strategy(strategy, worker_timeout)
        tf.constant(0.0)  # device start-up logs its own lines
    # Same config, same bits: ops with a nondeterministic kernel raise instead.
    tf.config.experimental.enable_op_determinism()
    return made


def make_strategy(name: str, worker_timeout: int = 60):
    """A new tf.distribute strategy as `train.strategy` names it (None: one device).

    "multiworker" reads the cluster from TF_CONFIG, as TensorFlow documents it;
    it must be made before TensorFlow runs any op (see `import_tensorflow`).
    """
    if name == "default":
        return None
    import tensorflow as tf

    if name == "multiworker":
        # Collectives give up on a silent peer after worker_timeout seconds, so a
        # dead worker fails the run instead of hanging it.
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=worker_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.MirroredStrategy()


def is_chief() -> bool:
    """Whether this process writes the run directory: the chief of a TF_CONFIG
    cluster (or worker 0 when there is no chief), or any process without one."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
        task = config.get("task", {})
        kinds = config.get("cluster", {})
    except (ValueError, AttributeError):
        raise ConfigError("TF_CONFIG is not valid JSON: see TensorFlow's multi-worker "
                          "guide for its format") from None
    if not task:
        return True
    if "chief" in kinds:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0
