"""Data: the guide's synthetic line, CSV files and their errors."""

import numpy as np
import pytest

from linfit.config import DataConfig
from linfit.data import load_data, read_csv, synthetic_line
from linfit.errors import DataError


def test_synthetic_line_is_the_guides_data():
    data = synthetic_line(DataConfig())
    assert data.x.dtype == data.y.dtype == np.float32
    np.testing.assert_array_equal(data.x, np.linspace(-2, 2, 201, dtype=np.float32))
    noise = data.y - (3.0 * data.x.astype(np.float64) + 2.0)
    assert abs(noise.mean()) < 0.2 and 0.85 < noise.std() < 1.15
    assert data.features is None and data.true_w == 3.0


def test_synthetic_line_is_seeded():
    first, again = synthetic_line(DataConfig(seed=7)), synthetic_line(DataConfig(seed=7))
    np.testing.assert_array_equal(first.y, again.y)
    assert not np.array_equal(first.y, synthetic_line(DataConfig(seed=8)).y)


def test_synthetic_features():
    data = synthetic_line(DataConfig(true_w=(0.5, -1.0, 2.0), true_b=0.3, noise_stddev=0.0))
    assert data.x.shape == (201, 3) and data.features == 3
    np.testing.assert_allclose(data.y, data.x @ np.array([0.5, -1.0, 2.0]) + 0.3, rtol=1e-5)


def write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_target_is_y_else_last_column(tmp_path):
    data = read_csv(write(tmp_path, "a,y,b\n1,10,2\n3,30,4\n"))
    np.testing.assert_array_equal(data.y, [10, 30])
    np.testing.assert_array_equal(data.x, [[1, 2], [3, 4]])
    assert data.feature_names == ("a", "b") and data.features == 2
    data = read_csv(write(tmp_path, "x,target\n1,2\n3,4\n\n"))
    np.testing.assert_array_equal(data.x, [1, 3])  # one feature: the scalar model's [N]
    np.testing.assert_array_equal(data.y, [2, 4])
    assert data.features is None


