"""tools/dome_error_sources.py: the dome found between given corners of a lung outline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("dome_error_sources_under_test", ROOT / "tools/dome_error_sources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def peaked_lung() -> np.ndarray:
    """Rectangle x 10..50, y 10..60 whose lower border rises in a tent to the apex (30, 40)."""
    lung = np.zeros((80, 64), dtype=np.uint8)
    cv2.fillPoly(lung, [np.array([[10, 10], [50, 10], [50, 60], [30, 40], [10, 60]], dtype=np.int32)], 1)
    return lung.astype(bool)


def test_dome_between_given_corners(tool):
    dome = tool.dome_with_reference_corners(peaked_lung(), np.array([10.0, 60.0]), np.array([50.0, 60.0]))
    assert abs(dome[0] - 30.0) <= 1.0
    assert abs(dome[1] - 40.5) <= 1.0


def test_missing_corner_gives_nan(tool):
    dome = tool.dome_with_reference_corners(peaked_lung(), np.array([np.nan, 60.0]), np.array([50.0, 60.0]))
    assert np.isnan(dome).all()


def test_empty_lung_gives_nan(tool):
    empty = np.zeros((80, 64), dtype=bool)
    dome = tool.dome_with_reference_corners(empty, np.array([10.0, 60.0]), np.array([50.0, 60.0]))
    assert np.isnan(dome).all()
