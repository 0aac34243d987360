"""`linfit` (or `python -m linfit`): the version, or one of the commands.

    linfit --version
    linfit train [...]      same as python -m linfit.train
    linfit compare A B      same as python -m linfit.compare
    linfit predict [...]    same as python -m linfit.predict
    linfit convert [...]    same as python -m linfit.convert
    linfit config keys      every config key, its default and meaning
"""

import importlib
import sys

import linfit
from linfit.arguments import ArgumentParser

COMMANDS = {"train": "train a model (the guide by default)",
            "compare": "compare two run directories",
            "predict": "predict with a checkpoint",
            "convert": "convert CSV shards to NPZ files a stream reads fast",
            "config": "list the config keys (linfit config keys)"}
# The module of each command.
MODULES = {"train": "linfit.train", "compare": "linfit.compare", "predict": "linfit.predict",
           "convert": "linfit.convert", "config": "linfit.config_help"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    if argv and argv[0] in COMMANDS:
        command = importlib.import_module(MODULES[argv[0]])
        return command.main(argv[1:], prog=f"linfit {argv[0]}")
    parser = ArgumentParser(
        prog="linfit", description="linfit: the TensorFlow guide 'Basic training loops', "
        "done right. Commands: " + "; ".join(f"{name}: {text}" for name, text in COMMANDS.items()))
    parser.add_argument("--version", action="version", version=f"linfit {linfit.__version__}")
    parser.add_argument("command", choices=COMMANDS, help="then its own arguments (see "
                        "linfit COMMAND --help)")
    command = next((arg for arg in argv if arg in COMMANDS), None)
    if command and argv[0] not in ("-h", "--help", "--version"):
        # argparse would read the options' values as the command, or ask for it
        before = " ".join(argv[:argv.index(command)])
        parser.error(f"{before}: options go after the command (linfit {command} {before} ...)")
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
