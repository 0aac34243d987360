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


def pytest_collection_finish(session):
    """No cyclic garbage collection in the test session, once everything is imported.

    TensorFlow's traced functions and graphs and Keras's layers form reference
    cycles by the thousand, and collecting them cost this suite about a sixth of
    its CPU time (2 workers: 9:08 of CPU with the collector off, 10:58-13:53 with it
    on, on the 2-core machine, November 2026). A session lasts minutes and has
    memory to spare: the busiest worker peaked at 2.4 GB. The CLI runs the tests
    start as processes collect as usual, as they do for users.
    """
    import gc

    gc.collect()
    gc.freeze()  # what is imported lives as long as the session
    gc.disable()
