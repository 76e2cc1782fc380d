"""Dome, costophrenic angle and cardiophrenic corner derived from masks and contours."""

import time

import cv2
import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.datasets import MaskEncoding
from hemidiaphragm.landmarks import (
    LANDMARK_COLUMNS,
    SCR_CORNER_INDICES,
    densify_polygon,
    derive_landmarks,
    derive_landmarks_from_contour,
    landmarks_to_row,
    path_avoiding,
)

WIDTH, HEIGHT = 200, 200

# Patient-right lung (image left), clockwise from the apex. By construction the costophrenic
# angle is (25, 165) (maximum of y - x), the cardiophrenic corner is (95, 150) and the dome is
# (60, 130), far above the chord joining the two corners.
RIGHT_LUNG = np.array([(60, 20), (85, 30), (90, 100), (95, 150), (60, 130), (25, 165), (20, 80)], float)
EXPECTED_RIGHT = {"cp": (25, 165), "cardio": (95, 150), "dome": (60, 130)}


def mirror(points: np.ndarray) -> np.ndarray:
    """Mirror (x, y) points about the image's centre column, turning a right lung into a left one."""
    mirrored = points.copy()
    mirrored[:, 0] = WIDTH - 1 - mirrored[:, 0]
    return mirrored[::-1]


def expected_left() -> dict:
    return {name: (WIDTH - 1 - x, y) for name, (x, y) in EXPECTED_RIGHT.items()}


def draw_labels(right=RIGHT_LUNG, left=None) -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    if right is not None:
        cv2.fillPoly(labels, [np.round(right).astype(np.int32)], 1)
    left = mirror(RIGHT_LUNG) if left is None else left
    if left is not False:
        cv2.fillPoly(labels, [np.round(left).astype(np.int32)], 2)
    return labels


def distance(point, expected) -> float:
    return float(np.hypot(point[0] - expected[0], point[1] - expected[1]))


def test_contour_gives_exact_vertices():
    result = derive_landmarks_from_contour(RIGHT_LUNG, "right", image_size=(WIDTH, HEIGHT), plateau_tolerance_px=0)
    assert result.failure == ""
    for name, expected in EXPECTED_RIGHT.items():
        assert distance(getattr(result, name), expected) < 1e-9, name


def test_contour_left_lung_mirrors_right():
    result = derive_landmarks_from_contour(mirror(RIGHT_LUNG), "left", image_size=(WIDTH, HEIGHT),
                                           plateau_tolerance_px=0)
    for name, expected in expected_left().items():
        assert distance(getattr(result, name), expected) < 1e-9, name


def test_contour_dome_height_hand_computed():
    # Chord (25, 165) -> (95, 150); the dome (60, 130) lies |(70, -15) x (35, -35)| / |(70, -15)|
    # = |70 * -35 - (-15) * 35| / sqrt(70**2 + 15**2) = 1925 / 71.589 above it.
    result = derive_landmarks_from_contour(RIGHT_LUNG, "right", plateau_tolerance_px=0)
    assert result.dome_height_px == pytest.approx(1925 / np.hypot(70, 15))


def test_contour_orientation_does_not_matter():
    result = derive_landmarks_from_contour(RIGHT_LUNG[::-1], "right", plateau_tolerance_px=0)
    assert distance(result.dome, EXPECTED_RIGHT["dome"]) < 1e-9
    assert distance(result.cardio, EXPECTED_RIGHT["cardio"]) < 1e-9


def test_mask_points_near_polygon_vertices():
    result = derive_landmarks(draw_labels())
    for side, expected in (("right", EXPECTED_RIGHT), ("left", expected_left())):
        assert result[side].failure == "", side
        for name, point in expected.items():
            # The mask outline runs along pixel edges, within about a pixel of the polygon corners.
            assert distance(getattr(result[side], name), point) < 1.5, (side, name)


def test_mask_non_square_image():
    labels = np.zeros((HEIGHT, 300), np.uint8)
    cv2.fillPoly(labels, [RIGHT_LUNG.astype(np.int32) + [30, 0]], 1)
    cv2.fillPoly(labels, [mirror(RIGHT_LUNG).astype(np.int32) + [70, 0]], 2)
    result = derive_landmarks(labels)
    assert distance(result["right"].dome, (90, 130)) < 1.5
    assert distance(result["left"].dome, (WIDTH - 1 - 60 + 70, 130)) < 1.5


def test_missing_lung_flagged():
    result = derive_landmarks(draw_labels(right=None))
    assert result["right"].failure == "missing_lung"
    assert np.isnan(result["right"].dome).all()
    assert result["left"].failure == ""


def test_lung_touching_border_flagged():
    shifted = RIGHT_LUNG - [25, 0]  # the costophrenic angle now lies in column 0
    result = derive_landmarks(draw_labels(right=shifted))
    assert result["right"].failure == "touches_border"
    assert np.isnan(result["right"].cp).all()


