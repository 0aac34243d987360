"""The process around training: a quiet TensorFlow import, the tf.distribute
strategy, and which process of a cluster writes the run directory.
"""

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable

from linfit.errors import ConfigError, WorkerLostError
from linfit.interrupts import StopRequest

# Whether the user chose TensorFlow's log level: then its start-up lines are theirs.
LEVEL_CHOSEN = "TF_CPP_MIN_LOG_LEVEL" in os.environ


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


@contextlib.contextmanager
def handle_signals(stop: StopRequest, where: Callable[[], str]):
    """While the context lasts, SIGINT (Ctrl-C) and SIGTERM ask `stop` for a stop at
    the next safe point, and a second one ends the process at once (`where()`
    says what is left to resume); a file-size limit (SIGXFSZ) is a write error
    instead of a silent kill. The handlers before, and `stop`, are restored after."""
    def ask(signum, frame):
        if stop.requested:
            os.write(2, f"error: stopped at once by a second signal; {where()}\n".encode())
            os._exit(128 + signum)
        stop.request(signum)

    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may handle signals
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)
    before = [signal.getsignal(signum) for signum in signals]
    for signum, handler, previous in zip(signals, (ask, ask, signal.SIG_IGN), before):
        if previous is not signal.SIG_IGN:  # nohup's (or a background job's) stays
            signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, handler in zip(signals, before):
            signal.signal(signum, handler)
        stop.clear()


def quiet_tensorflow(show_logs: bool = False, start_devices: bool = True):
    """Import TensorFlow and Keras without the C++ start-up lines (oneDNN, CUDA) that
    TensorFlow prints however its log level is set; the level itself is warnings
    and errors (TF_CPP_MIN_LOG_LEVEL=2) unless the environment sets it.

    Args:
      show_logs: let the lines through (TF_CPP_MIN_LOG_LEVEL=0).
      start_devices: also start TensorFlow's devices quietly (on a machine
        without a GPU their start logs `failed call to cuInit`). Once started,
        devices cannot be configured any more (`tf.config` logical devices,
        memory growth): configure them first, or pass False.

    Returns:
      The tensorflow module.
    """
    if show_logs:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_silenced(not show_logs):
        import tensorflow as tf
        import keras  # noqa: F401  (its import logs too)

        if start_devices:
            tf.config.list_logical_devices()
    return tf


def import_tensorflow(show_logs: bool = False, devices: int | None = None,
                      strategy: str = "default", worker_timeout: int = 60):
    """Import TensorFlow quietly (as `quiet_tensorflow`) for a command-line run, split
    the CPU into `devices`, make the strategy, and turn on TensorFlow's op determinism.

    Args:
      show_logs: let TensorFlow's own log lines through.
      devices: split the CPU into that many logical devices.
      strategy: `train.strategy`; made here, before any op runs, as a
        multi-worker strategy must be.

    Returns:
      The tf.distribute strategy (None for one device).
    """
    tf = quiet_tensorflow(show_logs, start_devices=False)
    with stderr_silenced(not show_logs):
        if devices:  # before anything starts the devices
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
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
        from linfit import compat  # Keras: only for a strategy

        # Collectives give up on a silent peer after worker_timeout seconds, and so
        # does the start on one that never joins: a dead worker fails the run
        # instead of hanging it.
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=worker_timeout)
        compat.cluster_joined_within(worker_timeout)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError):
            raise WorkerLostError(
                f"the cluster's other workers did not all join within {worker_timeout} s "
                "(train.worker_timeout): start the same command on every worker of "
                "TF_CONFIG (one may have stopped at an error of its own)") from None
    return tf.distribute.MirroredStrategy()


def is_chief() -> bool:
    """Whether this process writes the run directory: the chief of a TF_CONFIG
    cluster (or worker 0 when there is no chief), or any process without one.

    Raises:
      ConfigError: for a TF_CONFIG TensorFlow would refuse, said before it loads.
    """
    cluster, task = tf_config()
    if not task:
        return True
    if "chief" in cluster:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def tf_config() -> tuple[dict, dict]:
    """TF_CONFIG's cluster ({task type: [host:port, ...]}) and task ({type, index}), checked."""
    guide = "see TensorFlow's multi-worker guide for its format"
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {guide}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object with cluster and task: {guide}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not isinstance(cluster, dict) or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) for h in hosts)
            for hosts in cluster.values()):
        raise ConfigError('TF_CONFIG\'s cluster must map task types to lists of '
                          f'"host:port" addresses, e.g. {{"worker": ["10.0.0.1:12345"]}}: {guide}')
    if not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG's task must be an object {{type, index}}: {guide}")
    if task:
        kind, index = task.get("type"), task.get("index", 0)
        if kind not in cluster:
            raise ConfigError(f"TF_CONFIG's task type {kind!r} is not in its cluster "
                              f"({', '.join(cluster) or 'empty'})")
        if isinstance(index, bool) or not isinstance(index, int) or \
                not 0 <= index < len(cluster[kind]):
            raise ConfigError(f"TF_CONFIG's task index {index!r} is not one of its "
                              f"{len(cluster[kind])} {kind} address(es)")
        task = {"type": kind, "index": index}
    return cluster, task


def device_summary(strategy=None) -> dict:
    """What trained: the strategy, its devices and workers, as metrics.json records it.

    Example: {"strategy": "mirrored", "replicas": 2, "workers": 1,
    "devices": ["/job:localhost/replica:0/task:0/device:CPU:0", ...]}.
    """
    import tensorflow as tf

    if strategy is None:  # TensorFlow places ops on the first GPU, else the CPU
        devices = tf.config.list_logical_devices("GPU")[:1] or \
            tf.config.list_logical_devices("CPU")[:1]
        return {"strategy": "default", "replicas": 1, "workers": 1,
                "devices": [device.name for device in devices]}
    workers = 1
    if multiworker := isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        spec = strategy.cluster_resolver.cluster_spec()
        workers = sum(spec.num_tasks(job) for job in spec.jobs)
    return {"strategy": "multiworker" if multiworker else "mirrored",
            "replicas": strategy.num_replicas_in_sync, "workers": workers,
            "devices": list(strategy.extended.worker_devices)}


def describe_devices(summary: dict) -> str:
    """A device summary in words: "1 device (/CPU:0), no strategy", "MirroredStrategy
    over 2 devices", "MultiWorkerMirroredStrategy: 2 workers, 2 replicas"."""
    if summary["strategy"] == "default":
        where = ", ".join(_short_device(d) for d in summary["devices"]) or "CPU"
        return f"one device ({where}), no tf.distribute strategy"
    if summary["strategy"] == "mirrored":
        return (f"MirroredStrategy over {_count(summary['replicas'], 'device')} "
                f"({', '.join(_short_device(d) for d in summary['devices'])})")
    return (f"MultiWorkerMirroredStrategy: {_count(summary['workers'], 'worker')}, "
            f"{_count(summary['replicas'], 'replica')} in all")


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' * (number != 1)}"


def _short_device(name: str) -> str:
    """"/job:localhost/replica:0/task:0/device:CPU:0" -> "CPU:0"."""
    return name.rsplit("device:", 1)[-1]


def command_name(default: str) -> str:
    """The command as the user typed it, for `usage:` lines: `linfit-train` when run
    by that script, else `default` (e.g. "python -m linfit.train")."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("linfit-") else default
