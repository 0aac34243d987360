"""An experiment: every model variant × loop trained from the same start on the
same data, compared with each other and with the exact answer.

    experiment = Experiment.from_config(config, data.features)
    comparison = run_experiment(experiment, data)

Standardisation is one visible stage (`training_inputs`): the runs train on
scaled features, and each Trainer is given the scaling, so its History and
every checkpoint it writes are in the data's units.
"""

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from linfit.agreement import DEFAULT_RTOL, Agreement, compare_histories
from linfit.config import Config
from linfit.data import Data, Standardizer
from linfit.errors import ConfigError, DivergenceError, LinfitError, TrainingInterrupted
from linfit.history import History
from linfit.interrupts import STOP
from linfit.reference import Reference, least_squares_reference, reference_from_chunks
from linfit.streams import DataFiles


class RunLabel(str):
    """A run's label, "<model>-<loop>" (e.g. "module-manual"), that knows its parts."""

    model: str
    loop: str

    def __new__(cls, model: str, loop: str) -> "RunLabel":
        label = super().__new__(cls, f"{model}-{loop}")
        label.model, label.loop = model, loop
        return label


@dataclass(frozen=True)
class Experiment:
    """Everything that decides the numbers of an experiment's runs.

    Field meanings as for `linfit.run_comparison`; `Experiment.from_config` builds
    one from a config.
    """

    models: tuple[str, ...] = ("module", "keras")
    loops: tuple[str, ...] = ("manual", "keras")
    epochs: int = 10
    init_w: float | tuple[float, ...] = 5.0
    init_b: float | tuple[float, ...] = 0.0
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    loss: str = "mse"
    metrics: tuple[str, ...] = ()
    record_full_loss: bool = True
    batch_size: int | None = None
    shuffle_seed: int | None = None
    shuffle_buffer: int = 0
    standardize: bool = False
    seed: int = 0
    compile: str = "auto"
    steps_per_call: int = 0
    checkpoint_every: int = 0
    checkpoint_every_batches: int = 0
    keep_checkpoints: int = 0

    @classmethod
    def from_config(cls, config: Config, features: int | None) -> "Experiment":
        """The experiment a config describes, for data with `features` features.

        Raises:
          ConfigError: when a list of initial weights does not fit the data.
        """
        data, train = config.data, config.train
        return cls(models=config.model_kinds, loops=config.loops, epochs=train.epochs,
                   init_w=initial_w(config.model.init_w, features),
                   init_b=config.model.init_b, learning_rate=train.learning_rate,
                   optimizer=train.optimizer, metrics=train.metrics,
                   record_full_loss=train.record_full_loss, batch_size=data.batch_size or None,
                   shuffle_seed=data.seed if data.shuffle else None,
                   shuffle_buffer=data.shuffle_buffer, standardize=data.standardize,
                   seed=train.seed, compile=train.compile, steps_per_call=train.steps_per_call,
                   checkpoint_every=train.checkpoint_every,
                   checkpoint_every_batches=train.checkpoint_every_batches,
                   keep_checkpoints=train.keep_checkpoints)

    @property
    def labels(self) -> list[RunLabel]:
        """The runs, in the order they train."""
        return [RunLabel(kind, loop) for kind in self.models for loop in self.loops]

    def full_batch_sgd(self, num_examples: int) -> bool:
        return self.optimizer == "sgd" and (self.batch_size is None
                                            or self.batch_size >= num_examples)


@dataclass(frozen=True)
class RunHooks:
    """What a caller attaches to each run, by its label ("module-manual", ...).

    Attributes:
      checkpoint_dir: with `checkpoint_every`, each run's training
        checkpoints go to `checkpoint_dir/<label>/`.
      resume_from: a training checkpoint to continue each run from.
      callbacks: label -> the Keras callbacks of that run.
      on_run_start: called with the label as each run starts.
      on_epoch_end: called with the label and the History so far (in the
        data's units), before training and after each epoch.
      on_run_end: called with each run's RunResult as it ends.
      verbose: Keras's progress output, in both loops.
      settings: more settings that decide the runs' numbers (a config's, see
        `linfit.job.run_settings`), saved in their checkpoints and compared on resuming.
    """

    checkpoint_dir: Path | None = None
    resume_from: Mapping[str, Path] = field(default_factory=dict)
    callbacks: Callable[[str], list] | None = None
    on_run_start: Callable[[str], None] | None = None
    on_epoch_end: Callable[[str, History], None] | None = None
    on_run_end: Callable[["RunResult"], None] | None = None
    verbose: int = 0
    settings: Mapping = field(default_factory=dict)


