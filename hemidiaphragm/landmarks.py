"""Hemidiaphragm points derived from a lung outline: the non-learned baseline.

For each lung the rule finds three points on the lung's outer outline, in the image's pixel
coordinates (x = column, y = row, (0, 0) = centre of the top-left pixel):

1. Costophrenic angle ``cp``: the outline point furthest in the lateral-down direction at
   45 degrees, i.e. the maximum of ``y - x`` for the patient-right lung (which lies on the
   image left) and of ``y + x`` for the patient-left lung.
2. Cardiophrenic corner ``cardio``: an anchor ``M`` is taken on the medial border, the most
   medial outline point within 1 px of the height ``y_top + 0.65 * (y_bottom - y_top)`` of the
   lung. On the outline path from ``cp`` to ``M`` that does not pass the apex (the diaphragm
   followed by the heart or mediastinum border), the corner is the point furthest from the
   chord ``cp``-``M`` on the medial-down side. The dome and the heart border bulge into the
   lung, to the other side of that chord, so only the corner wins.
3. Dome: on the diaphragmatic arc (the same path from ``cp`` to ``cardio``), the point
   furthest above the chord ``cp``-``cardio``. The outline points within
   ``plateau_tolerance_px`` of the maximum height that are contiguous with it form a plateau.
   The dome is the middle of that plateau. A pixel outline is a staircase, and without the
   plateau its steps would decide which end of a flat top wins.

The jsrt224 reference points were made from the SCR expert contours, whose corners are fixed
vertices. Applied to those contours, this rule returns the reference costophrenic angle for
every lung it does not flag, the reference cardiophrenic corner for 244 of 245 right and 238
of 243 left lungs, and the reference dome for 245 of 245 right and 238 of 243 left lungs
(``derive_landmarks.py --contours-dir``). Agreement on masks is in
``heatmap_preprocessing/README.md``.

Failure cases are returned as a non-empty ``failure`` code with NaN points, never as a
guessed point:

- ``missing_lung``: the label has no pixels.
- ``lung_too_small``: the lung's largest region covers less than ``min_area_fraction`` of
  the image.
- ``merged_mask``: more than ``merged_fraction`` of the lung's largest region lies across the
  image's centre column, so it is probably both lungs joined into one region (a patient far off
  centre also triggers it). When one side is merged and the other is missing, both sides get
  ``merged_mask``.
- ``touches_border``: the diaphragmatic arc reaches the image border, so the lung is cut and
  its lower outline is not anatomy.
- ``no_cardiophrenic_corner``: the lower medial outline has no point beyond the chord to the
  medial anchor (a straight or concave lower medial border).
- ``degenerate_arc``: the arc between the corners is shorter than 2 px or has fewer than
  three outline points.
- ``no_point_above_chord``: no point of the arc lies above the chord (a flat or inverted
  hemidiaphragm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage import measure

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG

SIDES = ("right", "left")
POINT_NAMES = ("dome", "cp", "cardio")
LANDMARK_COLUMNS = tuple(
    f"{side}_{point}_{axis}" for side in SIDES for point in POINT_NAMES for axis in ("x", "y")
)

# SCR contour vertex indices of the corners (van Ginneken et al., 2006): the right lung has
# 44 points, the left lung 50, both starting at the apex. The jsrt224 reference points use them.
SCR_CORNER_INDICES = {"right": (21, 29), "left": (21, 27)}
SCR_POINT_COUNTS = {"right": 44, "left": 50}

DEFAULT_ANCHOR_HEIGHT_FRACTION = 0.65
DEFAULT_ANCHOR_BAND_PX = 1.0
DEFAULT_PLATEAU_TOLERANCE_PX = 1.0
DEFAULT_MERGED_FRACTION = 0.25
DEFAULT_MIN_AREA_FRACTION = 0.005
# Polygon contours are resampled to this spacing (px) so that the anchor band is never empty.
DENSIFY_STEP_PX = 0.25

NAN_POINT = (math.nan, math.nan)


@dataclass(frozen=True)
class LungLandmarks:
    """Dome, costophrenic angle and cardiophrenic corner of one lung, in image pixels (x, y).

    ``failure`` is empty when the points are valid; otherwise it is a code from the module
    docstring and every point is ``(nan, nan)``. ``dome_height_px`` is the dome's distance
    above the chord joining the two corners.
    """

    dome: tuple[float, float] = NAN_POINT
    cp: tuple[float, float] = NAN_POINT
    cardio: tuple[float, float] = NAN_POINT
    dome_height_px: float = math.nan
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure


def failed(code: str) -> LungLandmarks:
    return LungLandmarks(failure=code)


def derive_landmarks(
    labels: np.ndarray,
    *,
    plateau_tolerance_px: float = DEFAULT_PLATEAU_TOLERANCE_PX,
    anchor_height_fraction: float = DEFAULT_ANCHOR_HEIGHT_FRACTION,
    merged_fraction: float = DEFAULT_MERGED_FRACTION,
    min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION,
) -> dict[str, LungLandmarks]:
    """Derive both lungs' dome, costophrenic angle and cardiophrenic corner from a label map.

    Args:
        labels: uint8 (H, W), 0 background, 1 patient-right lung, 2 patient-left lung.
        plateau_tolerance_px: height below the maximum (px) that still counts as the dome's
            plateau; 0 takes the single highest outline point.
        anchor_height_fraction: height of the medial anchor, as a fraction from the lung's
            top (0) to its bottom (1).
        merged_fraction: share of a lung's pixels across the centre column above which the
            lung is reported as ``merged_mask``.
        min_area_fraction: lungs smaller than this share of the image are ``lung_too_small``.

    Returns:
        ``{"right": LungLandmarks, "left": LungLandmarks}``; a failed side has NaN points and
        a non-empty ``failure`` code.

    Example:
        >>> result = derive_landmarks(labels)
        >>> result["right"].dome  # (x, y) in pixels of ``labels``
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D label map (H, W); got shape {labels.shape}")

    results = {}
    for side, value in (("right", RIGHT_LUNG), ("left", LEFT_LUNG)):
        results[side] = derive_lung_landmarks(
            labels == value,
            side,
            plateau_tolerance_px=plateau_tolerance_px,
            anchor_height_fraction=anchor_height_fraction,
            merged_fraction=merged_fraction,
            min_area_fraction=min_area_fraction,
        )

    # One region holding both lungs is labelled as one side and leaves the other side empty:
    # the empty side is then part of the merged region, not a missing lung.
    for side, other in (("right", "left"), ("left", "right")):
        if results[side].failure == "missing_lung" and results[other].failure == "merged_mask":
            results[side] = failed("merged_mask")
    return results


