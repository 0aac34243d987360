"""`run_comparison`: an experiment from arrays and keyword arguments, for Python users
(`python -m linfit.train` builds its `Experiment` from a config instead).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from linfit.agreement import DEFAULT_RTOL
from linfit.arrays import check_inputs, check_validation
from linfit.config import check_value
from linfit.data import Data
from linfit.errors import ConfigError
from linfit.experiment import Comparison, Experiment, RunHooks, run_experiment


def run_comparison(x, y, *, models: Sequence[str] = ("module", "keras"),
                   loops: Sequence[str] = ("manual", "keras"), epochs: int = 10,
                   init_w=5.0, init_b: float = 0.0, learning_rate: float = 0.1,
                   optimizer: str = "sgd", loss: str = "mse", metrics: Sequence[str] = (),
                   batch_size: int | None = None,
                   shuffle_seed: int | None = None, validation_data: tuple | None = None,
                   standardize: bool = False, feature_names: tuple[str, ...] = (),
                   seed: int = 0, rtol: float = DEFAULT_RTOL, verbose: int = 0,
                   compile: str = "auto", steps_per_call: int = 0, strategy=None,
                   checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                   keep_checkpoints: int = 0,
                   resume_from: dict[str, Path] | None = None,
                   callbacks: Callable[[str], list] | None = None,
                   on_epoch_end: Callable[[str, object], None] | None = None) -> Comparison:
    """Train every model × loop combination from the same start, and compare.

    Args:
      x, y: the training data; x is [N] (scalar model) or [N, d], y is [N]
        or [N, k] (k outputs).
      models: "module" (LinearModule) and/or "keras" (LinearModel).
      loops: "manual" and/or "keras".
      standardize: train on features scaled to zero mean and unit variance;
        histories, the trained models and their checkpoints are in the
        original units all the same.
      seed: passed to `keras.utils.set_random_seed` before each run.
      strategy: a tf.distribute strategy; the models are created in its scope.
      checkpoint_dir: with `checkpoint_every` > 0, each run saves training
        checkpoints in `checkpoint_dir/<model>-<loop>/`.
      resume_from: per run label ("module-manual", ...), a training
        checkpoint to continue that run from.
      callbacks: per run label, the Keras callbacks for that run.
      on_epoch_end: called with the run label and its History so far (in
        the original units), before training and after each epoch.
      Other arguments as for `Trainer` and `Trainer.fit`.

    Returns and raises as `run_experiment`.
    """
    models, loops, metrics = _checked(models, loops, metrics, optimizer, epochs, seed)
    experiment = Experiment(
        models=models, loops=loops, epochs=epochs, init_w=init_w, init_b=init_b,
        learning_rate=learning_rate, optimizer=optimizer, loss=loss, metrics=metrics,
        batch_size=batch_size,
        shuffle_seed=shuffle_seed, standardize=standardize, seed=seed, compile=compile,
        steps_per_call=steps_per_call, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints)
    hooks = RunHooks(checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
                     resume_from=resume_from or {}, callbacks=callbacks,
                     on_epoch_end=on_epoch_end, verbose=verbose)
    x, y = check_inputs(x, y)  # before the reference solves anything of them
    if validation_data is not None:
        validation_data = check_validation(validation_data)
    data = Data(x=x, y=y, source="arrays",
                feature_names=tuple(feature_names) or _default_names(x),
                x_val=None if validation_data is None else validation_data[0],
                y_val=None if validation_data is None else validation_data[1])
    return run_experiment(experiment, data, strategy=strategy, hooks=hooks, rtol=rtol)


def _checked(models, loops, metrics, optimizer, epochs: int, seed: int) -> tuple:
    """(models, loops, metrics) as tuples of names, once every argument is checked.

    Raises:
      ConfigError: naming the argument that cannot be trained with.
    """
    for key, value in (("train.epochs", epochs), ("train.seed", seed)):
        check_value(key, value, label=key.split(".")[1])
    if not isinstance(optimizer, str):  # one object would be shared by every run's model
        raise ConfigError(f"optimizer={optimizer!r}: run_comparison makes one optimizer per "
                          "run from a name ('sgd', 'adam'); for an optimizer object, use Trainer")
    return tuple(_names(name, given, choices) for name, given, choices in (
        ("models", models, ("module", "keras")), ("loops", loops, ("manual", "keras")),
        ("metrics", metrics, None)))


def _names(name: str, given, choices) -> tuple[str, ...]:
    """A name or a sequence of names as a tuple, each one of `choices` (if given)."""
    names = (given,) if isinstance(given, str) else tuple(given)
    if choices is not None and (not names or not set(names) <= set(choices)):
        raise ConfigError(f"{name}={given!r}: give one or more of {', '.join(choices)}")
    return names


def _default_names(x: np.ndarray) -> tuple[str, ...]:
    return ("x",) if x.ndim == 1 else tuple(f"x{i}" for i in range(x.shape[1]))
