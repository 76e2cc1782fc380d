"""Score dome predictions against the reference points of a metadata CSV.

Each predictions file (``heatmap_test/predict.py``'s predictions.csv) is labelled by its
input (for example ``mask``, ``image``, ``image+mask``) and gives up to three methods:
``two-stage`` (the final points), ``stage1`` (stage 1 alone) and ``geometric`` (the
mask-derived baseline on the masks predict used). A geometric baseline identical to one
already scored (same masks) is scored once. ``two-stage`` is skipped for a file made
without a stage-2 checkpoint, where it equals ``stage1``. A method whose every point failed
is still scored, with all its points counted as failed, except the geometric baseline of
a file predicted without masks (failure code ``no_mask`` everywhere), which is skipped.

Errors are radial distances in original pixels. They are also given in the 512-pixel
frame (times 512 / max(width, height)), as percent of the image width, and in mm where the
pixel spacing is known. ``hemidiaphragm.landmark_metrics`` defines every metric: the
hemidiaphragm error rate ((right error + left error) / width * 100, averaged over images),
PCK, the right-minus-left dome height difference and the 95% bootstrap intervals.

Reads:  the metadata CSV (reference points, sizes, pixel spacing), optionally a split file,
        and one or more predictions.csv files.
Writes: <output-dir>/run.json, per_image.csv (one row per method and image),
        summary.csv (long format: input, method, landmark, metric, value, ci95_low,
        ci95_high), summary.md, error_distribution.png and overlays/ with the best,
        median and worst image of the main method (the first file's best method).

Example:
    python heatmap_test/evaluate.py --metadata runs/jsrt224_metadata.csv \
        --split data_splits/jsrt224/fold0.csv --part test \
        --predictions mask=runs/heatmap/predict_mask/predictions.csv \
        --predictions image=runs/heatmap/predict_image/predictions.csv --output-dir runs/heatmap/eval_test
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hemidiaphragm.heatmaps import LANDMARKS
from hemidiaphragm.imaging import read_image
from hemidiaphragm.landmark_data import load_landmark_table, reference_points
from hemidiaphragm.landmark_metrics import PCK_THRESHOLDS_512, PCK_THRESHOLDS_MM, per_image_table, summarise_method
from hemidiaphragm.landmark_plots import draw_overlay, plot_error_distribution, write_png
from hemidiaphragm.runs import (
    atomic_write_csv,
    atomic_write_text,
    positive_float,
    positive_int,
    prepare_output_dir,
    run_script,
    seed_value,
    setup_logging,
    write_run_record,
)

LOGGER = logging.getLogger("heatmap_evaluate")

# Method name -> column infix of predictions.csv and the flag column suffix.
METHODS = {
    "two-stage": ("", "_flags"),
    "stage1": ("_stage1", "_stage1_flags"),
    "geometric": ("_geometric", "_geometric_failure"),
}
METHOD_ORDER = ("geometric", "stage1", "two-stage")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate dome predictions against reference points.")
    parser.add_argument("--metadata", type=Path, required=True, help="metadata CSV with the reference dome points")
    parser.add_argument("--split", type=Path, default=None, help="split CSV whose parts replace the metadata's part")
    parser.add_argument("--part", default="test", help="part to score (train, val, test), or 'all' for every row")
    parser.add_argument("--predictions", action="append", required=True, metavar="INPUT=FILE",
                        help="predictions.csv labelled by its input (e.g. mask=runs/p/predictions.csv); repeat "
                             "for several inputs; without 'INPUT=' the label is the file's folder name")
    parser.add_argument("--output-dir", type=Path, required=True, help="new folder for this evaluation's files")
    parser.add_argument("--pixel-spacing-mm", type=positive_float, default=None,
                        help="pixel size in mm for images whose metadata leaves it empty (jsrt224: 0.175 mm x "
                             "2048 / 224 = 1.6 mm); default: mm errors only where the metadata has a spacing")
    parser.add_argument("--bootstrap", type=positive_int, default=2000,
                        help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--no-overlays", action="store_true", help="skip the best, median and worst overlays")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    return parser


def parse_prediction_arguments(values: list[str]) -> list[tuple[str, Path]]:
    parsed = []
    for value in values:
        label, separator, path = value.partition("=")
        if not separator:
            path, label = value, Path(value).parent.name
        parsed.append((label, Path(path)))
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"--predictions labels must be unique; got {labels}")
    return parsed


def read_predictions(path: Path, reference: pd.DataFrame) -> pd.DataFrame:
    """Read a predictions.csv and align it to the reference rows.

    Raises:
        SystemExit: the file is missing, lacks a column, lacks a reference image or
            disagrees on an image size.
    """
    if not path.is_file():
        raise SystemExit(f"predictions file {path} not found")
    table = pd.read_csv(path, dtype={"image_id": str}, keep_default_na=True)
    # The flag columns are what tell a predictions file from a metadata file with the same points.
    required = ("image_id", "width", "height", *(f"{name}_x" for name in LANDMARKS),
                *(f"{name}_flags" for name in LANDMARKS))
    for column in required:
        if column not in table.columns:
            raise SystemExit(f"{path} lacks the column {column!r}; is it a heatmap_test/predict.py predictions.csv?")
    duplicated = table["image_id"][table["image_id"].duplicated()].tolist()
    if duplicated:
        raise SystemExit(f"{path} lists image(s) {duplicated[:3]} more than once")
    missing = sorted(set(reference["image_id"]) - set(table["image_id"]))
    if missing:
        raise SystemExit(
            f"{path} has no prediction for {len(missing)} reference image(s), for example {missing[:3]}; "
            "predict the same part that is evaluated"
        )
    extra = len(set(table["image_id"]) - set(reference["image_id"]))
    if extra:
        LOGGER.info("%s: %d prediction(s) for images outside the evaluated part are not scored", path, extra)
    aligned = table.set_index("image_id").loc[reference["image_id"]].reset_index()
    for column in ("width", "height"):
        wrong = aligned[aligned[column].to_numpy() != reference[column].to_numpy()]
        if not wrong.empty:
            image_id = wrong["image_id"].iloc[0]
            raise SystemExit(f"{path}: image {image_id} has {column} {wrong[column].iloc[0]} but the metadata says "
                             f"{reference.loc[reference['image_id'] == image_id, column].iloc[0]}")
    return aligned


def method_points(table: pd.DataFrame, method: str) -> np.ndarray | None:
    """Return (N, K, 2) points of ``method``, or None when the file lacks that method's columns."""
    infix, _ = METHODS[method]
    columns = [f"{name}{infix}_{axis}" for name in LANDMARKS for axis in ("x", "y")]
    if any(column not in table.columns for column in columns):
        return None
    return table[columns].to_numpy(dtype=np.float64).reshape(len(table), len(LANDMARKS), 2)