def derive_lung_landmarks(
    lung: np.ndarray,
    side: str,
    *,
    plateau_tolerance_px: float = DEFAULT_PLATEAU_TOLERANCE_PX,
    anchor_height_fraction: float = DEFAULT_ANCHOR_HEIGHT_FRACTION,
    merged_fraction: float = DEFAULT_MERGED_FRACTION,
    min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION,
) -> LungLandmarks:
    """Derive one lung's points from its boolean mask (H, W); ``side`` is "right" or "left"."""
    _check_side(side)
    lung = np.asarray(lung, dtype=bool)
    height, width = lung.shape

    region = largest_region(lung)
    if region is None:
        return failed("missing_lung")
    crop, (x0, y0) = region
    area = int(crop.sum())
    if area < min_area_fraction * height * width:
        return failed("lung_too_small")

    # The patient-right lung belongs on the image left of the centre column.
    columns = np.nonzero(crop)[1] + x0
    centre_x = (width - 1) / 2
    across = np.count_nonzero(columns > centre_x) if side == "right" else np.count_nonzero(columns < centre_x)
    if across > merged_fraction * area:
        return failed("merged_mask")

    outline = region_outline(crop, (x0, y0))
    return landmarks_from_outline(
        outline,
        side,
        image_size=(width, height),
        plateau_tolerance_px=plateau_tolerance_px,
        anchor_height_fraction=anchor_height_fraction,
    )


