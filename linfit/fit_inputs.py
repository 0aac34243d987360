"""What `Trainer.fit` trains on: arrays checked and held in TensorFlow once
(`linfit.pipeline.FitData`), or CSV files streamed (`linfit.streaming.StreamData`).
"""

import dataclasses

import numpy as np

from linfit.data import check_features, check_inputs, check_outputs, fingerprint
from linfit.errors import ConfigError
from linfit.models import is_linear
from linfit.pipeline import FitData, to_variable
from linfit.streaming import StreamData
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


def fit_data(model, inputs: tuple, validation_data, loop: str,
             shape: FitData) -> tuple[FitData, tuple]:
    """The fit's data, and (x, y) of a few rows to build the model from.

    Args:
      inputs: (x, y) arrays, or (files, None) with files a
        `linfit.streams.DataFiles` to stream.
      validation_data: (x_val, y_val), or DataFiles with streamed `x`.
      loop: the loop that trains ("manual" or "keras").
      shape: a FitData with the batching settings (and no arrays).
    """
    x, y = inputs
    if isinstance(x, DataFiles):
        data, sample = _stream(model, x, y, validation_data, shape)
        if loop == "keras" and data.chunks_per_step > 1:
            raise ConfigError("the Keras loop takes a full batch whole, and this streamed one "
                              "is too large to hold: stream mini-batches (batch_size), or "
                              "train the full batch with loop=\"manual\", which sums it "
                              "chunk by chunk")
        return data, sample
    if isinstance(validation_data, DataFiles):
        raise ConfigError("validation_data is files to stream but x is arrays: stream both, "
                          "or read both into memory")
    x, y = checked(model, x, y)
    arrays = (x, y) if validation_data is None else (x, y, *checked(model, *validation_data))
    return dataclasses.replace(shape, arrays=tuple(to_variable(array) for array in arrays),
                               fingerprint=fingerprint(*arrays)), (x, y)


def _stream(model, files: DataFiles, y, validation, shape: FitData) -> tuple[StreamData, tuple]:
    if y is not None:
        raise ConfigError("x is files to stream, which hold the targets too: pass y=None")
    if validation is not None and not isinstance(validation, DataFiles):
        raise ConfigError("x is files to stream: give validation_data as files too "
                          "(linfit.streams.open_data_files)")
    if shape.whole_batches:
        raise ConfigError("streamed data cannot train under a tf.distribute strategy yet: "
                          "read it into memory (data.streaming = false), or train on one device")
    if shape.shuffle_seed is not None and not shape.shuffle_buffer:
        raise ConfigError("shuffling streamed data needs a bounded window: give "
                          "shuffle_buffer (data.shuffle_buffer), e.g. 100000 rows")
    sample = checked(model, *files.sample(SAMPLE_ROWS))
    if validation is not None:
        checked(model, *validation.sample(SAMPLE_ROWS))
    fields = {field.name: getattr(shape, field.name) for field in dataclasses.fields(FitData)}
    fields.update(shard_rows=files.rows, fingerprint=files.fingerprint() + (
        validation.fingerprint() if validation is not None else ""))
    data = StreamData(**fields, files=files, validation_files=validation)
    return data, sample