def test_load_data_reads_the_configured_csv(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n2,4\n")
    assert load_data(DataConfig(path=str(path))).source == str(path)


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("x,y\n", "header but no data rows"),
    ("y\n1\n2\n", "single column 'y'"),
    ("x,x,y\n1,2,3\n", r"duplicate column names \['x'\]"),
    ("x,y\n1,2\n3\n", "line 3: 1 values, but the header has 2 columns"),
    ("x,y\n1,2\n3,abc\n", "line 3, column 'y': 'abc' is not a number"),
    ("x,y\n1,2\nnan,4\n", "line 3, column 'x': nan is not finite"),
    ("x,y\n1,inf\n", "line 2, column 'y': inf is not finite"),
])
def test_bad_csv_names_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message) as error:
        read_csv(path)
    assert str(path) in str(error.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_csv(tmp_path)


def test_csv_target_and_feature_selection(tmp_path):
    path = write(tmp_path, "a,b,c,price\n1,2,3,10\n4,5,6,20\n")
    data = read_csv(path, target="price", features=("c", "a"))
    np.testing.assert_array_equal(data.x, [[3, 1], [6, 4]])
    np.testing.assert_array_equal(data.y, [10, 20])
    assert data.feature_names == ("c", "a")
    with pytest.raises(DataError, match="data.target 'cost' is not a column"):
        read_csv(path, target="cost")
    with pytest.raises(DataError, match="data.features names 'd'"):
        read_csv(path, features=("a", "d"))
    with pytest.raises(DataError, match="'price' is the target"):
        read_csv(path, target="price", features=("price",))


def test_npz_files(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6))
    data = load_data(DataConfig(path=str(tmp_path / "d.npz")))
    assert data.x.dtype == np.float32 and data.x.shape == (6, 2) and data.features == 2
    np.savez(tmp_path / "one.npz", x=np.arange(5.0), y=np.arange(5.0))
    assert load_data(DataConfig(path=str(tmp_path / "one.npz"))).features is None


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros(3)}, "has no array 'y'"),
    ({"y": np.zeros(3)}, "has no array 'x'"),
    ({"x": np.zeros(3), "y": np.zeros(4)}, "x has 3 rows but y has 4"),
    ({"x": np.zeros((3, 2, 2)), "y": np.zeros(3)}, r"x must be \[N\] or \[N, d\]"),
    ({"x": np.array([0.0, np.inf]), "y": np.zeros(2)}, "x is not finite in row 1"),
])
def test_bad_npz(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_csv(tmp_path / "bad.npz")


def test_validation_split_is_seeded_when_shuffling():
    config = DataConfig(num_examples=100, validation_split=0.25)
    plain = load_data(config)
    assert (len(plain.y), len(plain.y_val)) == (75, 25)
    np.testing.assert_array_equal(plain.x_val, synthetic_line(config).x[75:])
    shuffled = load_data(DataConfig(num_examples=100, validation_split=0.25, shuffle=True))
    again = load_data(DataConfig(num_examples=100, validation_split=0.25, shuffle=True))
    np.testing.assert_array_equal(shuffled.x_val, again.x_val)
    assert not np.array_equal(shuffled.x_val, plain.x_val)
    everything = np.sort(np.concatenate([shuffled.x, shuffled.x_val]))
    np.testing.assert_array_equal(everything, np.sort(synthetic_line(config).x))


def test_validation_file_must_have_the_training_columns(tmp_path):
    train = write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n", "train.csv")
    good = write(tmp_path, "a,b,y\n7,8,9\n", "val.csv")
    bad = write(tmp_path, "a,y\n7,9\n", "bad.csv")
    data = load_data(DataConfig(path=str(train), validation_path=str(good)))
    np.testing.assert_array_equal(data.x_val, [[7, 8]])
    with pytest.raises(DataError, match="data.features names 'b'"):
        load_data(DataConfig(path=str(train), validation_path=str(bad)))


def test_standardizer_maps_weights_back_exactly():
    from linfit.data import Standardizer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) * [1, 100, 0.01] + [0, 500, 3]
    scaler = Standardizer.fit(x)
    x_s = scaler.transform(x).astype(np.float64)
    np.testing.assert_allclose(x_s.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_s.std(axis=0), 1, rtol=1e-5)
    w_s, b_s = np.array([0.3, -1.0, 2.0]), 0.7
    w, b = scaler.to_original(w_s, b_s)
    np.testing.assert_allclose(x @ w + b, x_s @ w_s + b_s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.from_original(w, b)[0], w_s, rtol=1e-12)
    with pytest.raises(DataError, match="feature.* c are constant"):
        Standardizer.fit(np.column_stack([x[:, :2], np.ones(50)]), ("a", "b", "c"))
    # Varying below float32's smallest normal number: TensorFlow reads such values as 0
    # (a streamed file's too), and w / std would overflow in the checkpoint.
    tiny = (x[:, 0] * 1e-39).astype(np.float32)
    assert 0 < np.std(tiny.astype(np.float64)) < np.finfo(np.float32).tiny
    with pytest.raises(DataError, match=r"feature\(s\) c are constant \(or vary by less "
                                        r"than 1.2e-38"):
        Standardizer.fit(np.column_stack([x[:, :2], tiny]), ("a", "b", "c"))


