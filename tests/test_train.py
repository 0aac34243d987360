"""`python -m linfit.train` end to end, in a temporary directory."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import gradient_descent_reference, normal_equations
from linfit import LinearModule, load_config, load_weights
from linfit.config import Config
from linfit.data import synthetic_line
from linfit.train import main

RUNS = [("module", "manual"), ("module", "keras"), ("keras", "manual"), ("keras", "keras")]
OUTPUTS = {"config.toml", "history.csv", "metrics.json", "report.md", "data.png", "weights.png",
           "loss.png", "gap.png", "differences.png", *(f"{m}-{l}.weights.h5" for m, l in RUNS)}


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "linfit.train", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The command a newcomer runs, with no arguments, in a fresh directory."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli(cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "runs").iterdir()
    return result, run_dir


def test_default_run_writes_everything_and_prints_nothing_on_stderr(default_run):
    result, run_dir = default_run
    assert {p.name for p in run_dir.iterdir()} == OUTPUTS
    assert result.stderr == ""
    assert load_config(run_dir / "config.toml") == Config()
    for name in ("data.png", "weights.png", "loss.png", "gap.png", "differences.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_run_prints_the_guides_lines_for_each_run(default_run, guide_data):
    stdout = default_run[0].stdout
    assert stdout.count("Starting:") == 4 and stdout.count("Epoch  9:") == 4
    reference = gradient_descent_reference(guide_data.x, guide_data.y, 5.0, 0.0, 0.1, 10)
    last = (f"    W = {reference['w'][-1]:1.2f}, b = {reference['b'][-1]:1.2f}, "
            f"loss={reference['full_loss'][-1]:2.5f}")
    assert stdout.count(last) == 4
    assert "they agree to 1e-05 relative" in stdout


def test_default_metrics_match_float64_gradient_descent(default_run, guide_data):
    metrics = json.loads((default_run[1] / "metrics.json").read_text())
    assert [(r["model"], r["loop"]) for r in metrics["runs"]] == RUNS
    reference = gradient_descent_reference(guide_data.x, guide_data.y, 5.0, 0.0, 0.1, 10)
    for run in metrics["runs"]:
        assert run["checkpoint"] == f"{run['model']}-{run['loop']}.weights.h5"
        assert [row["epoch"] for row in run["trajectory"]] == list(range(11))
        np.testing.assert_allclose(run["loss"], reference["loss"], rtol=1e-5)
        for key in ("full_loss", "b"):
            np.testing.assert_allclose([row[key] for row in run["trajectory"]], reference[key],
                                       rtol=1e-5)
        np.testing.assert_allclose([row["w"] for row in run["trajectory"]],
                                   reference["w"][:, None], rtol=1e-5)
    assert metrics["agreement"]["agree"] is True
    assert max(metrics["agreement"]["max_rel"].values()) <= 1e-5


def test_default_checkpoints_and_history_csv_hold_the_final_state(default_run):
    run_dir = default_run[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "loop", "epoch", "loss", "full_loss", "w", "b"]
    assert len(rows) == 4 * 11 and rows[0]["loss"] == "" and rows[1]["loss"] != ""
    for run in metrics["runs"]:
        final = run["trajectory"][-1]
        model = LinearModule()
        load_weights(model, run_dir / run["checkpoint"])
        assert [float(model.w.numpy())] == pytest.approx(final["w"], rel=1e-7)
        last_row = [r for r in rows if (r["model"], r["loop"]) == (run["model"], run["loop"])][-1]
        assert float(last_row["full_loss"]) == pytest.approx(final["full_loss"], rel=1e-7)
        assert float(last_row["w"]) == pytest.approx(final["w"][0], rel=1e-7)


@pytest.mark.parametrize("true_w", [(2.0,), (0.5, -1.2, 2.0)], ids=["1-feature", "3-features"])
def test_any_csv_matches_float64_gradient_descent(tmp_path, capsys, true_w):
    from linfit.config import DataConfig

    data = synthetic_line(DataConfig(true_w=true_w, true_b=0.3, num_examples=60, seed=5))
    x = data.x.reshape(len(data.y), -1)
    path = tmp_path / "data.csv"
    names = [f"f{i}" for i in range(x.shape[1])]
    np.savetxt(path, np.column_stack([x, data.y]), delimiter=",",
               header=",".join([*names, "y"]), comments="", fmt="%.9g")
    out = tmp_path / "run"
    assert main(["--data", path, "--out", out, "--set", "train.epochs=6",
                 "--set", "train.learning_rate=0.05", "--set", "model.init_w=0"]) == 0
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    reference = gradient_descent_reference(table[:, :-1].squeeze(), table[:, -1], [0.0] * len(
        true_w), 0.0, 0.05, 6)
    metrics = json.loads((out / "metrics.json").read_text())
    for run in metrics["runs"]:
        np.testing.assert_allclose([row["w"] for row in run["trajectory"]],
                                   reference["w"].reshape(7, -1), rtol=1e-5)
        np.testing.assert_allclose([row["full_loss"] for row in run["trajectory"]],
                                   reference["full_loss"], rtol=1e-5)
    theta, _ = normal_equations(table[:, :-1], table[:, -1])
    np.testing.assert_allclose([*metrics["reference"]["w"], metrics["reference"]["b"]], theta,
                               rtol=1e-9)
    assert metrics["agreement"]["agree"] is True
    expected_header = ["w"] if len(true_w) == 1 else [f"w_{i}" for i in range(3)]
    assert (out / "history.csv").read_text().splitlines()[0] == ",".join(
        ["model", "loop", "epoch", "loss", "full_loss", *expected_header, "b"])
    if len(true_w) == 3:
        assert "W = [" in capsys.readouterr().out


def test_default_report_reads_at_a_glance(default_run, guide_data):
    from linfit.compare import least_squares_reference

    report = (default_run[1] / "report.md").read_text()
    reference = least_squares_reference(guide_data.x, guide_data.y)
    assert "**Yes: the 4 runs agree to 1e-05 relative at every epoch.**" in report
    assert f"| **optimum** (float64 least squares) | {float(reference.w):.4f} | " in report
    assert "| true line | 3.0000 | 2.0000 |" in report
    assert f"2 / λmax(H) = **{reference.lr_limit:.4g}**" in report
    assert "*before* each update" in report  # Keras's loss vs the guide's, explained
    for figure in ("data", "weights", "loss", "gap", "differences"):
        assert f"![{figure}]({figure}.png)" in report
    assert report.count("| module-manual |") == 2  # final state and wall time


def test_unstable_learning_rate_is_one_warning_line_before_training(tmp_path):
    result = run_cli("--set", "train.learning_rate=1.2", "--set", "train.epochs=2",
                     "--model", "module", "--loop", "manual", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warning: learning rate 1.2 is above the stability limit 0.743 "
                             "for this data: training will diverge\n")
    assert "**Warning: learning rate 1.2 is above" in (tmp_path / "out" / "report.md").read_text()


def test_one_model_one_loop(tmp_path, capsys):
    assert main(["--model", "keras", "--loop", "manual", "--out", tmp_path / "r",
                 "--set", "train.epochs=2"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [(r["model"], r["loop"]) for r in metrics["runs"]] == [("keras", "manual")]
    assert "agreement" not in metrics
    assert "LinearModel trained by the manual loop" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--set", "train.epochs=0"], "train.epochs = 0 is impossible"),
    (["--set", "train.lr=0.1"], "unknown key 'train.lr'"),
    (["--config", "missing.toml"], "config file missing.toml does not exist"),
    (["--data", "missing.csv"], "data file missing.csv does not exist"),
    (["--set", "model.init_w=[1, 2]"], "model.init_w has 2 values but the data has 1 feature"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(tmp_path, args, message):
    result = run_cli(*args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_existing_run_directory_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("precious")
    assert main(["--out", out]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "precious"


def test_help_and_config_checks_do_not_import_tensorflow():
    code = ("import sys, linfit, linfit.train, linfit.config, linfit.data\n"
            "linfit.train.config_from_args(linfit.train.parse_args([]))\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
