"""Shared fixtures: the real test data beside the project, and small synthetic images.

Real data lives in `../shared/data` (see its SOURCES.md). It is not part of the product: a
fresh clone has no `../shared`, so every test that needs it skips cleanly when it is absent.
Nothing from there is ever copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_file(shared_data):
    """`shared_file("exr/marcie/x.exr")` -> its path, skipping the test when that file is absent."""

    def get(relative: str) -> Path:
        path = shared_data / relative
        if not path.exists():
            pytest.skip(f"shared test file {relative} not found under {shared_data}")
        return path

    return get


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def smooth_rgb() -> np.ndarray:
    """A smooth (48, 64, 3) float32 gradient in 0-1: friendly to lossy codecs and quantisers."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    r = 0.05 + 0.9 * x / 63
    g = 0.1 + 0.8 * y / 47
    b = 0.5 + 0.4 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return np.ascontiguousarray(np.stack([r, g, b], -1), dtype=np.float32)
