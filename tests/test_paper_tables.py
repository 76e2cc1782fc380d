"""Tests of the cross-validation tables (tools/paper_tables.py) and the report table builders.

The fold folders here are made by hand in the layout pipeline.sh writes, with errors that
are easy to pool by hand, and a stub script replaces pipeline.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.landmark_metrics import per_image_table, summarise_method
from hemidiaphragm.reporting import (
    ResultsMissing,
    format_interval,
    format_spread,
    landmark_error_table,
    landmark_image_table,
    markdown_table,
    segmentation_table,
)
from hemidiaphragm.stats import summarise

REPO = Path(__file__).resolve().parents[1]
WIDTH = 200


def load_paper_tables():
    spec = importlib.util.spec_from_file_location("paper_tables", REPO / "tools" / "paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


paper_tables = load_paper_tables()


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def write_fold(fold_dir: Path, image_id: str, right_offset_px: float, left_offset_px: float, dice: float) -> None:
    """Write one finished fold with one test image whose domes are off by the given x offsets."""
    reference = np.array([[[60.0, 150.0], [140.0, 155.0]]])
    predicted = reference + np.array([[[right_offset_px, 0.0], [left_offset_px, 0.0]]])
    widths, heights, spacing = np.array([WIDTH]), np.array([WIDTH]), np.array([np.nan])
    write_csv(fold_dir / "metadata" / "metadata.csv", pd.DataFrame({
        "image_id": [image_id, f"{image_id}_train"], "part": ["test", "train"], "width": [WIDTH, WIDTH],
        "height": [WIDTH, WIDTH], "pixel_spacing_mm": [np.nan, np.nan],
    }))

    marks = []
    for method, points in (("two-stage", predicted), ("stage1", predicted + 1.0)):
        table = per_image_table([image_id], points, reference, widths, heights, spacing)
        table.insert(0, "method", method)
        table.insert(0, "input", "mask")
        marks.append(table)
    per_image = pd.concat(marks, ignore_index=True)
    write_csv(fold_dir / "heatmap" / "evaluate" / "per_image.csv", per_image)
    summaries = []
    for method, table in per_image.groupby("method", sort=False):
        summary = summarise_method(table.reset_index(drop=True), widths, heights, spacing, resamples=50)
        summary.insert(0, "method", method)
        summary.insert(0, "input", "mask")
        summaries.append(summary)
    write_csv(fold_dir / "heatmap" / "evaluate" / "summary.csv", pd.concat(summaries, ignore_index=True))

    seg = {"image_id": [image_id, image_id], "variant": ["none", "largest+fill"]}
    for region in ("right", "left", "both"):
        seg[f"{region}_dice"] = [dice - 0.1, dice]
        seg[f"{region}_iou"] = [dice - 0.2, dice - 0.1]
    seg_images = pd.DataFrame(seg)
    write_csv(fold_dir / "segmentation" / "test" / "per_image.csv", seg_images)
    rows = []
    for variant in ("none", "largest+fill"):
        subset = seg_images[seg_images["variant"] == variant]
        for region in ("right", "left", "both"):
            for metric in ("dice", "iou"):
                rows.append({"variant": variant, "region": region, "metric": metric,
                             **summarise(subset[f"{region}_{metric}"], resamples=50)})
    write_csv(fold_dir / "segmentation" / "test" / "summary.csv", pd.DataFrame(rows))
    (fold_dir / ".done").mkdir(parents=True, exist_ok=True)
    (fold_dir / ".done" / "report").touch()


@pytest.fixture
def two_folds(tmp_path):
    write_fold(tmp_path / "fold0", "case_a", right_offset_px=3.0, left_offset_px=4.0, dice=0.9)
    write_fold(tmp_path / "fold1", "case_b", right_offset_px=1.0, left_offset_px=0.0, dice=0.8)
    return tmp_path


def cell(frame: pd.DataFrame, column: str, **where) -> str:
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        mask &= frame[key].to_numpy() == value
    assert mask.sum() == 1, f"{where} matches {mask.sum()} rows"
    return frame.loc[mask, column].iloc[0]


def test_pooled_dome_errors(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    errors = pd.read_csv(tables / "landmarks.csv", dtype=str)
    # Pooled over the two test images: right (3 + 1) / 2 = 2, left (4 + 0) / 2 = 2.
    assert cell(errors, "mean px [95% CI]", input="mask", method="two-stage", dome="right").startswith("2.00 [")
    assert cell(errors, "mean px [95% CI]", input="mask", method="two-stage", dome="left").startswith("2.00 [")


def test_fold_spread_column(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    errors = pd.read_csv(tables / "landmarks.csv", dtype=str)
    # Per-fold mean of both domes: 3.5 and 0.5, so mean 2.0 and sample std 2.12.
    spread = cell(errors, "mean px over folds, mean ± std", input="mask", method="two-stage", dome="both")
    assert spread == "2.00 ± 2.12 (2 folds)"


def test_pooled_segmentation(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    segmentation = pd.read_csv(tables / "segmentation.csv", dtype=str)
    dice = cell(segmentation, "Dice mean [95% CI]", **{"post-processing": "largest+fill", "lung": "right"})
    assert dice.startswith("0.8500 [")
    assert cell(segmentation, "images", **{"post-processing": "none", "lung": "left"}) == "2"


def test_ablation_rows(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    ablations = pd.read_csv(tables / "ablations.csv", dtype=str)
    assert ablations["variant"].tolist() == [
        "two-stage, mask input, post-processed masks (main)",
        "stage 1 only, mask input, post-processed masks",
    ]


def test_writes_markdown_tables(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    for name in ("segmentation", "landmarks", "landmarks_per_image", "ablations"):
        text = (tables / f"{name}.md").read_text()
        assert text.startswith("## ")
        assert "|---|" in text
    assert "Folds 0, 1: 2 test images pooled" in (tables / "README.md").read_text()


def test_unfinished_fold_left_out(two_folds):
    (two_folds / "fold1" / ".done" / "report").unlink()
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    errors = pd.read_csv(tables / "landmarks.csv", dtype=str)
    assert cell(errors, "mean px [95% CI]", input="mask", method="two-stage", dome="right").startswith("3.00")


def test_no_finished_fold_rejected(tmp_path):
    with pytest.raises(SystemExit, match="no finished fold"):
        paper_tables.aggregate(tmp_path, [0, 1], resamples=10, seed=0)


STUB_PIPELINE = """#!/usr/bin/env bash
# Stand-in for pipeline.sh: records its arguments, then finishes the fold by copying a
# prepared fold folder into --output-dir.
echo "$*" >> "{log}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --output-dir) out="$2"; shift 2 ;;
        --fold) fold="$2"; shift 2 ;;
        *) shift ;;
    esac
