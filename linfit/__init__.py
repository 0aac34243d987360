"""linfit: the TensorFlow guide "Basic training loops", done right.

    import linfit
    model = linfit.LinearModule()                 # or linfit.LinearModel()
    history = linfit.Trainer(model).fit(x, y, epochs=10, loop="manual")
    linfit.save_weights(model, "model.weights.h5")

Names that need TensorFlow are imported on first use, so that
`python -m linfit.train --help` and config errors do not wait for it. That
first use imports TensorFlow without its C++ start-up lines, and
`import linfit` sets TensorFlow's log level to warnings and errors
(TF_CPP_MIN_LOG_LEVEL=2) unless TF_CPP_MIN_LOG_LEVEL is set already.
"""

import importlib
import os
import sys

from linfit.runtime import LEVEL_CHOSEN, quiet_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "LinearModule": "linfit.models",
    "LinearModel": "linfit.models",
    "KerasModuleAdapter": "linfit.models",
    "Trainer": "linfit.trainer",
    "History": "linfit.history",
    "save_weights": "linfit.checkpoint",
    "load_weights": "linfit.checkpoint",
    "save_checkpoint": "linfit.checkpoint",
    "load_checkpoint": "linfit.checkpoint",
    "compare_histories": "linfit.agreement",
    "Agreement": "linfit.agreement",
    "least_squares_reference": "linfit.reference",
    "Reference": "linfit.reference",
    "run_comparison": "linfit.comparison",
    "run_experiment": "linfit.experiment",
    "Experiment": "linfit.experiment",
    "Comparison": "linfit.experiment",
    "Config": "linfit.config",
    "load_config": "linfit.config",
    "Data": "linfit.data",
    "load_data": "linfit.data",
    "synthetic_line": "linfit.data",
    "read_data_file": "linfit.data",
    "read_csv": "linfit.data",
    "LinfitError": "linfit.errors",
    "ConfigError": "linfit.errors",
    "DataError": "linfit.errors",
    "ModelError": "linfit.errors",
    "CheckpointError": "linfit.errors",
    "RunDirError": "linfit.errors",
    "DivergenceError": "linfit.errors",
    "WorkerLostError": "linfit.errors",
    "quiet_tensorflow": "linfit.runtime",
}

__all__ = ["__version__", *_EXPORTS]


# Modules of the names above that load without TensorFlow.
_LIGHT = ("linfit.history", "linfit.agreement", "linfit.reference", "linfit.config",
          "linfit.errors", "linfit.data", "linfit.runtime")


def __getattr__(name):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        if module not in _LIGHT and not LEVEL_CHOSEN and "tensorflow" not in sys.modules:
            # The first use: TensorFlow without its start-up lines, its devices left
            # for the user to configure (linfit's models start them quietly).
            quiet_tensorflow(start_devices=False)
        value = globals()[name] = getattr(importlib.import_module(module), name)
        return value
    raise AttributeError(f"module 'linfit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
