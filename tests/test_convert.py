"""`python -m linfit.convert`: CSV shards become NPZ files that stream as the CSV
files train, bitwise; a bad row, a full disk or an existing file leaves nothing
half-written."""

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from linfit import LinearModule, Trainer
from linfit.convert import main
from linfit.streams import open_data_files


def write_shards(folder, rows=(700, 500), bad_line=None):
    """Shards of a, b, c and two targets t1, t2; `bad_line` (file line of the last
    shard) holds text where c belongs."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(9)
    for i, n in enumerate(rows):
        x = rng.uniform(-2, 2, (n, 3))
        lines = ["a,t1,b,c,t2"] + [f"{a:.9g},{a + 2 * b:.9g},{b:.9g},{c:.9g},{c - a:.9g}"
                                   for a, b, c in x]
        if bad_line and i == len(rows) - 1:
            lines[bad_line - 1] = "1,2,3,x,5"
        (folder / f"part-{i}.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_converted_shards_stream_as_the_csv_files_train(tmp_path, capsys):
    """Converted, then trained streamed and shuffled, with two targets and chosen
    features: the CSV's history and weights. (The full-disk test below runs the
    command in a fresh process.)"""
    data = write_shards(tmp_path / "csv")
    assert main(["--data", str(data / "part-*.csv"), "--out", str(tmp_path / "npz"),
                 "--target", "t1,t2", "--features", "c,a,b"]) == 0
    assert f"Wrote {tmp_path / 'npz' / 'part-1.npz'} (500 rows)" in capsys.readouterr().out
    with np.load(tmp_path / "npz" / "part-0.npz") as arrays:
        assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (700, 3)
        assert arrays["y"].shape == (700, 2)
    csv_files = open_data_files(str(data / "part-*.csv"), ("t1", "t2"), ("c", "a", "b"))
    npz_files = open_data_files(str(tmp_path / "npz" / "part-*.npz"))
    assert npz_files.rows == csv_files.rows == (700, 500)
    assert npz_files.feature_names == ("c", "a", "b")  # kept, in the order chosen
    options = dict(epochs=2, batch_size=64, shuffle_seed=1, shuffle_buffer=300, loop="keras")
    runs = []
    for files in (csv_files, npz_files):
        trainer = Trainer(LinearModule(features=3, outputs=2), metrics=["mae"])
        runs.append((trainer.fit(files, None, **options).columns(), trainer.model))
    (a, model_a), (b, model_b) = runs
    assert a.keys() == b.keys() and "w_2_1" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(model_a.w.numpy(), model_b.w.numpy())


def test_a_bad_row_or_an_existing_file_leaves_no_half_written_file(tmp_path, capsys):
    data = write_shards(tmp_path / "csv", bad_line=300)
    assert main(["--data", str(data / "part-*.csv"), "--out", str(tmp_path / "npz")]) == 2
    out, err = capsys.readouterr()
    assert err == (f"error: {data / 'part-1.csv'}, line 300, column 'c': 'x' is not a number "
                   "(1 of 2 files were written before it, complete; they are kept: remove "
                   "them, or convert into another --out)\n")
    # The shard before it is complete; the bad one absent; no temporary file left.
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == ["part-0.npz"]
    assert len(np.load(tmp_path / "npz" / "part-0.npz")["y"]) == 700
    (data / "part-1.csv").unlink()
    before = (tmp_path / "npz" / "part-0.npz").read_bytes()
    assert main(["--data", str(data / "part-*.csv"), "--out", str(tmp_path / "npz")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'npz' / 'part-0.npz'} exists: "
                                       "remove it, or choose another --out (no file is "
                                       "replaced)\n")
    assert (tmp_path / "npz" / "part-0.npz").read_bytes() == before
    assert main(["--data", str(tmp_path / "npz" / "*.npz"), "--out", str(tmp_path)]) == 2
    assert "is NPZ already: give CSV files" in capsys.readouterr().err
    # A directory made for a conversion that wrote nothing is removed again.
    one = write_shards(tmp_path / "one", rows=(50,), bad_line=10)
    assert main(["--data", str(one / "part-0.csv"), "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.endswith("'x' is not a number\n")
    assert not (tmp_path / "new").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """Under a file-size limit smaller than the arrays (ulimit -f)."""
    data = write_shards(tmp_path / "csv", rows=(3000,))
    limit = 20_000  # bytes: x alone is 36,000
    out = subprocess.run([sys.executable, "-m", "linfit.convert", "--data",
                          str(data / "part-0.csv"), "--out", str(tmp_path / "npz")],
                         capture_output=True, text=True, timeout=120, env=os.environ,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                               (limit, limit)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: cannot write {tmp_path / 'npz' / 'part-0.npz'}: the "
                                 "file would pass the file-size limit (ulimit -f)")
    assert out.stderr.count("\n") == 1
    assert not (tmp_path / "npz").exists()  # made by the conversion, removed with its files


@pytest.mark.parametrize("out, message", [
    ("file", "is a file: give a directory"),
    ("", "--out is empty: give the directory for the NPZ files"),
])
def test_an_output_that_is_not_a_directory_is_refused(tmp_path, capsys, monkeypatch, out,
                                                      message):
    monkeypatch.chdir(tmp_path)  # --out "" wrote here
    data = write_shards(tmp_path / "csv", rows=(20,))
    (tmp_path / "file").write_text("mine")
    assert main(["--data", str(data / "part-0.csv"), "--out", out]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["csv", "file"]


@pytest.mark.parametrize("streaming", ["true", "false"])
def test_a_run_on_converted_files_predicts_on_the_original_csv(tmp_path, capsys, streaming):
    """The columns' names travel in the NPZ files (x_names, y_names), so the run
    records the CSV's, and its checkpoint predicts on the CSV as a run on the CSV
    would: its features and its target found by name."""
    from linfit.data import read_data_file
    from linfit.predict import main as predict
    from linfit.train import main as train

    data = write_shards(tmp_path / "csv", rows=(300, 200))
    assert main(["--data", str(data / "part-*.csv"), "--out", str(tmp_path / "npz"),
                 "--target", "t1", "--features", "b,a"]) == 0
    assert train(["--data", str(tmp_path / "npz" / "part-*.npz"), "--model", "module",
                  "--loop", "manual", "--set", f"data.streaming={streaming}",
                  "--set", "train.epochs=3", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["data"]["features"], metrics["data"]["targets"]) == (["b", "a"], ["t1"])
    assert metrics["data"]["streamed"] is (streaming == "true")
    with np.load(tmp_path / "npz" / "part-0.npz") as converted:
        assert (list(converted["x_names"]), list(converted["y_names"])) == (["b", "a"], ["t1"])
    # Names written as bytes (np.array([b"b", b"a"])) are read as text.
    read = open_data_files if streaming == "true" else read_data_file
    np.savez(tmp_path / "bytes.npz", x=np.ones((3, 2)), y=np.ones(3), x_names=[b"b", b"a"])
    assert read(str(tmp_path / "bytes.npz")).feature_names == ("b", "a")
    capsys.readouterr()
    assert predict(["--checkpoint", str(tmp_path / "run" / "module-manual.weights.h5"),
                    "--data", str(data / "part-1.csv"),
                    "--out", str(tmp_path / "predictions.csv")]) == 0
    predictions = np.genfromtxt(tmp_path / "predictions.csv", delimiter=",", names=True)
    assert predictions.dtype.names == ("b", "a", "t1", "prediction")
    w = np.asarray(metrics["runs"][0]["final"]["w"], dtype=np.float32)
    b = np.float32(metrics["runs"][0]["final"]["b"])
    x = np.column_stack([predictions["b"], predictions["a"]]).astype(np.float32)
    np.testing.assert_allclose(predictions["prediction"], x @ w + b, rtol=1e-5, atol=1e-6)
    loss = float(capsys.readouterr().out.split("loss=")[1].split()[0])  # against t1
    assert loss == pytest.approx(np.mean((predictions["prediction"] - predictions["t1"]) ** 2),
                                 rel=1e-4, abs=1e-5)  # printed to 5 decimals


def npz_with_names(path, names, width=2):
    np.savez(path, x=np.ones((4, width), np.float32), y=np.ones(4, np.float32),
             x_names=names)
    return path


@pytest.mark.parametrize("names, found", [
    (np.array(["a"]), "<U1 of shape [1]"),
    (np.array(["a", " a "]), "'a' more than once"),  # stripped, as a CSV header is
    (np.array([1, 2]), "int64 of shape [2]"),
    (np.array(["n" * 257, "b"]), "<U257 of shape [2]"),
    (np.array([b"\xff", b"b"]), "bytes that are not UTF-8 text"),
], ids=["too few", "twice", "numbers", "too long", "not UTF-8"])
def test_x_names_that_do_not_name_each_column_once_are_refused(tmp_path, names, found):
    from linfit.data import read_data_file
    from linfit.errors import DataError

    path = npz_with_names(tmp_path / "d.npz", names)
    message = (f"{path}: x_names must name each of x's 2 column(s) once (text of shape [2], "
               f"names of at most 256 characters), got {found}: fix or remove it")
    for read in (lambda: read_data_file(str(path)), lambda: open_data_files(str(path))):
        with pytest.raises(DataError) as refused:
            read()
        assert str(refused.value) == message


def test_x_names_are_read_as_a_csv_header_is(tmp_path):
    """Stripped, blank allowed, UTF-8 bytes as text; a name declared huge in a tiny
    compressed member is refused before it is read (the values would take 93 GB)."""
    from linfit.data import read_data_file
    from linfit.errors import DataError

    for names, expected in ((np.array([" a", "b "]), ("a", "b")),
                            (np.array(["", "a"]), ("", "a")),
                            (np.array(["é".encode(), "β".encode()]), ("é", "β"))):
        path = npz_with_names(tmp_path / "d.npz", names)
        for read in (read_data_file, open_data_files):
            assert read(str(path)).feature_names == expected
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.ones((4, 2), np.float32), y=np.ones(4, np.float32),
                        x_names=np.array(["a", "b"], dtype="<U100000"))
    assert bomb.stat().st_size < 10_000
    with pytest.raises(DataError, match="got <U100000 of shape"):
        read_data_file(str(bomb))


def test_shards_or_validation_files_that_name_their_columns_differently_are_refused(tmp_path):
    from linfit.config import DataConfig
    from linfit.data import load_data
    from linfit.errors import DataError

    npz_with_names(tmp_path / "part-0.npz", np.array(["a", "b"]))
    npz_with_names(tmp_path / "part-1.npz", np.array(["a", "c"]))
    message = (f"shard {tmp_path / 'part-1.npz'} names x's columns a, c but "
               f"{tmp_path / 'part-0.npz'} names them a, b: give every shard the same x_names")
    for streaming in (True, False):
        with pytest.raises(DataError) as refused:
            load_data(DataConfig(path=str(tmp_path / "part-*.npz"), streaming=streaming))
        assert str(refused.value) == message
    with pytest.raises(DataError) as refused:
        load_data(DataConfig(path=str(tmp_path / "part-0.npz"),
                             validation_path=str(tmp_path / "part-1.npz"), streaming=False))
    assert str(refused.value) == (f"validation file {tmp_path / 'part-1.npz'} names its "
                                  "features a, c but the training data's are a, b: give it "
                                  "the same columns")
    # y_names too, in shards; a validation file's target may be named otherwise.
    (tmp_path / "y").mkdir()
    for index, name in enumerate(["price", "cost"]):
        np.savez(tmp_path / "y" / f"part-{index}.npz", x=np.ones((4, 2)), y=np.ones(4),
                 y_names=np.array([name]))
    message = (f"shard {tmp_path / 'y' / 'part-1.npz'} names y's columns cost but "
               f"{tmp_path / 'y' / 'part-0.npz'} names them price: give every shard the same "
               "y_names")
    for streaming in (True, False):
        with pytest.raises(DataError) as refused:
            load_data(DataConfig(path=str(tmp_path / "y" / "part-*.npz"), streaming=streaming))
        assert str(refused.value) == message
        data = load_data(DataConfig(path=str(tmp_path / "y" / "part-0.npz"), streaming=streaming,
                                    validation_path=str(tmp_path / "y" / "part-1.npz")))
        assert data.target_names == ("price",)


@pytest.mark.parametrize("change", ["appended", "same size"])
def test_a_shard_that_changes_while_it_is_converted_is_one_line(tmp_path, capsys,
                                                                  monkeypatch, change):
    """A row appended after the rows were counted (as by a process still writing the
    file), or a blank line become a row of the same length: the conversion stops,
    and the file it was writing is not left."""
    from linfit import convert, runtime

    path = write_shards(tmp_path / "csv", rows=(50,)) / "part-0.csv"
    blank, row = " " * 9 + "\n", "1,2,3,4,5\n"
    if change == "same size":
        path.write_text(path.read_text() + blank)

    def change_then_import():
        path.write_text(path.read_text().replace(blank, row) if change == "same size"
                        else path.read_text() + row)
        runtime.import_tensorflow()

    monkeypatch.setattr(convert, "import_tensorflow", change_then_import)
    assert main(["--data", str(path), "--out", str(tmp_path / "npz")]) == 2
    size = path.stat().st_size
    assert capsys.readouterr().err == (
        f"error: {path} has changed since it was checked (it was {size - 10} bytes, it is "
        f"{size}): run the command again\n" if change == "appended" else
        f"error: {path} changed while it was read (a file's rows are not those counted "
        "before training): run the command again\n")
    assert not (tmp_path / "npz").exists()


@pytest.mark.parametrize("header, options, message", [
    # A name an NPZ's x_names cannot hold: training on the files was refused.
    ("a,{long},y", [], "has 300 characters, more than the 256 an NPZ file's names hold"),
    ("a,b,y", ["--features", "a,a"], "data.features names column 'a' more than once"),
])
def test_columns_an_npz_file_cannot_name_are_refused_before_writing(tmp_path, capsys,
                                                                      header, options, message):
    path = tmp_path / "d.csv"
    path.write_text(header.format(long="b" * 300) + "\n1,2,3\n4,5,6\n")
    assert main(["--data", str(path), "--out", str(tmp_path / "npz"), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "npz").exists()


def test_a_file_whose_name_looks_like_a_glob_is_that_file(tmp_path, capsys, monkeypatch):
    """`sales[2024].csv` exists: it is converted (it "matched no file", as a pattern)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sales[2024].csv").write_text("a,y\n1,2\n3,4\n")
    assert main(["--data", "sales[2024].csv", "--out", "npz"]) == 0
    with np.load(tmp_path / "npz" / "sales[2024].npz") as stored:
        assert stored["x"].tolist() == [[1], [3]] and stored["y"].tolist() == [2, 4]


def test_a_stream_error_gives_advice_convert_can_take(tmp_path, capsys):
    """Old Mac line endings, which linfit's in-memory reader reads and a stream does
    not: not 'set data.streaming', which convert has no use for."""
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,y\r1,2\r3,4\r")
    assert main(["--data", str(path), "--out", str(tmp_path / "npz")]) == 2
    err = capsys.readouterr().err
    assert "or train on the CSV files themselves with data.streaming = false" in err
    assert "or set data.streaming" not in err