def test_merged_mask_flags_both_sides():
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[40:170, 20:180] = 1  # one region over both halves, read as the right lung
    result = derive_landmarks(labels)
    assert result["right"].failure == "merged_mask"
    assert result["left"].failure == "merged_mask"


def test_tiny_lung_flagged():
    labels = draw_labels(right=None)
    labels[100:104, 50:54] = 1
    assert derive_landmarks(labels)["right"].failure == "lung_too_small"


def test_straight_arc_has_no_point_above_chord():
    # Corners at vertices 3 and 5 joined through vertex 4, which lies on the chord.
    contour = np.array([(60, 20), (85, 30), (90, 100), (95, 150), (60, 157.5), (25, 165), (20, 80)], float)
    result = derive_landmarks_from_contour(contour, "right", corner_indices=(5, 3), plateau_tolerance_px=0)
    assert result.failure == "no_point_above_chord"


def test_corner_indices_used():
    # Corners given by index are used even where the geometric rule would pick other points:
    # here the costophrenic angle is moved 3 px up the lateral border.
    dense = densify_polygon(RIGHT_LUNG, 1.0)
    geometric_cp = int(np.argmax(dense[:, 1] - dense[:, 0]))
    lateral_neighbours = [index % len(dense) for index in (geometric_cp - 3, geometric_cp + 3)]
    cp_index = min(lateral_neighbours, key=lambda index: dense[index, 0])
    cardio_index = int(np.argmin(np.hypot(*(dense - EXPECTED_RIGHT["cardio"]).T)))
    result = derive_landmarks_from_contour(dense, "right", corner_indices=(cp_index, cardio_index))
    assert result.cp == tuple(dense[cp_index])
    assert result.cardio == tuple(dense[cardio_index])


def test_scr_indices_fit_scr_point_counts():
    assert SCR_CORNER_INDICES == {"right": (21, 29), "left": (21, 27)}


def test_plateau_middle_chosen():
    # A flat top from x = 40 to x = 80 at height 30 above a horizontal chord: the middle wins.
    contour = np.array([(0, 0), (60, -20), (120, 0), (120, 100), (80, 70), (40, 70), (0, 100)], float)
    dense = densify_polygon(contour, 0.25)
    result = derive_landmarks_from_contour(dense, "right", corner_indices=(int(np.argmax(dense[:, 1] - dense[:, 0])),
                                                                          int(np.argmax(dense[:, 1] + dense[:, 0]))),
                                           plateau_tolerance_px=1.0)
    assert result.dome == pytest.approx((60.0, 70.0), abs=0.3)


def test_densify_keeps_vertices():
    square = np.array([(0, 0), (2, 0), (2, 2), (0, 2)], float)
    dense = densify_polygon(square, 0.5)
    assert len(dense) == 16
    for vertex in square:
        assert np.isclose(dense, vertex).all(axis=1).any()


def test_path_avoiding_goes_the_other_way():
    assert path_avoiding(6, 1, 3, avoid=5).tolist() == [1, 2, 3]
    assert path_avoiding(6, 1, 3, avoid=2).tolist() == [1, 0, 5, 4, 3]


def test_row_has_all_columns():
    row = landmarks_to_row(derive_landmarks(draw_labels(right=None)))
    for column in LANDMARK_COLUMNS:
        assert column in row
    assert row["right_failure"] == "missing_lung"
    assert row["left_failure"] == ""


def test_rejects_3d_labels():
    with pytest.raises(ValueError, match="2-D"):
        derive_landmarks(np.zeros((2, 4, 4), np.uint8))


def test_jsrt224_domes_match_reference(shared_data):
    """Domes from the ground-truth masks agree with landmarks.csv (measured: medians 2.69 / 1.77 px)."""
    root = shared_data / "jsrt224"
    reference = pd.read_csv(root / "landmarks.csv").set_index("image_id")
    encoding = MaskEncoding.parse("labels:150,200")
    distances = {"right": [], "left": []}
    seconds = []
    for image_id, row in reference.iterrows():
        labels = encoding.read(root / "masks" / f"{image_id}.png")
        start = time.perf_counter()
        result = derive_landmarks(labels)
        seconds.append(time.perf_counter() - start)
        for side in distances:
            if result[side].ok:
                distances[side].append(distance(result[side].dome, (row[f"{side}_dome_x"], row[f"{side}_dome_y"])))
    for side, values in distances.items():
        assert len(values) >= 245, side  # one right lung (JPCLN089) is cut by the image border
        assert np.median(values) < 3.5, side
        assert np.percentile(values, 95) < 8.0, side
    assert np.median(seconds) < 0.2