def derive_landmarks_from_contour(
    points_xy: np.ndarray,
    side: str,
    *,
    image_size: tuple[int, int] | None = None,
    corner_indices: tuple[int, int] | None = None,
    plateau_tolerance_px: float = DEFAULT_PLATEAU_TOLERANCE_PX,
    anchor_height_fraction: float = DEFAULT_ANCHOR_HEIGHT_FRACTION,
) -> LungLandmarks:
    """Derive one lung's points from a closed polygon of (x, y) vertices, shape (N, 2).

    The polygon is resampled to 0.25 px spacing (keeping its vertices) and passed to the same
    rule as a mask outline. With ``corner_indices = (cp_index, cardio_index)`` the corners are
    those vertices instead (the SCR convention, see ``SCR_CORNER_INDICES``) and only the dome
    is searched. ``image_size = (width, height)`` enables the ``touches_border`` check.
    """
    _check_side(side)
    points = np.asarray(points_xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"contour must be an (N, 2) array of (x, y) with N >= 3; got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("contour contains NaN or infinite coordinates")

    if corner_indices is None:
        return landmarks_from_outline(
            densify_polygon(points, DENSIFY_STEP_PX),
            side,
            image_size=image_size,
            plateau_tolerance_px=plateau_tolerance_px,
            anchor_height_fraction=anchor_height_fraction,
        )

    cp_index, cardio_index = corner_indices
    if not (0 <= cp_index < len(points) and 0 <= cardio_index < len(points)):
        raise ValueError(f"corner indices {corner_indices} are outside a contour of {len(points)} points")
    apex_index = int(np.argmin(points[:, 1]))
    path = path_avoiding(len(points), cp_index, cardio_index, apex_index)
    return dome_on_arc(points, path, image_size, plateau_tolerance_px)


def landmarks_from_outline(
    outline: np.ndarray,
    side: str,
    *,
    image_size: tuple[int, int] | None = None,
    plateau_tolerance_px: float = DEFAULT_PLATEAU_TOLERANCE_PX,
    anchor_height_fraction: float = DEFAULT_ANCHOR_HEIGHT_FRACTION,
) -> LungLandmarks:
    """Apply the corner and dome rule to a dense closed outline (N, 2) of (x, y) points."""
    _check_side(side)
    x, y = outline[:, 0], outline[:, 1]
    # +1 where lateral is towards larger x (patient-left lung, image right), -1 otherwise.
    lateral = -1.0 if side == "right" else 1.0

    cp_index = int(np.argmax(lateral * x + y))
    apex_index = int(np.argmin(y))

    y_top, y_bottom = float(y.min()), float(y.max())
    anchor_y = y_top + anchor_height_fraction * (y_bottom - y_top)
    in_band = np.abs(y - anchor_y) <= DEFAULT_ANCHOR_BAND_PX
    if not in_band.any():
        return failed("degenerate_arc")
    anchor_index = int(np.argmax(np.where(in_band, -lateral * x, -np.inf)))
    if apex_index in (cp_index, anchor_index) or cp_index == anchor_index:
        return failed("degenerate_arc")

    # Diaphragm plus heart border: the outline path cp -> anchor that does not pass the apex.
    path = path_avoiding(len(outline), cp_index, anchor_index, apex_index)
    path_points = outline[path]
    chord = path_points[-1] - path_points[0]
    chord_length = float(np.hypot(*chord))
    if chord_length < 1e-9:
        return failed("degenerate_arc")
    outward = np.array([chord[1], -chord[0]]) / chord_length
    if outward @ np.array([-lateral, 1.0]) < 0:
        outward = -outward
    beyond_chord = (path_points - path_points[0]) @ outward
    corner_position = int(np.argmax(beyond_chord))
    if beyond_chord[corner_position] <= 0:
        return failed("no_cardiophrenic_corner")

    return dome_on_arc(outline, path[: corner_position + 1], image_size, plateau_tolerance_px)


def dome_on_arc(
    points: np.ndarray,
    arc_indices: np.ndarray,
    image_size: tuple[int, int] | None,
    plateau_tolerance_px: float,
) -> LungLandmarks:
    """Find the dome on the arc ``points[arc_indices]``, which runs from cp to cardio."""
    arc = points[arc_indices]
    cp, cardio = arc[0], arc[-1]
    chord = cardio - cp
    chord_length = float(np.hypot(*chord))
    if len(arc) < 3 or chord_length < 2.0:
        return failed("degenerate_arc")

    if image_size is not None:
        width, height = image_size
        # Outline points of a lung touching the border lie on the image edge (-0.5 or size - 0.5).
        near_edge = (arc[:, 0] <= 0) | (arc[:, 0] >= width - 1) | (arc[:, 1] <= 0) | (arc[:, 1] >= height - 1)
        if near_edge.any():
            return failed("touches_border")

    up = np.array([chord[1], -chord[0]]) / chord_length
    if up[1] > 0:  # image y grows downwards, so "above" has a negative y component
        up = -up
    heights = (arc - cp) @ up
    top = int(np.argmax(heights))
    if heights[top] <= 0:
        return failed("no_point_above_chord")

    dome_position = _plateau_middle(heights, top, plateau_tolerance_px)
    dome = arc[dome_position]
    return LungLandmarks(
        dome=(float(dome[0]), float(dome[1])),
        cp=(float(cp[0]), float(cp[1])),
        cardio=(float(cardio[0]), float(cardio[1])),
        dome_height_px=float(heights[dome_position]),
    )


def _plateau_middle(heights: np.ndarray, top: int, tolerance: float) -> int:
    """Return the middle index of the contiguous run around ``top`` within ``tolerance`` of its height."""
    if tolerance <= 0:
        return top
    on_plateau = heights >= heights[top] - tolerance
    breaks_before = np.nonzero(~on_plateau[:top])[0]
    start = int(breaks_before[-1]) + 1 if len(breaks_before) else 0
    breaks_after = np.nonzero(~on_plateau[top:])[0]
    stop = top + int(breaks_after[0]) - 1 if len(breaks_after) else len(heights) - 1
    return (start + stop) // 2


def largest_region(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Return the largest 8-connected region as a hole-filled boolean crop and its (x0, y0) offset."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x0, y0, width, height = (int(v) for v in stats[label, :4])
    crop = components[y0:y0 + height, x0:x0 + width] == label
    return ndimage.binary_fill_holes(crop), (x0, y0)


def region_outline(crop: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """Trace the outer outline of a filled region as (N, 2) (x, y) image coordinates.

    The outline runs halfway between inside and outside pixel centres (marching squares at
    level 0.5), i.e. along pixel edges, which is where an expert contour rasterised into the
    mask lay. A region touching the crop edge gets outline points at -0.5 beyond it.
    """
    padded = np.pad(crop.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5, fully_connected="high")
    outer = max(contours, key=len)[:-1]  # closed: the last point repeats the first
    x0, y0 = offset
    # (row, col) in the padded crop -> (x, y) in the image.
    return np.column_stack([outer[:, 1] - 1 + x0, outer[:, 0] - 1 + y0])


def densify_polygon(points: np.ndarray, step: float) -> np.ndarray:
    """Resample a closed polygon so that neighbours are at most ``step`` apart; vertices are kept."""
    following = np.roll(points, -1, axis=0)
    lengths = np.hypot(*(following - points).T)
    pieces = np.maximum(1, np.ceil(lengths / step).astype(int))
    segment = np.repeat(np.arange(len(points)), pieces)
    first_of_segment = np.repeat(np.cumsum(pieces) - pieces, pieces)
    fraction = (np.arange(len(segment)) - first_of_segment) / pieces[segment]
    return points[segment] + (following[segment] - points[segment]) * fraction[:, None]


def path_avoiding(count: int, start: int, stop: int, avoid: int) -> np.ndarray:
    """Return the indices from ``start`` to ``stop`` along a closed outline, going the way that skips ``avoid``."""
    forward = np.arange(start, start + (stop - start) % count + 1) % count
    if avoid not in forward:
        return forward
    return np.arange(start, start - (start - stop) % count - 1, -1) % count


def landmarks_to_row(result: dict[str, LungLandmarks]) -> dict[str, float | str]:
    """Flatten ``derive_landmarks`` output into ``right_dome_x`` ... columns plus ``<side>_failure``."""
    row: dict[str, float | str] = {}
    for side in SIDES:
        lung = result[side]
        for name in POINT_NAMES:
            x, y = getattr(lung, name)
            row[f"{side}_{name}_x"] = x
            row[f"{side}_{name}_y"] = y
        row[f"{side}_dome_height_px"] = lung.dome_height_px
        row[f"{side}_failure"] = lung.failure
    return row


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'right' or 'left' (the patient's side); got {side!r}")
