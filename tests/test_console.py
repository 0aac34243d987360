"""What `python -m linfit.train` tells a person: live lines at a readable rate, one
verdict per run, help that teaches the config (issue 16)."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from linfit.config import Config, load_config
from linfit.config_help import KEYS, commented_toml, config_items
from linfit.console import LiveConsole, PrintPlan
from linfit.experiment import RunLabel, RunResult
from linfit.history import History
from linfit.train import config_from_args, main, parse_args

BIN = Path(sys.executable).parent


def cli(*args, cwd=None, command=(sys.executable, "-m", "linfit.train")):
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# --- how many epochs a run prints -------------------------------------------------------

@pytest.mark.parametrize("epochs", [1, 10, 20])
def test_short_runs_print_every_epoch(epochs):
    plan = PrintPlan(epochs)
    assert all(plan.shows(row) for row in range(epochs + 1)) and plan.note() is None


@pytest.mark.parametrize("epochs, stride", [(21, 5), (300, 50), (1000, 100), (30000, 5000)])
def test_long_runs_print_the_ends_and_a_round_stride(epochs, stride):
    plan = PrintPlan(epochs)
    shown = [row for row in range(epochs + 1) if plan.shows(row)]
    assert plan.stride == stride
    assert shown[:4] == [0, 1, 2, 3] and shown[-3:] == [epochs - 2, epochs - 1, epochs]
    assert len(shown) <= 2 * PrintPlan.ENDS + PrintPlan.ROWS + 2
    # Between the ends, the epochs the guide numbers 0, 50, 100, ... (row = epoch + 1).
    middle = [row for row in shown if 3 < row <= epochs - 3]
    assert all((row - 1) % stride == 0 for row in middle)
    assert f"one epoch in {stride} of {epochs}" in plan.note()
    assert "train.print_every=N" in plan.note()


def test_print_every_chooses_the_stride():
    plan = PrintPlan(30, every=7)
    assert [row for row in range(31) if plan.shows(row)] == [0, 1, 8, 15, 22, 29]
    assert PrintPlan(300, every=1).note() is None


def test_a_300_epoch_run_prints_a_readable_number_of_lines(tmp_path, capsys):
    assert main(["--model", "module", "--loop", "manual", "--set", "train.epochs=300",
                 "--out", tmp_path / "run"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 45
    assert "one epoch in 50 of 300" in out
    assert [line for line in out.splitlines() if line.startswith("Epoch")] == [
        f"Epoch {e:2d}:" for e in (0, 1, 2, 50, 100, 150, 200, 250, 297, 298, 299)]
    # Every epoch is in the files all the same.
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 302


# --- one line per later run -------------------------------------------------------------

def history(w_values, loss=None):
    result = History()
    for row, w in enumerate(w_values):
        result.append_row({"full_loss": 1.0 / (row + 1), "w": np.float32(w), "b": 0.5})
        if row:
            result.append_logs({"loss": loss or 1.0 / row})
    return result


def train_printed(histories, epochs, every=0):
    """What LiveConsole prints for runs with these histories, through the run hooks."""
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    console = LiveConsole(epochs, every, stream=Stream())
    labels = [RunLabel("module", "manual"), RunLabel("module", "keras"),
              RunLabel("keras", "manual")]
    for label, full in zip(labels, histories):
        console.run_start(label)
        growing = History()
        for row in range(full.rows):
            growing.append_row({name: values[row] for name, values in full.trajectory.items()})
            if row:
                growing.append_logs({"loss": full.loss[row - 1]})
            console.epoch_end(label, growing)
        console.run_end(RunResult(label.model, label.loop, None, growing, 0.25, None))
    return "".join(lines)


def test_identical_runs_print_one_line_each():
    same = [3.0, 2.5, 2.25]
    out = train_printed([history(same), history(same), history(same)], 2)
    assert out.count("Epoch") == 2
    assert ("module-keras (LinearModule, Keras fit): 2 epochs, bitwise identical to "
            "module-manual (0.25 s)\n") in out


def test_runs_that_differ_show_where_and_their_own_lines():
    out = train_printed([history([3.0, 2.5, 2.25]), history([3.0, 2.5, 2.2500002]),
                         history([3.0, 2.0, 1.0])], 2)
    lines = out.splitlines()
    assert lines[lines.index("module-keras (LinearModule, Keras fit): 2 epochs, agrees with "
                             "module-manual to 1e-05 relative (not bitwise: largest difference "
                             "1.1e-07 relative, in w at epoch 2) (0.25 s)") + 1].startswith(
        "keras-manual")
    differ = next(line for line in lines if line.startswith("keras-manual"))
    assert differ == ("keras-manual (LinearModel, GradientTape loop): 2 epochs, DIFFERS from "
                      "module-manual, first at epoch 1 in w (by 0.56 relative at most) (0.25 s); "
                      "its lines:")
    assert lines[lines.index(differ) + 1:] == ["Starting:", "    W = 3.00, b = 0.50, loss=1.00000",
                                               "Epoch  0:", "    W = 2.00, b = 0.50, loss=0.50000",
                                               "Epoch  1:", "    W = 1.00, b = 0.50, loss=0.33333"]


# --- --print-config and the config keys ------------------------------------------------

OVERRIDES = ["--set", "train.epochs=3", "--set", "data.true_w=[1.5, -2]",
             "--set", "model.init_w=[0, 0]", "--set", "train.early_stopping.patience=2",
             "--model", "module", "--loop", "manual"]


def test_print_config_is_commented_toml_of_the_resolved_config():
    printed = cli("--print-config", *OVERRIDES)
    assert printed.returncode == 0 and printed.stderr == ""
    parsed = tomllib.loads(printed.stdout)
    assert parsed["train"]["epochs"] == 3 and parsed["data"]["true_w"] == [1.5, -2.0]
    assert parsed["train"]["early_stopping"]["patience"] == 2
    lines = printed.stdout.splitlines()
    for key, value, default in config_items(Config()):
        name = key.rsplit(".", 1)[1]
        (at,) = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")
                 and _section_of(lines, i) == key.rsplit(".", 1)[0]]
        meaning, allowed = KEYS[key]
        assert lines[at - 2] == f"# {meaning}."
        assert lines[at - 1].startswith("# Default: ") and lines[at - 1].endswith(
            f"Allowed: {allowed}.")


def _section_of(lines, index):
    return next(line.strip("[]") for line in reversed(lines[:index]) if line.startswith("["))


def test_print_config_reproduces_the_run(tmp_path):
    config_file = tmp_path / "printed.toml"
    config_file.write_text(cli("--print-config", *OVERRIDES).stdout)
    assert load_config(config_file) == config_from_args(parse_args(OVERRIDES))
    assert main([*OVERRIDES, "--out", tmp_path / "a"]) == 0
    assert main(["--config", config_file, "--out", tmp_path / "b"]) == 0
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in "ab")
    assert a == b and len(a["runs"][0]["trajectory"]) == 4


def test_every_config_key_is_documented():
    keys = [key for key, _, _ in config_items(Config())]
    assert sorted(keys) == sorted(KEYS)
    assert commented_toml(Config()).count("# Default: ") == len(keys)
    listed = cli("keys", command=(sys.executable, "-m", "linfit", "config"))
    assert listed.returncode == 0
    for key in keys:
        assert any(line.startswith(key + " ") for line in listed.stdout.splitlines()), key


@pytest.mark.parametrize("command, prog", [
    ((sys.executable, "-m", "linfit.train"), "python -m linfit.train"),
    ((sys.executable, "-m", "linfit", "train"), "linfit train"),
    ((str(BIN / "linfit-train"),), "linfit-train"),
])
def test_help_names_its_own_command_and_points_to_the_config_keys(command, prog):
    if not Path(command[0]).exists():
        pytest.skip("the linfit-train script is not installed")
    result = cli("--help", command=command)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {prog} ")
    text = " ".join(result.stdout.split())
    assert "linfit config keys" in text and "--print-config" in text
    assert "CSV file" in text and "NPZ file" in text


def test_an_unquoted_list_in_set_says_to_quote_it(tmp_path):
    result = cli("--set", "model.init_w=[1,", "2]", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1  # not argparse's usage first
    assert "unrecognized arguments: 2]" in result.stderr
    assert "must be quoted: --set 'model.init_w=[1, 2]'" in result.stderr


@pytest.mark.parametrize("module, argv, message", [
    ("linfit.train", ["--model", "foo"], "argument --model: invalid choice: 'foo'"),
    ("linfit.predict", ["--data", "d.csv"], "the following arguments are required: --checkpoint"),
    ("linfit.compare", ["a", "b", "--rtol", "abc"], "argument --rtol: invalid float value"),
    ("linfit.convert", ["--out", "o"], "the following arguments are required: --data"),
    ("linfit.config_help", ["nope"], "argument what: invalid choice: 'nope'"),
    ("linfit.__main__", ["nope"], "argument command: invalid choice: 'nope'"),
    ("linfit.__main__", ["--epochs", "3", "train"],
     "--epochs 3: options go after the command (linfit train --epochs 3 ...)"),
    ("linfit.predict", ["--checkpoint", "m.weights.h5", "--data", "d.csv", "--overwrite"],
     "--overwrite replaces --out, which is not given"),
    # An unset shell variable: it trained the synthetic line, or a new run.
    ("linfit.train", ["--data", ""], "--data is empty: give a path"),
    ("linfit.train", ["--resume", ""], "--resume is empty: give a path"),
    ("linfit.train", ["--resume", "r", "--overwrite"], "--overwrite replaces the run directory"),
])
def test_a_mistake_in_the_arguments_is_one_error_line(module, argv, message, capsys):
    import importlib

    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith(f"error: {message}")
    assert err.count("\n") == 1 and err.rstrip().endswith("--help)")


def test_a_metric_that_cannot_take_the_targets_is_one_error_line(tmp_path, capsys):
    """R2Score takes 2-D targets only; the guide's are 1-D (it was a traceback)."""
    assert main(["--set", 'train.metrics=["r2_score"]', "--out", tmp_path / "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: the model, its loss or its metrics cannot take this data (x of shape (201,), "
        "y of (201,)): R2Score expects 2D inputs")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_a_pattern_the_shell_expanded_says_to_quote_it(tmp_path, capsys):
    """--data part-*.csv, unquoted, reaches linfit as three files (it was told to
    quote a --set value)."""
    parts = [tmp_path / f"part-{i}.csv" for i in range(3)]
    for part in parts:
        part.write_text("x,y\n1,2\n")
    with pytest.raises(SystemExit):
        parse_args(["--data", *parts, "--set", "train.epochs=2"])
    assert capsys.readouterr().err == (
        f"error: unrecognized arguments: {parts[1]} {parts[2]} (the shell expanded a pattern "
        "into 3 files: quote it, as in --data 'part-*.csv') (see python -m linfit.train "
        "--help)\n")


@pytest.mark.parametrize("argv", [["linfit.train", "--print-config"],
                                  ["linfit", "config", "keys"]])
def test_a_closed_standard_output_is_no_traceback(argv):
    """`>&-`: Python's sys.stdout is None (it raised AttributeError)."""
    import os

    result = subprocess.run([sys.executable, "-m", *argv], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1), timeout=120)
    assert result.returncode == 0 and result.stderr == ""


