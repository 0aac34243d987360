"""Run configuration: frozen dataclasses, TOML loading, `--set` overrides.

The built-in defaults reproduce the guide "Basic training loops";
`configs/tutorial.toml` spells them out. Like nanoGPT's configurator, an
override is type-checked against the field it replaces and an unknown key
is rejected (with the nearest known key as a hint). This module imports
neither TensorFlow nor Keras, so the CLI can report a bad config at once.
"""

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from linfit.errors import ConfigError
from linfit.toml_text import read_toml, toml_value  # noqa: F401 (config.toml_value)

# A weight: one number, or one number per feature (stored as a tuple).
Weights = float | tuple[float, ...]
# Column names (stored as a tuple).
Names = tuple[str, ...]
# The target: one column name, or several (one per output; stored as a tuple).
Target = str | Names
Switch = bool | str  # true, false or "auto"

MODEL_KINDS = ("module", "keras", "both")
# The class each model kind names (linfit.models.MODELS holds the classes).
MODEL_CLASS_NAMES = {"module": "LinearModule", "keras": "LinearModel"}
LOOPS = ("manual", "keras", "both")
# Names `keras.optimizers.get` resolves (tests/test_config.py checks each),
# listed here so a typo is caught before TensorFlow is imported.
MONITORS = ("", "loss", "full_loss", "val_loss")
COMPILE_MODES = ("auto", "eager", "function", "xla")
STRATEGIES = ("default", "mirrored", "multiworker")
VALIDATE = ("header", "full")
OPTIMIZERS = (
    "sgd", "adam", "adamw", "adagrad", "adadelta", "adamax",
    "adafactor", "ftrl", "lion", "nadam", "rmsprop",
)


@dataclass(frozen=True)
class DataConfig:
    path: Target = ""  # "" is the guide's line; else a .csv or .npz file, a glob, or a list
    target: Target = ""  # the CSV's target column ("" is `y`, else the last), or a list: outputs
    features: Names = ()  # the CSV's feature columns; () is all but the target
    num_examples: int = 201
    true_w: Weights = 3.0  # a list gives one synthetic feature per entry
    true_b: float = 2.0
    noise_stddev: float = 1.0
    seed: int = 0
    batch_size: int = 0  # 0 is one full batch, as in the guide
    shuffle: bool = False  # reshuffle the batches each epoch, seeded by `seed`
    validation_split: float = 0.0  # fraction held out for val_loss
    validation_path: str = ""  # or a separate validation file (or a glob of them)
    standardize: bool = False  # train on standardised features; report original units
    streaming: Switch = "auto"  # read batches from the files as training goes
    shuffle_buffer: int = 0  # 0 shuffles all rows; N: shards reordered, then windows of N rows
    validate: str = "header"  # "full" reads every row of every file before training


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "both"
    init_w: Weights = 5.0
    init_b: Weights = 0.0  # a list gives one per output


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Keras's EarlyStopping, from the config; `monitor = ""` leaves it off."""

    monitor: str = ""  # "loss", "full_loss" or "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass(frozen=True)
