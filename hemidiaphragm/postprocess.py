"""Optional clean-up of predicted lung label maps, applied per lung in a fixed order.

Steps (any subset, always applied in this order):

- ``largest``: keep the largest 8-connected component of each lung;
- ``close``: morphological closing with an elliptical kernel of about 2% of the image width;
- ``fill``: fill holes enclosed by the lung;
- ``hull``: replace each lung by its convex hull (this also fills the costophrenic recess,
  so it changes the diaphragm outline; use it for area, not for landmarks).

A step never gives a lung the pixels that the other lung held before post-processing.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np
from scipy import ndimage

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG

STEPS = ("largest", "close", "fill", "hull")


def parse_steps(text: str | None) -> tuple[str, ...]:
    """Parse ``"largest,fill"`` into steps; an empty string or ``none`` means no steps."""
    if not text or text == "none":
        return ()
    steps = tuple(part.strip() for part in text.split(",") if part.strip())
    if "none" in steps:
        raise ValueError(f"--postprocess {text!r}: 'none' cannot be combined with other steps")
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {unknown}; choose from {', '.join(STEPS)} or 'none'")
    repeated = sorted({step for step in steps if steps.count(step) > 1})
    if repeated:
        raise ValueError(f"--postprocess {text!r} names {', '.join(repeated)} more than once; give each step once")
    return steps


def largest_component(binary: np.ndarray) -> np.ndarray:
    count, components, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 2:
        return binary.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return components == largest


def closing(binary: np.ndarray) -> np.ndarray:
    radius = max(1, round(0.01 * binary.shape[1]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad first so that closing does not glue the lung to the image border.
    padded = np.pad(binary.astype(np.uint8), radius + 1)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    return closed[radius + 1 : -radius - 1, radius + 1 : -radius - 1].astype(bool)


def convex_hull(binary: np.ndarray) -> np.ndarray:
    points = cv2.findNonZero(binary.astype(np.uint8))
    if points is None:
        return binary.astype(bool)
    hull = cv2.convexHull(points)
    out = np.zeros(binary.shape, dtype=np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool) | binary.astype(bool)


OPERATIONS = {
    "largest": largest_component,
    "close": closing,
    "fill": ndimage.binary_fill_holes,
    "hull": convex_hull,
}


def postprocess(labels: np.ndarray, steps: Iterable[str]) -> np.ndarray:
    """Apply the chosen steps to each lung of a 0/1/2 label map and return a new map."""
    steps = [step for step in STEPS if step in set(steps)]
    if not steps:
        return labels.copy()
    out = np.zeros_like(labels)
    for label in (RIGHT_LUNG, LEFT_LUNG):
        lung = labels == label
        for step in steps:
            lung = OPERATIONS[step](lung)
        out[lung & (out == 0) & ((labels == label) | (labels == 0))] = label
    return out
