"""`python -m linfit.train`: the guide "Basic training loops", done right.

With no arguments it trains both model variants (tf.Module and keras.Model)
with both loops (GradientTape and compile/fit) on the guide's data, prints
the guide's lines for each run and how much the runs differ, and writes a
run directory. This module parses the arguments and resolves the config;
`linfit.job` trains, records and prints.

`--help`, `--print-config` and a mistake in the arguments or the config
answer before NumPy, h5py or TensorFlow load (in about a tenth of a second;
with `--resume`, the run directory is read first);
the data and the output directory are checked before TensorFlow loads. A
mistake is one `error:` line.
"""

import argparse
import json
import os
import shlex
import sys

from linfit.arguments import ArgumentParser
from linfit.config import LOOPS, MODEL_KINDS, Config, load_config
from linfit.config_help import commented_toml
from linfit.errors import ConfigError, LinfitError
from linfit.fileio import write_out
from linfit.runtime import command_name


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog or command_name("python -m linfit.train"),
        description="Train f(x) = x·W + b as in the TensorFlow guide 'Basic training loops': "
                    "a tf.Module and a keras.Model, each with a GradientTape loop and with "
                    "Keras fit, and compare them. With no arguments: the guide's setup.",
        epilog="Config keys: `linfit config keys` lists them all; --print-config shows the "
               "resolved config (after --config and --set) as TOML, a comment on every key. "
               "A --set value with spaces or brackets needs shell quotes: "
               "--set 'model.init_w=[1, 2]'.")
    parser.add_argument("--config", metavar="PATH",
                        help="a TOML config (start from the output of --print-config)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override a config key, TOML syntax, e.g. "
                        "--set train.epochs=20 (repeatable; quote values with spaces)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as commented TOML and exit "
                        "(a file for --config that reproduces this run)")
    parser.add_argument("--data", metavar="PATH",
                        help="a CSV file with a header row (target: column 'y', else the "
                        "last) or an NPZ file with arrays x and y")
    parser.add_argument("--model", choices=MODEL_KINDS, help="model variant(s) to train")
    parser.add_argument("--loop", choices=LOOPS, help="training loop(s) to run")
    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default: runs/<UTC time>); must be new or empty")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run directory given by --out")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its newest checkpoints "
                        "(--set train.epochs=N may extend it)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                        help="0: the guide's lines (default); 1: Keras's progress bar, "
                        "2: Keras's line per epoch, in both loops")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="split the CPU into N logical devices, for "
                        "--set train.strategy=mirrored on one machine")
    parser.add_argument("--tf-logs", action="store_true",
                        help="show TensorFlow's own log lines (hidden by default)")
    args, unknown = parser.parse_known_args(None if argv is None else [str(a) for a in argv])
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{_hint(args, unknown)}")
    for option, value in (("--data", args.data), ("--resume", args.resume),
                          ("--out", args.out), ("--config", args.config)):
        if value == "":  # an unset shell variable: not the default it would silently pick
            parser.error(f"{option} is empty: give a path")
    if args.resume and args.overwrite:
        parser.error("--overwrite replaces the run directory --out names; --resume goes on "
                     "with one: give one of them")
    return args


def _hint(args: argparse.Namespace, unknown: list[str]) -> str:
    words = [u for u in unknown if not u.startswith("-")]
    if args.data and words and all(os.path.exists(word) for word in words):
        return (f" (the shell expanded a pattern into {len(words) + 1} files: quote it, "
                "as in --data 'part-*.csv')")
    if args.overrides and words:
        return " (a --set value with spaces must be quoted: --set 'model.init_w=[1, 2]')"
    return ""


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then --set, then the shorthand flags."""
    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.path"), (args.model, "model.kind"),
                      (args.loop, "train.loop")):
        if flag is not None:
            overrides.append(f"{key}={json.dumps(flag)}")
    return load_config(args.config, overrides)


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    if hasattr(sys.stdout, "reconfigure"):  # θ, ×, − on a console that cannot show them
        sys.stdout.reconfigure(errors="replace")
    try:
        if args.print_config:
            return print_config(args)
        # A mistake in the config is told before anything heavy loads; a resumed
        # run's config is its run directory's, read by the job.
        config = None if args.resume else config_from_args(args)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from linfit import job  # NumPy, h5py, ...: only once there is something to train

    return job.run(args, config)


def print_config(args: argparse.Namespace) -> int:
    """--print-config: the resolved config as TOML, a comment on every key."""
    if args.resume:
        from linfit.job import resume_config  # h5py: the run directory is read
        from linfit.rundir import RunDir

        config = resume_config(RunDir(args.resume), args)
    else:
        config = config_from_args(args)
    sources = [f"{args.resume}/config.toml" if args.resume else "the defaults",
               *([args.config] if args.config else []),
               *(["--set " + " --set ".join(map(shlex.quote, args.overrides))]
                 if args.overrides else []),
               *[f"{flag} {shlex.quote(value)}" for flag, value in (
                   ("--data", args.data), ("--model", args.model), ("--loop", args.loop))
                 if value and not args.resume]]
    if sys.stdout is None:
        raise ConfigError("--print-config: there is no standard output to print to")
    write_out(commented_toml(config, header=(
        f"linfit config, resolved from {', then '.join(sources)}.\n"
        "Save it and train with it: python -m linfit.train --config FILE")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
