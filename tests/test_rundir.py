"""The run directory: --overwrite removes only what linfit wrote, and only where it
may (issue 13.1); --resume only continues linfit runs."""

import json
import os

import pytest

from linfit.train import main

QUICK = ["--model", "module", "--loop", "manual", "--set", "train.epochs=2"]


def files(folder):
    """Every file below `folder` with its content."""
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def site(tmp_path):
    """A folder that is not a run but has a config.toml: a static site's."""
    folder = tmp_path / "site"
    (folder / "content").mkdir(parents=True)
    (folder / "config.toml").write_text('title = "blog"\n')
    (folder / "content" / "post.md").write_text("precious\n")
    return folder


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_that_is_not_a_run_is_never_touched(site, capsys, flag):
    before = files(site)
    args = [*QUICK, "--out", site, "--overwrite"] if flag == "--overwrite" else ["--resume", site]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "is not one (it has no .linfit-run marker" in err
    assert files(site) == before


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    assert main([*QUICK, "--out", folder]) == 0
    return folder


@pytest.mark.parametrize("out", [".", ".."], ids=["current", "parent"])
def test_overwrite_never_removes_the_current_directory_or_its_parents(
        run_dir, monkeypatch, capsys, out):
    inside = run_dir / "notes"
    inside.mkdir()
    monkeypatch.chdir(inside if out == ".." else run_dir)
    before = files(run_dir)
    assert main([*QUICK, "--out", out, "--overwrite"]) == 2
    assert "it is the current directory or holds it" in capsys.readouterr().err
    assert files(run_dir) == before


def test_overwrite_refuses_a_symbolic_link(run_dir, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(run_dir)
    before = files(run_dir)
    assert main([*QUICK, "--out", link, "--overwrite"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert files(run_dir) == before and link.is_symlink()


def test_overwrite_removes_what_linfit_wrote_and_keeps_the_rest(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*QUICK, "--set", "train.checkpoint_every=1", "--set", "train.tensorboard=true",
                 "--out", folder]) == 0
    (folder / "notes.txt").write_text("mine\n")
    (folder / "tb" / "module-manual" / "mine.txt").write_text("mine too\n")
    assert (folder / "checkpoints" / "module-manual" / "epoch-0002.weights.h5").exists()
    assert main(["--model", "keras", "--loop", "keras", "--set", "train.epochs=1",
                 "--out", folder, "--overwrite"]) == 0
    left = files(folder)
    assert left["notes.txt"] == b"mine\n"
    assert left["tb/module-manual/mine.txt"] == b"mine too\n"
    assert not any(name.startswith(("checkpoints/", "module-manual")) for name in left)
    assert not any("events.out.tfevents" in name and "module-manual" in name for name in left)
    metrics = json.loads(left["metrics.json"])
    assert [(r["model"], r["loop"], r["epochs_run"]) for r in metrics["runs"]] == [
        ("keras", "keras", 1)]


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([*QUICK, "--out", tmp_path / "file" / "run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the run directory") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["file"]