done
mkdir -p "$out"
cp -r "{source}/fold$fold/." "$out/"
"""


def stub_arguments(tmp_path: Path, source: Path, fold: int | None = None) -> argparse.Namespace:
    split_dir = tmp_path / "splits"
    split_dir.mkdir(exist_ok=True)
    for index in range(2):
        (split_dir / f"fold{index}.csv").write_text("image_id,patient_id,part\n")
    stub = tmp_path / "stub_pipeline.sh"
    stub.write_text(STUB_PIPELINE.format(log=tmp_path / "calls.log", source=source))
    parser = paper_tables.get_args_parser()
    arguments = ["--data", "synthetic", "--output-dir", str(tmp_path / "cv"), "--split-dir", str(split_dir),
                 "--pipeline", str(stub), "--bootstrap", "50"]
    if fold is not None:
        arguments += ["--fold", str(fold)]
    return parser.parse_args(arguments)


def test_runs_each_fold_once(two_folds, tmp_path_factory):
    work = tmp_path_factory.mktemp("stub")
    paper_tables.main(stub_arguments(work, two_folds))
    paper_tables.main(stub_arguments(work, two_folds))
    calls = (work / "calls.log").read_text().splitlines()
    assert len(calls) == 2
    assert "--fold 0" in calls[0]
    assert "--ablations" in calls[0]
    assert (work / "cv" / "tables" / "ablations.md").is_file()


def test_resumes_interrupted_fold(two_folds, tmp_path_factory):
    work = tmp_path_factory.mktemp("stub")
    (work / "cv" / "fold1").mkdir(parents=True)
    (work / "cv" / "fold1" / "partial.txt").write_text("left by an interrupted run\n")
    paper_tables.main(stub_arguments(work, two_folds, fold=1))
    calls = (work / "calls.log").read_text().splitlines()
    assert len(calls) == 1
    assert calls[0].endswith("--resume")


def test_rejects_fold_out_of_range(two_folds, tmp_path_factory):
    work = tmp_path_factory.mktemp("stub")
    with pytest.raises(SystemExit, match="out of range"):
        paper_tables.main(stub_arguments(work, two_folds, fold=2))


def test_format_interval_without_bounds():
    assert format_interval(1.234, float("nan"), 2.0) == "1.23"
    assert format_interval(1.234, 1.0, 2.0) == "1.23 [1.00, 2.00]"
    assert format_interval(float("nan"), 1.0, 2.0) == "n/a [1.00, 2.00]"


def test_format_spread_single_fold():
    assert format_spread([0.5]) == "0.50 (1 fold, no spread)"
    assert format_spread([float("nan")]) == "n/a"


def test_markdown_table_escapes_pipes():
    text = markdown_table(pd.DataFrame({"a|b": ["x|y"]}))
    assert text.splitlines()[0] == "| a\\|b |"
    assert text.splitlines()[2] == "| x\\|y |"


def test_segmentation_table_missing_row():
    summary = pd.DataFrame([{"variant": "none", "region": "right", "metric": "dice", "n": 1, "mean": 0.9,
                             "std": 0.0, "ci95_low": 0.9, "ci95_high": 0.9}])
    with pytest.raises(ResultsMissing, match="iou"):
        segmentation_table(summary)


def test_mm_columns_with_spacing():
    reference = np.array([[[60.0, 150.0], [140.0, 155.0]], [[62.0, 148.0], [138.0, 150.0]]])
    predicted = reference + np.array([[[4.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [6.0, 0.0]]])
    widths, heights, spacing = np.array([WIDTH, WIDTH]), np.array([WIDTH, WIDTH]), np.array([0.5, 0.5])
    table = per_image_table(["a", "b"], predicted, reference, widths, heights, spacing)
    summary = summarise_method(table, widths, heights, spacing, resamples=50)
    summary.insert(0, "method", "two-stage")
    summary.insert(0, "input", "mask")
    errors = landmark_error_table(summary)
    # Right errors 4 and 0 px, so a mean of 2 px, which is 1 mm at 0.5 mm per pixel.
    assert cell(errors, "mean mm [95% CI]", dome="right").startswith("1.00 [")
    assert "PCK@2.5 mm %" in errors.columns
    per_image = landmark_image_table(summary)
    assert "right-left height error mm, MAE [95% CI]" in per_image.columns


def test_no_mm_columns_without_spacing(two_folds):
    tables = paper_tables.aggregate(two_folds, [0, 1], resamples=100, seed=0)
    errors = pd.read_csv(tables / "landmarks.csv", dtype=str)
    assert not [name for name in errors.columns if "mm" in name]