@dataclass
class RunResult:
    """One model variant trained by one loop.

    `model` is the trained model in the data's units (for a standardised run,
    a copy of the trained one with its weights converted).
    """

    model_kind: str
    loop: str
    trainer: object  # linfit.Trainer
    history: History
    seconds: float
    model: object

    @property
    def label(self) -> RunLabel:
        return RunLabel(self.model_kind, self.loop)

    @property
    def checkpoint_name(self) -> str:
        return f"{self.label}.weights.h5"


@dataclass
class Comparison:
    """Runs of several model × loop combinations, how they agree, and the exact answer.

    `reference` is None when the loss is not MSE.
    """

    runs: list[RunResult]
    agreement: Agreement
    reference: Reference | None
    learning_rate: float
    full_batch_sgd: bool

    @property
    def contraction(self) -> float | None:
        """The predicted |θ − θ*| contraction per epoch, for full-batch plain SGD on MSE."""
        if self.reference is None or not self.full_batch_sgd:
            return None
        return self.reference.contraction(self.learning_rate)


@dataclass(frozen=True)
class TrainingInputs:
    """The data as the runs train on it, and the start, in training units.

    `x` is the features, or the files to stream (`linfit.streams.DataFiles`,
    which hold the targets too); `validation` likewise (x_val, y_val) or files.
    """

    x: np.ndarray | DataFiles
    validation: tuple | DataFiles | None
    init_w: float | np.ndarray | tuple
    init_b: float | np.ndarray | tuple
    standardizer: Standardizer | None
    outputs: int | None = None
    shard_rows: tuple[int, ...] = ()

    @property
    def features(self) -> int | None:
        if isinstance(self.x, DataFiles):
            return self.x.features
        return None if self.x.ndim == 1 else self.x.shape[1]


def check_data(experiment: Experiment, data: Data) -> None:
    """Refuse, before anything is trained, data the experiment cannot train on.

    Raises:
      DataError: for a constant feature when standardising.
      ConfigError: for a list of starting biases that does not fit the targets.
    """
    if isinstance(init_b := experiment.init_b, tuple) and len(init_b) != (data.outputs or 0):
        targets = f"{data.outputs} targets: give one number, or a list of {data.outputs}" \
            if data.outputs else "one target: give one number"
        raise ConfigError(f"model.init_b = {list(init_b)}, but the data has {targets}")
    if experiment.standardize and data.files is None:  # streamed: found on the first pass
        Standardizer.fit(data.x, data.feature_names)


def training_inputs(experiment: Experiment, x: np.ndarray, validation: tuple | None,
                    feature_names: Sequence[str] = (), outputs: int | None = None
                    ) -> TrainingInputs:
    """The standardisation stage: with `experiment.standardize`, features scaled to
    zero mean and unit variance, and the starting weights mapped to match."""
    if not experiment.standardize:
        return TrainingInputs(x, validation, experiment.init_w, experiment.init_b, None, outputs)
    from linfit.models import initial_values  # TensorFlow: only when training

    standardizer = Standardizer.fit(x, tuple(feature_names))
    start_w, start_b = standardizer.from_original(*initial_values(
        None if x.ndim == 1 else x.shape[1], experiment.init_w, experiment.init_b, outputs))
    if validation is not None:
        validation = (standardizer.transform(validation[0]), validation[1])
    return TrainingInputs(standardizer.transform(x), validation, start_w, start_b, standardizer,
                          outputs)


