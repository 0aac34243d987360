"""atomic_write: a file is the old one or the new one, never a mixture, never a leftover."""

import os

import pytest

from linfit.errors import WriteError
from linfit.fileio import TEMPORARY_FILES, append_text, atomic_write, write_text


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

    with pytest.raises(WriteError, match="report.md: the disk is full"):
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


def test_append_text_keeps_whole_lines_when_a_write_fails(tmp_path, monkeypatch):
    import io

    path = tmp_path / "history.csv"
    append_text(path, "a,b\n1,2\n")
    real_open = type(path).open

    class HalfWriter(io.FileIO):
        def write(self, data):
            super().write(data[: len(data) // 2])
            raise OSError(27, "File too large")

    monkeypatch.setattr(type(path), "open", lambda self, mode="r", *a, **k:
                        HalfWriter(self, "a") if mode == "ab" else real_open(self, mode, *a, **k))
    with pytest.raises(WriteError, match="file-size limit"):
        append_text(path, "3,4\n5,6\n")
    monkeypatch.undo()
    assert path.read_text() == "a,b\n1,2\n"


def test_json_files_hold_no_nan(tmp_path):
    """A user's metric can be NaN: metrics.json held Python's NaN, which strict JSON
    readers (jq, JavaScript) refuse; it is null."""
    import json

    from linfit.fileio import write_json

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))

    write_json(tmp_path / "m.json", {"runs": [{"metrics": {"poisson": [float("nan"), 1.5]},
                                               "loss": [float("inf"), 2.0]}], "n": 3})
    assert strict((tmp_path / "m.json").read_text()) == {
        "runs": [{"metrics": {"poisson": [None, 1.5]}, "loss": [None, 2.0]}], "n": 3}
    write_json(tmp_path / "f.json", {"a": [1.0, 2.5]})  # finite: as json.dumps writes it
    assert (tmp_path / "f.json").read_text() == json.dumps({"a": [1.0, 2.5]}, indent=2) + "\n"
