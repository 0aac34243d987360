"""`python -m linfit.train`: the guide "Basic training loops", done right.

With no arguments it trains both model variants (tf.Module and keras.Model)
with both loops (GradientTape and compile/fit) on the guide's data, prints
the guide's lines for each run and how much the runs differ, and writes a
run directory. The work is done by library functions (`run_experiment`,
`RunDir`); this module only parses arguments and reports.

Config, data and the output directory are checked before TensorFlow is
imported, so a user's mistake is reported at once, as one `error:` line.
"""

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import warnings

from linfit.config import LOOPS, MODEL_KINDS, Config, load_config
from linfit.console import results_lines
from linfit.data import Data, load_data
from linfit.errors import ConfigError, DivergenceError, LinfitError, WorkerLostError
from linfit.experiment import Experiment, RunHooks, run_experiment, run_settings
from linfit.rundir import RunDir
from linfit.runtime import import_tensorflow, is_chief


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m linfit.train",
        description="Train f(x) = x·W + b as in the TensorFlow guide 'Basic training loops': "
                    "a tf.Module and a keras.Model, each with a GradientTape loop and with "
                    "Keras fit, and compare them. With no arguments: the guide's setup.")
    parser.add_argument("--config", metavar="PATH", help="a TOML config (see configs/)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override a config key, TOML syntax, e.g. "
                        "--set train.epochs=20 (repeatable)")
    parser.add_argument("--data", metavar="PATH",
                        help="a CSV file with a header row (target: column 'y', else the last)")
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
                        help="Keras progress output in both loops: 0 none (default), "
                        "1 progress bar, 2 one line per epoch")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="split the CPU into N logical devices (to try "
                        "train.strategy = \"mirrored\" on one machine)")
    parser.add_argument("--tf-logs", action="store_true",
                        help="show TensorFlow's own log lines (hidden by default)")
    return parser.parse_args(None if argv is None else [str(arg) for arg in argv])


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then --set, then the shorthand flags."""
    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.path"), (args.model, "model.kind"),
                      (args.loop, "train.loop")):
        if flag is not None:
            overrides.append(f"{key}={json.dumps(flag)}")
    return load_config(args.config, overrides)


def resume_config(run_dir: RunDir, args: argparse.Namespace) -> Config:
    """The config of the run in `run_dir`; only `--set train.epochs=N` may change it."""
    changed = [flag for flag, value in (("--config", args.config), ("--data", args.data),
                                        ("--model", args.model), ("--loop", args.loop),
                                        ("--out", args.out)) if value]
    changed += [o for o in args.overrides if not o.replace(" ", "").startswith("train.epochs=")]
    run_dir.check_is_run()
    if changed:
        raise ConfigError(f"--resume continues a run as it was configured: drop "
                          f"{', '.join(changed)} (only --set train.epochs=N may extend it)")
    return run_dir.read_config(args.overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    chief, out = True, None
    try:
        config = resume_config(RunDir(args.resume), args) if args.resume \
            else config_from_args(args)
        if args.devices is not None and args.devices < 1:
            raise ConfigError(f"--devices {args.devices}: give a number of devices >= 1")
        data = load_data(config.data)
        experiment = Experiment.from_config(config, data.features)  # fails now, not later
        if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("train.tensorboard = true needs the tensorboard package: "
                              "pip install 'linfit[tensorboard]'")
        chief = config.train.strategy != "multiworker" or is_chief()
        settings, resume_from = run_settings(config, data), {}
        if args.resume:  # everything checked before anything is touched
            plan = RunDir(args.resume).resume_plan(config, experiment.labels, settings,
                                                   clean=chief)
            if plan.complete:
                print(f"{args.resume} is complete: nothing to do (each run has trained its "
                      f"{config.train.epochs} epochs, or was stopped early)")
                return 0
            resume_from = plan.points
        if not chief:  # another worker: it trains, the chief writes the run directory
            out = RunDir(tempfile.mkdtemp(prefix="linfit-worker-"))
        elif args.resume:
            out = RunDir(args.resume)
        else:
            out = RunDir.create(args.out, overwrite=args.overwrite)
            # First, so that a run killed at any moment from here can be resumed.
            out.write_config(config)
        strategy = import_tensorflow(show_logs=args.tf_logs, devices=args.devices,
                                     strategy=config.train.strategy,
                                     worker_timeout=config.train.worker_timeout)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        if not chief and out is not None:
            shutil.rmtree(out.path, ignore_errors=True)
        return 2
    try:
        hooks = out.hooks(config, settings, resume_from, args.verbose)
        return train_into(out, config, data, experiment, strategy, hooks, chief)
    finally:
        if not chief:  # whatever becomes of the run, this worker's directory goes with it
            shutil.rmtree(out.path, ignore_errors=True)


def train_into(out: RunDir, config: Config, data: Data, experiment: Experiment, strategy,
               hooks: RunHooks, chief: bool = True) -> int:
    """Train the runs of `experiment`, record them in `out` and print them.

    Returns the exit status: 0, or 2, 3, 4 for a failed run (recorded as such).
    """
    # From here on the run directory exists: whatever happens is recorded in it.
    out.write_config(config)
    try:
        with warnings.catch_warnings():
            # A warning (such as an unstable learning rate) is one line, shown
            # before training starts.
            warnings.showwarning = _print_warning
            comparison = run_experiment(experiment, data, strategy=strategy, hooks=hooks)
    except (DivergenceError, WorkerLostError, LinfitError) as error:
        status = "diverged" if isinstance(error, DivergenceError) else "failed"
        out.write_failure(data, getattr(error, "completed", []), status, str(error), error)
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, DivergenceError) else \
            4 if isinstance(error, WorkerLostError) else 2
    except BaseException as error:  # a bug or an interrupt: record it, then let it show
        out.write_failure(data, [], "failed", f"{type(error).__name__}: {error}")
        raise
    print("\n".join(results_lines(comparison, config.train.epochs)))
    out.write_results(config, data, comparison)
    if not chief:
        print("\nThis worker wrote nothing: the chief writes the run directory.")
        return 0
    print(f"\nWrote {out.path}/ (open report.md): " + ", ".join(out.listing()))
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
