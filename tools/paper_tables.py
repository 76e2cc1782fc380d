"""Cross-validation tables: run pipeline.sh on every fold, then pool and tabulate the results.

Each fold runs ``pipeline.sh --ablations`` into ``<output-dir>/fold<k>/``: segmentation
with and without mask post-processing, the dome heatmap model on mask, image and
image+mask input, stage 1 alone and both stages, and the geometric baseline. A fold whose
pipeline finished (``fold<k>/.done/report``) is skipped, and an interrupted fold continues
with ``pipeline.sh --resume``, so an interrupted run of this script picks up where it
stopped. With ``--aggregate-only`` nothing runs and the tables cover the finished folds.

Statistics: the test images of all folds are pooled (every image is tested once over the
K folds), and each value has a 95% percentile bootstrap interval over those images. The
"over folds" columns give the mean ± standard deviation of the per-fold values.

Reads:  <output-dir>/fold<k>/segmentation/test/{per_image,summary}.csv,
        fold<k>/heatmap/evaluate/{per_image,summary}.csv, fold<k>/metadata/metadata.csv.
Writes: <output-dir>/tables/ with, each as .csv and .md:
        segmentation (Dice and IoU per lung, with and without post-processing),
        landmarks (dome errors per input and method: mean, median, p95, % width, mm, PCK),
        landmarks_per_image (error rate, right-left height error, higher side),
        ablations (one row per variant);
        plus the numeric long tables pooled_segmentation.csv, pooled_landmarks.csv,
        folds_segmentation.csv, folds_landmarks.csv, and tables/README.md.

Example:
    python tools/paper_tables.py --data ../shared/data/jsrt224 --output-dir results/cv/jsrt224
    python tools/paper_tables.py --data ../shared/data/jsrt224 --output-dir results/cv/jsrt224 --fold 2
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from hemidiaphragm.landmark_metrics import summarise_method
from hemidiaphragm.reporting import (
    landmark_error_table,
    landmark_image_table,
    markdown_table,
    segmentation_table,
)
from hemidiaphragm.runs import REPO_ROOT, atomic_write_csv, atomic_write_text, positive_int, run_script, seed_value
from hemidiaphragm.stats import summarise

LOGGER = logging.getLogger("paper_tables")

SYNTHETIC_FOLDS = 5
SEGMENTATION_METRICS = ("dice", "iou", "precision", "recall", "hd95")
SEGMENTATION_REGIONS = ("right", "left", "both")
# Ablation rows: (input label, method) as pipeline.sh --ablations labels its predictions,
# and the row name in the table. Rows whose predictions are missing are left out.
ABLATIONS = (
    (("mask", "two-stage"), "two-stage, mask input, post-processed masks (main)"),
    (("mask-raw", "two-stage"), "two-stage, mask input, masks without post-processing"),
    (("image", "two-stage"), "two-stage, image input"),
    (("image+mask", "two-stage"), "two-stage, image+mask input, post-processed masks"),
    (("mask", "stage1"), "stage 1 only, mask input, post-processed masks"),
    (("mask", "geometric"), "geometric baseline, post-processed masks"),
    (("mask-raw", "geometric"), "geometric baseline, masks without post-processing"),
)


def fold_count(data: str, split_dir: Path | None) -> int:
    """Return K: the number of fold<k>.csv files of the dataset's split folder."""
    if split_dir is None:
        if data == "synthetic":
            return SYNTHETIC_FOLDS
        split_dir = REPO_ROOT / "data_splits" / Path(data).resolve().name
    count = len(list(split_dir.glob("fold*.csv")))
    if count == 0:
        raise SystemExit(
            f"no fold*.csv files in {split_dir}; make them with data_splits/make_splits.py "
            "or pass --split-dir"
        )
    return count


def fold_finished(fold_dir: Path) -> bool:
    return (fold_dir / ".done" / "report").is_file()


def pipeline_command(args: argparse.Namespace, fold: int, fold_dir: Path) -> list[str]:
    command = ["bash", str(args.pipeline), "--data", args.data, "--output-dir", str(fold_dir),
               "--fold", str(fold), "--ablations", "--device", args.device]
    if args.split_dir is not None:
        command += ["--split", str(args.split_dir / f"fold{fold}.csv")]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.quick:
        command.append("--quick")
    command += args.pipeline_args
    if fold_dir.is_dir() and any(fold_dir.iterdir()):
        command.append("--resume")
    return command


