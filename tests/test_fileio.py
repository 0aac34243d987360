"""atomic_write: a file is the old one or the new one, never a mixture, never a leftover."""

import os

import pytest

from linfit.fileio import TEMPORARY_FILES, atomic_write, write_text


def test_write_text_replaces_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "metrics.json"
    write_text(path, "old\n")
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "report.md"
    write_text(path, "complete\n")

    def half_then_fail(temporary):
        temporary.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "complete\n"
    assert not list(tmp_path.glob(TEMPORARY_FILES))


def test_temporary_names_match_the_glob_that_finds_leftovers(tmp_path):
    seen = []

    def write(temporary):
        seen.append(temporary.name)
        assert [p.name for p in tmp_path.glob(TEMPORARY_FILES)] == [temporary.name]
        temporary.write_bytes(b"x")

    atomic_write(tmp_path / "m.weights.h5", write, suffix=".tmp.weights.h5")
    assert seen[0].startswith(".m.weights.h5.") and seen[0].endswith(".tmp.weights.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]