def geometric_never_ran(table: pd.DataFrame) -> bool:
    """Return True when every geometric failure code is no_mask: predict had no masks to run it on."""
    _, suffix = METHODS["geometric"]
    codes = [table[f"{name}{suffix}"] for name in LANDMARKS if f"{name}{suffix}" in table.columns]
    return bool(codes) and all((column == "no_mask").all() for column in codes)


def method_flags(table: pd.DataFrame, method: str) -> list[str]:
    """Return per image the method's flags as 'right_dome:flag;left_dome:flag' (empty when none)."""
    _, suffix = METHODS[method]
    per_landmark = []
    for name in LANDMARKS:
        column = f"{name}{suffix}"
        raw = table[column] if column in table.columns else [np.nan] * len(table)
        per_landmark.append([f"{name}:{value}" if isinstance(value, str) and value else "" for value in raw])
    return [";".join(item for item in items if item) for items in zip(*per_landmark)]


def collect_methods(predictions: list[tuple[str, pd.DataFrame]]) -> list[tuple[str, str, np.ndarray, list[str]]]:
    """Return (input, method, points, flags) for every method to score, without duplicates."""
    scored, geometric_seen = [], []
    for label, table in predictions:
        stage1 = method_points(table, "stage1")
        for method in METHOD_ORDER:
            points = method_points(table, method)
            if points is None:
                LOGGER.info("%s: no %s columns; not scored", label, method)
                continue
            if not np.isfinite(points).any():
                if method == "geometric" and geometric_never_ran(table):
                    LOGGER.info("%s: predicted without masks, so the geometric baseline did not run; not scored",
                                label)
                    continue
                LOGGER.warning("%s: every %s point failed; scored with all %d points counted as failed", label,
                               method, points.shape[0] * points.shape[1])
            if method == "two-stage" and stage1 is not None and np.array_equal(points, stage1, equal_nan=True):
                LOGGER.info("%s: the final points equal stage 1 (no stage-2 checkpoint); two-stage not scored", label)
                continue
            if method == "geometric":
                if any(np.array_equal(points, seen, equal_nan=True) for seen in geometric_seen):
                    continue
                geometric_seen.append(points)
            scored.append((label, method, points, method_flags(table, method)))
    return scored


