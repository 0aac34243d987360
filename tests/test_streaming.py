"""Data larger than memory (issue 18): CSV and NPZ shards streamed through tf.data
train bitwise as the same shards read into memory, and a bad row is named."""

import csv
import json
import sys
import zlib

import numpy as np
import pytest

from linfit import LinearModule, Trainer, data as data_module, pipeline
from linfit.checkpoint import list_checkpoints, read_line
from linfit.errors import CheckpointError, ConfigError, DataError
from linfit.streams import open_data_files
from linfit.train import main

SHARD_ROWS = (1200, 1500, 1300)
TRUE_W, TRUE_B = [1.5, -0.5], 0.7


def write_csv(path, table, newline="\n"):
    with open(path, "w", newline="") as f:
        f.write("a,b,y" + newline)
        for row in table:
            f.write(",".join(f"{value:.9g}" for value in row) + newline)


@pytest.fixture(autouse=True)
def small_csv_blocks(monkeypatch):
    """Streams in this process read CSV files 10,007 bytes at a time (not 1 MiB), so
    that every shard here spans several blocks, cut inside lines and \\r\\n pairs."""
    from linfit import stream_formats

    monkeypatch.setattr(stream_formats, "CSV_BLOCK_BYTES", 10_007)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4000 training rows in three shards (one with \\r\\n line endings and a blank
    line), 600 validation rows in two; and the same in NPZ files (part-*.npz,
    val-*.npz: x float64, y float32)."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(18)
    x = rng.uniform(-2, 2, (4600, 2))
    table = np.column_stack([x, x @ TRUE_W + TRUE_B + rng.normal(0, 0.1, len(x))])
    start = 0
    for i, rows in enumerate(SHARD_ROWS):
        write_csv(root / f"part-{i}.csv", table[start:start + rows], "\r\n" if i == 1 else "\n")
        start += rows
    with open(root / "part-2.csv", "a") as f:
        f.write("   \n")
    write_csv(root / "val-0.csv", table[4000:4300])
    write_csv(root / "val-1.csv", table[4300:])
    for name, (start, end) in {"part-0": (0, 1200), "part-1": (1200, 2700),
                               "part-2": (2700, 4000), "val-0": (4000, 4300),
                               "val-1": (4300, 4600)}.items():
        np.savez(root / f"{name}.npz", x=table[start:end, :2],
                 y=table[start:end, 2].astype(np.float32))
    return root


def train(shards, out, *settings, streaming, kind="csv"):
    status = main(["--data", str(shards / f"part-*.{kind}"),
                   "--set", f"data.streaming={streaming}",
                   "--out", str(out), *[item for s in settings for item in ("--set", s)]])
    assert status == 0
    return json.loads((out / "metrics.json").read_text())


def same_run_directories(a, b):
    """Every number the two runs recorded and saved is the same."""
    metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert metrics_a["runs"] == metrics_b["runs"]
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    names = sorted(p.name for p in a.glob("*.weights.h5"))
    assert names and names == sorted(p.name for p in b.glob("*.weights.h5"))
    for name in names:  # the files differ in what data they name (a fingerprint of each kind)
        for saved_a, saved_b in zip(read_line(a / name), read_line(b / name)):
            np.testing.assert_array_equal(saved_a, saved_b)
    return metrics_a, metrics_b


MINI_BATCHES = ["data.batch_size=256", "data.shuffle=true", "data.shuffle_buffer=700",
                "train.epochs=2", "data.validation_path=\"VAL\"", "data.standardize=true"]
CASES = {
    # A full batch of 4000 rows summed in chunks of 1000 (one update per epoch).
    "full batch in chunks": (["train.loop=\"manual\"", "train.epochs=6"], 1000, "csv"),
    # Both loops take the full batch whole when it fits in one chunk.
    "full batch": (["train.epochs=4", "data.validation_path=\"VAL\""], None, "csv"),
    # full_loss summed over 4 chunks of 1000 rows after each epoch.
    "shuffled mini-batches": (MINI_BATCHES, 1000, "csv"),
    # One model (both loops): the models read the same batches (the CSV cases check that).
    "NPZ shuffled mini-batches": (MINI_BATCHES + ["model.kind=\"module\""], 1000, "npz"),
}


@pytest.mark.parametrize("case", CASES)
def test_streamed_runs_equal_runs_in_memory_bitwise(shards, tmp_path, monkeypatch, capsys, case):
    """And before training the files are read once for the reference (with
    standardisation, the curvature in the same pass), and twice more for the
    means and deviations."""
    from linfit import streaming

    settings, chunk, kind = CASES[case]
    settings = [s.replace("VAL", str(shards / f"val-*.{kind}")) for s in settings]
    if chunk:
        monkeypatch.setattr(pipeline, "FULL_PASS_ROWS", chunk)
    passes, value_chunks = [], streaming.value_chunks
    monkeypatch.setattr(streaming, "value_chunks",
                        lambda files: passes.append(files.num_examples) or value_chunks(files))
    streamed = train(shards, tmp_path / "streamed", *settings, streaming="true", kind=kind)
    assert passes == [4000] * (3 if "data.standardize=true" in settings else 1)
    in_memory = train(shards, tmp_path / "memory", *settings, streaming="false", kind=kind)
    same_run_directories(tmp_path / "streamed", tmp_path / "memory")
    assert streamed["data"]["streamed"] and not in_memory["data"]["streamed"]
    assert streamed["data"]["num_examples"] == 4000
    for key in ("w", "b", "loss", "lr_limit"):  # one streaming pass against the float64 table
        np.testing.assert_allclose(streamed["reference"][key], in_memory["reference"][key],
                                   rtol=1e-10)
    # The Keras loop takes no chunks of a full batch; the NPZ case trains one model.
    assert len(streamed["runs"]) == (2 if case in ("full batch in chunks", "NPZ shuffled "
                                                   "mini-batches") else 4)
    capsys.readouterr()


