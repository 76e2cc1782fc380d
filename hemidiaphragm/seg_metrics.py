"""Overlap and surface-distance metrics for one predicted mask against its truth.

Empty cases are defined so that the mean over images stays meaningful: when both masks
are empty every overlap score is 1 and the Hausdorff distance is 0; when exactly one is
empty every overlap score is 0 and the Hausdorff distance is NaN (no surface to measure),
which summaries skip and count.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Dice, IoU, precision and recall of two binary masks of equal shape."""
    predicted = predicted.astype(bool)
    truth = truth.astype(bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    true_positive = int(np.count_nonzero(predicted & truth))
    predicted_count = int(np.count_nonzero(predicted))
    truth_count = int(np.count_nonzero(truth))
    if predicted_count == 0 and truth_count == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    union = predicted_count + truth_count - true_positive
    return {
        "dice": 2 * true_positive / (predicted_count + truth_count),
        "iou": true_positive / union,
        "precision": true_positive / predicted_count if predicted_count else 0.0,
        "recall": true_positive / truth_count if truth_count else 0.0,
    }


def _surface(binary: np.ndarray) -> np.ndarray:
    """Boundary pixels: mask pixels with a 4-connected neighbour outside the mask."""
    eroded = cv2.erode(binary.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    return binary & ~eroded.astype(bool)


def hausdorff95(predicted: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> float:
    """95th percentile of the symmetric boundary-to-boundary distances, in ``spacing`` units.

    Distances from each boundary pixel of one mask to the nearest boundary pixel of the
    other are pooled over both directions before taking the percentile.
    """
    predicted = predicted.astype(bool)
    truth = truth.astype(bool)
    if not predicted.any() and not truth.any():
        return 0.0
    if not predicted.any() or not truth.any():
        return float("nan")
    predicted_surface = _surface(predicted)
    truth_surface = _surface(truth)
    distance_to_truth = ndimage.distance_transform_edt(~truth_surface)
    distance_to_predicted = ndimage.distance_transform_edt(~predicted_surface)
    distances = np.concatenate([distance_to_truth[predicted_surface], distance_to_predicted[truth_surface]])
    return float(np.percentile(distances, 95) * spacing)


def lung_scores(predicted_labels: np.ndarray, truth_labels: np.ndarray, spacing: float = 1.0) -> dict:
    """Scores per lung (``right_``, ``left_``) and for both lungs together (``both_``)."""
    from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG

    record = {}
    for prefix, predicted, truth in (
        ("right", predicted_labels == RIGHT_LUNG, truth_labels == RIGHT_LUNG),
        ("left", predicted_labels == LEFT_LUNG, truth_labels == LEFT_LUNG),
        ("both", predicted_labels > 0, truth_labels > 0),
    ):
        for name, value in overlap_scores(predicted, truth).items():
            record[f"{prefix}_{name}"] = value
        record[f"{prefix}_hd95"] = hausdorff95(predicted, truth, spacing)
    return record
