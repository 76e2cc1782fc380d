"""Reading radiographs and lung masks, in one place.

``read_image`` returns a float32 array in [0, 1] with the original size recorded;
``read_lung_mask`` returns a uint8 label map with the project's labels
(0 background, 1 patient-right lung, 2 patient-left lung).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BACKGROUND, RIGHT_LUNG, LEFT_LUNG = 0, 1, 2


@dataclass
class Radiograph:
    """A radiograph as float32 (H, W) in [0, 1], with where it came from."""

    pixels: np.ndarray
    path: Path
    original_height: int
    original_width: int
    spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)


class ImageReadError(ValueError):
    """A file is missing, empty, truncated or not an image this project can read."""


def read_image(path: str | Path) -> Radiograph:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} not found")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageReadError(f"image {path} could not be decoded; the file is corrupt or not an image")
    if data.ndim == 3:
        data = cv2.cvtColor(data[..., :3], cv2.COLOR_BGR2GRAY)
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    pixels = data.astype(np.float32) / scale
    return Radiograph(pixels, path, pixels.shape[0], pixels.shape[1])


def read_lung_mask(
    path: str | Path,
    right_value: int | None = None,
    left_value: int | None = None,
    threshold: int = 127,
) -> np.ndarray:
    """Read a lung mask as labels 0/1/2 (background, patient-right, patient-left).

    With ``right_value`` and ``left_value`` the file is a label map; otherwise it is one
    mask of both lungs (thresholded at ``threshold``) split by connected components.
    """
    path = Path(path)
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageReadError(f"mask {path} could not be read")
    if data.ndim == 3:
        data = data[..., 0]
    labels = np.zeros(data.shape, dtype=np.uint8)
    if right_value is not None and left_value is not None:
        labels[data == right_value] = RIGHT_LUNG
        labels[data == left_value] = LEFT_LUNG
        return labels
    return split_lungs(data > threshold)


def split_lungs(both_lungs: np.ndarray) -> np.ndarray:
    """Split a binary mask of both lungs into patient-right (image left) and patient-left."""
    count, components, stats, centroids = cv2.connectedComponentsWithStats(
        both_lungs.astype(np.uint8), connectivity=8
    )
    labels = np.zeros(both_lungs.shape, dtype=np.uint8)
    if count <= 1:
        return labels
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1] + 1
    biggest = order[:2]
    centre_x = both_lungs.shape[1] / 2
    for component in biggest:
        side = RIGHT_LUNG if centroids[component, 0] < centre_x else LEFT_LUNG
        labels[components == component] = side
    return labels
