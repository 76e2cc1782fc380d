"""Segmentation metrics on hand-computed masks, including the empty cases."""

import math

import numpy as np
import pytest

from hemidiaphragm.postprocess import parse_steps, postprocess
from hemidiaphragm.seg_metrics import hausdorff95, lung_scores, overlap_scores
from hemidiaphragm.stats import bootstrap_ci, summarise


def test_overlap_scores_hand_computed():
    truth = np.zeros((4, 4), bool)
    truth[0, :3] = True  # 3 pixels
    predicted = np.zeros((4, 4), bool)
    predicted[0, 1:4] = True  # 3 pixels, 2 shared
    scores = overlap_scores(predicted, truth)
    assert scores["dice"] == pytest.approx(2 / 3)
    assert scores["iou"] == pytest.approx(2 / 4)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)


def test_overlap_both_empty_is_perfect():
    empty = np.zeros((5, 5), bool)
    assert overlap_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    assert hausdorff95(empty, empty) == 0.0


def test_overlap_prediction_on_empty_truth_scores_zero():
    predicted = np.zeros((5, 5), bool)
    predicted[2, 2] = True
    scores = overlap_scores(predicted, np.zeros((5, 5), bool))
    assert scores["dice"] == 0.0
    assert scores["precision"] == 0.0
    assert math.isnan(hausdorff95(predicted, np.zeros((5, 5), bool)))


def test_hausdorff_of_shifted_square():
    truth = np.zeros((30, 30), bool)
    truth[10:20, 10:20] = True
    predicted = np.roll(truth, 3, axis=1)
    # Every boundary pixel of the shifted square is at most 3 px from the other boundary.
    assert hausdorff95(predicted, truth) == pytest.approx(3.0)
    assert hausdorff95(truth, truth) == 0.0


def test_lung_scores_per_lung_and_both():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:8, 1:4] = 1
    truth[2:8, 6:9] = 2
    predicted = truth.copy()
    predicted[2:8, 6:9] = 0  # left lung missed entirely
    record = lung_scores(predicted, truth)
    assert record["right_dice"] == 1.0
    assert record["left_dice"] == 0.0
    assert record["both_dice"] == pytest.approx(2 * 18 / (18 + 36))


def test_postprocess_largest_and_fill():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 2:8] = 1
    labels[5, 5] = 0  # a hole
    labels[17, 1] = 1  # a stray island
    out = postprocess(labels, parse_steps("largest,fill"))
    assert out[5, 5] == 1
    assert out[17, 1] == 0


def test_postprocess_keeps_other_lung_pixels():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:18, 2:6] = 1
    labels[2:18, 8:12] = 1
    labels[9:11, 6:8] = 2  # left-lung pixels between the right lung's halves
    out = postprocess(labels, ("hull",))
    assert (out[9:11, 6:8] == 2).all()


def test_parse_steps_rejects_unknown():
    with pytest.raises(ValueError, match="unknown post-processing"):
        parse_steps("largest,smooth")


def test_summarise_and_bootstrap():
    values = [1.0, 2.0, 3.0, 4.0, float("nan")]
    stats = summarise(values, resamples=500)
    assert stats["n"] == 4
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["median"] == pytest.approx(2.5)
    assert stats["ci95_low"] <= 2.5 <= stats["ci95_high"]
    low, high = bootstrap_ci([7.0])
    assert math.isnan(low)
    assert math.isnan(high)


def test_parse_steps_rejects_none_with_steps():
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        parse_steps("none,largest")


def test_parse_steps_rejects_a_repeated_step():
    with pytest.raises(ValueError, match="largest more than once"):
        parse_steps("largest,fill,largest")
