"""What each config key means: `python -m linfit.train --print-config` (the
resolved config as TOML, a comment on every key) and `linfit config keys` (a
table of them). No TensorFlow here, so both answer at once.
"""

import dataclasses
import shutil
import sys
import textwrap

from linfit.arguments import ArgumentParser
from linfit.config import (COMPILE_MODES, LOOPS, MODEL_KINDS, MONITORS, OPTIMIZERS, STRATEGIES,
                           Config, toml_value)
from linfit.errors import LinfitError
from linfit.fileio import write_out

# The table's width where the terminal's is unknown (a pipe).
LINE_WIDTH = 100

# key -> (what it means, the values it may take).
KEYS = {
    "data.path": ("the data: \"\" is the guide's synthetic line; else a CSV file (a header "
                  "row) or an NPZ file (arrays x and y), or several read as one: a glob "
                  "(\"data/part-*.csv\") or a list of files, all with the same columns",
                  "\"\", a path, a glob or a list of paths"),
    "data.target": ("the target column(s): \"\" is the column y, else the last; a list trains "
                    "one output per column", "a column name or a list of them"),
    "data.features": ("the feature columns; [] is every column but the target",
                      "a list of column names"),
    "data.num_examples": ("synthetic data: how many examples", "an integer >= 2"),
    "data.true_w": ("synthetic data: the true W; a list makes one feature per entry",
                    "a number or a list of numbers"),
    "data.true_b": ("synthetic data: the true b", "a number"),
    "data.noise_stddev": ("synthetic data: the standard deviation of the Gaussian noise",
                          "a number >= 0"),
    "data.seed": ("the seed of the synthetic data, the validation split and the shuffle",
                  "an integer in [0, 2**32)"),
    "data.batch_size": ("examples per step; 0 is one full batch, as in the guide",
                        "0 or a positive integer"),
    "data.shuffle": ("reshuffle the batches each epoch (seeded by data.seed)", "true or false"),
    "data.validation_split": ("the fraction of the data held out for val_loss",
                              "a number in [0, 1)"),
    "data.validation_path": ("a separate validation file, with the training data's columns",
                             "\"\", a path or a glob"),
    "data.standardize": ("train on features scaled to mean 0 and variance 1; W and b are "
                         "reported and saved in the data's units", "true or false"),
    "data.streaming": ("read batches from the CSV or NPZ files as training goes, never the "
                       "whole table: \"auto\" streams files larger than a quarter of the "
                       "memory available, and says so", "true, false or \"auto\""),
    "data.shuffle_buffer": ("with data.shuffle: 0 shuffles all rows (in memory); N reorders "
                            "the shards, then shuffles each window of N rows, as a stream "
                            "can (needed to shuffle streamed data)", "an integer >= 0"),
    "data.validate": ("\"header\" checks every file's header before training; \"full\" "
                      "reads every row too", "header | full"),
    "model.kind": ("the model variant(s): LinearModule (tf.Module), LinearModel "
                   "(keras.Model) or both", " | ".join(MODEL_KINDS)),
    "model.init_w": ("the starting W; a list gives one per feature",
                     "a number or a list of numbers"),
    "model.init_b": ("the starting b; a list gives one per output",
                     "a number or a list of numbers"),
    "train.loop": ("the training loop(s): a GradientTape loop, Keras fit, or both",
                   " | ".join(LOOPS)),
    "train.epochs": ("epochs to train (a resumed run may raise it)", "an integer >= 1"),
    "train.learning_rate": ("the optimizer's learning rate", "a number > 0"),
    "train.optimizer": ("a Keras optimizer, by name", " | ".join(OPTIMIZERS)),
    "train.seed": ("keras.utils.set_random_seed before each run", "an integer in [0, 2**32)"),
    "train.checkpoint_every": ("save a training checkpoint every N epochs; 0: at the end only",
                               "an integer >= 0"),
    "train.checkpoint_every_batches": ("also save a training checkpoint every N batches inside "
                                       "an epoch, to resume from its middle; 0: never",
                                       "an integer >= 0"),
    "train.keep_checkpoints": ("keep the newest N periodic checkpoints; 0: all",
                               "an integer >= 0"),
    "train.compile": ("how steps run: auto (by cost), eagerly, as tf.function, or with XLA",
                      " | ".join(COMPILE_MODES)),
    "train.steps_per_call": ("batches per compiled call; 0: automatic", "an integer >= 0"),
    "train.strategy": ("tf.distribute: one device, local devices (mirrored) or the TF_CONFIG "
                       "cluster (multiworker)", " | ".join(STRATEGIES)),
    "train.worker_timeout": ("multiworker: seconds before a silent worker fails the run, or "
                             "a worker but the first stops in a cluster not all started",
                             "an integer >= 1"),
    "train.tensorboard": ("write TensorBoard event files to RUN/tb/<run>/ (needs the "
                          "tensorboard package)", "true or false"),
    "train.print_every": ("print the guide's lines every N epochs; 0: all up to 20 epochs, "
                          "else about ten plus the first and last three", "an integer >= 0"),
    "train.metrics": ("Keras metrics logged each epoch (and with val_ on validation data)",
                      "a list of names, e.g. [\"mae\", \"mse\"]"),
    "train.record_full_loss": ("compute the loss on the whole training set after each epoch "
                               "(the guide's number)", "true or false"),
    "train.early_stopping.monitor": ("Keras's EarlyStopping on this log; \"\" leaves it off",
                                     " | ".join(repr(m).replace("'", '"') for m in MONITORS)
                                     + " or a val_ metric"),
    "train.early_stopping.patience": ("epochs without improvement before it stops",
                                      "an integer >= 0"),
    "train.early_stopping.min_delta": ("the smallest change that counts as an improvement",
                                       "a number >= 0"),
    "train.early_stopping.restore_best_weights": ("end with the best epoch's weights",
                                                  "true or false"),
}


