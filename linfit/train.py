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
import contextlib
import importlib.util
import json
import shutil
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass

from linfit.config import LOOPS, MODEL_KINDS, Config, load_config
from linfit.console import results_lines
from linfit.data import Data, load_data
from linfit.errors import (ConfigError, DivergenceError, LinfitError, TrainingInterrupted,
                           WorkerLostError)
from linfit.experiment import Experiment, RunHooks, check_data, run_experiment, run_settings
from linfit.interrupts import STOP
from linfit.rundir import RunDir
from linfit.runtime import handle_signals, import_tensorflow, is_chief


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


@dataclass
class Job:
    """A run checked and ready to train: everything known before TensorFlow loads."""

    config: Config
    data: Data
    experiment: Experiment
    out: RunDir
    settings: dict
    resume_from: dict
    chief: bool = True


def main(argv=None) -> int:
    args = parse_args(argv)
    job = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(handle_signals(
                STOP, lambda: "nothing to resume" if job is None or job.out is None else
                f"resume with --resume {job.out.path}"))
            job = prepare(args, stack)
            if job is None:
                return 0
            strategy = import_tensorflow(show_logs=args.tf_logs, devices=args.devices,
                                         strategy=job.config.train.strategy,
                                         worker_timeout=job.config.train.worker_timeout)
            if STOP.requested:
                print(f"interrupted before training: resume with --resume {job.out.path}",
                      file=sys.stderr)
                return STOP.exit_status
            hooks = job.out.hooks(job.config, job.settings, job.resume_from, args.verbose)
            return train_into(job, strategy, hooks)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if job is not None and not job.chief:  # this worker's directory goes with it
            shutil.rmtree(job.out.path, ignore_errors=True)


def prepare(args: argparse.Namespace, stack: contextlib.ExitStack) -> Job | None:
    """Check the config, the data and the run directory, and make (or lock) it.

    Returns:
      The job, or None when --resume finds the run complete.
    """
    config = resume_config(RunDir(args.resume), args) if args.resume else config_from_args(args)
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: give a number of devices >= 1")
    data = load_data(config.data)
    experiment = Experiment.from_config(config, data.features)
    check_data(experiment, data)
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard = true needs the tensorboard package: "
                          "pip install 'linfit[tensorboard]'")
    chief = config.train.strategy != "multiworker" or is_chief()
    job = Job(config, data, experiment, None, run_settings(config, data), {}, chief)
    if not chief:  # another worker: it trains, the chief writes the run directory
        job.out = RunDir(tempfile.mkdtemp(prefix="linfit-worker-"))
    elif args.resume:
        job.out = RunDir(args.resume)
        stack.enter_context(job.out.locked())
    else:
        job.out = stack.enter_context(RunDir.created(args.out, overwrite=args.overwrite))
        job.out.write_config(config)  # first: a run killed from here on can be resumed
    if args.resume:  # everything checked before anything is touched
        plan = RunDir(args.resume).resume_plan(config, experiment.labels, job.settings,
                                               clean=chief)
        if plan.complete:
            print(f"{args.resume} is complete: nothing to do (each run has trained its "
                  f"{config.train.epochs} epochs, or was stopped early)")
            return None
        job.resume_from = plan.points
    return job


def train_into(job: Job, strategy, hooks: RunHooks) -> int:
    """Train the runs of `job`, record them in its run directory and print them.

    Returns the exit status: 0; 2, 3 or 4 for a failed run (recorded as such);
    128 + the signal's number for an interrupted one (resumable).
    """
    out, data = job.out, job.data
    out.write_config(job.config)  # what happens from here on is recorded here
    try:
        with warnings.catch_warnings():
            # A warning (such as an unstable learning rate) is one line, shown
            # before training starts.
            warnings.showwarning = _print_warning
            comparison = run_experiment(job.experiment, data, strategy=strategy, hooks=hooks)
        print("\n".join(results_lines(comparison, job.config.train.epochs)))
        out.write_results(job.config, data, comparison)
    except TrainingInterrupted as stop:
        out.write_failure(data, [*stop.completed, stop.run], "interrupted",
                          f"interrupted by {signal.Signals(stop.signal).name}")
        print(f"interrupted at epoch {stop.run.history.epochs}: resume with --resume "
              f"{out.path}", file=sys.stderr)
        return 128 + stop.signal
    except LinfitError as error:
        status = "diverged" if isinstance(error, DivergenceError) else "failed"
        out.write_failure(data, getattr(error, "completed", []), status, str(error), error)
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, DivergenceError) else \
            4 if isinstance(error, WorkerLostError) else 2
    except BaseException as error:  # a bug: record it, then let it show
        out.write_failure(data, [], "failed", f"{type(error).__name__}: {error}")
        raise
    if not job.chief:
        print("\nThis worker wrote nothing: the chief writes the run directory.")
        return 0
    print(f"\nWrote {out.path}/ (open report.md): " + ", ".join(out.listing()))
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
