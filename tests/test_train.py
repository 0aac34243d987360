"""`python -m linfit.train` end to end, in a temporary directory."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers.references import gradient_descent_reference, normal_equations
from helpers.terminal import run_in_terminal
from linfit import LinearModule, load_config, load_weights
from linfit.config import Config
from linfit.data import synthetic_line
from linfit.train import main

RUNS = [("module", "manual"), ("module", "keras"), ("keras", "manual"), ("keras", "keras")]
OUTPUTS = {".linfit-run", ".linfit-lock", "config.toml", "history.csv", "metrics.json",
           "timing.json", "report.md", "data.png", "weights.png", "loss.png", "gap.png",
           "differences.png",
           *(f"{model}-{loop}.weights.h5" for model, loop in RUNS)}


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "linfit.train", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The command a newcomer runs, with no arguments, in a fresh directory, on a
    terminal (stdout on a pseudo-terminal: what a person sees, as it arrives)."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_in_terminal([sys.executable, "-m", "linfit.train"], cwd=cwd)
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


def test_default_run_prints_the_guides_lines_once_and_a_verdict_per_run(default_run, guide_data):
    stdout = default_run[0].stdout
    assert stdout.count("Starting:") == 1 and stdout.count("Epoch  9:") == 1
    reference = gradient_descent_reference(guide_data.x, guide_data.y, 5.0, 0.0, 0.1, 10)
    last = (f"    W = {reference['w'][-1]:1.2f}, b = {reference['b'][-1]:1.2f}, "
            f"loss={reference['full_loss'][-1]:2.5f}")
    assert stdout.count(last) == 1
    lines = stdout.splitlines()
    assert lines[0] == "module-manual (LinearModule, GradientTape loop)"
    for title in ("module-keras (LinearModule, Keras fit)",
                  "keras-manual (LinearModel, GradientTape loop)",
                  "keras-keras (LinearModel, Keras fit)"):
        (line,) = [line for line in lines if line.startswith(title)]
        assert line.startswith(f"{title}: 10 epochs, bitwise identical to module-manual (")
    assert ("All 4 runs agree bitwise: every epoch's loss, full_loss, w and b are identical."
            in lines)


def test_default_run_prints_as_it_trains_in_at_most_40_lines(default_run):
    result = default_run[0]
    assert len(result.lines) <= 40, result.stdout
    first_epoch = result.arrival(lambda line: line == "Epoch  0:")
    second_run = result.arrival(lambda line: line.startswith("module-keras ("))
    summary = result.arrival(lambda line: line.startswith("Results"))
    assert first_epoch < second_run < summary < result.ended
    # Live: the first run's lines were on the screen while the other three trained,
    # not printed with everything else at the end.
    assert second_run - first_epoch > 0 and result.ended - first_epoch > 0.5


def test_default_run_ends_with_a_summary_of_the_results(default_run):
    result, run_dir = default_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    reference = metrics["reference"]
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("Results"))):]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:6]}
    timing = {f"{t['model']}-{t['loop']}": t["seconds"] for t in
              json.loads((run_dir / "timing.json").read_text())["runs"]}
    for run in metrics["runs"]:
        final, label = run["final"], f"{run['model']}-{run['loop']}"
        gap = final["full_loss"] - reference["loss"]
        assert rows[label][:5] == [f"{final['w'][0]:.2f}", f"{final['b']:.2f}",
                                   f"{final['full_loss']:.5f}", f"{gap:.3g}", "10"]
        assert abs(float(rows[label][5]) - timing[label]) <= 0.0051  # timing.json: 4 digits
    optimum = next(line for line in table if line.startswith("  optimum"))
    assert optimum.split()[1:4] == [f"{reference['w'][0]:.2f}", f"{reference['b']:.2f}",
                                    f"{reference['loss']:.5f}"]
    assert next(line for line in table if line.startswith("  true line")).split()[2:] == \
        ["3.00", "2.00"]
    (rate,) = [line for line in table if line.startswith("Learning rate")]
    prefix = f"Learning rate 0.1: the stability limit is {reference['lr_limit']:.4g}; |θ − θ*| "
    assert rate.startswith(prefix + "shrinks ×") and rate.endswith(" per epoch")
    assert 0 < float(rate.removeprefix(prefix + "shrinks ×").split()[0]) < 1
    assert "Devices: one device (CPU:0), no tf.distribute strategy" in table
    assert table[-1].startswith(f"Run directory: runs/{run_dir.name}/ (report.md")
    assert metrics["devices"]["strategy"] == "default" and metrics["devices"]["replicas"] == 1


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
    # The reference is of the values as written (float64), not of training's float32 copy.
    as_written = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    theta, _ = normal_equations(as_written[:, :-1], as_written[:, -1])
    np.testing.assert_allclose([*metrics["reference"]["w"], metrics["reference"]["b"]], theta,
                               rtol=1e-9)
    assert metrics["agreement"]["agree"] is True
    expected_header = ["w"] if len(true_w) == 1 else [f"w_{i}" for i in range(3)]
    assert (out / "history.csv").read_text().splitlines()[0] == ",".join(
        ["model", "loop", "epoch", "loss", "full_loss", *expected_header, "b"])
    if len(true_w) == 3:
        assert "W = [" in capsys.readouterr().out


def test_default_report_reads_at_a_glance(default_run, guide_data):
    from linfit.reference import least_squares_reference

    report = (default_run[1] / "report.md").read_text()
    reference = least_squares_reference(guide_data.x, guide_data.y)
    assert report.splitlines()[2].startswith(
        "**All 4 runs agree bitwise: every epoch's loss, full_loss, w and b are identical.** "
        f"Learning rate 0.1: the stability limit is {reference.lr_limit:.4g}; |θ − θ*| "
        "shrinks ×")
    assert "- **Devices**: one device (CPU:0), no tf.distribute strategy" in report
    assert "The steps ran eagerly: nothing was traced" in report
    assert f"| **optimum** (float64 least squares) | | {float(reference.w):.4f} | " in report
    assert "| true line | | 3.0000 | 2.0000 |" in report
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
    assert capsys.readouterr().out.startswith("keras-manual (LinearModel, GradientTape loop)\n")


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


HEAVY_MODULES = ("tensorflow", "keras", "numpy", "h5py", "matplotlib")


@pytest.mark.parametrize("args", [["--help"], ["--print-config", "--set", "train.epochs=3"],
                                  ["--set", "train.epochs=0"], ["--set", "train.lr=1"],
                                  ["--config", "missing.toml"], ["--version"]])
def test_help_print_config_and_config_mistakes_load_nothing_heavy(args, tmp_path):
    """Issue 17: they answer at once, importing none of TensorFlow, NumPy, h5py, matplotlib."""
    command = "linfit" if args == ["--version"] else "linfit.train"
    code = (f"import sys, runpy\nsys.argv = ['x', *{args!r}]\n"
            f"try:\n    runpy.run_module({command!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.stderr.splitlines()[-1] == "[]", result.stderr
    assert result.stdout or "error:" in result.stderr


def write_csv(path, x, y, names=None):
    x = np.asarray(x).reshape(len(y), -1)
    names = names or [f"f{i}" for i in range(x.shape[1])]
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=",".join([*names, "y"]),
               comments="", fmt="%.9g")
    return path


@pytest.fixture(scope="module")
def three_feature_csv(tmp_path_factory):
    from linfit.config import DataConfig

    data = synthetic_line(DataConfig(true_w=(0.5, -1.2, 2.0), true_b=0.3, num_examples=200,
                                     seed=11))
    return write_csv(tmp_path_factory.mktemp("csv") / "three.csv", data.x, data.y)


MINIBATCH = ["--set", "data.batch_size=64", "--set", "train.epochs=4",
             "--set", "train.learning_rate=0.05", "--set", "model.init_w=0"]


def test_minibatches_match_float64_recurrence_batch_by_batch(three_feature_csv, tmp_path):
    assert main(["--data", three_feature_csv, "--out", tmp_path / "r", *MINIBATCH]) == 0
    table = np.loadtxt(three_feature_csv, delimiter=",", skiprows=1, dtype=np.float32)
    reference = gradient_descent_reference(table[:, :3], table[:, 3], [0.0] * 3, 0.0, 0.05, 4,
                                           batch_size=64)  # batches 64, 64, 64, 8
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    for run in metrics["runs"]:
        np.testing.assert_allclose([row["w"] for row in run["trajectory"]], reference["w"],
                                   rtol=1e-4)
        np.testing.assert_allclose([row["b"] for row in run["trajectory"]], reference["b"],
                                   rtol=1e-4)
        np.testing.assert_allclose(run["loss"], reference["loss"], rtol=1e-4)


def test_shuffled_runs_agree_and_follow_their_epoch_orders(three_feature_csv, tmp_path):
    from linfit.pipeline import epoch_permutation

    assert main(["--data", three_feature_csv, "--out", tmp_path / "s", *MINIBATCH,
                 "--set", "data.shuffle=true", "--set", "data.seed=3"]) == 0
    shuffled = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert shuffled["agreement"]["agree"] and max(shuffled["agreement"]["max_abs"].values()) == 0
    # The float64 recurrence over the same per-epoch orders, batch by batch.
    table = np.loadtxt(three_feature_csv, delimiter=",", skiprows=1, dtype=np.float64)
    theta = np.zeros(4)
    a = np.column_stack([table[:, :3], np.ones(len(table))])
    for epoch in range(4):
        order = epoch_permutation(len(table), 3, epoch).numpy()
        for start in range(0, len(table), 64):
            rows = order[start:start + 64]
            theta -= 0.05 * (2 / len(rows)) * a[rows].T @ (a[rows] @ theta - table[rows, 3])
    final = shuffled["runs"][0]["trajectory"][-1]
    np.testing.assert_allclose([*final["w"], final["b"]], theta, rtol=1e-4)
    assert main(["--data", three_feature_csv, "--out", tmp_path / "u", *MINIBATCH]) == 0
    unshuffled = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert unshuffled["runs"][0]["loss"] != shuffled["runs"][0]["loss"]


def test_validation_loss_everywhere(three_feature_csv, tmp_path):
    out = tmp_path / "v"
    assert main(["--data", three_feature_csv, "--out", out, *MINIBATCH,
                 "--set", "data.validation_split=0.25"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["validation_examples"] == 50
    table = np.loadtxt(three_feature_csv, delimiter=",", skiprows=1, dtype=np.float64)
    x_val, y_val = table[150:, :3], table[150:, 3]
    for row in metrics["runs"][0]["trajectory"]:
        expected = np.mean((x_val @ row["w"] + row["b"] - y_val) ** 2)
        assert row["val_loss"] == pytest.approx(expected, rel=1e-5)
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header == "model,loop,epoch,loss,full_loss,val_loss,w_0,w_1,w_2,b"
    assert "val_loss" in (out / "report.md").read_text()


def test_standardised_training_reports_and_saves_original_units(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1, 100, 0.01] + [0, 500, 3]
    y = x @ [0.5, -0.02, 40] + 1 + rng.normal(0, 0.1, 300)
    path = write_csv(tmp_path / "scales.csv", x, y)
    out = tmp_path / "std"
    assert main(["--data", path, "--out", out, "--model", "module", "--loop", "manual",
                 "--set", "data.standardize=true", "--set", "train.epochs=200",
                 "--set", "train.learning_rate=0.5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["runs"][0]["trajectory"][-1]
    reference = metrics["reference"]
    # Converged to the raw data's optimum (features 5 orders of magnitude apart).
    np.testing.assert_allclose(final["w"], reference["w"], rtol=1e-3)
    assert final["b"] == pytest.approx(reference["b"], rel=1e-3)
    model = LinearModule(features=3)
    load_weights(model, out / "module-manual.weights.h5")
    raw_loss = np.mean((model(x.astype(np.float32)).numpy() - y) ** 2)
    assert raw_loss == pytest.approx(reference["loss"], rel=1e-3)


BAD_FILES = {
    "missing file": (None, "does not exist"),
    "a directory": ("DIR", "is a directory"),
    "empty file": ("", "is empty"),
    "header only": ("x,y\n", "header but no data rows"),
    "ragged rows": ("x,y\n1,2\n3\n", "line 3: 1 values, but the header has 2 columns"),
    "non-numeric cell": ("x,y\n1,2\n3,four\n", "line 3, column 'y': 'four' is not a number"),
    "NaN": ("x,y\n1,2\nnan,4\n", "line 3, column 'x': nan is not finite"),
    "+Inf": ("x,y\n1,2\n3,4\n5,inf\n", "line 4, column 'y': inf is not finite"),
    "-Inf": ("x,y\n-inf,2\n", "line 2, column 'x': -inf is not finite"),
    "single column": ("y\n1\n2\n", "single column 'y'"),
    "duplicate columns": ("a,a,y\n1,2,3\n", "duplicate column names ['a']"),
    "unknown target": ("a,b\n1,2\n", "data.target 'price' is not a column"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_files_exit_2_without_traceback_or_output(tmp_path, case):
    text, message = BAD_FILES[case]
    path = tmp_path / "data.csv"
    if text == "DIR":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    extra = ["--set", "data.target=price"] if case == "unknown target" else []
    result = run_cli("--data", path, *extra, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros(3)}, "has no array 'x'"),
    ({"x": np.zeros(3)}, "has no array 'y'"),
    ({"x": np.zeros(3), "y": np.zeros(2)}, "x has 3 rows but y has 2"),
])
def test_bad_npz_files_exit_2(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    result = run_cli("--data", tmp_path / "d.npz", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
