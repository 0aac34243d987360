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