def streamed_inputs(experiment: Experiment, data: Data, strategy=None) -> TrainingInputs:
    """`training_inputs` for streamed data: with `experiment.standardize`, the
    means and deviations from a first pass over the files (in float64, summed
    as for data in memory; on a cluster, each worker's share added up), applied
    as the files are read."""
    files, validation = data.files, data.validation_files
    if not experiment.standardize:
        return TrainingInputs(files, validation, experiment.init_w, experiment.init_b, None,
                              data.outputs, files.rows)
    from linfit.fit_inputs import worker_pass  # TensorFlow: only when training
    from linfit.loops.failures import lost_workers
    from linfit.models import initial_values
    from linfit.streaming import value_chunks

    share, summed = worker_pass(files, strategy)
    with lost_workers(strategy):
        standardizer = Standardizer.from_chunks(
            lambda: (x.astype(np.float32).astype(np.float64) for x, _ in value_chunks(share)),
            files.feature_names, summed)
    start_w, start_b = standardizer.from_original(*initial_values(
        files.features, experiment.init_w, experiment.init_b, data.outputs))
    scaled = [f if f is None else f.scaled(standardizer.mean, standardizer.std)
              for f in (files, validation)]
    return TrainingInputs(scaled[0], scaled[1], start_w, start_b, standardizer, data.outputs,
                          files.rows)


def run_experiment(experiment: Experiment, data: Data, *, strategy=None,
                   hooks: RunHooks = RunHooks(), rtol: float = DEFAULT_RTOL,
                   reference: bool = True) -> Comparison:
    """Train every run of `experiment` on `data`, from the same start, and compare.

    `reference=False` skips the float64 reference (a pass over all the data):
    on a worker of a cluster other than the chief, which reports it.

    Returns:
      A Comparison. With MSE and full-batch SGD at a learning rate at or
      above the stability limit, a `UserWarning` is issued before training.

    Raises:
      DivergenceError: when a run's loss is not finite; its `completed`
        holds the runs that finished before it.
    """
    if data.files is not None:
        from linfit.fit_inputs import check_streamable  # TensorFlow: only when training

        check_streamable(data.num_examples, experiment.batch_size, experiment.loops, strategy)
    inputs = streamed_inputs(experiment, data, strategy) if data.files is not None else replace(
        training_inputs(experiment, data.x, data.validation, data.feature_names, data.outputs),
        shard_rows=data.shard_rows)
    reference = _reference(experiment, data, inputs) if reference else None
    full_batch_sgd = experiment.full_batch_sgd(data.num_examples)
    if reference is not None and full_batch_sgd:
        message = reference.stability_warning(experiment.learning_rate)
        if message:
            warnings.warn(message, stacklevel=2)
    runs = []
    for label in experiment.labels:
        if hooks.on_run_start is not None:
            hooks.on_run_start(label)
        try:
            run = _train_one(experiment, inputs, None if data.files else data.y, label,
                             strategy, hooks)
        except DivergenceError as error:
            raise _with_context(error, label, runs, reference if full_batch_sgd else None,
                                experiment.learning_rate) from None
        except LinfitError as error:  # bad data met by this run: the runs before it are kept
            error.completed = list(runs)
            raise
        if run.history.interrupted:
            raise TrainingInterrupted(STOP.signal, runs, run)
        if hooks.on_run_end is not None:
            hooks.on_run_end(run)
        runs.append(run)
    agreement = compare_histories([run.history for run in runs], [run.label for run in runs],
                                  rtol=rtol)
    return Comparison(runs, agreement, reference, experiment.learning_rate, full_batch_sgd)


