"""A training job of `python -m linfit.train`: the run directory made (or locked),
the config and data checked before TensorFlow loads, every run trained and
printed as it goes, and the results recorded.

`linfit.train` parses the command line and imports this module only once
there is something to train: NumPy, h5py and the rest are not needed for
`--help`, `--print-config` or a mistake in the arguments or config.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass

from linfit.config import NEUTRAL_KEYS, Config, DataConfig, flat_settings
from linfit.console import LiveConsole, agreement_lines, say, summary_lines
from linfit.data import Data, fingerprint, load_data
from linfit.errors import (ConfigError, DivergenceError, LinfitError, RunDirError,
                           TrainingInterrupted, WorkerLostError)
from linfit.experiment import Experiment, RunHooks, check_data, run_experiment
from linfit.fileio import file_error, silence
from linfit.interrupts import STOP
from linfit.run_records import run_status
from linfit.rundir import RunDir
from linfit.runtime import (describe_devices, device_summary, handle_signals, import_tensorflow,
                            is_chief)


def run(args: argparse.Namespace, config: Config | None) -> int:
    """Check, train, record and print the job that `args` (of `python -m linfit.train`)
    describe, with `config` resolved from them (None: resume `args.resume`).

    Returns:
      The exit status (see the README).
    """
    job = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(handle_signals(
                STOP, lambda: "nothing to resume" if job is None or job.out is None else
                f"resume with --resume {job.out.path}"))
            job = prepare(args, config, stack)
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
            return _quiet_after_lost_workers(train_into(job, strategy, hooks, console), args)
    except LinfitError as error:
        print(f"error: {error}", file=sys.stderr)
        # A cluster that never met: TensorFlow still prints its C++ lines as it shuts down.
        return _quiet_after_lost_workers(4 if isinstance(error, WorkerLostError) else 2, args)
    except OSError as error:  # a file of the run it may not read or change
        print(f"error: {file_error(error)}", file=sys.stderr)
        return 2
    finally:
        if job is not None and not job.chief:  # this worker's directory goes with it
            shutil.rmtree(job.out.path, ignore_errors=True)


def _as_started(data: DataConfig, folder: Path | None) -> DataConfig:
    """A resumed run's data, its relative paths read from the directory the run was
    started in: --resume works from any directory."""
    if folder is None or folder == Path.cwd():
        return data

    def moved(path):
        if isinstance(path, str):
            return path if not path or os.path.isabs(path) else str(folder / path)
        return tuple(moved(part) for part in path)

    return dataclasses.replace(data, path=moved(data.path),
                               validation_path=moved(data.validation_path))


def _quiet_after_lost_workers(status: int, args: argparse.Namespace) -> int:
    """`status`; after a lost worker (4), the rest of standard error is silenced:
    TensorFlow's C++ lines as its coordination service shuts down would follow the
    error line (unless --tf-logs asks for them)."""
    if status == 4 and not args.tf_logs:
        with contextlib.suppress(OSError, ValueError):  # a stream with no descriptor: as is
            silence(sys.stderr)
    return status


def resume_config(run_dir: RunDir, args: argparse.Namespace) -> Config:
    """The config of the run in `run_dir`; `--set` may change only the keys that change
    no number (NEUTRAL_KEYS: train.epochs to extend it, train.compile, ...)."""
    changed = [flag for flag, value in (("--config", args.config), ("--data", args.data),
                                        ("--model", args.model), ("--loop", args.loop),
                                        ("--out", args.out)) if value]
    changed += [o for o in args.overrides
                if o.partition("=")[0].strip() not in NEUTRAL_KEYS]
    run_dir.check_is_run()
    if changed:
        raise ConfigError(f"--resume continues a run as it was configured: drop "
                          f"{', '.join(changed)} (--set may extend train.epochs, or change "
                          f"keys that change no number: {', '.join(NEUTRAL_KEYS[1:])})")
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


MAX_DEVICES = 64  # logical devices of the CPU, to try a strategy on


def prepare(args: argparse.Namespace, config: Config | None,
            stack: contextlib.ExitStack) -> Job | None:
    """Check the config, the data and the run directory, and make (or lock) it.

    Returns:
      The job, or None when --resume finds the run complete.
    """
    if args.resume:
        config = resume_config(RunDir(args.resume), args)
    if args.devices is not None and not 1 <= args.devices <= MAX_DEVICES:
        # TensorFlow takes minutes to make 10**5, and does not heed a signal meanwhile.
        raise ConfigError(f"--devices {args.devices}: give a number of devices from 1 to "
                          f"{MAX_DEVICES}")
    if args.devices is not None and config.train.strategy == "default":
        raise ConfigError(f"--devices {args.devices} splits the CPU into devices, but "
                          "train.strategy is \"default\", which trains on one of them: "
                          "add --set train.strategy=mirrored")
    data = load_data(config.data if not args.resume else
                     _as_started(config.data, RunDir(args.resume).started_in()))
    if data.note:
        rows = f"{data.num_examples} rows)"
        source = f"{data.source[:-1]}, {rows}" if data.source.endswith(")") else \
            f"{data.source} ({rows}"  # "part-*.csv (3 files, 3000 rows)"
        say(f"Streaming {source} from disk: {data.note}.")
    if config.data.path and config.data.streaming == "auto":
        # Recorded as chosen: --resume reads the data the same way, whatever memory is free.
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, streaming=data.files is not None))
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
        # A run killed after its training, before its results, is finished here.
        if plan.complete and run_status(args.resume) == "complete":
            print(f"{args.resume} is complete: nothing to do (each run has trained its "
                  f"{config.train.epochs} epochs, or was stopped early)")
            return None
        job.resume_from = plan.points
    return job


def run_settings(config: Config, data: Data) -> dict:
    """What decides the numbers of a config's runs besides the model: every config
    key that changes them, and the data (a fingerprint of its values)."""
    if data.files is not None:
        return {**flat_settings(config), "data.fingerprint": data.files.fingerprint() + (
            data.validation_files.fingerprint() if data.validation_files is not None else "")}
    return {**flat_settings(config),
            "data.fingerprint": fingerprint(data.x, data.y, *(data.validation or ()),
                                            names=data.feature_names + data.target_names)}


def with_console(hooks: RunHooks, console: LiveConsole) -> RunHooks:
    """`hooks` that also print each run as it trains."""
    def on_epoch_end(label, history):
        hooks.on_epoch_end(label, history)  # history.csv first: it is what is kept
        console.epoch_end(label, history)

    return dataclasses.replace(hooks, on_run_start=console.run_start,
                               on_epoch_end=on_epoch_end, on_run_end=console.run_end)


def train_into(job: Job, strategy, hooks: RunHooks, console: LiveConsole) -> int:
    """Train the runs of `job`, record them in its run directory and print them
    (`hooks` print each run as it trains, through `console`).

    Returns the exit status: 0; 2, 3 or 4 for a failed run (recorded as such);
    128 + the signal's number for an interrupted one (resumable).
    """
    out, data = job.out, job.data
    out.write_config(job.config)  # what happens from here on is recorded here
    try:
        with warnings.catch_warnings(), unusable_files():
            # A warning (such as an unstable learning rate) is one line, shown
            # before training starts.
            warnings.showwarning = lambda *warning, **_: _print_warning(console, *warning)
            comparison = run_experiment(job.experiment, data, strategy=strategy, hooks=hooks,
                                        reference=job.chief)
            if len(comparison.runs) > 1:
                say("\n".join(agreement_lines(comparison.agreement)))
            devices = device_summary(strategy)
            out.write_results(job.config, data, comparison, devices)
    except TrainingInterrupted as stop:
        done = stop.run.history.epochs
        console.run_stopped(stop.run.history, f"interrupted after {done} epoch"
                                              f"{'s' * (done != 1)}")
        out.write_failure(data, [*stop.completed, stop.run], "interrupted",
                          f"interrupted by {signal.Signals(stop.signal).name}")
        print(f"interrupted at epoch {stop.run.history.epochs}: resume with --resume "
              f"{out.path}", file=sys.stderr)
        return 128 + stop.signal
    except LinfitError as error:
        status = "diverged" if isinstance(error, DivergenceError) else "failed"
        console.run_stopped(getattr(error, "history", None), status)
        out.write_failure(data, getattr(error, "completed", []), status, str(error), error)
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, DivergenceError) else \
            4 if isinstance(error, WorkerLostError) else 2
    except BaseException as error:  # a bug: record it, then let it show
        console.end_line()
        out.write_failure(data, [], "failed", f"{type(error).__name__}: {error}")
        raise
    true_line = None if data.true_w is None else (data.true_w, data.true_b)
    say("\n".join(summary_lines(comparison, job.config.train.epochs, true_line,
                                describe_devices(devices), str(out.path) if job.chief else None)))
    if not job.chief:
        say("This worker wrote nothing: the chief writes the run directory.")
    elif job.config.train.tensorboard:
        say(f"TensorBoard: tensorboard --logdir {out.path / out.TENSORBOARD}")
    return 0


@contextlib.contextmanager
def unusable_files():
    """An OSError of a file of the run (no permission), as linfit's RunDirError."""
    try:
        yield
    except OSError as error:
        if isinstance(error, LinfitError):
            raise
        raise RunDirError(file_error(error)) from None


def _print_warning(console: LiveConsole, message, *_) -> None:
    console.end_line()  # not on the line of a run's title
    print(f"warning: {message}", file=sys.stderr, flush=True)


