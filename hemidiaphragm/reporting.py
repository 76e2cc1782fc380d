"""Result tables for report.md and the cross-validation tables, built from the stage outputs.

Every builder takes the long summary files the evaluation scripts write and returns a
pandas DataFrame of display strings, one column per reported quantity, with the unit in
the column name:

- segmentation: ``segmentation_test/evaluate.py``'s summary.csv (variant, region, metric,
  n, mean, std, median, p95, max, ci95_low, ci95_high);
- landmarks: ``heatmap_test/evaluate.py``'s summary.csv (input, method, landmark, metric,
  value, ci95_low, ci95_high), metric names as in ``hemidiaphragm.landmark_metrics``.

An optional ``folds`` frame (the same columns plus ``fold``, one summary per fold) adds a
"mean ± std over folds" column for the headline metric of each table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SEGMENTATION_LUNGS = ("right", "left", "both")
DOMES = ("right", "left", "both")
PCK_THRESHOLDS_512 = ("5", "10", "20")
PCK_THRESHOLDS_MM = ("2.5", "5", "10")


class ResultsMissing(LookupError):
    """A summary file lacks a row that a table needs."""


def is_finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value, digits: int = 2) -> str:
    """Format a number with fixed decimals; a missing or non-finite value becomes 'n/a'."""
    return f"{float(value):.{digits}f}" if is_finite(value) else "n/a"


def format_interval(value, low, high, digits: int = 2) -> str:
    """Format ``value [low, high]``, or only the value when a bound is missing."""
    text = format_number(value, digits)
    if is_finite(low) and is_finite(high):
        text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return text


def format_spread(values, digits: int = 2) -> str:
    """Format ``mean ± std (k folds)`` of the finite per-fold values."""
    finite = np.asarray([float(v) for v in values if is_finite(v)], dtype=np.float64)
    if finite.size == 0:
        return "n/a"
    if finite.size == 1:
        # One fold has no spread; a printed 0.00 would read as a measured standard deviation.
        return f"{finite[0]:.{digits}f} (1 fold, no spread)"
    return f"{finite.mean():.{digits}f} ± {finite.std(ddof=1):.{digits}f} ({finite.size} folds)"


def markdown_table(frame: pd.DataFrame) -> str:
    """Render a frame of strings as a GitHub markdown table (pipes in cells are escaped)."""
    if frame.empty:
        raise ResultsMissing("cannot render an empty table")

    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(name) for name in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Lung segmentation.


def segmentation_row(summary: pd.DataFrame, variant: str, region: str, metric: str) -> pd.Series:
    match = summary[(summary["variant"] == variant) & (summary["region"] == region) & (summary["metric"] == metric)]
    if match.empty:
        raise ResultsMissing(f"segmentation summary has no row for variant {variant!r}, {region} lung, {metric}")
    return match.iloc[0]


def segmentation_table(summary: pd.DataFrame, folds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Dice and IoU per lung and post-processing variant, with 95% bootstrap intervals."""
    rows = []
    for variant in dict.fromkeys(summary["variant"]):
        for region in SEGMENTATION_LUNGS:
            dice = segmentation_row(summary, variant, region, "dice")
            iou = segmentation_row(summary, variant, region, "iou")
            row = {
                "post-processing": variant,
                "lung": region,
                "Dice mean [95% CI]": format_interval(dice["mean"], dice["ci95_low"], dice["ci95_high"], 4),
                "Dice std": format_number(dice["std"], 4),
                "IoU mean [95% CI]": format_interval(iou["mean"], iou["ci95_low"], iou["ci95_high"], 4),
            }
            hd95 = summary[(summary["variant"] == variant) & (summary["region"] == region)
                           & (summary["metric"] == "hd95")]
            if not hd95.empty:
                row["HD95 px, mean"] = format_number(hd95.iloc[0]["mean"], 2)
            row["images"] = str(int(dice["n"]))
            if folds is not None:
                per_fold = folds[(folds["variant"] == variant) & (folds["region"] == region)
                                 & (folds["metric"] == "dice")]["mean"]
                row["Dice over folds, mean ± std"] = format_spread(per_fold, 4)
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Dome localisation.


def landmark_value(summary: pd.DataFrame, key: tuple[str, str], landmark: str, metric: str) -> pd.Series | None:
    label, method = key
    match = summary[(summary["input"] == label) & (summary["method"] == method)
                    & (summary["landmark"] == landmark) & (summary["metric"] == metric)]
    return None if match.empty else match.iloc[0]


def required_value(summary: pd.DataFrame, key: tuple[str, str], landmark: str, metric: str) -> pd.Series:
    row = landmark_value(summary, key, landmark, metric)
    if row is None:
        raise ResultsMissing(f"landmark summary has no {metric} for input {key[0]!r}, method {key[1]!r}, {landmark}")
    return row