def format_ci(rows: pd.DataFrame, landmark: str, metric: str, digits: int, scale: float = 1.0) -> str:
    match = rows[(rows["landmark"] == landmark) & (rows["metric"] == metric)]
    if match.empty or not np.isfinite(match["value"].iloc[0]):
        return "n/a"
    value, low, high = (match[key].iloc[0] * scale for key in ("value", "ci95_low", "ci95_high"))
    if np.isfinite(low):
        return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{value:.{digits}f}"


def markdown_summary(summary: pd.DataFrame, flagged: dict[tuple[str, str], int], count: int) -> str:
    has_mm = summary["metric"].str.startswith("pck_mm").any()
    header = ["input", "method", "MRE px", "MRE 512", "MRE % width", "error rate %", "median 512", "p95 512",
              "max 512"] + [f"PCK@{t:g} (512) %" for t in PCK_THRESHOLDS_512]
    if has_mm:
        header += ["MRE mm"] + [f"PCK@{t:g} mm %" for t in PCK_THRESHOLDS_MM]
    header += ["height diff MAE px", "higher side %", "failed", "flagged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (label, method), rows in summary.groupby(["input", "method"], sort=False):
        cells = [label, method, format_ci(rows, "both", "mean_error_px", 2),
                 format_ci(rows, "both", "mean_error_512", 2),
                 format_ci(rows, "both", "mean_error_pct_width", 2), format_ci(rows, "image", "error_rate_percent", 2),
                 format_ci(rows, "both", "median_error_512", 2), format_ci(rows, "both", "p95_error_512", 2),
                 format_ci(rows, "both", "max_error_512", 2)]
        cells += [format_ci(rows, "both", f"pck_512_{t:g}", 1, 100) for t in PCK_THRESHOLDS_512]
        if has_mm:
            cells += [format_ci(rows, "both", "mean_error_mm", 2)]
            cells += [format_ci(rows, "both", f"pck_mm_{t:g}", 1, 100) for t in PCK_THRESHOLDS_MM]
        cells += [format_ci(rows, "image", "height_difference_mae_px", 2),
                  format_ci(rows, "image", "higher_side_accuracy", 1, 100),
                  format_ci(rows, "both", "failed", 0), str(flagged[(label, method)])]
        lines.append("| " + " | ".join(cells) + " |")

    per_side = ["", "Per dome, mean ± standard deviation (median) of the radial error in original pixels:", "",
                "| input | method | right dome | left dome |", "|---|---|---|---|"]
    for (label, method), rows in summary.groupby(["input", "method"], sort=False):
        cells = []
        for side in ("right", "left"):
            values = {metric: rows[(rows["landmark"] == side) & (rows["metric"] == metric)]["value"].iloc[0]
                      for metric in ("mean_error_px", "std_error_px", "median_error_px")}
            cells.append(f"{values['mean_error_px']:.2f} ± {values['std_error_px']:.2f} "
                         f"({values['median_error_px']:.2f})")
        per_side.append(f"| {label} | {method} | {cells[0]} | {cells[1]} |")
    notes = [
        "", f"{count} images. MRE: mean radial error of both domes pooled, with 95% bootstrap intervals over images. "
        "512: errors scaled by 512 / max(width, height). Error rate: (right + left error) / width * 100, averaged "
        "over images. Failed: points the method did not return (left out of the error statistics, misses for PCK). "
        "Flagged: images with at least one flag (low peak, outside the lung band, missing lung, or a failure code).",
    ]
    return "\n".join(lines + per_side + notes) + "\n"


def write_overlays(out_dir: Path, reference: pd.DataFrame, per_image: pd.DataFrame, label: str, method: str,
                   predictions: dict[str, pd.DataFrame], points_by_method: dict) -> None:
    """Draw the best, median and worst image of one method by error rate."""
    rows = per_image[(per_image["input"] == label) & (per_image["method"] == method)].reset_index(drop=True)
    rates = rows["error_rate_percent"].to_numpy(dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(rates))
    if finite.size == 0:
        return
    order = finite[np.argsort(rates[finite], kind="stable")]
    chosen = {"best": order[0], "median": order[len(order) // 2], "worst": order[-1]}
    references = reference_points(reference)
    for rank, index in chosen.items():
        image_id = rows["image_id"].iloc[index]
        position = int(np.flatnonzero(reference["image_id"].to_numpy() == image_id)[0])
        pixels = read_image(reference["image_path"].iloc[position]).pixels
        points = {"reference": references[position], "prediction": points_by_method[(label, method)][position]}
        stage1 = points_by_method.get((label, "stage1"))
        if method == "two-stage" and stage1 is not None:
            points["stage1"] = stage1[position]
        caption = f"{rank}: {image_id} {label}/{method} error rate {rates[index]:.2f}%"
        write_png(out_dir / "overlays" / f"{rank}_{image_id}.png", draw_overlay(pixels, points, caption=caption))


def main(args: argparse.Namespace) -> None:
    setup_logging()
    # Every input is read before the output folder is prepared, so a missing predictions file
    # leaves an earlier evaluation, and a new folder, untouched.
    reference = load_landmark_table(args.metadata, args.split)
    if args.part != "all":
        reference = reference[reference["part"] == args.part].reset_index(drop=True)
    if reference.empty:
        raise SystemExit(f"{args.metadata} has no rows with part {args.part!r}")
    widths, heights = reference["width"].to_numpy(), reference["height"].to_numpy()
    spacing = reference["pixel_spacing_mm"].to_numpy(dtype=np.float64)
    if args.pixel_spacing_mm is not None:
        spacing = np.where(np.isfinite(spacing), spacing, args.pixel_spacing_mm)
    reference_xy = reference_points(reference)

    predictions = [(label, read_predictions(path, reference)) for label, path in
                   parse_prediction_arguments(args.predictions)]
    methods = collect_methods(predictions)
    if not methods:
        raise SystemExit("no method has points to score in the given predictions files")
    prepare_output_dir(args.output_dir, args.overwrite)
    write_run_record(args.output_dir, vars(args), "cpu")

    per_image_parts, summary_parts, flagged, errors_512, points_by_method = [], [], {}, {}, {}
    for label, method, points, flags in methods:
        table = per_image_table(reference["image_id"], points, reference_xy, widths, heights, spacing)
        table.insert(0, "method", method)
        table.insert(0, "input", label)
        table["flags"] = flags
        per_image_parts.append(table)
        summary = summarise_method(table, widths, heights, spacing, args.bootstrap, args.seed)
        summary.insert(0, "method", method)
        summary.insert(0, "input", label)
        summary_parts.append(summary)
        flagged[(label, method)] = int(sum(bool(text) for text in flags))
        errors_512[f"{label}/{method}"] = table[["right_error_512", "left_error_512"]].to_numpy()
        points_by_method[(label, method)] = points
        rate = summary[(summary["metric"] == "error_rate_percent")]["value"].iloc[0]
        mre = summary[(summary["landmark"] == "both") & (summary["metric"] == "mean_error_px")]["value"].iloc[0]
        LOGGER.info("%s / %s: mean radial error %.3f px, error rate %.3f%%", label, method, mre, rate)

    per_image = pd.concat(per_image_parts, ignore_index=True)
    summary = pd.concat(summary_parts, ignore_index=True)
    atomic_write_csv(args.output_dir / "per_image.csv", per_image)
    atomic_write_csv(args.output_dir / "summary.csv", summary)
    atomic_write_text(args.output_dir / "summary.md", markdown_summary(summary, flagged, len(reference)))
    plot_error_distribution(errors_512, args.output_dir / "error_distribution.png", "pixels of the 512 frame")
    if not args.no_overlays:
        label, method = methods[0][0], next(
            (m for lab, m, *_ in methods if lab == methods[0][0] and m == "two-stage"),
            next(m for lab, m, *_ in methods if lab == methods[0][0]),
        )
        write_overlays(args.output_dir, reference, per_image, label, method, dict(predictions), points_by_method)
    LOGGER.info("wrote %s", args.output_dir / "summary.md")


if __name__ == "__main__":
    run_script(main, get_args_parser())
