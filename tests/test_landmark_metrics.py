"""Landmark error metrics on hand-computed points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.landmark_metrics import (
    describe,
    dome_height_difference,
    error_rate_percent,
    errors_in_units,
    frame_scale,
    higher_side_correct,
    hit_rate,
    per_image_table,
    radial_errors,
    summarise_method,
)

# Two images; rows are (right dome, left dome) as (x, y).
REFERENCE = np.array([
    [[50.0, 100.0], [150.0, 110.0]],
    [[60.0, 120.0], [160.0, 100.0]],
])
PREDICTED = np.array([
    [[53.0, 104.0], [150.0, 110.0]],  # right error 5 (3-4-5), left 0
    [[60.0, 126.0], [168.0, 100.0]],  # right error 6, left error 8
])
WIDTHS = np.array([200, 256])
HEIGHTS = np.array([200, 128])
SPACING = np.array([0.5, np.nan])


def test_radial_errors_hand_computed():
    errors = radial_errors(PREDICTED, REFERENCE)
    assert errors.tolist() == [[5.0, 0.0], [6.0, 8.0]]


def test_radial_errors_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        radial_errors(PREDICTED[:, :1], REFERENCE)


def test_frame_scale_uses_longer_side():
    assert frame_scale(WIDTHS, HEIGHTS).tolist() == [2.56, 2.0]


def test_errors_in_units():
    units = errors_in_units(radial_errors(PREDICTED, REFERENCE), WIDTHS, HEIGHTS, SPACING)
    assert units["512"][0].tolist() == pytest.approx([12.8, 0.0])
    assert units["512"][1].tolist() == pytest.approx([12.0, 16.0])
    assert units["pct_width"][0, 0] == pytest.approx(2.5)
    assert units["pct_width"][1, 1] == pytest.approx(8 / 256 * 100)
    assert units["mm"][0].tolist() == pytest.approx([2.5, 0.0])
    assert np.isnan(units["mm"][1]).all()


def test_error_rate_percent():
    rates = error_rate_percent(radial_errors(PREDICTED, REFERENCE), WIDTHS)
    assert rates[0] == pytest.approx(2.5)  # (5 + 0) / 200 * 100
    assert rates[1] == pytest.approx(14 / 256 * 100)


def test_dome_height_difference_sign():
    # Right dome at y=100 sits above the left at y=110: right is higher by 10 pixels.
    assert dome_height_difference(REFERENCE).tolist() == [10.0, -20.0]
    assert dome_height_difference(PREDICTED).tolist() == [6.0, -26.0]


def test_higher_side_correct_and_missing():
    result = higher_side_correct(np.array([3.0, -1.0, np.nan, 2.0]), np.array([1.0, 4.0, 1.0, 2.0]))
    assert result.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_hit_rate_counts_nan_as_miss():
    assert hit_rate(np.array([1.0, 5.0, 6.0, np.nan]), 5.0) == pytest.approx(0.5)


def test_describe_hand_computed():
    stats = describe(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert stats["n"] == 4
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(np.sqrt(5 / 3))
    assert stats["median"] == pytest.approx(2.5)
    assert stats["p95"] == pytest.approx(3.85)
    assert stats["max"] == 4.0


def test_describe_empty():
    stats = describe(np.array([np.nan]))
    assert stats["n"] == 0
    assert np.isnan(stats["mean"])


def lookup(summary: pd.DataFrame, landmark: str, metric: str) -> pd.Series:
    return summary[(summary["landmark"] == landmark) & (summary["metric"] == metric)].iloc[0]


def test_per_image_table_columns():
    table = per_image_table(["a", "b"], PREDICTED, REFERENCE, WIDTHS, HEIGHTS, SPACING)
    assert table["right_error_px"].tolist() == [5.0, 6.0]
    assert table["height_difference_error_px"].tolist() == [-4.0, -6.0]
    assert table["higher_side_correct"].tolist() == [1.0, 1.0]
    assert table["error_rate_percent"].iloc[0] == pytest.approx(2.5)


def test_summary_hand_computed():
    table = per_image_table(["a", "b"], PREDICTED, REFERENCE, WIDTHS, HEIGHTS, SPACING)
    summary = summarise_method(table, WIDTHS, HEIGHTS, SPACING, resamples=200, seed=1)
    assert lookup(summary, "both", "mean_error_px")["value"] == pytest.approx(19 / 4)
    assert lookup(summary, "right", "mean_error_px")["value"] == pytest.approx(5.5)
    assert lookup(summary, "left", "max_error_px")["value"] == pytest.approx(8.0)
    assert lookup(summary, "image", "error_rate_percent")["value"] == pytest.approx((2.5 + 1400 / 256) / 2)
    # The 512-frame errors are 12.8, 0, 12 and 16: one of four within 5, all four within 20.
    assert lookup(summary, "both", "pck_512_5")["value"] == pytest.approx(0.25)
    assert lookup(summary, "both", "pck_512_20")["value"] == pytest.approx(1.0)
    # Only the first image has a spacing: errors 2.5 and 0 mm, and the NaN ones count as misses.
    assert lookup(summary, "both", "pck_mm_2.5")["value"] == pytest.approx(0.5)
    assert lookup(summary, "image", "height_difference_mae_px")["value"] == pytest.approx(5.0)
    assert lookup(summary, "image", "higher_side_accuracy")["value"] == pytest.approx(1.0)
    assert lookup(summary, "both", "failed")["value"] == 0


def test_summary_interval_brackets_mean():
    rng = np.random.default_rng(0)
    reference = rng.uniform(20, 180, size=(30, 2, 2))
    predicted = reference + rng.normal(0, 2, size=reference.shape)
    widths, heights, spacing = np.full(30, 200), np.full(30, 200), np.full(30, np.nan)
    table = per_image_table([str(i) for i in range(30)], predicted, reference, widths, heights, spacing)
    row = lookup(summarise_method(table, widths, heights, spacing, resamples=500), "both", "mean_error_px")
    assert row["ci95_low"] < row["value"] < row["ci95_high"]


def test_summary_counts_failed_points():
    predicted = PREDICTED.copy()
    predicted[1, 0] = np.nan
    table = per_image_table(["a", "b"], predicted, REFERENCE, WIDTHS, HEIGHTS, SPACING)
    summary = summarise_method(table, WIDTHS, HEIGHTS, SPACING, resamples=100)
    assert lookup(summary, "both", "failed")["value"] == 1
    assert lookup(summary, "both", "n")["value"] == 3
    assert lookup(summary, "both", "mean_error_px")["value"] == pytest.approx(13 / 3)
    assert lookup(summary, "image", "higher_side_accuracy")["value"] == pytest.approx(0.5)