def method_keys(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Return the (input, method) pairs in the order the summary lists them."""
    return list(dict.fromkeys(zip(summary["input"], summary["method"])))


def has_mm(summary: pd.DataFrame) -> bool:
    """Return whether any millimetre error is finite (a pixel spacing was known)."""
    rows = summary[summary["metric"] == "mean_error_mm"]
    return bool(pd.to_numeric(rows["value"], errors="coerce").notna().any())


def fold_values(folds: pd.DataFrame | None, key: tuple[str, str], landmark: str, metric: str) -> list:
    if folds is None:
        return []
    match = folds[(folds["input"] == key[0]) & (folds["method"] == key[1])
                  & (folds["landmark"] == landmark) & (folds["metric"] == metric)]
    return match["value"].tolist()


def interval_cell(summary: pd.DataFrame, key: tuple[str, str], landmark: str, metric: str, digits: int = 2,
                  scale: float = 1.0) -> str:
    """Format one summary row as ``value [ci95_low, ci95_high]``, each times ``scale``."""
    row = required_value(summary, key, landmark, metric)
    return format_interval(row["value"] * scale, row["ci95_low"] * scale, row["ci95_high"] * scale, digits)


def value_cell(summary: pd.DataFrame, key: tuple[str, str], landmark: str, metric: str, digits: int = 2) -> str:
    return format_number(required_value(summary, key, landmark, metric)["value"], digits)


def landmark_error_table(summary: pd.DataFrame, folds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Radial dome errors per input, method and dome: mean with 95% CI, median, p95, PCK."""
    with_mm = has_mm(summary)
    rows = []
    for key in method_keys(summary):
        for dome in DOMES:
            row = {
                "input": key[0],
                "method": key[1],
                "dome": dome,
                "mean px [95% CI]": interval_cell(summary, key, dome, "mean_error_px"),
                "median px": value_cell(summary, key, dome, "median_error_px"),
                "p95 px": value_cell(summary, key, dome, "p95_error_px"),
                "mean % width [95% CI]": interval_cell(summary, key, dome, "mean_error_pct_width"),
            }
            if with_mm:
                row["mean mm [95% CI]"] = interval_cell(summary, key, dome, "mean_error_mm")
                row["median mm"] = value_cell(summary, key, dome, "median_error_mm")
                row["p95 mm"] = value_cell(summary, key, dome, "p95_error_mm")
            for threshold in PCK_THRESHOLDS_512:
                row[f"PCK@{threshold} (512 frame) %"] = interval_cell(summary, key, dome, f"pck_512_{threshold}",
                                                                      1, 100.0)
            if with_mm:
                for threshold in PCK_THRESHOLDS_MM:
                    if landmark_value(summary, key, dome, f"pck_mm_{threshold}") is not None:
                        row[f"PCK@{threshold} mm %"] = interval_cell(summary, key, dome, f"pck_mm_{threshold}",
                                                                     1, 100.0)
            row["failed"] = str(int(required_value(summary, key, dome, "failed")["value"]))
            if folds is not None:
                row["mean px over folds, mean ± std"] = format_spread(fold_values(folds, key, dome, "mean_error_px"))
            rows.append(row)
    return pd.DataFrame(rows)


def landmark_image_table(summary: pd.DataFrame, folds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-image quantities: hemidiaphragm error rate, right-left height error, higher side."""
    with_mm = has_mm(summary)
    rows = []
    for key in method_keys(summary):
        rate = required_value(summary, key, "image", "error_rate_percent")
        mae = required_value(summary, key, "image", "height_difference_mae_px")
        bias = required_value(summary, key, "image", "height_difference_bias_px")
        higher = required_value(summary, key, "image", "higher_side_accuracy")
        row = {
            "input": key[0],
            "method": key[1],
            "error rate % [95% CI]": format_interval(rate["value"], rate["ci95_low"], rate["ci95_high"]),
            "right-left height error px, MAE [95% CI]": format_interval(mae["value"], mae["ci95_low"],
                                                                          mae["ci95_high"]),
            "right-left height bias px": format_number(bias["value"]),
        }
        if with_mm:
            mae_mm = landmark_value(summary, key, "image", "height_difference_mae_mm")
            if mae_mm is not None:
                row["right-left height error mm, MAE [95% CI]"] = format_interval(
                    mae_mm["value"], mae_mm["ci95_low"], mae_mm["ci95_high"])
        row["higher side correct % [95% CI]"] = format_interval(
            higher["value"] * 100, higher["ci95_low"] * 100, higher["ci95_high"] * 100, 1)
        if folds is not None:
            row["error rate over folds, mean ± std"] = format_spread(
                fold_values(folds, key, "image", "error_rate_percent"))
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Tabulate the geometric rule's six points against the reference (derive_landmarks comparison.csv)."""
    rows = []
    for record in comparison.itertuples(index=False):
        rows.append({
            "point": str(record.landmark).replace("_", " "),
            "images": str(int(record.images)),
            "failed": str(int(record.failed)),
            "median px": format_number(record.median_px),
            "p95 px": format_number(record.p95_px),
            "max px": format_number(record.max_px),
            "mean offset (dx, dy) px": f"({format_number(record.mean_dx_px)}, {format_number(record.mean_dy_px)})",
        })
    return pd.DataFrame(rows)
