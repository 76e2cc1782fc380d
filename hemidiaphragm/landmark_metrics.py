"""Errors of predicted hemidiaphragm dome points against reference points.

Every error starts as the radial (Euclidean) distance in original pixels and is reported
in four units:

- ``px``: original pixels;
- ``512``: pixels of a 512-pixel frame, the error times 512 / max(width, height), so that
  images of different sizes compare (for 224-pixel images one pixel is 2.29 frame pixels);
- ``pct_width``: percent of the image width;
- ``mm``: millimetres, where the pixel spacing is known (NaN otherwise).

The hemidiaphragm error rate of an image is (right error + left error) / width * 100, in
percent. The summary reports its mean over images.

The dome height difference is right-minus-left dome height in pixels with height measured
upwards, ``left_y - right_y`` because y grows downwards: positive when the right dome is
higher. The higher side is called correctly when the predicted and reference differences
have the same sign.

Images whose prediction is missing (NaN point, for example a failed geometric baseline) are
left out of the error statistics, counted as ``failed``, and count as misses for PCK and
for the higher-side rate.

Confidence intervals are 95% percentile bootstrap intervals over images: images are
resampled with replacement and both landmarks of an image stay together.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from hemidiaphragm.heatmaps import LANDMARKS

FRAME_SIZE = 512
PCK_THRESHOLDS_512 = (5.0, 10.0, 20.0)
PCK_THRESHOLDS_MM = (2.5, 5.0, 10.0)
UNITS = ("px", "512", "pct_width", "mm")
SIDES = tuple(name.split("_")[0] for name in LANDMARKS)  # ("right", "left")


def radial_errors(predicted_xy: np.ndarray, reference_xy: np.ndarray) -> np.ndarray:
    """Return (N, K) Euclidean distances between (N, K, 2) point arrays, NaN where either is NaN."""
    predicted = np.asarray(predicted_xy, dtype=np.float64)
    reference = np.asarray(reference_xy, dtype=np.float64)
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted points {predicted.shape} and reference points {reference.shape} differ in shape")
    return np.linalg.norm(predicted - reference, axis=-1)


def frame_scale(widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Return (N,) factors from original pixels to the 512-pixel frame."""
    return FRAME_SIZE / np.maximum(np.asarray(widths, dtype=np.float64), np.asarray(heights, dtype=np.float64))


def errors_in_units(errors_px: np.ndarray, widths, heights, spacing_mm) -> dict[str, np.ndarray]:
    """Convert (N, K) pixel errors into every unit of ``UNITS``."""
    widths = np.asarray(widths, dtype=np.float64)[:, None]
    spacing = np.asarray(spacing_mm, dtype=np.float64)[:, None]
    return {
        "px": errors_px,
        "512": errors_px * frame_scale(widths[:, 0], heights)[:, None],
        "pct_width": errors_px / widths * 100,
        "mm": errors_px * spacing,
    }


def error_rate_percent(errors_px: np.ndarray, widths) -> np.ndarray:
    """Return the per-image hemidiaphragm error rate, sum of the K errors over width, in percent."""
    return errors_px.sum(axis=1) / np.asarray(widths, dtype=np.float64) * 100


def dome_height_difference(points_xy: np.ndarray) -> np.ndarray:
    """Return (N,) right-minus-left dome heights in pixels (positive: right dome higher)."""
    points = np.asarray(points_xy, dtype=np.float64)
    return points[:, 1, 1] - points[:, 0, 1]


def higher_side_correct(predicted_difference: np.ndarray, reference_difference: np.ndarray) -> np.ndarray:
    """Return 1.0 where the signs agree, 0.0 where not or where the prediction is missing."""
    agree = np.sign(predicted_difference) == np.sign(reference_difference)
    return np.where(np.isfinite(predicted_difference), agree.astype(np.float64), 0.0)


def describe(values: np.ndarray) -> dict[str, float]:
    """Return count, mean, standard deviation, median, 95th percentile and maximum of the finite values."""
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {"n": 0, "mean": np.nan, "std": np.nan, "median": np.nan, "p95": np.nan, "max": np.nan}
    return {
        "n": int(finite.size),
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "p95": float(np.percentile(finite, 95)),
        "max": float(finite.max()),
    }


