"""Shared fixtures: real photos from ../shared/data (skipped when absent) and photos shipped in dependencies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data beside the checkout, or $BLAZEDISTILL_SHARED_DATA."""
    return Path(os.environ.get("BLAZEDISTILL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real-photo data folder {path} is absent")
    return path


@pytest.fixture(scope="session")
def grace_hopper() -> Path:
    """matplotlib's sample photo of Grace Hopper (one frontal face)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib's sample_data/grace_hopper.jpg is not installed")
    return path