class TrainConfig:
    loop: str = "both"
    epochs: int = 10
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    seed: int = 0
    checkpoint_every: int = 0  # save a training checkpoint every N epochs; 0: at the end only
    checkpoint_every_batches: int = 0  # and every N batches inside an epoch; 0: never
    keep_checkpoints: int = 0  # keep the newest N periodic checkpoints; 0: all
    compile: str = "auto"  # both loops: "auto", "eager", "function" or "xla"
    steps_per_call: int = 0  # batches per compiled call; 0: automatic (see README)
    strategy: str = "default"  # "default", "mirrored" (local devices), "multiworker" (TF_CONFIG)
    worker_timeout: int = 60  # multiworker: seconds before a silent worker fails the run
    tensorboard: bool = False  # write TensorBoard event files to RUN/tb/<run>/
    print_every: int = 0  # print the guide's lines every N epochs; 0: a readable choice
    metrics: Names = ()  # Keras metrics to log per epoch, e.g. ["mae", "mse"]
    record_full_loss: bool = True  # the loss on the whole training set before and after each epoch
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @property
    def model_kinds(self) -> tuple[str, ...]:
        """The model variants to train: `model.kind`, with "both" expanded."""
        return ("module", "keras") if self.model.kind == "both" else (self.model.kind,)

    @property
    def loops(self) -> tuple[str, ...]:
        """The loops to run: `train.loop`, with "both" expanded."""
        return ("manual", "keras") if self.train.loop == "both" else (self.train.loop,)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """The defaults, updated by a TOML file, then by `KEY=VALUE` overrides.

    Args:
      path: a TOML file with [data], [model] and [train] tables, or None.
      overrides: strings like "train.epochs=20"; the value is TOML
        ("[1, 2]", "0.5", '"adam"'), and a bare word that is not valid TOML
        is taken as a string (`model.kind=keras`).

    Raises:
      ConfigError: naming the file, key or value that is wrong.
    """
    values: dict[str, dict[str, Any]] = {}
    if path is not None:
        for section, table in read_toml(Path(path)).items():
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{path}: '{section}' must be a table like [{section}], not a value")
            for name, value in table.items():
                values.setdefault(section, {})[name] = value
    for override in overrides:
        section, name, value = parse_override(override)
        table = values.setdefault(section, {})
        *parents, leaf = name.split(".")  # train.early_stopping.monitor: a nested table
        for parent in parents:
            table = table.setdefault(parent, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {override!r}: {section}.{parent} is not a table")
        table[leaf] = value
    return build_config(values, source=str(path) if path else "--set")


def build_config(values: dict[str, dict[str, Any]], source: str = "config") -> Config:
    """A validated Config from nested {section: {key: value}} plain values."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    built = {}
    for section, table in values.items():
        if section not in sections:
            raise ConfigError(f"{source}: unknown section [{section}]{_hint(section, sections)}")
        built[section] = _build_section(section, sections[section], table, source)
    config = Config(**built)
    validate(config)
    return config


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split "section.key=value" into its parts, parsing value as TOML."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set train.epochs=20")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as `keras`
    return section, name, value


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(repr(c) for c in choices)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38  # its normal range

# What each checked key must be: (test, the requirement in words). The Trainer
# checks its own arguments with the same rules (`check_value(key, label=...)`).
RULES = {
    "data.num_examples": (lambda v: _integer(v) and v >= 2, "at least 2"),
    "data.noise_stddev": (lambda v: _number(v) and v >= 0 and math.isfinite(v),
                          "a finite number >= 0"),
    "data.seed": (lambda v: _integer(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "data.batch_size": (lambda v: _integer(v) and v >= 0,
                        "0 (one full batch) or a positive batch size"),
    "data.validation_split": (lambda v: _number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    "data.shuffle_buffer": (lambda v: _integer(v) and v >= 0, "0 (all rows) or a number of rows"),
    "data.validate": (lambda v: v in VALIDATE, _one_of(VALIDATE)),
    "model.kind": (lambda v: v in MODEL_KINDS, _one_of(MODEL_KINDS)),
    "train.loop": (lambda v: v in LOOPS, _one_of(LOOPS)),
    "train.epochs": (lambda v: _integer(v) and 1 <= v < 2**31, "at least 1 (and below 2**31)"),
    "train.learning_rate": (lambda v: _number(v) and FLOAT32_TINY <= v <= FLOAT32_MAX,
                            "a number > 0 that float32 holds (1.2e-38 to 3.4e38)"),
    "train.optimizer": (lambda v: v in OPTIMIZERS, _one_of(OPTIMIZERS)),
    "train.seed": (lambda v: _integer(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "train.checkpoint_every": (lambda v: _integer(v) and v >= 0,
                               "0 (at the end only) or a number of epochs"),
    "train.checkpoint_every_batches": (lambda v: _integer(v) and v >= 0,
                                       "0 (never) or a number of batches"),
    "train.keep_checkpoints": (lambda v: _integer(v) and v >= 0,
                               "0 (keep all) or how many to keep"),
    "train.compile": (lambda v: v in COMPILE_MODES, _one_of(COMPILE_MODES)),
    "train.steps_per_call": (lambda v: _integer(v) and v >= 0,
                             "0 (automatic) or a number of batches"),
    "train.strategy": (lambda v: v in STRATEGIES, _one_of(STRATEGIES)),
    "train.worker_timeout": (lambda v: _integer(v) and v >= 1, "a number of seconds >= 1"),
    "train.print_every": (lambda v: _integer(v) and v >= 0,
                          "0 (a readable choice) or a number of epochs"),
    "train.early_stopping.patience": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "train.early_stopping.min_delta": (lambda v: _number(v) and v >= 0 and math.isfinite(v),
                                       "a finite number >= 0"),
}


def check_value(key: str, value: Any, label: str | None = None) -> None:
    """Raise ConfigError unless `value` is possible for config key `key`.

    Args:
      label: the name the value was given under, for a function argument
        (`learning_rate=-1: it must be ...`); None for a config key.
    """
    test, expected = RULES[key]
    if test(value):
        return
    if label is not None:
        raise ConfigError(f"{label}={value!r}: it must be {expected}")
    raise ConfigError(f"{key} = {value!r} is impossible: it must be {expected}")


def validate(config: Config) -> None:
    """Reject values that have the right type but cannot work."""
    for key in RULES:
        check_value(key, _lookup(config, key))
    data, model = config.data, config.model
    _require(not (data.validation_split and data.validation_path), "data.validation_split",
             data.validation_split, "0 when data.validation_path is set (use one or the other)")
    train = config.train
    twice = [n for n in train.metrics if train.metrics.count(n) > 1]
    own = [n for n in train.metrics if n in ("loss", "full_loss", "w", "b") or n[:4] == "val_"]
    reason = f"{own[0]!r} is a log linfit keeps itself" if own else \
        f"{twice[0]!r} twice" if twice else ""
    _require(not reason, "train.metrics", list(train.metrics),
             f"Keras metric names, each once ({reason})")
    monitors = (*MONITORS, *train.metrics, *(f"val_{name}" for name in train.metrics))
    _require(train.early_stopping.monitor in monitors, "train.early_stopping.monitor",
             train.early_stopping.monitor, _one_of(monitors) + ' ("" leaves early stopping off)')
    _require(not train.early_stopping.monitor.startswith("val_") or data.validation_split
             or data.validation_path, "train.early_stopping.monitor",
             train.early_stopping.monitor,
             "loss or full_loss without validation data (set data.validation_split)")
    _require(train.early_stopping.monitor != "full_loss" or train.record_full_loss,
             "train.early_stopping.monitor", train.early_stopping.monitor,
             "recorded: set train.record_full_loss = true, or monitor loss")
    _require(isinstance(data.path, str) or len(data.path) > 0, "data.path", list(data.path),
             'a file, a glob, or a non-empty list of files ("" is the synthetic line)')
    _require(isinstance(data.target, str) or len(data.target) > 0, "data.target",
             list(data.target), 'a column name, or a non-empty list of them ("" picks y)')
    for key, weights in (("data.true_w", data.true_w), ("model.init_w", model.init_w)):
        if isinstance(weights, tuple):
            _require(len(weights) > 0, key, list(weights), "a number or a non-empty list")
    _require(not isinstance(model.init_b, tuple) or len(model.init_b) > 0, "model.init_b",
             model.init_b, "a number or a non-empty list (one per output)")
    for key, number in (("data.true_w", data.true_w), ("data.true_b", data.true_b),
                        ("model.init_w", model.init_w), ("model.init_b", model.init_b)):
        numbers = number if isinstance(number, tuple) else (number,)
        _require(all(abs(n) <= FLOAT32_MAX for n in numbers), key, number,
                 "finite in float32 (within ±3.4e38)")


def _lookup(config: Config, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


# Keys that change no number of a run: a resumed run may change them.
NEUTRAL_KEYS = ("train.epochs", "train.compile", "train.steps_per_call", "train.checkpoint_every",
                "train.checkpoint_every_batches", "train.keep_checkpoints", "train.tensorboard",
                "train.worker_timeout", "train.print_every", "data.validate")


def flat_settings(config: Config) -> dict[str, Any]:
    """Every key that changes a run's numbers, "section.key" -> a JSON value."""
    flat = {}

    def visit(prefix: str, value) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                visit(f"{prefix}.{f.name}".lstrip("."), getattr(value, f.name))
        elif prefix not in NEUTRAL_KEYS:
            flat[prefix] = list(value) if isinstance(value, tuple) else value

    visit("", config)
    return flat


def to_toml(config: Config) -> str:
    """The config as TOML text that `load_config` reads back to an equal Config."""
    lines = []
    for section in dataclasses.fields(config):
        lines.append(f"[{section.name}]")
        for name, value in dataclasses.asdict(getattr(config, section.name)).items():
            lines.append(f"{name} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _build_section(section: str, cls: type, table: dict[str, Any], source: str):
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    checked = {}
    for name, value in table.items():
        if name not in fields:
            raise ConfigError(
                f"{source}: unknown key '{section}.{name}'{_hint(name, fields, section)}")
        checked[name] = _check_type(f"{section}.{name}", value, fields[name], source)
    return cls(**checked)


def _check_type(key: str, value: Any, kind: Any, source: str) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (Names, Target) and isinstance(value, list) and \
            all(isinstance(v, str) for v in value):
        return tuple(value)
    if (kind == Target and isinstance(value, str)) or (
            kind == Switch and (isinstance(value, bool) or value == "auto")):
        return value
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        return _build_section(key, kind, value, source)
    if kind == Weights:
        if number:
            return float(value)
        if isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
    expected = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
                Weights: "a number or a list of numbers", Names: "a list of column names",
                Target: "a column name or a list of column names",
                Switch: 'true, false or "auto"'}.get(
        kind, "a table, e.g. {monitor = \"val_loss\", patience = 5}")
    expected = {"data.path": "a file, a glob, or a list of files",
                "train.metrics": "a list of Keras metric names"}.get(key, expected)
    quoted = {str: '"..."', Names: '["...", "..."]', Target: '"..." or ["...", "..."]'}
    hint = f" (TOML quotes strings: --set '{key}={quoted[kind]}')" \
        if kind in quoted and source == "--set" else ""
    raise ConfigError(f"{source}: {key} must be {expected}, got {value!r}{hint}")


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is impossible: it must be {expected}")


def _hint(name: str, known: Iterable[str], section: str | None = None) -> str:
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f": did you mean '{prefix}{close[0]}'?"
    return f": known keys are {', '.join(prefix + k for k in known)}"


def config_callbacks(train: TrainConfig, tensorboard_dir: Path | None) -> list:
    """The Keras callbacks a config asks for, for one run."""
    import keras  # only when training

    callbacks = []
    stopping = train.early_stopping
    if stopping.monitor:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=stopping.monitor, mode="min", patience=stopping.patience,
            min_delta=stopping.min_delta, restore_best_weights=stopping.restore_best_weights))
    if train.tensorboard and tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir),
                                                     write_graph=False))
    return callbacks
