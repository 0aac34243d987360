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
import dataclasses
import importlib.util
import json
import shlex
import shutil
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass

from linfit.config import LOOPS, MODEL_KINDS, Config, load_config
from linfit.config_help import commented_toml
from linfit.console import LiveConsole, agreement_lines, summary_lines
from linfit.data import Data, load_data
from linfit.errors import (ConfigError, DivergenceError, LinfitError, TrainingInterrupted,
                           WorkerLostError)
from linfit.experiment import Experiment, RunHooks, check_data, run_experiment, run_settings
from linfit.interrupts import STOP
from linfit.rundir import RunDir
from linfit.runtime import (command_name, describe_devices, device_summary, handle_signals,
                            import_tensorflow, is_chief)


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
        hint = (" (a --set value with spaces must be quoted: --set 'model.init_w=[1, 2]')"
                if args.overrides and any(not u.startswith("-") for u in unknown) else "")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


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


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    job = None
    try:
        with contextlib.ExitStack() as stack:
            if args.print_config:
                return print_config(args)
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
            console = LiveConsole(job.config.train.epochs, job.config.train.print_every,
                                  args.verbose)
            hooks = with_console(job.out.hooks(job.config, job.settings, job.resume_from,
                                               args.verbose), console)
            return train_into(job, strategy, hooks)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if job is not None and not job.chief:  # this worker's directory goes with it
            shutil.rmtree(job.out.path, ignore_errors=True)


def print_config(args: argparse.Namespace) -> int:
    """--print-config: the resolved config as TOML, a comment on every key."""
    config = resume_config(RunDir(args.resume), args) if args.resume else config_from_args(args)
    sources = ["the defaults", *([args.config] if args.config else []),
               *(["--set " + " --set ".join(map(shlex.quote, args.overrides))]
                 if args.overrides else [])]
    sys.stdout.write(commented_toml(config, header=(
        f"linfit config, resolved from {', then '.join(sources)}.\n"
        "Save it and train with it: python -m linfit.train --config FILE")))
    return 0


def with_console(hooks: RunHooks, console: LiveConsole) -> RunHooks:
    """`hooks` that also print each run as it trains."""
    def on_epoch_end(label, history):
        hooks.on_epoch_end(label, history)  # history.csv first: it is what is kept
        console.epoch_end(label, history)

    return dataclasses.replace(hooks, on_run_start=console.run_start,
                               on_epoch_end=on_epoch_end, on_run_end=console.run_end)


def prepare(args: argparse.Namespace, stack: contextlib.ExitStack) -> Job | None:
    """Check the config, the data and the run directory, and make (or lock) it.

    Returns:
      The job, or None when --resume finds the run complete.
    """
    config = resume_config(RunDir(args.resume), args) if args.resume else config_from_args(args)
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: give a number of devices >= 1")
    if args.devices is not None and config.train.strategy == "default":
        raise ConfigError(f"--devices {args.devices} splits the CPU into devices, but "
                          "train.strategy is \"default\", which trains on one of them: "
                          "add --set train.strategy=mirrored")
    data = load_data(config.data)
    experiment = Experiment.from_config(config, data.features)
    check_data(experiment, data)
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard = true needs the tensorboard package: pip install "
                          "tensorboard (in a clone of linfit: pip install '.[tensorboard]')")
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
        if len(comparison.runs) > 1:
            print("\n".join(agreement_lines(comparison.agreement)), flush=True)
        devices = device_summary(strategy)
        out.write_results(job.config, data, comparison, devices)
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
    true_line = None if data.true_w is None else (data.true_w, data.true_b)
    print("\n".join(summary_lines(comparison, job.config.train.epochs, true_line,
                                  describe_devices(devices),
                                  str(out.path) if job.chief else None)))
    if not job.chief:
        print("This worker wrote nothing: the chief writes the run directory.")
    elif job.config.train.tensorboard:
        print(f"TensorBoard: tensorboard --logdir {out.path / out.TENSORBOARD}")
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