def test_shuffled_batches_are_reproducible_permutations():
    from linfit.pipeline import make_dataset

    x = np.arange(10, dtype=np.float32)
    batches = [b[0].numpy().tolist() for b in make_dataset(x, x, 4, epochs=3, shuffle_seed=1)]
    assert [len(b) for b in batches] == [4, 4, 2] * 3  # the last partial batch is kept
    epochs = [sum(batches[i:i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = [b[0].numpy().tolist() for b in make_dataset(x, x, 4, epochs=3, shuffle_seed=1)]
    assert again == batches
    resumed = [b[0].numpy().tolist() for b in make_dataset(x, x, 4, epochs=3, shuffle_seed=1,
                                                           initial_epoch=1)]
    assert resumed == batches[3:]  # an epoch's order depends on (seed, epoch) only


def test_csv_is_read_in_chunks_without_losing_or_mixing_rows(tmp_path, monkeypatch):
    import linfit.data_files

    monkeypatch.setattr(linfit.data_files, "CHUNK_ROWS", 3)
    rows = [f"{i},{10 * i},{-i}" for i in range(10)]
    path = write(tmp_path, "a,b,y\n" + "\n".join(rows[:4]) + "\n\n\n\n" + "\n".join(rows[4:]))
    data = read_csv(path)
    np.testing.assert_array_equal(data.x, [[i, 10 * i] for i in range(10)])
    np.testing.assert_array_equal(data.y, [-i for i in range(10)])
    bad = write(tmp_path, "a,b,y\n" + "\n".join(rows[:4]) + "\n\n" + "\n".join(rows[4:7])
                + "\n7,inf,1\n", "bad.csv")
    with pytest.raises(DataError, match="line 10, column 'b': inf is not finite"):
        read_csv(bad)


def test_consistently_wrong_width_is_not_reshaped(tmp_path):
    path = write(tmp_path, "a,y\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="line 2: 3 values, but the header has 2 columns"):
        read_csv(path)


@pytest.mark.parametrize("header, target, feature", [("y,x", "y", "x"), ("x,y", "y", "x")])
def test_a_byte_order_mark_is_not_part_of_a_column_name(tmp_path, header, target, feature):
    """Issue 13.8: Excel writes UTF-8 CSV files with a byte-order mark."""
    rows = "5,1\n8,2\n11,3\n" if header == "y,x" else "1,5\n2,8\n3,11\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{header}\n{rows}".encode())
    data = read_csv(path)
    assert data.feature_names == (feature,)
    np.testing.assert_array_equal(data.x, [1, 2, 3])
    np.testing.assert_array_equal(data.y, [5, 8, 11])
    assert read_csv(path, target=target, features=(feature,)).feature_names == (feature,)


def test_a_value_that_overflows_float32_is_named_so(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n1e39,4\n")
    with pytest.raises(DataError, match=r"line 3, column 'x': 1e\+39 overflows float32"):
        read_csv(path)


def test_the_exact_values_are_those_of_the_file_and_follow_the_split(tmp_path):
    """Issue 13.14: the float64 values as read, of the training rows only."""
    # i / 10 is not a float32: training's copy rounds it, the exact values do not.
    path = write(tmp_path, "x,y\n" + "".join(f"{i / 10!r},{i / 3!r}\n" for i in range(10)))
    data = load_data(DataConfig(path=str(path), validation_split=0.3, shuffle=True, seed=2))
    training_rows = sorted(round(float(x) * 10) for x in data.x)
    assert len(training_rows) == 7
    x, y = (np.concatenate(parts) for parts in zip(*data.exact.chunks()))
    assert sorted(x.ravel().tolist()) == [i / 10 for i in training_rows]
    assert sorted(y.tolist()) == [i / 3 for i in training_rows]
    assert any(float(np.float32(v)) != v for v in x.ravel())


def test_a_validation_file_whose_y_has_another_shape_is_named_with_both_shapes(tmp_path):
    """y of [N, 1] is one target, as y of [N] is, yet another shape: the message says
    which, where "1 target(s) but 1" would not."""
    from linfit.config import DataConfig
    from linfit.data import load_data

    np.savez(tmp_path / "train.npz", x=np.ones((5, 2)), y=np.arange(5.0))
    np.savez(tmp_path / "val.npz", x=np.ones((3, 2)), y=np.ones((3, 1)))
    with pytest.raises(DataError) as refused:
        load_data(DataConfig(path=str(tmp_path / "train.npz"), streaming=False,
                             validation_path=str(tmp_path / "val.npz")))
    assert str(refused.value) == (f"validation file {tmp_path / 'val.npz'} has 1 target(s) "
                                  "(y [N, 1]) but the training data has 1 (y [N]): give it the "
                                  "same columns")
