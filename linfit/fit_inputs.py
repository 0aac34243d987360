"""What `Trainer.fit` trains on: arrays checked and held in TensorFlow once
(`linfit.pipeline.FitData`), or CSV files streamed (`linfit.streaming.StreamData`).
"""

import dataclasses
import warnings

import numpy as np
import tensorflow as tf

from linfit.arrays import check_features, check_inputs, check_outputs, check_validation
from linfit.data import fingerprint
from linfit.errors import ConfigError
from linfit.models import is_linear
from linfit import pipeline
from linfit.pipeline import FitData, to_variable
from linfit.streaming import StreamData, summed_over_workers
from linfit.streams import DataFiles

# Rows of streamed data read to build the model (its shapes), never trained on.
SAMPLE_ROWS = 16


def checked(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) as float32 arrays that fit `model` (its features and outputs)."""
    x, y = check_inputs(x, y)
    if is_linear(model):
        check_features(x, model.features)
        check_outputs(y, model.outputs)
    return x, y


def fit_data(model, inputs: tuple, validation_data, loop: str, shape: FitData,
             strategy=None) -> tuple[FitData, tuple]:
    """The fit's data, and (x, y) of a few rows to build the model from.

    Args:
      inputs: (x, y) arrays, or (files, None) with files a
        `linfit.streams.DataFiles` to stream.
      validation_data: (x_val, y_val), or DataFiles with streamed `x`.
      loop: the loop that trains ("manual" or "keras").
      shape: a FitData with the batching settings (and no arrays).
      strategy: the multi-replica tf.distribute strategy training runs under, or None.
    """
    x, y = inputs
    if isinstance(x, DataFiles):
        data, sample = _stream(model, x, y, validation_data, shape)
        check_streamable(data.num_examples, data.batch_size, (loop,), strategy)
        return (_worker_share(data, strategy) if _multiworker(strategy) else data), sample
    if isinstance(validation_data, DataFiles):
        raise ConfigError("validation_data is files to stream but x is arrays: stream both, "
                          "or read both into memory")
    x, y = checked(model, x, y)
    arrays = (x, y) if validation_data is None else (x, y, *check_validation(
        validation_data, lambda x_val, y_val: checked(model, x_val, y_val)))
    return dataclasses.replace(shape, arrays=tuple(to_variable(array) for array in arrays),
                               fingerprint=fingerprint(*arrays)), (x, y)


def _stream(model, files: DataFiles, y, validation, shape: FitData) -> tuple[StreamData, tuple]:
    if y is not None:
        raise ConfigError("x is files to stream, which hold the targets too: pass y=None")
    if validation is not None and not isinstance(validation, DataFiles):
        raise ConfigError("x is files to stream: give validation_data as files too "
                          "(linfit.streams.open_data_files)")
    if shape.shuffle_seed is not None and not shape.shuffle_buffer:
        raise ConfigError("shuffling streamed data needs a bounded window: give "
                          "shuffle_buffer (data.shuffle_buffer), e.g. 100000 rows")
    sample = checked(model, *files.sample(SAMPLE_ROWS))
    if validation is not None:
        checked(model, *validation.sample(SAMPLE_ROWS))
    fields = {field.name: getattr(shape, field.name) for field in dataclasses.fields(FitData)}
    fields.update(shard_rows=files.rows, whole_batches=False, fingerprint=files.fingerprint() + (
        validation.fingerprint() if validation is not None else ""))
    data = StreamData(**fields, files=files, validation_files=validation)
    return data, sample


def _worker_share(data: StreamData, strategy) -> StreamData:
    """Streamed data on a worker of a cluster: its share of every global batch."""
    index, count = worker_position(strategy)
    for files in (data.files, data.validation_files):
        if files is not None and len(files.paths) < count:
            warnings.warn(f"{files.source}: {len(files.paths)} file(s) for {count} workers: "
                          "each worker reads every file and parses its share of its blocks "
                          "(of lines of a CSV file, of rows of an NPZ one)", stacklevel=4)
    return dataclasses.replace(data, worker=(index, count), strategy=strategy)


def worker_pass(files: DataFiles, strategy) -> tuple[DataFiles, object]:
    """For a pass over `files` whose sums add up over a cluster's workers: the files
    this process reads (its share: every count-th from its index) and the function
    that adds a sum over the workers; (files, None) when it reads them all (one
    process, or fewer files than workers)."""
    if not _multiworker(strategy):
        return files, None
    index, count = worker_position(strategy)
    if len(files.paths) < count:
        return files, None
    share = files.select(slice(index, None, count))
    return share, lambda value: summed_over_workers(strategy,
                                                    tf.constant(value, tf.float64)).numpy()


def worker_position(strategy) -> tuple[int, int]:
    """(index, count) of this process among the tasks of a multi-worker cluster, which
    all train: the chief first, when there is one, then the workers in order."""
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    count = chiefs + (spec.num_tasks("worker") if "worker" in spec.jobs else 0)
    return (resolver.task_id if resolver.task_type == "chief"
            else chiefs + resolver.task_id), count


def _multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_streamable(rows: int, batch_size: int | None, loops: tuple[str, ...],
                     strategy=None) -> None:
    """Refuse streamed data a fit (or, before any trains, a run of an experiment)
    could not train: a full batch above one chunk (`FULL_PASS_ROWS`) for the Keras
    loop, which takes it whole, or on local devices (batches are split over them
    whole); on workers, anything but the manual loop on one device each."""
    full_batch = batch_size is None or batch_size >= rows
    if _multiworker(strategy) and strategy.num_replicas_in_sync > 1 and "keras" in loops:
        raise ConfigError("streamed data trains on several workers only with train.loop = "
                          "\"manual\": set it, or set data.streaming = false")
    if full_batch and rows > pipeline.FULL_PASS_ROWS and strategy is not None and \
            not _multiworker(strategy) and strategy.num_replicas_in_sync > 1:
        raise ConfigError(f"a full batch of {rows} streamed rows on several local devices "
                          "would be held whole: set data.batch_size, or data.streaming = false")
    if _multiworker(strategy) and len(strategy.extended.worker_devices) > 1:
        raise ConfigError(f"streamed data trains on one device per worker, and this worker "
                          f"has {len(strategy.extended.worker_devices)}: make one visible "
                          "(e.g. CUDA_VISIBLE_DEVICES=0), or set data.streaming = false")
    if full_batch and "keras" in loops and rows > pipeline.FULL_PASS_ROWS:
        raise ConfigError(f"the Keras loop takes a full batch whole, and {rows} streamed rows "
                          "are more than it can hold: set data.batch_size, or train.loop = "
                          "\"manual\" (it sums a full batch chunk by chunk)")
