"""Gaussian heatmap targets, peak decoding with sub-pixel refinement, and the lung band.

Each landmark has its own heatmap channel, in the order of ``LANDMARKS`` (patient-right
dome first). Points use the project convention: x is the column, y the row, and (0, 0) is
the centre of the top-left pixel of the array the heatmap covers.

Decoding takes the arg-max of a channel and refines it by a weighted least-squares fit of
a separable quadratic to the logarithm of the heatmap around the peak. For a sampled
Gaussian the logarithm is exactly quadratic, so the fit recovers a sub-pixel centre
without the bias of a windowed centroid.

The anatomical constraint searches each landmark only in a band around the lower border
of its own lung (see :func:`lower_border_band`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG

LANDMARKS = ("right_dome", "left_dome")
# Lung label searched for each landmark, in the order of LANDMARKS.
LANDMARK_LUNG_LABELS = (RIGHT_LUNG, LEFT_LUNG)

FLAG_LOW_PEAK = "low_peak"
FLAG_OUTSIDE_BAND = "outside_lung_band"
FLAG_MISSING_LUNG = "missing_lung"


def gaussian_heatmaps(points_xy: np.ndarray, height: int, width: int, sigma_px: float) -> np.ndarray:
    """Render one unnormalised Gaussian (peak 1) per point.

    Args:
        points_xy: (K, 2) points in pixels of the heatmap; a row containing NaN gives an
            all-zero channel.
        height, width: heatmap size in pixels.
        sigma_px: standard deviation in heatmap pixels.

    Returns:
        float32 array of shape (K, height, width).
    """
    if sigma_px <= 0:
        raise ValueError(f"sigma_px={sigma_px}: the Gaussian standard deviation must be positive")
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    valid = np.isfinite(points).all(axis=1)
    safe = np.where(valid[:, None], points, 0.0)
    columns = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)

    # The 2-D Gaussian is the outer product of two 1-D ones: (K, H, 1) * (K, 1, W).
    along_x = np.exp(-((columns[None, :] - safe[:, :1]) ** 2) / (2 * sigma_px**2))
    along_y = np.exp(-((rows[None, :] - safe[:, 1:]) ** 2) / (2 * sigma_px**2))
    maps = along_y[:, :, None] * along_x[:, None, :]
    maps[~valid] = 0.0
    return maps.astype(np.float32)


def refine_peak(heatmap: np.ndarray, row: int, col: int, radius: int = 2) -> tuple[float, float]:
    """Refine an integer peak to sub-pixel (x, y) by a Gaussian fit in a small window.

    Fits ``log h = a + b*x + c*x**2 + d*y + e*y**2`` by least squares weighted with the
    heatmap values, in the (2 * radius + 1) square window around (row, col) clipped to the
    array. Values below 1% of the peak are left out because their logarithm is noise. When
    the fit is not a maximum along an axis, or leaves the window, that axis falls back to the
    weighted centroid of the window.
    """
    height, width = heatmap.shape
    top, bottom = max(0, row - radius), min(height, row + radius + 1)
    left, right = max(0, col - radius), min(width, col + radius + 1)
    window = heatmap[top:bottom, left:right].astype(np.float64)
    peak = float(heatmap[row, col])
    ys, xs = np.mgrid[top:bottom, left:right]
    dx = (xs - col).ravel().astype(np.float64)
    dy = (ys - row).ravel().astype(np.float64)
    values = window.ravel()

    fallback_weights = np.clip(values, 0.0, None)
    if peak <= 0 or fallback_weights.sum() <= 0:
        return float(col), float(row)
    centroid_x = float((fallback_weights * dx).sum() / fallback_weights.sum())
    centroid_y = float((fallback_weights * dy).sum() / fallback_weights.sum())

    usable = values > 0.01 * peak
    offset_x, offset_y = centroid_x, centroid_y
    # Five parameters need at least three distinct positions along each axis.
    if len(np.unique(dx[usable])) >= 3 and len(np.unique(dy[usable])) >= 3:
        weights = values[usable]
        design = np.stack(
            [np.ones(usable.sum()), dx[usable], dx[usable] ** 2, dy[usable], dy[usable] ** 2], axis=1
        )
        target = np.log(values[usable])
        coefficients, *_ = np.linalg.lstsq(design * weights[:, None], target * weights, rcond=None)
        _, b, c, d, e = coefficients
        if c < 0 and abs(-b / (2 * c)) <= radius:
            offset_x = -b / (2 * c)
        if e < 0 and abs(-d / (2 * e)) <= radius:
            offset_y = -d / (2 * e)
    return float(col + offset_x), float(row + offset_y)


@dataclass(frozen=True)
class DecodedPeak:
    """One decoded landmark: the point in heatmap pixels, its peak value and checks."""

    x: float
    y: float
    peak: float
    # False when the unconstrained maximum of the channel lies outside the allowed region.
    max_inside_allowed: bool
    constrained: bool


def decode_heatmap(heatmap: np.ndarray, allowed: np.ndarray | None = None, radius: int = 2) -> DecodedPeak:
    """Decode one (H, W) channel: arg-max within ``allowed``, then sub-pixel refinement.

    Args:
        heatmap: (H, W) array.
        allowed: optional (H, W) boolean region to search (the lung band); an empty
            region is ignored, which the caller reports as a flag.
        radius: half-size of the refinement window in heatmap pixels.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"expected one (H, W) heatmap channel, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap contains NaN or infinite values; the network output is invalid")
    best_row, best_col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    row, col = best_row, best_col
    constrained = allowed is not None and bool(np.any(allowed))
    max_inside = True
    if allowed is not None:
        max_inside = bool(allowed[best_row, best_col])
    if constrained and not max_inside:
        searched = np.where(allowed, heatmap, -np.inf)
        row, col = np.unravel_index(int(np.argmax(searched)), heatmap.shape)
    x, y = refine_peak(heatmap, int(row), int(col), radius)
    return DecodedPeak(x, y, float(heatmap[row, col]), max_inside, constrained)


def lower_border_band(labels: np.ndarray, lung_label: int, radius_px: float) -> np.ndarray:
    """Return the pixels within ``radius_px`` of the lower border of one lung.

    The lower border is the lowest pixel of the lung in each image column, which traces
    the diaphragm from the costophrenic angle to the cardiophrenic corner (and, on the
    left, part of the heart border). An absent lung gives an all-false band.
    """
    lung = labels == lung_label
    band = np.zeros(lung.shape, dtype=bool)
    columns = np.flatnonzero(lung.any(axis=0))
    if columns.size == 0:
        return band
    height = lung.shape[0]
    lowest_rows = height - 1 - np.argmax(lung[::-1, columns], axis=0)
    border = np.full(lung.shape, 255, dtype=np.uint8)
    border[lowest_rows, columns] = 0

    # distanceTransform measures the distance to the nearest zero pixel, here the border.
    distance = cv2.distanceTransform(border, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= radius_px


def landmark_flags(decoded: DecodedPeak, lung_present: bool | None, min_peak: float) -> list[str]:
    """List the flags of one decoded landmark (empty when nothing is suspicious).

    ``lung_present`` is None when no mask was available, so no band check was possible.
    """
    flags = []
    if lung_present is False:
        flags.append(FLAG_MISSING_LUNG)
    elif lung_present and not decoded.max_inside_allowed:
        flags.append(FLAG_OUTSIDE_BAND)
    if decoded.peak < min_peak:
        flags.append(FLAG_LOW_PEAK)
    return flags
