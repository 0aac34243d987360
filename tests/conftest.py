import os

# Before TensorFlow is imported anywhere in the test session.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from linfit.config import DataConfig  # noqa: E402
from linfit.data import synthetic_line  # noqa: E402


@pytest.fixture(scope="session")
def guide_data():
    """The guide's data: 201 points of y = 3x + 2 + N(0, 1), seeded."""
    return synthetic_line(DataConfig())
