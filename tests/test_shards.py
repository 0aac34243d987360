"""data.path as several files, a glob or a list (issue 18, first part): read as one
table, checked shard by shard before anything is read."""

import json

import numpy as np
import pytest

from linfit.config import load_config
from linfit.train import main

ONE_RUN = ["--model", "module", "--set", "train.epochs=4"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A table of 900 rows, whole and in three shards of 300."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, (900, 2))
    table = np.column_stack([x, x @ [1.5, -0.5] + 0.7 + rng.normal(0, 0.1, 900)])
    np.savetxt(root / "whole.csv", table, delimiter=",", header="a,b,y", comments="",
               fmt="%.9g")
    for i in range(3):
        np.savetxt(root / f"part-{i}.csv", table[300 * i:300 * (i + 1)], delimiter=",",
                   header="a,b,y", comments="", fmt="%.9g")
    return root


def runs_of(out):
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["runs"], metrics["reference"], metrics["data"]


@pytest.mark.parametrize("batching", [[], ["--set", "data.batch_size=64", "--set",
                                           "data.shuffle=true"]])
def test_shards_train_as_the_whole_file_bitwise(shards, tmp_path, batching, capsys):
    assert main([*ONE_RUN, *batching, "--data", shards / "whole.csv", "--out",
                 tmp_path / "whole"]) == 0
    assert main([*ONE_RUN, *batching, "--data", str(shards / "part-*.csv"), "--out",
                 tmp_path / "glob"]) == 0
    listed = [str(shards / f"part-{i}.csv") for i in range(3)]
    assert main([*ONE_RUN, *batching, "--set", f"data.path={json.dumps(listed)}", "--out",
                 tmp_path / "list"]) == 0
    whole = runs_of(tmp_path / "whole")
    for name in ("glob", "list"):
        runs, reference, data = runs_of(tmp_path / name)
        assert runs == whole[0]  # every epoch's loss, full_loss, w and b, both loops
        for key in ("w", "b", "loss", "lr_limit"):  # float64, from every shard
            np.testing.assert_allclose(reference[key], whole[1][key], rtol=1e-12)
        assert data["num_examples"] == 900 and data["source"].endswith("(3 files)")
    capsys.readouterr()


def test_a_sharded_run_resumes_and_prints_its_config(shards, tmp_path, capsys):
    glob = str(shards / "part-*.csv")
    assert main([*ONE_RUN, "--data", glob, "--out", tmp_path / "run"]) == 0
    assert main(["--resume", tmp_path / "run", "--set", "train.epochs=6"]) == 0
    assert main([*ONE_RUN, "--data", glob, "--set", "train.epochs=6", "--out",
                 tmp_path / "straight"]) == 0
    assert runs_of(tmp_path / "run")[0] == runs_of(tmp_path / "straight")[0]
    capsys.readouterr()
    assert main(["--print-config", "--set", 'data.path=["a.csv", "b.csv"]']) == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed).data.path == ("a.csv", "b.csv")


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("no-match", "data.path '{root}/nothing-*.csv' matches no file"),
    ("other-header", "shard {root}/p-1.csv has the columns a,c,y but {root}/p-0.csv has a, b, y"),
    ("bad-row", "{root}/p-1.csv"),
    ("mixed", "data.path mixes CSV and NPZ files"),
    ("twice", "data.path names {root}/p-0.csv twice"),
])
def test_a_shard_that_does_not_fit_is_named_before_training(tmp_path, case, message, capsys):
    root = tmp_path
    good = write(root / "p-0.csv", "a,b,y\n1,2,3\n2,3,4\n3,4,6\n")
    spec = {"no-match": str(root / "nothing-*.csv"),
            "other-header": str(root / "p-*.csv"),
            "bad-row": str(root / "p-*.csv"),
            "mixed": [good, str(root / "p.npz")],
            "twice": [good, str(root / "p-*.csv")]}[case]
    if case == "other-header":
        write(root / "p-1.csv", "a,c,y\n1,2,3\n")
    if case == "bad-row":
        write(root / "p-1.csv", "a,b,y\n1,2,3\n1,oops,3\n")
    if case == "mixed":
        np.savez(root / "p.npz", x=np.ones((3, 2)), y=np.ones(3))
    assert main([*ONE_RUN, "--set", f"data.path={json.dumps(spec)}", "--out",
                 root / "out"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    expected = message.format(root=root)
    if case == "other-header":
        expected = (f"shard {root}/p-1.csv has the columns a, c, y but {root}/p-0.csv has "
                    "a, b, y")
    assert expected in error, error
    if case == "bad-row":
        assert "line 3" in error
    assert not (root / "out").exists()


@pytest.mark.parametrize("late", ["shape", "x_names", "y_names"])
@pytest.mark.parametrize("streaming", ["false", "true"])
def test_npz_shards_that_do_not_fit_are_named_before_any_is_read(tmp_path, capsys, late,
                                                                  streaming):
    """The last of three NPZ shards does not fit; the second holds a NaN. The misfit
    is named (read from the archives' headers) before any shard's values are read."""
    x, y = np.ones((5, 2)), np.ones(5)
    names = {"x_names": np.array(["a", "b"]), "y_names": np.array(["t"])}
    np.savez(tmp_path / "p-0.npz", x=x, y=y, **names)
    np.savez(tmp_path / "p-1.npz", x=np.where(np.eye(5, 2) > 0, np.nan, x), y=y, **names)
    misfit = {**names, late: np.array(["a", "c"] if late == "x_names" else ["u"])}
    if late == "shape":
        misfit = {"x": np.ones((5, 3)), **names, "x_names": np.array(["a", "b", "c"])}
    np.savez(tmp_path / "p-2.npz", **{"x": x, "y": y, **misfit})
    assert main([*ONE_RUN, "--data", tmp_path / "p-*.npz", "--set",
                 f"data.streaming={streaming}", "--out", tmp_path / "out"]) == 2
    error = capsys.readouterr().err
    expected = {
        "shape": f"error: shard {tmp_path}/p-2.npz holds x [N, 3] and y [N] but "
                 f"{tmp_path}/p-0.npz holds x [N, 2] and y [N]: give every shard arrays of "
                 "the same shapes",
        "x_names": f"error: shard {tmp_path}/p-2.npz names x's columns a, c but "
                   f"{tmp_path}/p-0.npz names them a, b: give every shard the same x_names",
        "y_names": f"error: shard {tmp_path}/p-2.npz names y's columns u but "
                   f"{tmp_path}/p-0.npz names them t: give every shard the same y_names"}[late]
    assert error == expected + "\n"
    assert not (tmp_path / "out").exists()


def test_a_file_named_like_a_pattern_is_read_as_that_file(tmp_path, monkeypatch, capsys):
    """`data.path = "sales[2024].csv"` names the file when it exists ("matched no file"
    before), and is a pattern when it does not (sales2.csv)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sales[2024].csv").write_text("x,y\n" + "".join(
        f"{i},{2 * i + 1}\n" for i in range(10)))
    common = ["--set", "train.epochs=2", "--set", "train.learning_rate=0.01", "--model",
              "module", "--loop", "manual"]
    assert main(["--data", "sales[2024].csv", *common, "--out", "run"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["source"] == \
        "sales[2024].csv"
    (tmp_path / "sales2.csv").write_text((tmp_path / "sales[2024].csv").read_text())
    (tmp_path / "sales[2024].csv").unlink()
    assert main(["--data", "sales[2024].csv", *common, "--out", "run2"]) == 0
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text())["data"]["source"] == \
        "sales[2024].csv (1 file)"
