import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """One synthetic_shapes build shared by the data tests (about 1 s)."""
    return tmp_path_factory.mktemp("tfds")