def _reference(experiment: Experiment, data: Data, inputs: TrainingInputs) -> Reference | None:
    """The optimum of the data as read (float64, as statsmodels and scikit-learn
    compute it), in its units; the curvature of the data as trained on."""
    if experiment.loss not in ("mse", "mean_squared_error"):
        return None
    standardizer = inputs.standardizer
    if data.files is not None:  # one pass of TensorFlow's parser
        from linfit.streaming import value_chunks

        return reference_from_chunks(  # standardised as trained on: from float32, as in memory
            value_chunks(data.files), data.features is None, None if standardizer is None
            else lambda x: standardizer.transform(x.astype(np.float32)))
    if data.exact is not None:
        reference = reference_from_chunks(data.exact.chunks(), scalar_model=data.x.ndim == 1)
    else:
        reference = least_squares_reference(data.x, data.y)
    if standardizer is None:
        return reference
    curvature = least_squares_reference(inputs.x, data.y)
    return replace(reference, eigenvalues=curvature.eigenvalues)


def _train_one(experiment: Experiment, inputs: TrainingInputs, y, label: RunLabel,
               strategy, hooks: RunHooks) -> RunResult:
    import keras
    import tensorflow as tf

    from linfit.loops.failures import lost_workers
    from linfit.models import MODELS
    from linfit.trainer import Trainer

    kind, loop = label.model, label.loop
    shape = {"features": inputs.features, "outputs": inputs.outputs}
    keras.utils.set_random_seed(experiment.seed)
    with lost_workers(strategy):  # making variables is collective too, and fit's set-up
        with (strategy or tf.distribute.get_strategy()).scope():
            model = MODELS[kind](**shape, init_w=inputs.init_w, init_b=inputs.init_b)
        trainer = Trainer(model, loss=experiment.loss, optimizer=experiment.optimizer,
                          learning_rate=experiment.learning_rate,
                          metrics=list(experiment.metrics), compile=experiment.compile,
                          steps_per_call=experiment.steps_per_call, strategy=strategy,
                          standardizer=inputs.standardizer,
                          record_full_loss=experiment.record_full_loss)
        trainer.run_settings = dict(hooks.settings)
        start = time.perf_counter()
        history = trainer.fit(
            inputs.x, y, epochs=experiment.epochs, loop=loop, batch_size=experiment.batch_size,
            shuffle_seed=experiment.shuffle_seed, shuffle_buffer=experiment.shuffle_buffer,
            shard_rows=inputs.shard_rows, validation_data=inputs.validation,
            verbose=hooks.verbose, resume_from=hooks.resume_from.get(label),
            checkpoint_dir=(hooks.checkpoint_dir / label
                            if hooks.checkpoint_dir is not None and (
                                experiment.checkpoint_every
                                or experiment.checkpoint_every_batches) else None),
            checkpoint_every=experiment.checkpoint_every,
            checkpoint_every_batches=experiment.checkpoint_every_batches,
            keep_checkpoints=experiment.keep_checkpoints,
            callbacks=hooks.callbacks(label) if hooks.callbacks else None,
            on_epoch_end=(None if hooks.on_epoch_end is None
                          else lambda history: hooks.on_epoch_end(label, history)))
    seconds = time.perf_counter() - start
    final = history.final()
    in_data_units = model if inputs.standardizer is None else MODELS[kind](
        **shape, init_w=final["w"], init_b=final["b"])
    return RunResult(kind, loop, trainer, history, seconds, in_data_units)


def _with_context(error: DivergenceError, label: RunLabel, completed: list, reference,
                  learning_rate: float) -> DivergenceError:
    """The error of run `label`, naming it and the stability limit, with the finished runs."""
    message = f"{label}: {error}"
    if reference is not None and error.epoch is not None:
        message += (f"; the stability limit of the learning rate for this data is "
                    f"{reference.lr_limit:.3g} (this run used {learning_rate:g})")
    result = DivergenceError(message, error.epoch, error.batch, error.history)
    result.completed = list(completed)
    result.label = label
    return result


def initial_w(init_w: float | tuple[float, ...], features: int | None):
    """`model.init_w` for data with `features` features (None: the scalar model).

    Raises:
      ConfigError: when a list of initial weights does not fit the data.
    """
    if not isinstance(init_w, tuple):
        return init_w
    if len(init_w) != (features or 1):
        raise ConfigError(f"model.init_w has {len(init_w)} values but the data has "
                          f"{features or 1} feature(s): give one value per feature, or one number")
    return init_w[0] if features is None else init_w