def config_items(config) -> list[tuple[str, object, object]]:
    """Every leaf key of a config, in order: (key, value, default)."""
    items = []

    def visit(prefix: str, value, default) -> None:
        for field in dataclasses.fields(value):
            key = f"{prefix}{field.name}"
            child, default_child = getattr(value, field.name), getattr(default, field.name)
            if dataclasses.is_dataclass(child):
                visit(f"{key}.", child, default_child)
            else:
                items.append((key, child, default_child))

    visit("", config, Config())
    return items


def commented_toml(config: Config, header: str = "") -> str:
    """The config as TOML with a comment on every key: its meaning, its default
    and the values it may take. `load_config` reads it back to an equal Config."""
    lines = [f"# {line}" for line in header.splitlines()]
    table = None
    for key, value, default in config_items(config):
        section, name = key.rsplit(".", 1)
        if section != table:
            lines += ["", f"[{section}]"]
            table = section
        meaning, allowed = KEYS[key]
        lines += [f"# {meaning}.",
                  f"# Default: {toml_value(default)}. Allowed: {allowed}.",
                  f"{name} = {toml_value(value)}"]
    return "\n".join(lines).lstrip("\n") + "\n"


def keys_table() -> str:
    """`linfit config keys`: one line per key, its default and what it means."""
    rows = [(key, toml_value(default), KEYS[key][0]) for key, _, default in
            config_items(Config())]
    rows = [(key, default, f"{meaning}; allowed: {KEYS[key][1]}")
            for key, default, meaning in rows]
    width = max(len(key) for key, _, _ in rows)
    default_width = min(max(len(default) for _, default, _ in rows), 10)
    indent = width + default_width + 4
    line_width = shutil.get_terminal_size((LINE_WIDTH, 24)).columns
    if line_width - indent < 40:  # narrow: each key on its line, its meaning below
        lines = []
        for key, default, meaning in rows:
            lines.append(f"{key} = {default}")
            lines += textwrap.wrap(meaning, line_width - 1, initial_indent="    ",
                                   subsequent_indent="    ")
        return "\n".join(lines) + "\n"
    lines = [f"{'key':<{width}}  {'default':<{default_width}}  meaning"]
    for key, default, meaning in rows:
        wrapped = textwrap.wrap(meaning, line_width - 1 - indent)
        lines.append(f"{key:<{width}}  {default:<{default_width}}  {wrapped[0]}")
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


def main(argv=None, prog: str = "linfit config") -> int:
    parser = ArgumentParser(
        prog=prog, description="The config keys of `linfit train` (python -m linfit.train). "
        "To see a resolved config with a comment on every key: "
        "python -m linfit.train --print-config [--config FILE] [--set KEY=VALUE].")
    parser.add_argument("what", choices=("keys",), nargs="?", default="keys",
                        help="keys (the default): a table of every key, its default, its "
                        "meaning and the values it may take")
    parser.parse_args(argv)
    try:
        write_out(keys_table())
    except LinfitError as error:  # a full disk under `> file`
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m linfit.config_help"))
