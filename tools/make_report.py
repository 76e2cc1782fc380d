"""Last pipeline step: assemble report.md from the files the stages wrote into a run folder.

Nothing is recomputed: the tables come from the evaluation summaries and the figures are
links to the PNG files the stages drew.

Reads (paths relative to ``--run-dir``, the folder ``pipeline.sh`` writes):
    segmentation/test/summary.csv, segmentation/test/overlays/*.png,
    segmentation/train/curves.png, metadata/summary.json,
    heatmap/evaluate/summary.csv, heatmap/evaluate/error_distribution.png,
    heatmap/evaluate/overlays/*.png, heatmap/<input>_{coarse,fine}/curves.png,
    baseline/comparison.csv, and data/README.txt for a synthetic run.
Writes: <run-dir>/report.md (replaced on every run, since it only summarises the files above).

Example:
    python tools/make_report.py --run-dir results/synthetic
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from hemidiaphragm.reporting import (
    ResultsMissing,
    baseline_table,
    landmark_error_table,
    landmark_image_table,
    markdown_table,
    segmentation_table,
)
from hemidiaphragm.runs import atomic_write_text, git_state, run_script

LOGGER = logging.getLogger("make_report")

REQUIRED_FILES = (
    "segmentation/test/summary.csv",
    "metadata/metadata.csv",
    "heatmap/evaluate/summary.csv",
    "baseline/comparison.csv",
)


def read_csv(run_dir: Path, relative: str) -> pd.DataFrame:
    path = run_dir / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the pipeline step that writes it (see pipeline.sh)")
    return pd.read_csv(path)


def figure_links(run_dir: Path, pattern: str, caption: str) -> list[str]:
    """Return markdown image lines for the files matching ``pattern``, relative to ``run_dir``."""
    lines = []
    for path in sorted(run_dir.glob(pattern)):
        relative = path.relative_to(run_dir).as_posix()
        lines.append(f"![{caption}, {relative}]({relative})")
    return lines


def data_section(run_dir: Path, metadata: pd.DataFrame) -> list[str]:
    counts = metadata["part"].fillna("none").value_counts().to_dict()
    dataset = str(metadata["dataset"].iloc[0])
    lines = ["## Data", ""]
    lines.append(
        f"Dataset `{dataset}`: {len(metadata)} images with reference points "
        f"({counts.get('train', 0)} train, {counts.get('val', 0)} validation, {counts.get('test', 0)} test)."
    )
    summary_path = run_dir / "metadata" / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        rejected = int(summary.get("rejected_rows", 0))
        without_points = int(summary.get("images_without_points", 0))
        lines.append(
            f"build_metadata.py rejected {rejected} row{'' if rejected == 1 else 's'} of the reference points "
            f"and found {without_points} image{'' if without_points == 1 else 's'} without points "
            "(metadata/rejected.csv, metadata/images_without_points.csv)."
        )
    widths = sorted(set(zip(metadata["width"], metadata["height"])))
    sizes = ", ".join(f"{width}x{height}" for width, height in widths[:5])
    lines.append(f"Image sizes (width x height, px): {sizes}{' ...' if len(widths) > 5 else ''}.")
    if metadata["pixel_spacing_mm"].notna().any():
        lines.append("Pixel spacing is known, so errors are also given in mm.")
    else:
        lines.append("The pixel spacing is unknown, so errors are in pixels and percent of the image width only.")
    return lines + [""]


def build_report(run_dir: Path) -> str:
    """Return the markdown text of report.md for the run folder ``run_dir``."""
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} lacks {', '.join(missing)}; run pipeline.sh (with --resume to finish an interrupted run)"
        )
    metadata = read_csv(run_dir, "metadata/metadata.csv")
    segmentation = read_csv(run_dir, "segmentation/test/summary.csv")
    landmarks = read_csv(run_dir, "heatmap/evaluate/summary.csv")
    baseline = read_csv(run_dir, "baseline/comparison.csv")
    synthetic = (run_dir / "data" / "README.txt").is_file() and str(metadata["dataset"].iloc[0]) == "synthetic"

    dataset = str(metadata["dataset"].iloc[0])
    title = f"# Results on {'the SYNTHETIC demo set' if synthetic else dataset}"
    state = git_state()
    commit = state["git_commit"] or "unknown"
    dirty = " (uncommitted changes)" if state["git_dirty"] else ""
    lines = [title, ""]
    if synthetic:
        lines += [
            "> **SYNTHETIC DATA.** These images are drawn by `hemidiaphragm/synthetic.py`, not acquired. "
            "The numbers below show that every stage runs and writes its files; they say nothing about "
            "accuracy on radiographs.",
            "",
        ]
    lines += [
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the files in this folder, "
        f"code at commit `{commit}`{dirty}. The commands that made them are in `commands.sh`.",
        "",
    ]
    lines += data_section(run_dir, metadata)

    test_count = int((metadata["part"] == "test").sum())
    lines += [
        "## Lung segmentation",
        "",
        f"Test part ({test_count} images). Mean over images with 95% bootstrap intervals; "
        "`none` is the network's raw output, the other row the post-processed masks that the "
        "landmark stage uses. HD95: 95th-percentile Hausdorff distance in original pixels.",
        "",
        markdown_table(segmentation_table(segmentation)),
    ]

    lines += [
        "## Dome localisation",
        "",
        "Radial error between predicted and reference dome points on the test part, in original pixels and "
        "percent of the image width, with 95% bootstrap intervals over images. Methods: `two-stage` "
        "(stage 1 then stage 2), `stage1` (stage 1 alone) and `geometric` (the mask rule in "
        "hemidiaphragm/landmarks.py on the same predicted masks). PCK: percent of domes within 5, 10 and 20 "
        "pixels of a 512-pixel frame (error x 512 / max(width, height)).",
        "",
        markdown_table(landmark_error_table(landmarks)),
        "Per image: the hemidiaphragm error rate is (right error + left error) / width x 100; the right-left "
        "height error compares the predicted and reference right-minus-left dome height differences; "
        "\"higher side correct\" counts images where both agree on which dome is higher.",
        "",
        markdown_table(landmark_image_table(landmarks)),
    ]

    lines += [
        "## Geometric rule on the predicted masks",
        "",
        "All six points of the mask rule (derive_landmarks.py) on the post-processed test masks, against the "
        "reference points.",
        "",
        markdown_table(baseline_table(baseline)),
    ]

    figures = []
    figures += figure_links(run_dir, "segmentation/train/curves.png", "segmentation training curves")
    figures += figure_links(run_dir, "heatmap/*_coarse/curves.png", "stage-1 training curves")
    figures += figure_links(run_dir, "heatmap/*_fine/curves.png", "stage-2 training curves")
    figures += figure_links(run_dir, "segmentation/test/overlays/*.png", "segmentation overlay")
    figures += figure_links(run_dir, "heatmap/evaluate/error_distribution.png", "dome error distribution")
    figures += figure_links(run_dir, "heatmap/evaluate/overlays/*.png", "dome overlay")
    if figures:
        lines += ["## Figures", ""]
        for figure in figures:
            lines += [figure, ""]
    return "\n".join(lines).rstrip() + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True,
                        help="run folder written by pipeline.sh (segmentation/, metadata/, heatmap/, baseline/)")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.run_dir.is_dir():
        raise SystemExit(f"--run-dir {args.run_dir} is not a folder; give the --output-dir of a pipeline.sh run")
    try:
        text = build_report(args.run_dir)
    except ResultsMissing as error:
        raise SystemExit(f"{args.run_dir}: {error}; rerun the evaluation step that writes it") from error
    atomic_write_text(args.run_dir / "report.md", text)
    LOGGER.info("wrote %s", args.run_dir / "report.md")


if __name__ == "__main__":
    run_script(main, get_args_parser())