def bootstrap_interval(
    per_image: np.ndarray, statistic: Callable[[np.ndarray], float], indices: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resampled images.

    Args:
        per_image: array whose first axis is the image.
        statistic: maps a resampled array (same layout) to a number; NaN results are ignored.
        indices: (R, N) resampled image indices, shared by all metrics of one method.
    """
    estimates = np.array([statistic(per_image[row]) for row in indices], dtype=np.float64)
    estimates = estimates[np.isfinite(estimates)]
    if estimates.size < 2:
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def nan_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def hit_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of entries within ``threshold``; NaN errors (failed predictions) are misses."""
    return float(np.mean(np.where(np.isfinite(errors), errors <= threshold, False))) if errors.size else np.nan


def per_image_table(
    image_ids, predicted_xy: np.ndarray, reference_xy: np.ndarray, widths, heights, spacing_mm
) -> pd.DataFrame:
    """Return one row per image with every error, the error rate and the dome height difference."""
    errors = radial_errors(predicted_xy, reference_xy)
    table = {"image_id": list(image_ids)}
    for unit, values in errors_in_units(errors, widths, heights, spacing_mm).items():
        for k, side in enumerate(SIDES):
            table[f"{side}_error_{unit}"] = values[:, k]
    table["error_rate_percent"] = error_rate_percent(errors, widths)
    predicted_difference = dome_height_difference(predicted_xy)
    reference_difference = dome_height_difference(reference_xy)
    table["height_difference_reference_px"] = reference_difference
    table["height_difference_predicted_px"] = predicted_difference
    table["height_difference_error_px"] = predicted_difference - reference_difference
    table["higher_side_correct"] = higher_side_correct(predicted_difference, reference_difference)
    return pd.DataFrame(table)


def summarise_method(
    per_image: pd.DataFrame, widths, heights, spacing_mm, resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Summarise a :func:`per_image_table` into long rows (landmark, metric, value, ci95_low, ci95_high).

    ``landmark`` is ``right``, ``left``, ``both`` (errors of both domes pooled) or ``image``
    (per-image quantities: error rate, height difference, higher side).
    """
    count = len(per_image)
    indices = np.random.default_rng(seed).integers(0, count, size=(resamples, count)) if count else np.zeros((0, 0))
    rows = []

    def add(landmark: str, metric: str, value: float, values: np.ndarray | None = None, statistic=None) -> None:
        low, high = (np.nan, np.nan)
        if statistic is not None and count >= 2:
            low, high = bootstrap_interval(values, statistic, indices)
        rows.append({"landmark": landmark, "metric": metric, "value": value, "ci95_low": low, "ci95_high": high})

    scale = frame_scale(widths, heights)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    for unit in UNITS:
        per_side = per_image[[f"{side}_error_{unit}" for side in SIDES]].to_numpy(dtype=np.float64)
        for name, values in [(side, per_side[:, [k]]) for k, side in enumerate(SIDES)] + [("both", per_side)]:
            stats = describe(values)
            add(name, f"mean_error_{unit}", stats["mean"], values, nan_mean)
            for key in ("std", "median", "p95", "max"):
                add(name, f"{key}_error_{unit}", stats[key])
            if unit == "px":
                add(name, "n", stats["n"])
                add(name, "failed", int(np.sum(~np.isfinite(values))))
            if unit == "512":
                for threshold in PCK_THRESHOLDS_512:
                    add(name, f"pck_512_{threshold:g}", hit_rate(values, threshold), values,
                        lambda v, t=threshold: hit_rate(v, t))
            if unit == "mm" and np.isfinite(spacing).any():
                for threshold in PCK_THRESHOLDS_MM:
                    add(name, f"pck_mm_{threshold:g}", hit_rate(values, threshold), values,
                        lambda v, t=threshold: hit_rate(v, t))

    rates = per_image["error_rate_percent"].to_numpy(dtype=np.float64)
    stats = describe(rates)
    add("image", "error_rate_percent", stats["mean"], rates, nan_mean)
    for key in ("std", "median", "p95", "max"):
        add("image", f"{key}_error_rate_percent", stats[key])

    difference_px = per_image["height_difference_error_px"].to_numpy(dtype=np.float64)
    for unit, factor in (("px", 1.0), ("512", scale), ("mm", spacing)):
        absolute = np.abs(difference_px) * factor
        if unit == "mm" and not np.isfinite(spacing).any():
            continue
        add("image", f"height_difference_mae_{unit}", nan_mean(absolute), absolute, nan_mean)
        add("image", f"height_difference_bias_{unit}", nan_mean(difference_px * factor))
    correct = per_image["higher_side_correct"].to_numpy(dtype=np.float64)
    add("image", "higher_side_accuracy", float(correct.mean()) if count else np.nan, correct, np.mean)
    return pd.DataFrame(rows)