def run_folds(args: argparse.Namespace, folds: list[int]) -> None:
    for fold in folds:
        fold_dir = args.output_dir / f"fold{fold}"
        if fold_finished(fold_dir):
            LOGGER.info("fold %d: finished in an earlier run, skipped (%s)", fold, fold_dir)
            continue
        command = pipeline_command(args, fold, fold_dir)
        LOGGER.info("fold %d: %s", fold, shlex.join(command))
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise SystemExit(
                f"pipeline.sh failed on fold {fold} (exit status {result.returncode}); fix the error above "
                "and run this command again: finished folds and steps are kept"
            )


# ---------------------------------------------------------------------------------------------
# Pooling over folds.


def read_fold_csv(fold_dir: Path, relative: str, fold: int) -> pd.DataFrame:
    path = fold_dir / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found although fold {fold} is marked finished; rerun it with "
                                f"pipeline.sh --resume after deleting {fold_dir / '.done' / 'report'}")
    frame = pd.read_csv(path)
    frame.insert(0, "fold", fold)
    return frame


def pool_segmentation(per_image: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """Summarise the pooled per-image segmentation scores in the layout of evaluate's summary.csv."""
    rows = []
    for variant in dict.fromkeys(per_image["variant"]):
        subset = per_image[per_image["variant"] == variant]
        for region in SEGMENTATION_REGIONS:
            for metric in SEGMENTATION_METRICS:
                column = f"{region}_{metric}"
                if column not in subset.columns:
                    continue
                values = subset[column].to_numpy(dtype=np.float64)
                stats = summarise(values, resamples=resamples, seed=seed)
                rows.append({"variant": variant, "region": region, "metric": metric, **stats,
                             "undefined": int(np.sum(~np.isfinite(values)))})
    return pd.DataFrame(rows)


def pool_landmarks(per_image: pd.DataFrame, metadata: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """Summarise the pooled per-image dome errors of every (input, method) pair."""
    sizes = metadata.drop_duplicates("image_id").set_index("image_id")
    parts = []
    for (label, method), table in per_image.groupby(["input", "method"], sort=False):
        missing = sorted(set(table["image_id"]) - set(sizes.index))
        if missing:
            raise ValueError(f"per-image errors of {label}/{method} name images that no fold's metadata.csv "
                             f"lists: {missing[:5]}")
        rows = sizes.loc[table["image_id"]]
        summary = summarise_method(
            table.reset_index(drop=True), rows["width"].to_numpy(), rows["height"].to_numpy(),
            rows["pixel_spacing_mm"].to_numpy(dtype=np.float64), resamples, seed,
        )
        summary.insert(0, "method", method)
        summary.insert(0, "input", label)
        parts.append(summary)
    return pd.concat(parts, ignore_index=True)


def ablation_table(pooled: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """Build one row per ablation variant with the headline numbers of the two landmark tables."""
    errors = landmark_error_table(pooled, folds)
    per_image = landmark_image_table(pooled, folds)
    rows = []
    for key, name in ABLATIONS:
        both = errors[(errors["input"] == key[0]) & (errors["method"] == key[1]) & (errors["dome"] == "both")]
        image = per_image[(per_image["input"] == key[0]) & (per_image["method"] == key[1])]
        if both.empty or image.empty:
            continue
        both, image = both.iloc[0], image.iloc[0]
        rows.append({
            "variant": name,
            "mean px [95% CI]": both["mean px [95% CI]"],
            "mean px over folds, mean ± std": both["mean px over folds, mean ± std"],
            "PCK@10 (512 frame) %": both["PCK@10 (512 frame) %"],
            "error rate % [95% CI]": image["error rate % [95% CI]"],
            "right-left height error px, MAE [95% CI]": image["right-left height error px, MAE [95% CI]"],
            "higher side correct % [95% CI]": image["higher side correct % [95% CI]"],
        })
    return pd.DataFrame(rows)


def write_table(tables_dir: Path, name: str, frame: pd.DataFrame, title: str) -> str:
    atomic_write_csv(tables_dir / f"{name}.csv", frame)
    text = f"## {title}\n\n{markdown_table(frame)}"
    atomic_write_text(tables_dir / f"{name}.md", text)
    return text


def aggregate(output_dir: Path, folds: list[int], resamples: int, seed: int) -> Path:
    """Pool the finished folds among ``folds`` and write every table into ``output_dir/tables``."""
    finished = [fold for fold in folds if fold_finished(output_dir / f"fold{fold}")]
    if not finished:
        raise SystemExit(f"no finished fold among {folds} in {output_dir}; run without --aggregate-only first")
    if len(finished) < len(folds):
        LOGGER.warning("tables cover folds %s only; folds %s are not finished", finished,
                       sorted(set(folds) - set(finished)))

    seg_images, seg_folds, mark_images, mark_folds, metadata = [], [], [], [], []
    for fold in finished:
        fold_dir = output_dir / f"fold{fold}"
        seg_images.append(read_fold_csv(fold_dir, "segmentation/test/per_image.csv", fold))
        seg_folds.append(read_fold_csv(fold_dir, "segmentation/test/summary.csv", fold))
        mark_images.append(read_fold_csv(fold_dir, "heatmap/evaluate/per_image.csv", fold))
        mark_folds.append(read_fold_csv(fold_dir, "heatmap/evaluate/summary.csv", fold))
        fold_metadata = read_fold_csv(fold_dir, "metadata/metadata.csv", fold)
        metadata.append(fold_metadata[fold_metadata["part"] == "test"])

    seg_folds = pd.concat(seg_folds, ignore_index=True)
    mark_folds = pd.concat(mark_folds, ignore_index=True)
    pooled_segmentation = pool_segmentation(pd.concat(seg_images, ignore_index=True), resamples, seed)
    pooled_landmarks = pool_landmarks(pd.concat(mark_images, ignore_index=True),
                                      pd.concat(metadata, ignore_index=True), resamples, seed)

    tables_dir = output_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(tables_dir / "pooled_segmentation.csv", pooled_segmentation)
    atomic_write_csv(tables_dir / "pooled_landmarks.csv", pooled_landmarks)
    atomic_write_csv(tables_dir / "folds_segmentation.csv", seg_folds)
    atomic_write_csv(tables_dir / "folds_landmarks.csv", mark_folds)

    test_ids = pd.concat(metadata)["image_id"]
    repeated = sorted(set(test_ids[test_ids.duplicated()]))
    if repeated:
        LOGGER.warning("images tested in more than one fold (the splits overlap), pooled once per fold: %s",
                       repeated[:5])
    image_count = len(test_ids)
    sections = [
        f"# Cross-validation tables\n\nFolds {', '.join(map(str, finished))}: {image_count} test images pooled. "
        "Values: mean over the pooled test images with a 95% percentile bootstrap interval "
        f"({resamples} resamples); 'over folds' columns: mean ± standard deviation of the per-fold values.\n",
        write_table(tables_dir, "segmentation", segmentation_table(pooled_segmentation, seg_folds),
                    "Lung segmentation: Dice and IoU per lung, with and without post-processing"),
        write_table(tables_dir, "landmarks", landmark_error_table(pooled_landmarks, mark_folds),
                    "Dome radial errors per input and method"),
        write_table(tables_dir, "landmarks_per_image", landmark_image_table(pooled_landmarks, mark_folds),
                    "Hemidiaphragm error rate and right-left dome height error"),
        write_table(tables_dir, "ablations", ablation_table(pooled_landmarks, mark_folds), "Ablations"),
    ]
    atomic_write_text(tables_dir / "README.md", "\n".join(sections))
    LOGGER.info("wrote the tables of folds %s to %s", finished, tables_dir)
    return tables_dir


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="'synthetic' or a dataset folder with images/, masks/ and landmarks.csv")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for fold<k>/ run folders and tables/; reused to resume")
    parser.add_argument("--fold", type=int, default=None, help="run and tabulate this fold only (0-based)")
    parser.add_argument("--split-dir", type=Path, default=None,
                        help="folder with fold<k>.csv split files (default: data_splits/<dataset folder name>)")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="run nothing; tabulate the folds already finished in --output-dir")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch in every stage")
    parser.add_argument("--quick", action="store_true", help="pass --quick to pipeline.sh (smoke-test sizes)")
    parser.add_argument("--pipeline", type=Path, default=REPO_ROOT / "pipeline.sh",
                        help="the pipeline script to run per fold")
    parser.add_argument("pipeline_args", nargs="*",
                        help="more pipeline.sh arguments after '--', e.g. -- --mask-encoding combined")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.data != "synthetic" and not args.aggregate_only and not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a folder; give a dataset folder or 'synthetic'")
    count = fold_count(args.data, args.split_dir)
    if args.fold is not None and not 0 <= args.fold < count:
        raise SystemExit(f"--fold {args.fold} is out of range: the splits have folds 0 to {count - 1}")
    folds = [args.fold] if args.fold is not None else list(range(count))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if not args.aggregate_only:
        run_folds(args, folds)
    aggregate(args.output_dir, folds, args.bootstrap, args.seed)


if __name__ == "__main__":
    run_script(main, get_args_parser())
