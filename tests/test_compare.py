"""`python -m linfit.compare`: comparing two run directories."""

import json
import subprocess
import sys

import pytest

from linfit.compare import main
from linfit.reference import least_squares_reference
from linfit.train import main as train_main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    common = ["--set", "train.epochs=3", "--model", "module"]
    for name, extra in (("a", []), ("b", []), ("c", ["--set", "train.learning_rate=0.11"]),
                        ("d", ["--set", "train.epochs=5"]),
                        ("e", ["--set", "train.record_full_loss=false"])):
        assert train_main([*common, *extra, "--out", root / name]) == 0
    return root


def test_compare_cli_agreeing_runs_exit_0(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "b")]) == 0
    out = capsys.readouterr().out
    assert "module-manual:" in out and "module-keras:" in out
    assert "All 2 compared runs agree." in out and "Their configs are the same." in out


def test_compare_cli_differing_runs_exit_1(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "c")]) == 1
    out = capsys.readouterr().out
    # Same start: the loss before the first update agrees; after it, full_loss differs.
    assert "DIFFER, first at epoch 1 in full_loss" in out
    assert "They differ in module-manual, module-keras." in out
    assert "Config keys that differ: train.learning_rate = 0.1 in A, 0.11 in B" in out


def test_runs_of_different_lengths_get_one_verdict_and_the_keys_that_differ(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "d")]) == 1
    out = capsys.readouterr().out
    assert out.count("they DIFFER in length: 3 and 5 epochs (the first 3 match to 1e-05 "
                     "relative)") == 2
    assert "agree" not in out.replace("they DIFFER", "")
    assert "They differ in module-manual, module-keras." in out
    assert out.rstrip().endswith("Config keys that differ: train.epochs = 3 in A, 5 in B")


def test_compare_cli_bad_input_exit_2(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    (tmp_path / "file.csv").write_text("x,y\n1,2\n")
    for other, message in ((tmp_path / "nope", "does not exist"),
                           (tmp_path / "file.csv", "is a file, not a run directory"),
                           (tmp_path / "empty", "has no metrics.json"),
                           (tmp_path / "broken", "is not a linfit metrics file")):
        result = subprocess.run([sys.executable, "-m", "linfit.compare", str(two_runs / "a"),
                                 str(other)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert result.stderr.startswith("error: ") and message in result.stderr


def test_metrics_carry_reference_and_agreement(two_runs, guide_data):
    metrics = json.loads((two_runs / "a" / "metrics.json").read_text())
    reference = least_squares_reference(guide_data.x, guide_data.y)
    assert metrics["reference"]["w"] == pytest.approx([float(reference.w)], rel=1e-12)
    assert metrics["reference"]["lr_limit"] == pytest.approx(reference.lr_limit, rel=1e-12)
    assert metrics["agreement"]["agree"] is True
    assert set(metrics["agreement"]["max_rel"]) == {"loss", "full_loss", "w", "b"}


@pytest.mark.parametrize("rtol", ["nan", "-0.1", "inf"])
def test_compare_cli_refuses_a_tolerance_that_is_not_one(two_runs, capsys, rtol):
    """Issue 13.12: --rtol nan once said runs 17% apart agree."""
    assert main([str(two_runs / "a"), str(two_runs / "c"), "--rtol", rtol]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rtol=") and "finite number >= 0" in err


def test_runs_that_record_other_quantities_differ_and_say_why(two_runs, capsys):
    assert main([str(two_runs / "a"), str(two_runs / "e")]) == 1
    out = capsys.readouterr().out
    assert out.count("They DIFFER: only A records full_loss (other data, features, "
                     "validation or settings). The quantities both record:") == 2
    assert "They differ in module-manual, module-keras." in out
    assert out.rstrip().endswith(
        "Config keys that differ: train.record_full_loss = true in A, false in B")


def test_a_reader_that_stops_reading_leaves_the_verdict_in_the_exit_status(two_runs):
    """`compare A B | head -1`: no traceback; 0 still says they agree, 1 that they differ."""
    for other, status in (("b", 0), ("c", 1)):
        result = subprocess.run(
            f'"{sys.executable}" -m linfit.compare "{two_runs / "a"}" "{two_runs / other}" '
            '| head -c 1 > /dev/null; exit "${PIPESTATUS[0]}"', shell=True,
            executable="/bin/bash", capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (status, "")


def test_configs_are_compared_without_the_run_marker(two_runs, tmp_path, capsys):
    """A run directory copied without linfit's hidden marker (cp -r of its files):
    its config is compared, not refused as "--resume continues ... only"."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_runs / "c", copy)
    (copy / ".linfit-run").unlink()
    assert main([str(two_runs / "a"), str(copy)]) == 1
    assert "Config keys that differ: train.learning_rate = 0.1 in A, 0.11 in B" in \
        capsys.readouterr().out


def test_a_run_without_full_loss_keeps_its_history_csv(two_runs):
    """train.record_full_loss = false: history.csv had its header and no row."""
    import csv

    run = two_runs / "e"
    rows = list(csv.DictReader((run / "history.csv").open()))
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(rows) == sum(len(r["trajectory"]) for r in metrics["runs"]) == 2 * 4
    assert "full_loss" not in rows[0]
    for entry in metrics["runs"]:
        last = [r for r in rows if r["loop"] == entry["loop"]][-1]
        assert float(last["loss"]) == entry["loss"][-1]
        assert [float(last["w"])] == entry["final"]["w"]


def test_a_run_that_did_not_finish_is_named_as_such(two_runs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "stopped"
    shutil.copytree(two_runs / "b", copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    assert main([str(two_runs / "a"), str(copy)]) == 0
    out = capsys.readouterr().out
    assert "B did not finish (interrupted): its runs are compared over the epochs they " \
        "recorded." in out and "A did not finish" not in out


def test_a_full_standard_output_is_one_error_line(two_runs):
    """`compare A B > log` on a full disk: exit 2 and why (it was a traceback and exit 1,
    which says "they differ")."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "linfit.compare", str(two_runs / "a"),
                                 str(two_runs / "b")], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("error: cannot write the standard output: the disk is full: make "
                             "room (or fix the permission) and try again; what was written "
                             "completely is intact\n")
