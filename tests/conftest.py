"""Shared pytest fixtures: the real-data folder and small synthetic lung masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

# The real data sits in shared/data beside the checkout, never inside it, because its licences
# do not allow redistribution.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return the shared real-data folder, or skip the test where it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            "../shared/data not found: real-data tests need the shared data folder beside the checkout"
        )
    return SHARED_DATA


def draw_lung_labels(height: int = 64, width: int = 80) -> np.ndarray:
    """Draw a uint8 label map with two filled ellipses: 1 patient-right lung (image left), 2 patient-left.

    Each lung is an axis-aligned ellipse centred at 30% (right lung) or 70% (left lung) of the
    width and at 50% of the height, with semi-axes of 15% of the width and 35% of the height.
    """
    labels = np.zeros((height, width), dtype=np.uint8)
    axes = (max(1, round(0.15 * width)), max(1, round(0.35 * height)))
    centre_row = round(0.5 * height)
    cv2.ellipse(labels, (round(0.3 * width), centre_row), axes, 0, 0, 360, 1, thickness=-1)
    cv2.ellipse(labels, (round(0.7 * width), centre_row), axes, 0, 0, 360, 2, thickness=-1)
    return labels


@pytest.fixture
def make_lung_labels():
    """Return ``draw_lung_labels``, so tests can draw label maps of any size without imports."""
    return draw_lung_labels
