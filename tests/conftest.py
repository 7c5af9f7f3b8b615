"""Shared test fixtures.

Tests that need the real Houston 2013 pieces in ../shared/data/houston2013 ask for the
`houston_dir` fixture, those that read the real Houston 2018 crop in ../shared/data/houston2018-crop
the `crop_dir` fixture. On a user's fresh clone those files are absent and the tests skip; CI sets
REQUIRE_SHARED_DATA=1 so that a missing folder fails the run instead of hiding behind a skip.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DIR = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
HOUSTON_DIR = SHARED_DIR / "data" / "houston2013"
CROP_DIR = SHARED_DIR / "data" / "houston2018-crop"

# Per-class labelled pixels of the Houston 2018 crop (its README), and its files' sha256.
CROP_COUNTS = [2677, 1877, 1155, 1362, 1174, 886, 635, 1306, 36218, 1931, 1215, 834]
CROP_SHA256 = {"DATA_pca_5.mat": "6d71b402c3ec4cf1f8ced96917a7f3b552bb72b3c2c7f7ed089b2395601958e2",
               "DATA_DSM.mat": "f6a0eee06c93d3503c55cdd48027d36ef90390ae6d97be800113ed8e476b4acd"}

# Per-class counts of the standard Houston 2013 split (../shared/data/README.md).
HOUSTON_TRAIN_COUNTS = [198, 190, 192, 188, 186, 182, 196, 191, 193, 191, 181, 192, 184, 181, 187]
HOUSTON_TEST_COUNTS = [1053, 1064, 505, 1056, 1056, 143, 1072, 1053, 1059, 1036, 1054, 1041, 285, 247, 473]


def reference_patches(scene, coords, p):
    """Patches cut the authors' way, pixel by pixel, zero outside the scene: the reference that
    patchfile.cut_patches is checked against."""
    r = p // 2
    out = np.zeros((len(coords), p, p, scene.shape[2]), np.float32)
    for n, (row, col) in enumerate(coords):
        for i in range(p):
            for j in range(p):
                y, x = row + i - r, col + j - r
                if 0 <= y < scene.shape[0] and 0 <= x < scene.shape[1]:
                    out[n, i, j] = scene[y, x]
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end test (seconds to minutes); CI runs it, `-m 'not slow'` skips it")
    # Keras' own NumPy 2 deprecation, thousands of times per training: not ours to fix
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def need_shared(path):
    """Return `path` if it exists; otherwise skip, or fail when REQUIRE_SHARED_DATA=1 (CI)."""
    if path.exists():
        return path
    reason = f"{path} is absent: the real data pieces the tests read live in ../shared beside the project"
    if os.environ.get("REQUIRE_SHARED_DATA") == "1":
        pytest.fail(reason + " (REQUIRE_SHARED_DATA=1, so this is an error, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def houston_dir():
    return need_shared(HOUSTON_DIR)


@pytest.fixture(scope="session")
def crop_dir():
    return need_shared(CROP_DIR)


@pytest.fixture(scope="session")
def demo_h5(tmp_path_factory):
    """DataPrepare's synthetic demo scene with a validation group (20 % of the training pixels),
    prepared once for the whole session. Tests read it; a test that changes a file copies it first."""
    import DataPrepare
    out = tmp_path_factory.mktemp("data") / "demo.h5"
    DataPrepare.prepare("demo", str(out), val_fraction=0.2)
    return out