def test_nested_keys_can_be_set_on_the_command_line():
    config = config_from_args(parse_args(["--set", 'train.early_stopping.monitor="loss"',
                                          "--set", "train.early_stopping.patience=1"]))
    assert config.train.early_stopping.monitor == "loss"
    assert config.train.early_stopping.patience == 1


def test_devices_without_a_strategy_is_refused_before_tensorflow(tmp_path):
    result = cli("--devices", "2", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ('error: --devices 2 splits the CPU into devices, but '
                             'train.strategy is "default", which trains on one of them: '
                             'add --set train.strategy=mirrored\n')
    assert not (tmp_path / "out").exists()


# --- quiet TensorFlow for library users -------------------------------------------------

def test_import_linfit_quiets_tensorflow_unless_the_user_chose_a_level():
    code = ("import linfit\n"
            "model = linfit.LinearModule()\n"
            "import tensorflow as tf\n"
            "print(tf.reduce_sum(model(tf.ones([3]))).numpy())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=120)
    assert quiet.returncode == 0 and quiet.stdout == "15.0\n"
    assert quiet.stderr == ""
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=120)
    assert chosen.returncode == 0 and "I0000" in chosen.stderr  # their level, their lines


# --- the edges a real terminal has ------------------------------------------------------

ONE_RUN = ["--model", "module", "--loop", "manual"]


def test_a_reader_that_goes_away_leaves_a_complete_run(tmp_path):
    """`python -m linfit.train | head -3`: no traceback, and the run is recorded whole."""
    process = subprocess.Popen([sys.executable, "-m", "linfit.train", *ONE_RUN, "--set",
                                "train.epochs=300", "--out", "run"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()  # as head does after its lines
    stderr = process.stderr.read().decode()
    assert process.wait(300) == 0 and stderr == ""
    assert first[0] == b"module-manual (LinearModule, GradientTape loop)\n"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "complete"


def test_a_console_that_cannot_show_greek_letters_gets_a_summary_all_the_same(tmp_path):
    result = subprocess.run([sys.executable, "-m", "linfit.train", *ONE_RUN, "--set",
                             "train.epochs=2", "--out", "run"], cwd=tmp_path, timeout=300,
                            capture_output=True, env={**__import__("os").environ,
                                                      "PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 0 and result.stderr == b""
    assert b"|? ? ?*| shrinks" in result.stdout  # θ and − replaced, not a crash


def test_a_diverging_run_shows_where_it_stood_and_a_short_error(tmp_path):
    result = cli(*ONE_RUN, "--set", "train.learning_rate=0.76", "--set", "train.epochs=2000",
                 "--out", "run", cwd=tmp_path)
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[-1] == "(diverged)" and lines[-3].startswith("Epoch ")
    diverged_at = int(lines[-3].split()[1].rstrip(":")) + 1  # the last finite epoch
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["runs"][0]["stopped_at"]["epoch"] == diverged_at
    (error,) = result.stderr.splitlines()[1:] or result.stderr.splitlines()
    assert error.startswith("error: module-manual: training diverged") and len(error) < 800
    assert "more ..." in error  # the list of losses is cut in the middle


def test_config_keys_is_the_default_and_fits_the_terminal():
    result = subprocess.run([sys.executable, "-m", "linfit", "config"], capture_output=True,
                            text=True, timeout=60, env={**__import__("os").environ,
                                                        "COLUMNS": "80"})
    assert result.returncode == 0
    assert max(len(line) for line in result.stdout.splitlines()) < 80
    entry = result.stdout.split("model.kind = ", 1)[1].split("\nmodel.init_w")[0]
    assert "allowed: module | keras | both" in " ".join(entry.split())
    wide = subprocess.run([sys.executable, "-m", "linfit", "config", "keys"],
                          capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "COLUMNS": "160"}).stdout
    assert max(len(line) for line in wide.splitlines()) < 160
    assert any(line.startswith("model.kind ") and '"both"' in line for line in wide.splitlines())


def test_a_linfit_name_leaves_tensorflows_devices_to_configure():
    """The quiet first import does not start the devices: the user may still split
    them (or set memory growth), as after a plain `import tensorflow`."""
    code = ("import linfit\n"
            "linfit.LinearModule, linfit.Trainer\n"
            "import tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(\n"
            "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
            "print(len(tf.config.list_logical_devices('CPU')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout == "2\n", result.stderr


def test_resuming_a_run_whose_first_part_is_complete_says_so(tmp_path, capsys):
    """Interrupted in its second run, resumed: the first run is complete and is shown."""
    out = tmp_path / "run"
    assert main(["--model", "module", "--set", "train.epochs=3", "--out", out]) == 0
    # Make module-keras look unfinished: its final checkpoint goes, the periodic ones stay.
    (out / "module-keras.weights.h5").unlink()
    (out / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["--resume", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["module-manual (LinearModule, GradientTape loop)",
                         "resumed module-manual: complete after 3 epochs",
                         "Epoch  2:", lines[3]]
    assert lines[3].startswith("    W = ")
    assert lines[4].startswith("module-keras (LinearModule, Keras fit): 3 epochs, bitwise "
                               "identical to module-manual (")


@pytest.mark.parametrize("arguments", [("-m", "linfit", "config", "keys"),
                                       ("-m", "linfit.train", "--print-config")])
def test_printing_to_a_full_disk_is_one_error_line(arguments):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, *arguments], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot write the standard output: the disk is full")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("rho, said", [
    (0.8, "shrinks ×0.8 per epoch"),
    (1 - 2e-9, "shrinks ×(1 − 2e-09) per epoch"),  # it said "grows ×1 ...: it diverges"
    (1.0, "does not shrink (×1 per epoch)"),
    (1 + 3e-6, "grows ×(1 + 3e-06) per epoch: it diverges"),
    (1.02, "grows ×1.02 per epoch: it diverges"),
])
def test_the_contraction_is_never_shown_as_a_misleading_1(rho, said):
    from types import SimpleNamespace

    from linfit.console import rate_line

    comparison = SimpleNamespace(learning_rate=0.1, reference=SimpleNamespace(lr_limit=0.74),
                                 contraction=rho)
    assert rate_line(comparison) == ("Learning rate 0.1: the stability limit is 0.74; "
                                     f"|θ − θ*| {said}")


@pytest.mark.parametrize("summary, said", [
    ({"strategy": "mirrored", "replicas": 1, "devices": ["/device:CPU:0"]},
     "MirroredStrategy over 1 device (CPU:0)"),  # "1 devices"
    ({"strategy": "multiworker", "workers": 1, "replicas": 1},
     "MultiWorkerMirroredStrategy: 1 worker, 1 replica in all"),
    ({"strategy": "multiworker", "workers": 2, "replicas": 2},
     "MultiWorkerMirroredStrategy: 2 workers, 2 replicas in all"),
])
def test_devices_are_counted_in_words(summary, said):
    from linfit.runtime import describe_devices

    assert describe_devices(summary) == said