def test_a_full_batch_summed_in_chunks_is_gradient_descent(shards, monkeypatch):
    """Against float64 full-batch gradient descent on the same values; a metric is
    the whole batch's, as `fit` computes it (chunks of 1500, 1500 and 1000 rows:
    not the mean of the chunks' means)."""
    monkeypatch.setattr(pipeline, "FULL_PASS_ROWS", 1500)
    files = open_data_files(str(shards / "part-*.csv"))
    trainer = Trainer(LinearModule(features=2, init_w=0.0, init_b=0.0), learning_rate=0.2,
                      metrics=["mae"])
    history = trainer.fit(files, None, epochs=20)
    x = np.concatenate([x for x, _ in files.exact_chunks()]).astype(np.float32).astype(float)
    y = np.concatenate([y for _, y in files.exact_chunks()]).astype(np.float32).astype(float)
    w, b = np.zeros(2), 0.0
    losses, maes = [], []
    for _ in range(20):
        error = x @ w + b - y
        losses.append(np.mean(error ** 2))
        maes.append(np.mean(np.abs(error)))
        w, b = w - 0.2 * 2 * x.T @ error / len(y), b - 0.2 * 2 * error.mean()
    np.testing.assert_allclose(history.loss, losses, rtol=1e-5)
    np.testing.assert_allclose(history.logs["mae"], maes, rtol=1e-5)
    np.testing.assert_allclose(trainer.model.w.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(float(trainer.model.b.numpy()), b, rtol=1e-5)


def test_the_python_api_streams_files_as_it_trains_arrays(shards):
    files = open_data_files(str(shards / "part-*.csv"))
    validation = open_data_files(str(shards / "val-*.csv"))
    x, y = (np.concatenate(parts).astype(np.float32) for parts in zip(*files.exact_chunks()))
    x_val, y_val = (np.concatenate(p).astype(np.float32) for p in zip(*validation.exact_chunks()))
    options = dict(epochs=3, batch_size=128, shuffle_seed=5, shuffle_buffer=500,
                   loop="keras")
    streamed = Trainer(LinearModule(features=2), metrics=["mae"]).fit(
        files, None, validation_data=validation, **options)
    in_memory = Trainer(LinearModule(features=2), metrics=["mae"]).fit(
        x, y, validation_data=(x_val, y_val), shard_rows=files.rows, **options)
    a, b = streamed.columns(), in_memory.columns()
    assert a.keys() == b.keys() and {"val_loss", "mae", "val_mae", "full_loss"} <= set(a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def copy_with_bad_row(shards, tmp_path, cell):
    """The shards, with row 1000 of the last one (line 1002) given `cell` as b."""
    for path in shards.glob("part-*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    lines = (tmp_path / "part-2.csv").read_text().splitlines()
    lines[1001] = f"0.5,{cell},1.0" if cell != "ragged" else "0.5,1.0"
    (tmp_path / "part-2.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("cell, problem", [
    ("abc", "column 'b': 'abc' is not a number"),
    ("nan", "column 'b': nan is not finite"),
    ("4e38", "column 'b': 4e+38 overflows float32"),
    ("ragged", "2 values, but the header has 3 columns"),  # after a colon
])
def test_a_bad_row_in_a_late_shard_is_named_by_file_line_and_column(shards, tmp_path, capfd,
                                                                       cell, problem):
    data = copy_with_bad_row(shards, tmp_path, cell)
    status = main(["--data", str(data / "part-*.csv"), "--set", "data.streaming=true",
                   "--set", "data.batch_size=500", "--model", "module", "--out",
                   str(tmp_path / "run")])
    out, err = capfd.readouterr()
    assert status == 2
    separator = ": " if cell == "ragged" else ", "
    assert err.strip().splitlines()[-1] == \
        f"error: {data / 'part-2.csv'}, line 1002{separator}{problem}" + (
            ": remove or fix the row" if cell == "nan" else
            " (largest 3.4e+38): rescale the column" if cell == "4e38" else "")
    assert "Traceback" not in out + err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "line 1002" in metrics["error"]


def test_full_validation_finds_a_bad_row_before_training(shards, tmp_path, capfd):
    data = copy_with_bad_row(shards, tmp_path, "1_000")
    status = main(["--data", str(data / "part-*.csv"), "--set", "data.streaming=true",
                   "--set", "data.validate=\"full\"", "--out", str(tmp_path / "run")])
    _, err = capfd.readouterr()
    assert status == 2 and "line 1002, column 'b': '1_000' is not a number" in err
    assert not (tmp_path / "run").exists()  # found before anything was made


@pytest.mark.parametrize("arguments, message", [
    (["--set", "data.validation_split=0.2"], "streamed data needs its validation rows in files"),
    (["--set", "data.shuffle=true", "--set", "data.batch_size=10"], "set data.shuffle_buffer"),
    (["--loop", "keras", "--model", "module"], None),  # a full batch of one chunk: it trains
])
def test_streaming_refuses_what_it_cannot_do(shards, tmp_path, capfd, arguments, message):
    status = main(["--data", str(shards / "part-*.csv"), "--set", "data.streaming=true", "--set",
                   "train.epochs=2", "--out", str(tmp_path / "run"), *arguments])
    _, err = capfd.readouterr()
    if message is None:
        assert status == 0
    else:
        assert status == 2 and message in err and "Traceback" not in err


def test_the_keras_loop_refuses_a_full_batch_too_large_to_hold(shards, tmp_path, monkeypatch,
                                                                capfd):
    """Before any run trains: the manual run would otherwise train first, for nothing."""
    monkeypatch.setattr(pipeline, "FULL_PASS_ROWS", 1000)
    files = open_data_files(str(shards / "part-*.csv"))
    with pytest.raises(ConfigError, match="it sums a full batch chunk by chunk"):
        Trainer(LinearModule(features=2)).fit(files, None, epochs=1, loop="keras")
    status = main(["--data", str(shards / "part-*.csv"), "--set", "data.streaming=true",
                   "--model", "module", "--out", str(tmp_path / "run")])
    out, err = capfd.readouterr()
    assert status == 2 and "module-manual" not in out
    assert err.strip().splitlines()[-1].startswith("error: the Keras loop takes a full batch")


def test_auto_streams_files_larger_than_the_memory_share_and_says_so(shards, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(data_module, "STREAM_ABOVE", 1e-9)
    assert main(["--data", str(shards / "part-*.csv"), "--model", "module", "--loop", "manual",
                 "--set", "train.epochs=2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"Streaming {shards / 'part-*.csv'} (3 files, 4000 rows) from disk: " \
        "data.streaming = \"auto\"" in out  # it said "(3 files) (4000 rows)"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["streamed"]
    assert "(streamed)" in (tmp_path / "run" / "report.md").read_text()
    # The choice is recorded: --resume reads the data the same way, whatever memory is free.
    assert "streaming = true" in (tmp_path / "run" / "config.toml").read_text()


def test_the_preflight_counts_rows_and_refuses_what_a_stream_cannot_split(shards, tmp_path):
    files = open_data_files(str(shards / "part-*.csv"))
    assert files.rows == SHARD_ROWS and files.feature_names == ("a", "b")
    with open(shards / "part-0.csv", newline="") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == SHARD_ROWS[0]
    old_mac = tmp_path / "mac.csv"
    old_mac.write_bytes(b"a,b,y\r1,2,3\r4,5,6\r")
    with pytest.raises(DataError, match=r"mac.csv, line 1: a \\r not followed by \\n \(as an "
                                        r"old Mac file ends its lines\)"):
        open_data_files(old_mac)
    # Anywhere in the file (one \r in a line after 64 KiB; a \r\n there is fine).
    late = tmp_path / "late.csv"
    late.write_bytes(b"x,y\r\n" + b"1,2\r\n" * 17000 + b"5,6\r7,8\n")
    with pytest.raises(DataError, match=r"late.csv, line 17002: a \\r not followed by \\n"):
        open_data_files(late)
    late.write_bytes(b"x,y\r\n" + b"1,2\r\n" * 17000 + b"5,6\r\n7,8\r")
    assert open_data_files(late).rows == (17002,)
    npz = open_data_files(str(shards / "part-*.npz"))  # counted from the arrays' headers
    assert npz.rows == SHARD_ROWS and npz.header == ("x0", "x1", "y")


@pytest.mark.parametrize("x, y", [
    (np.linspace(-3, 3, 50).astype(">f8").reshape(25, 2), np.arange(25, dtype=np.float32)),
    (np.arange(-60, 60, 2, dtype=np.int16)[:30], np.ones((30, 2), dtype=">f4")),
    (np.arange(20, dtype=np.uint8).reshape(20, 1), np.arange(20, dtype=np.int64).reshape(20, 1)),
    (np.arange(2**32 - 40, 2**32, dtype=np.uint32).reshape(20, 2),
     np.arange(2**64 - 20, 2**64, dtype=np.uint64).astype(">u8")),
])
def test_npz_rows_stream_as_the_reader_reads_them(tmp_path, monkeypatch, x, y):
    """Any byte order, integer types, x of [N] or [N, 1], y of [N, k]: the values and
    shapes linfit's reader gives, in blocks that do not divide the rows (7)."""
    from linfit.data_files import read_table
    from linfit.streaming import StreamData

    monkeypatch.setattr(pipeline, "STREAM_BLOCK", 7)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    x_read, y_read, names = read_table(tmp_path / "a.npz")
    files = open_data_files(tmp_path / "a.npz")
    assert files.feature_names == names and files.num_examples == len(y)
    batches = list(StreamData((), 8, None, 1, files=files).batches(0))
    assert [len(y_part) for _, y_part in batches] == [8] * (len(y) // 8) + (
        [len(y) % 8] if len(y) % 8 else [])
    streamed_x, streamed_y = (np.concatenate([part[i].numpy() for part in batches])
                              for i in (0, 1))
    assert streamed_x.shape == x_read.shape and streamed_y.shape == y_read.shape
    np.testing.assert_array_equal(streamed_x, x_read)
    np.testing.assert_array_equal(streamed_y, y_read)
    exact_x, exact_y = (np.concatenate(parts) for parts in zip(*files.exact_chunks()))
    np.testing.assert_array_equal(exact_x, x.reshape(len(x), -1).astype(np.float64))
    np.testing.assert_array_equal(exact_y, y.astype(np.float64))


def test_npz_shards_of_different_dtypes_stream_as_the_reader_reads_them(tmp_path, monkeypatch):
    """Each shard's values rounded once, as in memory, whatever the others hold: x of
    float64, big-endian float32, int16 and uint64 (2**60 + 2**36 + 1 rounds to float32
    differently through float64); y of float32, big-endian float64, int64, uint8. A
    shuffled stream mixes their rows in its batches, on one process and on two workers."""
    from linfit.streaming import StreamData, value_chunks

    monkeypatch.setattr(pipeline, "STREAM_BLOCK", 7)
    rng = np.random.default_rng(3)
    x = [rng.normal(size=(30, 2)), rng.normal(size=(25, 2)).astype(">f4"),
         rng.integers(-999, 999, (20, 2)).astype(np.int16),
         np.array([[2**60 + 2**36 + 1, 2**53 + 1]] * 15, np.uint64)]
    y = [rng.normal(size=30).astype(np.float32), rng.normal(size=25).astype(">f8"),
         rng.integers(-50, 50, 20), np.arange(15, dtype=np.uint8)]
    for i, (x_part, y_part) in enumerate(zip(x, y)):
        np.savez(tmp_path / f"part-{i}.npz", x=x_part, y=y_part)
    memory = data_module.read_data_file(str(tmp_path / "part-*.npz"))
    assert np.float32(x[3][0, 0]) != np.float32(np.float64(x[3][0, 0]))  # rounded once
    files = open_data_files(str(tmp_path / "part-*.npz"))
    in_order = list(StreamData((), 8, None, 1, files=files).batches(0))
    for streamed, read in zip(zip(*in_order), (memory.x, memory.y)):
        np.testing.assert_array_equal(np.concatenate([part.numpy() for part in streamed]), read)
    exact = [np.concatenate(parts) for parts in zip(*value_chunks(files))]
    np.testing.assert_array_equal(exact[0], np.concatenate(x).astype(np.float64))
    np.testing.assert_array_equal(exact[1], np.concatenate(y).astype(np.float64))
    shape = dict(arrays=(), batch_size=8, shuffle_seed=4, epochs=1, shuffle_buffer=40,
                 files=files)
    alone = list(StreamData(**shape).batches(0))
    workers = [list(StreamData(**shape, worker=(index, 2)).batches(0)) for index in (0, 1)]
    rows = [np.column_stack([part.numpy() for part in batch]) for batch in alone]
    table = np.column_stack([memory.x, memory.y])
    shard_of = {tuple(row): shard for shard, part in enumerate(
        np.split(table, np.cumsum(files.rows)[:-1])) for row in part}
    assert any(len({shard_of[tuple(row)] for row in batch}) > 1 for batch in rows)
    for batch, *shares in zip(rows, *workers):
        together = np.concatenate([np.column_stack([x_part, y_part]) for x_part, y_part, _
                                   in shares])
        np.testing.assert_array_equal(np.unique(together, axis=0), np.unique(batch, axis=0))
    np.testing.assert_array_equal(np.unique(np.concatenate(rows), axis=0), np.unique(table, axis=0))


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_a_shard_cut_short_while_training_is_one_clear_error(shards, tmp_path, kind):
    import os

    for name in (f"part-0.{kind}", f"part-1.{kind}"):
        (tmp_path / name).write_bytes((shards / name).read_bytes())
    files = open_data_files(str(tmp_path / f"part-*.{kind}"))
    os.truncate(tmp_path / f"part-1.{kind}", (tmp_path / f"part-1.{kind}").stat().st_size - 5000)
    with pytest.raises(DataError, match=rf"part-1.{kind} has changed since it was checked \(it "
                                        r"was \d+ bytes, it is \d+\): run the command again"):
        Trainer(LinearModule(features=2)).fit(files, None, epochs=1, batch_size=500)


def test_a_file_changed_by_whole_blocks_while_training_is_one_clear_error(tmp_path):
    """Grown by exactly one block of bytes after the pre-flight (every block whole, so
    no read fails), or given one more row in the same bytes: the shard's rows are
    not those counted, and the run stops there, saying so."""
    from linfit import stream_formats

    block = stream_formats.CSV_BLOCK_BYTES  # 10,007 here (small_csv_blocks)
    path = tmp_path / "a.csv"
    rows = "x,y\n" + "1,3\n2,5\n" * 1000 + "   \n"
    path.write_text(rows + " " * (2 * block - len(rows) - 1) + "\n")  # two whole blocks
    files = open_data_files(path)
    with open(path, "a") as f:
        f.write("7,-1\n" * 2000 + " " * (block - 10_001) + "\n")
    with pytest.raises(DataError, match=r"a.csv has changed since it was checked \(it was "
                                        rf"{2 * block} bytes, it is {3 * block}\)"):
        Trainer(LinearModule()).fit(files, None, epochs=1, batch_size=100)
    path.write_text(rows)
    files = open_data_files(path)
    path.write_text(rows.replace("   \n", "4,9\n"))  # the blank line is a row now
    with pytest.raises(DataError, match=r"a.csv changed while it was read \(a file's rows "
                                        r"are not those counted before training\): run the "
                                        r"command again"):
        Trainer(LinearModule()).fit(files, None, epochs=1, batch_size=100)


@pytest.mark.parametrize("cell", ["\u00a01", "1\x1c", '"1.5" '])
def test_a_value_only_the_in_memory_reader_takes_is_one_clear_error(tmp_path, cell):
    """NumPy reads a number with Unicode spaces around it, or a space after quotes;
    TensorFlow's CSV parser does not: the stream says so, and what to do."""
    path = tmp_path / "a.csv"
    path.write_text(f"x,y\n1,2\n{cell},2\n3,4\n", encoding="utf-8")
    assert len(data_module.read_data_file(path).y) == 3
    with pytest.raises(DataError, match=r"a.csv: a value the stream's CSV parser cannot read, "
                                        r"though linfit's in-memory reader can \((Field 0 in "
                                        r"record \d+ is not a valid double|Quote).*\): write "
                                        r"plain numbers .*, or set data.streaming = false$"):
        Trainer(LinearModule()).fit(open_data_files(path), None, epochs=1, batch_size=2)


def test_npz_a_stream_cannot_read_in_place_is_one_line(shards, tmp_path, capfd, monkeypatch):
    """Compressed, Fortran order, shards of other shapes: refused before training,
    naming the file and what to do; "auto" reads a compressed file into memory."""
    x, y = np.random.default_rng(2).normal(size=(40, 3)), np.ones(40)
    np.savez_compressed(tmp_path / "small.npz", x=x, y=y)
    np.savez(tmp_path / "fortran.npz", x=np.asfortranarray(x), y=y)
    (tmp_path / "mixed").mkdir()
    np.savez(tmp_path / "mixed" / "a.npz", x=x, y=y)
    np.savez(tmp_path / "mixed" / "b.npz", x=x[:, :2].astype(np.float32), y=y)
    for data, problem in [
            ("small.npz", "small.npz: x is compressed (numpy.savez_compressed), which a stream "
                          "cannot read in place: write it with numpy.savez("),
            ("fortran.npz", "fortran.npz: x is stored in Fortran order, which a stream"),
            ("mixed/*.npz", "b.npz holds x [N, 2] and y [N] but ")]:
        status = main(["--data", str(tmp_path / data), "--set", "data.streaming=true",
                       "--out", str(tmp_path / "run")])
        out, err = capfd.readouterr()
        assert status == 2 and err.count("\n") == 1 and problem in err
        assert "Traceback" not in out + err and not (tmp_path / "run").exists()
    # x of [N] and of [N, 1] are one feature, in a stream as in memory.
    (tmp_path / "one").mkdir()
    np.savez(tmp_path / "one" / "a.npz", x=x[:, 0], y=y)
    np.savez(tmp_path / "one" / "b.npz", x=x[:, :1], y=y)
    assert open_data_files(str(tmp_path / "one" / "*.npz")).header == ("x", "y")
    monkeypatch.setattr(data_module, "STREAM_ABOVE", 1e-9)
    from linfit.config import DataConfig

    for data, streams in (("small.npz", False), ("one/*.npz", True)):
        assert bool(data_module.streams_because(DataConfig(path=str(tmp_path / data)))) \
            == streams, data


@pytest.mark.parametrize("value, problem", [
    (np.nan, "x is not finite in row 1000: remove or fix it"),
    (4e38, "x in row 1000: 4e+38 overflows float32 (largest 3.4e+38): rescale it"),
])
def test_a_bad_value_in_a_late_npz_shard_is_named_by_file_array_and_row(
        shards, tmp_path, capfd, value, problem):
    """As the reader names it in memory; the run is marked failed."""
    for name in ("part-0.npz", "part-1.npz"):
        (tmp_path / name).write_bytes((shards / name).read_bytes())
    with np.load(shards / "part-2.npz") as late:
        x, y = late["x"].copy(), late["y"]
    x[1000, 1] = value
    np.savez(tmp_path / "part-2.npz", x=x, y=y)
    status = main(["--data", str(tmp_path / "part-*.npz"), "--set", "data.streaming=true",
                   "--set", "data.batch_size=500", "--model", "module", "--out",
                   str(tmp_path / "run")])
    out, err = capfd.readouterr()
    assert status == 2 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == f"error: {tmp_path / 'part-2.npz'}: {problem}"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "row 1000" in metrics["error"]


def test_predict_reads_and_writes_chunk_by_chunk(shards, tmp_path, monkeypatch, capsys):
    """Chunks of 300 rows give the file that one pass gives; a bad row late in the
    file leaves no --out file at all."""
    from linfit import data_files
    from linfit.predict import main as predict

    assert main(["--data", str(shards / "part-0.csv"), "--model", "module", "--loop", "manual",
                 "--set", "train.epochs=3", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    checkpoint = str(tmp_path / "run" / "module-manual.weights.h5")
    source = str(shards / "part-0.csv")
    assert predict(["--checkpoint", checkpoint, "--data", source,
                    "--out", str(tmp_path / "whole.csv")]) == 0
    whole_summary = capsys.readouterr().out.splitlines()
    monkeypatch.setattr(data_files, "CHUNK_ROWS", 300)
    assert predict(["--checkpoint", checkpoint, "--data", source,
                    "--out", str(tmp_path / "chunked.csv")]) == 0
    chunked_summary = capsys.readouterr().out.splitlines()
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert chunked_summary[0] == f"Wrote 1200 predictions to {tmp_path / 'chunked.csv'}"
    np.testing.assert_allclose(float(chunked_summary[1].split()[0].split("=")[1]),
                               float(whole_summary[1].split()[0].split("=")[1]), rtol=1e-4)
    lines = (shards / "part-0.csv").read_text().splitlines()
    lines[1100] = "1,oops,2"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    assert predict(["--checkpoint", checkpoint, "--data", str(tmp_path / "bad.csv"),
                    "--out", str(tmp_path / "preds.csv")]) == 2
    assert "line 1101, column 'b': 'oops' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "preds.csv").exists()
    assert not list(tmp_path.glob("*.tmp*"))


def _in_memory(shards, pattern):
    """The NPZ shards' (x, y), read into memory."""
    arrays = [np.load(path) for path in sorted(shards.glob(pattern))]
    return tuple(np.concatenate([a[name] for a in arrays]) for name in ("x", "y"))


# The Keras loop on CSV files resumes inside an epoch in the SIGKILL test below.
@pytest.mark.parametrize("loop, kind", [("manual", "csv"), ("keras", "npz"),
                                        ("keras", "memory")])
def test_a_checkpoint_in_the_middle_of_an_epoch_resumes_bitwise(shards, tmp_path, loop, kind):
    """From a checkpoint after 30 batches of epoch 2 (what a run killed there
    leaves), with Adam, a metric and validation files, streamed and shuffled; and
    the same data in memory."""
    import keras

    if kind == "memory":
        (x, y), validation = _in_memory(shards, "part-*.npz"), _in_memory(shards, "val-*.npz")
        inputs = x
    else:
        inputs, y = open_data_files(str(shards / f"part-*.{kind}")), None
        validation = open_data_files(str(shards / f"val-*.{kind}"))
    options = dict(epochs=3, loop=loop, batch_size=64, shuffle_seed=3, shuffle_buffer=900,
                   validation_data=validation)

    def trainer():
        keras.utils.set_random_seed(0)
        return Trainer(LinearModule(features=2), optimizer="adam", learning_rate=0.05,
                       metrics=["mae"])

    straight = trainer()
    history = straight.fit(inputs, y, checkpoint_dir=tmp_path, checkpoint_every=1,
                           checkpoint_every_batches=15, **options)
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names[:5] == ["epoch-0000-batch-000015.weights.h5", "epoch-0000-batch-000030.weights.h5",
                         "epoch-0000-batch-000045.weights.h5", "epoch-0000-batch-000060.weights.h5",
                         "epoch-0001.weights.h5"]  # 63 batches an epoch
    resumed = trainer()
    again = resumed.fit(inputs, y, resume_from=tmp_path / "epoch-0001-batch-000030.weights.h5",
                        **options)
    a, b = history.columns(), again.columns()
    assert a.keys() == b.keys() and {"loss", "mae", "val_loss", "val_mae"} <= set(a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for saved, now in zip([straight.model.w, straight.model.b, *straight.optimizer.variables],
                          [resumed.model.w, resumed.model.b, *resumed.optimizer.variables]):
        np.testing.assert_array_equal(saved.numpy(), now.numpy())
    # Without the metric whose progress it holds: refused before anything changes.
    other = Trainer(LinearModule(features=2), optimizer="adam", learning_rate=0.05)
    with pytest.raises(CheckpointError, match="saved inside an epoch with other metrics"):
        other.fit(inputs, y, resume_from=tmp_path / "epoch-0001-batch-000030.weights.h5",
                  **options)
    assert other.model.w.numpy().tolist() == [5.0, 5.0] and float(other.model.b) == 0.0


def test_a_streamed_run_killed_in_the_middle_of_an_epoch_resumes_bitwise(shards, tmp_path):
    """SIGKILL once module-manual has a checkpoint in the middle of epoch 2; --resume,
    and SIGKILL again once module-keras has one; --resume: the run directory's numbers
    are those of a run never stopped (both loops resumed inside an epoch)."""
    import signal
    import subprocess
    import time

    args = ["--data", str(shards / "part-*.csv"), "--model", "module", "--set",
            "data.streaming=true", "--set", "data.batch_size=40", "--set", "data.shuffle=true",
            "--set", "data.shuffle_buffer=500", "--set", "train.epochs=3", "--set",
            "train.checkpoint_every_batches=25"]
    # Only the runs that are killed need a process of their own.
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    train = [sys.executable, "-m", "linfit.train"]
    for label, command in (("module-manual", [*train, *args, "--out", str(killed)]),
                           ("module-keras", [*train, "--resume", str(killed)])):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        checkpoints = killed / "checkpoints" / label
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and \
                not list(checkpoints.glob("epoch-0001-batch-*.weights.h5")):
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (killed / "metrics.json").exists()  # it was killed, mid-run
        assert not (killed / f"{label}.weights.h5").exists()  # inside that run
    assert main(["--resume", str(killed)]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert json.loads((killed / "metrics.json").read_text())["runs"] == straight["runs"]
    assert (killed / "history.csv").read_text() == \
        (tmp_path / "straight" / "history.csv").read_text()


def test_a_shard_that_disappears_while_training_is_one_clear_error(shards, tmp_path):
    import keras

    for path in shards.glob("part-*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    files = open_data_files(str(tmp_path / "part-*.csv"))

    class DeleteAShard(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            (tmp_path / "part-2.csv").unlink(missing_ok=True)

    with pytest.raises(DataError, match=r"part-2.csv cannot be read any more \(No such file"):
        Trainer(LinearModule(features=2)).fit(files, None, epochs=3, batch_size=500,
                                              callbacks=[DeleteAShard()])


def test_auto_reads_into_memory_what_cannot_stream(shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_module, "STREAM_ABOVE", 1e-9)
    assert main(["--data", str(shards / "part-*.csv"), "--model", "module", "--loop", "manual",
                 "--set", "data.validation_split=0.2", "--set", "train.epochs=1", "--out",
                 str(tmp_path / "run")]) == 0
    assert "Streaming" not in capsys.readouterr().out
    assert not json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["streamed"]


@pytest.mark.parametrize("line, problem", [
    ("0x10,1,2", "column 'a': '0x10' is not a number"),  # TensorFlow's parser reads hex
])
def test_the_stream_refuses_what_the_reader_refuses(tmp_path, line, problem):
    write_csv(tmp_path / "a.csv", np.ones((30, 3)))
    with open(tmp_path / "a.csv", "a") as f:
        f.write(line + "\n")
    files = open_data_files(tmp_path / "a.csv")
    with pytest.raises(DataError, match=f"line 32, {problem}"):
        Trainer(LinearModule(features=2)).fit(files, None, epochs=1, batch_size=8)


def test_blank_lines_and_empty_shards_are_what_the_reader_says(tmp_path):
    """Lines of no-break spaces, a vertical tab, ASCII separators or a line separator
    are blank for both readers, and the pre-flight does not count them (a worker
    stands in that many lines for a shard it does not read); a shard with a header
    and no rows is refused by both."""
    from linfit.streaming import StreamData

    table = np.random.default_rng(1).uniform(-1, 1, (40, 3))
    write_csv(tmp_path / "a.csv", table[:20])
    with open(tmp_path / "a.csv", "a", encoding="utf-8") as f:
        f.write("\u00a0\u00a0\n\x0b\n\x1c\x1f \n\t\u2028\n")
    write_csv(tmp_path / "b.csv", table[20:])
    files = open_data_files(str(tmp_path / "*.csv"))
    assert files.rows == (20, 20)
    streamed_rows = [len(y) for _, y in StreamData((), 16, None, 1, files=files).batches(0)]
    assert streamed_rows == [16, 16, 8]
    x, y = (np.concatenate(p).astype(np.float32) for p in zip(*files.exact_chunks()))
    assert len(y) == 40
    streamed = Trainer(LinearModule(features=2)).fit(files, None, epochs=2, batch_size=8)
    in_memory = Trainer(LinearModule(features=2)).fit(x, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(streamed.columns()["full_loss"], in_memory.columns()["full_loss"])
    write_csv(tmp_path / "c.csv", np.ones((0, 3)))
    with pytest.raises(DataError, match="c.csv has a header but no data rows"):
        open_data_files(str(tmp_path / "*.csv"))


TRICKY_CSV = ("a,b,y\r\n1,2,3\r\n4,5,6\n\r\n  \n\u00a0\u3000\n\x0b\x1c\n" + " " * 40
              + "7,8,9\r\n\n\u00e9,1,2\r\n10,11,12").encode()


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_the_stream_splits_lines_across_blocks_as_python_does(tmp_path, monkeypatch, block,
                                                               ending):
    """Read a block of bytes at a time, the lines are Python's: split at \\n, one
    \\r before it dropped, the header skipped, blank lines (as str.strip() sees
    them) left out, wherever the blocks cut the lines, a \\r\\n or a character; and
    the pre-flight counts as many, a block at a time too."""
    import tensorflow as tf

    from linfit import stream_formats, streams

    content = TRICKY_CSV + ending.encode()
    (tmp_path / "a.csv").write_bytes(content)
    lines = content.split(b"\n")[1:len(content.split(b"\n")) - content.endswith(b"\n")]
    expected = [line.removesuffix(b"\r") for line in lines if line.decode().strip()]
    assert len(expected) == 5
    monkeypatch.setattr(stream_formats, "CSV_BLOCK_BYTES", block)
    read = stream_formats._csv_lines(tf.constant(str(tmp_path / "a.csv")),
                                     tf.constant(len(content), tf.int64))
    assert [line for lines in read.as_numpy_iterator() for line in lines] == expected
    with open(tmp_path / "a.csv", "rb") as f:
        assert b"".join(streams._line_blocks(f, len(content), block_bytes=block)) == content
    assert streams._count_rows(tmp_path / "a.csv", block) == (len(expected), len(content),
                                                              zlib.crc32(content))


def test_a_run_resumed_twice_goes_on_from_where_it_was(shards, tmp_path, capsys):
    """Standardised, resumed to 3 epochs, killed after a checkpoint inside epoch 3 (its
    final files removed), resumed again: the straight run's numbers. And a checkpoint
    inside an epoch is refused by a run that would not train that epoch."""
    import shutil

    args = ["--data", str(shards / "part-*.csv"), "--model", "module", "--loop", "manual",
            "--set", "data.streaming=true", "--set", "data.batch_size=500", "--set",
            "data.standardize=true", "--set", "train.checkpoint_every_batches=3"]
    assert main([*args, "--set", "train.epochs=3", "--out", str(tmp_path / "straight")]) == 0
    assert main([*args, "--set", "train.epochs=1", "--out", str(tmp_path / "run")]) == 0
    assert main(["--resume", str(tmp_path / "run"), "--set", "train.epochs=3"]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "killed")
    for name in ("module-manual.weights.h5", "metrics.json"):
        (tmp_path / "killed" / name).unlink()
    for newer in [p for p in (tmp_path / "killed" / "checkpoints" / "module-manual").iterdir()
                  if p.name > "epoch-0002-batch-000006.weights.h5"]:
        newer.unlink()  # killed just after this checkpoint, inside epoch 3
    assert main(["--resume", str(tmp_path / "killed"), "--set", "train.epochs=2"]) == 2
    assert "trained 2 epochs and 6 batches" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "killed"), "--set", "train.epochs=3"]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())["runs"]
    for name in ("run", "killed"):
        assert json.loads((tmp_path / name / "metrics.json").read_text())["runs"] == straight
    capsys.readouterr()


@pytest.mark.parametrize("pattern", ["part-*.csv", "part-1.csv", "part-*.npz"])
def test_every_worker_steps_through_the_global_batches_parsing_only_its_rows(
        shards, tmp_path, monkeypatch, pattern):
    """Shuffled mini-batches on 2 workers: each global batch is one process's batch,
    its rows split between the workers. Of three shards worker 1 reads only the
    second (the others are deleted here); of one file, each parses every other block
    (of a CSV: the lines that end in every other block of its bytes). NPZ shards are
    shared out as CSV shards are."""
    import shutil

    from linfit import stream_formats
    from linfit.streaming import StreamData

    monkeypatch.setattr(pipeline, "STREAM_BLOCK", 500)
    monkeypatch.setattr(stream_formats, "CSV_BLOCK_BYTES", 9001)
    suffix = pattern[-4:]
    for path in shards.glob(f"part-*{suffix}"):
        shutil.copy(path, tmp_path)
    files = open_data_files(str(tmp_path / pattern))
    shape = dict(arrays=(), batch_size=256, shuffle_seed=5, epochs=2, shuffle_buffer=700,
                 files=files)
    alone = list(StreamData(**shape).update_batches(0))
    sharded = "*" in pattern
    if sharded:
        for other in ("part-0", "part-2"):
            (tmp_path / f"{other}{suffix}").unlink()
    worker_1 = list(StreamData(**shape, worker=(1, 2)).update_batches(0))
    if sharded:
        shutil.copy(shards / f"part-0{suffix}", tmp_path)
        shutil.copy(shards / f"part-2{suffix}", tmp_path)
    worker_0 = list(StreamData(**shape, worker=(0, 2)).update_batches(0))
    steps = -(-files.num_examples // 256)
    assert len(alone) == len(worker_0) == len(worker_1) == 2 * steps
    parsed = [0, 0]
    for (x, y), *shares in zip(alone, worker_0, worker_1):
        assert [int(rows) for _, _, rows in shares] == [len(y)] * 2
        for index, (x_part, _, _) in enumerate(shares):
            parsed[index] += len(x_part)
        together = np.concatenate([x_part.numpy() for x_part, _, _ in shares])
        assert len(together) == len(y)
        np.testing.assert_array_equal(np.unique(together, axis=0), np.unique(x, axis=0))
    if sharded:
        assert parsed == [2 * 2500, 2 * 1500]
    else:  # the data lines ending in each block of 9001 bytes (the header's is block 0's)
        ends = np.flatnonzero(np.frombuffer((shards / pattern).read_bytes(), np.uint8) == 10)
        blocks = ends[1:] // 9001
        assert blocks.max() >= 3  # several blocks for each worker
        assert parsed == [2 * int(np.sum(blocks % 2 == worker)) for worker in (0, 1)]


def test_a_workers_place_counts_the_chief_first():
    """Each task of a cluster with a chief reads its own share: none share an index."""
    from types import SimpleNamespace

    import tensorflow as tf

    from linfit.fit_inputs import worker_position

    def position(cluster, task_type, task_id):
        resolver = SimpleNamespace(cluster_spec=lambda: tf.train.ClusterSpec(cluster),
                                   task_type=task_type, task_id=task_id)
        return worker_position(SimpleNamespace(cluster_resolver=resolver))

    chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert [position(chief, "chief", 0), position(chief, "worker", 0),
            position(chief, "worker", 1)] == [(0, 3), (1, 3), (2, 3)]
    workers = {"worker": ["a:1", "b:1"]}
    assert [position(workers, "worker", index) for index in (0, 1)] == [(0, 2), (1, 2)]


def test_terminate_on_nan_is_refused_on_a_workers_share(shards):
    """Keras's ending reads the diverging batch again whole, which a worker does not hold."""
    from linfit.loops.failures import check_ends_as_keras
    from linfit.streaming import StreamData

    files = open_data_files(str(shards / "part-*.csv"))
    check_ends_as_keras(StreamData((), 100, None, 1, files=files))  # one process: fine
    with pytest.raises(ConfigError, match="TerminateOnNaN does not run on streamed data on "
                                          "several workers"):
        check_ends_as_keras(StreamData((), 100, None, 1, files=files, worker=(0, 2)))


def test_a_workers_pass_for_standardisation_reads_its_share(shards, monkeypatch):
    """Worker 1 of 2 sums its shard's rows (the second of three) for the means and
    deviations, and adds them over the workers; of fewer files than workers, all."""
    from unittest import mock

    import tensorflow as tf

    from linfit import fit_inputs

    strategy = mock.create_autospec(tf.distribute.MultiWorkerMirroredStrategy, instance=True)
    monkeypatch.setattr(fit_inputs, "worker_position", lambda _: (1, 2))
    files = open_data_files(str(shards / "part-*.csv"))
    share, summed = fit_inputs.worker_pass(files, strategy)
    assert ([p.name for p in share.paths], share.rows, callable(summed)) == (
        ["part-1.csv"], (1500,), True)
    one = open_data_files(str(shards / "part-0.csv"))
    assert fit_inputs.worker_pass(one, strategy) == (one, None)
    assert fit_inputs.worker_pass(files, None) == (files, None)



def test_validation_files_with_their_columns_in_another_order_stream_as_in_memory(shards,
                                                                                   tmp_path):
    """Columns are found by name in each file, so a validation file with other columns
    in another order is read alike streamed and in memory; another target count is not."""
    from linfit.config import DataConfig
    from linfit.streaming import StreamData

    table = np.loadtxt(shards / "val-0.csv", delimiter=",", skiprows=1)
    reordered = np.column_stack([table[:, 1], np.arange(len(table)), table[:, 0], table[:, 2]])
    np.savetxt(tmp_path / "val.csv", reordered, delimiter=",", header="b,id,a,y", comments="",
               fmt="%.9g")
    config = dict(path=str(shards / "part-*.csv"), validation_path=str(tmp_path / "val.csv"))
    memory = data_module.load_data(DataConfig(**config, streaming=False))
    streamed = data_module.load_data(DataConfig(**config, streaming=True))
    batches = StreamData((), 100, None, 1, files=streamed.files,
                         validation_files=streamed.validation_files).validation_batches()
    x, y = (np.concatenate([part[i].numpy() for part in batches]) for i in (0, 1))
    np.testing.assert_array_equal(x, memory.x_val)
    np.testing.assert_array_equal(y, memory.y_val)
    np.savez(tmp_path / "two.npz", x=table[:, :2], y=table[:, 1:])  # two targets
    with pytest.raises(DataError, match="give them the same features and targets"):
        data_module.load_data(DataConfig(path=str(shards / "part-*.npz"), streaming=True,
                                         validation_path=str(tmp_path / "two.npz")))
