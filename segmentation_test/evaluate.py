"""Stage 2 of the pipeline: predict lung masks with a trained checkpoint and score them.

Reads:  a checkpoint from segmentation_train/train.py (everything needed to rebuild and
        feed the network is inside it), and either a dataset folder with a split file
        (images/ and masks/; the chosen part is scored) or a folder of images (predicted
        only, nothing to score).
Writes: <output-dir>/run.json, per_image.csv (one row per image and post-processing
        variant), summary.csv and summary.md (mean, std, median, 95th percentile, max and
        95% bootstrap interval per metric), overlays/ (best, median and worst images),
        and with --export-masks: masks/<id>.png (original size, 0 background, 1
        patient-right lung, 2 patient-left lung) and masks_index.csv.

All metrics are computed per image at the original image resolution and averaged over
images. Hausdorff distances are in original pixels.

Example:
    python segmentation_test/evaluate.py --checkpoint runs/seg/jsrt224_fold0/best.pt \
        --data-root ../shared/data/jsrt224 --split data_splits/jsrt224/fold0.csv --part test \
        --postprocess largest,fill --export-masks --output-dir runs/seg/jsrt224_fold0/eval_test
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hemidiaphragm.datasets import MaskEncoding, default_mask_encoding, find_file, list_image_ids
from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG, LungMaskWarning, read_image
from hemidiaphragm.postprocess import parse_steps, postprocess
from hemidiaphragm.runs import (
    atomic_write_csv,
    atomic_write_text,
    non_negative_int,
    positive_int,
    prepare_output_dir,
    resolve_device,
    run_script,
    setup_logging,
    write_run_record,
)
from hemidiaphragm.seg_metrics import lung_scores
from hemidiaphragm.segmentation import load_segmenter
from hemidiaphragm.splits import PARTS, ids_in, read_split
from hemidiaphragm.stats import summarise

LOGGER = logging.getLogger("segmentation_test")

METRICS = ("dice", "iou", "precision", "recall", "hd95")
REGIONS = ("right", "left", "both")

# Overlay colours (BGR): truth only, prediction only, both.
TRUTH_ONLY = (60, 200, 60)
PREDICTION_ONLY = (60, 60, 230)
OVERLAP = (0, 215, 255)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict and score lung masks with a segmentation checkpoint.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt of a training run")
    parser.add_argument("--output-dir", type=Path, required=True, help="new folder for this evaluation's files")
    parser.add_argument("--data-root", type=Path, default=None, help="dataset folder with images/ and masks/")
    parser.add_argument("--split", type=Path, default=None, help="split CSV; with --part, the images to score")
    parser.add_argument("--part", default="test", choices=PARTS, help="split part to score")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="predict every image in this folder instead of a split (no scores)")
    parser.add_argument("--mask-encoding", default=None,
                        help="encoding of the ground-truth masks ('labels:R,L' or 'combined'); default: the "
                             "dataset preset, as in training")
    parser.add_argument("--postprocess", default="largest,fill",
                        help="comma-separated steps from largest, close, fill, hull, or 'none'; the raw "
                             "prediction is always scored too, so each variant is reported")
    parser.add_argument("--export-masks", action="store_true",
                        help="save the post-processed masks at original size with masks_index.csv")
    parser.add_argument("--overlays", type=non_negative_int, default=1,
                        help="how many best, median and worst images to draw each (0: none)")
    parser.add_argument("--bootstrap", type=positive_int, default=2000,
                        help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch; default: torch's choice")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def check_image_source(args: argparse.Namespace) -> None:
    """Raise SystemExit unless exactly one image source is given: --images-dir, or --data-root with --split."""
    if args.images_dir is not None and (args.data_root is not None or args.split is not None):
        raise SystemExit("--images-dir predicts a folder without scoring it and cannot be combined with "
                         "--data-root or --split; give either --images-dir, or --data-root with --split")
    if args.images_dir is None and (args.data_root is None or args.split is None):
        raise SystemExit("give either --images-dir, or --data-root with --split")


def collect_inputs(args: argparse.Namespace) -> list[tuple[str, Path, Path | None]]:
    """Return (image id, image path, truth mask path or None) for every image to predict."""
    check_image_source(args)
    if args.images_dir is not None:
        return [(image_id, find_file(args.images_dir, image_id), None) for image_id in list_image_ids(args.images_dir)]
    image_ids = ids_in(read_split(args.split), args.part)
    if not image_ids:
        raise SystemExit(f"split {args.split} has no {args.part!r} images")
    return [
        (image_id, find_file(args.data_root / "images", image_id),
         find_file(args.data_root / "masks", image_id, (".png", ".gif", ".bmp")))
        for image_id in image_ids
    ]


def draw_overlay(pixels: np.ndarray, truth: np.ndarray, predicted: np.ndarray, title: str) -> np.ndarray:
    """Blend truth-only, prediction-only and overlap regions onto the grey image (BGR uint8)."""
    grey = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    canvas = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    colour = np.zeros_like(canvas)
    truth_lung, predicted_lung = truth > 0, predicted > 0
    colour[truth_lung & ~predicted_lung] = TRUTH_ONLY
    colour[predicted_lung & ~truth_lung] = PREDICTION_ONLY
    colour[truth_lung & predicted_lung] = OVERLAP
    region = truth_lung | predicted_lung
    canvas[region] = (0.6 * canvas[region] + 0.4 * colour[region]).astype(np.uint8)
    for labels, bgr in ((truth, TRUTH_ONLY), (predicted, PREDICTION_ONLY)):
        for label in (RIGHT_LUNG, LEFT_LUNG):
            contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, bgr, 1)
    scale = max(0.35, canvas.shape[1] / 900)
    cv2.putText(canvas, title, (4, int(14 * scale / 0.35)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return canvas


def summary_table(per_image: pd.DataFrame, resamples: int) -> pd.DataFrame:
    rows = []
    for variant, group in per_image.groupby("variant", sort=False):
        for region in REGIONS:
            for metric in METRICS:
                values = group[f"{region}_{metric}"].to_numpy(dtype=float)
                stats = summarise(values, resamples=resamples)
                stats["undefined"] = int(np.count_nonzero(~np.isfinite(values)))
                rows.append({"variant": variant, "region": region, "metric": metric, **stats})
    return pd.DataFrame(rows)


def markdown_summary(summary: pd.DataFrame) -> str:
    lines = []
    for variant, group in summary.groupby("variant", sort=False):
        lines += [f"### Post-processing: {variant}", "",
                  "| lung | metric | mean ± std | median | p95 | 95% CI of mean | n |",
                  "|---|---|---|---|---|---|---|"]
        for row in group.itertuples():
            digits = 2 if row.metric == "hd95" else 4
            lines.append(
                f"| {row.region} | {row.metric} | {row.mean:.{digits}f} ± {row.std:.{digits}f} | "
                f"{row.median:.{digits}f} | {row.p95:.{digits}f} | "
                f"[{row.ci95_low:.{digits}f}, {row.ci95_high:.{digits}f}] | {row.n} |"
            )
        lines.append("")
    lines.append("hd95: 95th-percentile symmetric Hausdorff distance in original pixels; a prediction or truth "
                 "with an empty lung has no hd95 and is left out of its n.")
    return "\n".join(lines) + "\n"


def check_truth_encoding(inputs: list, encoding: MaskEncoding | None, encoding_text: str | None,
                         sample: int = 5) -> None:
    """Raise ValueError when the first ``sample`` truth masks all read as empty under ``encoding``.

    One empty truth mask is a valid case (it is scored), but several in a row almost always mean
    a wrong --mask-encoding, which would otherwise score every image against nothing.
    """
    truth_paths = [truth_path for _, _, truth_path in inputs if truth_path is not None][:sample]
    if encoding is None or not truth_paths:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LungMaskWarning)  # empty lungs are the point of this check
        if any(encoding.read(path).any() for path in truth_paths):
            return
    raise ValueError(f"the first {len(truth_paths)} truth masks (from {truth_paths[0]}) contain no lung under mask "
                     f"encoding '{encoding_text}'; check --mask-encoding against the mask values")


def main(args: argparse.Namespace) -> None:
    check_image_source(args)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steps = parse_steps(args.postprocess)
    variant_name = "+".join(steps) if steps else "none"
    segmenter = load_segmenter(args.checkpoint, device)
    truth_encoding_text = args.mask_encoding or (
        default_mask_encoding(args.data_root) if args.data_root is not None else None)
    # Check the inputs before the output folder is created, so a bad split or folder leaves nothing behind.
    inputs = collect_inputs(args)
    truth_encoding = MaskEncoding.parse(truth_encoding_text) if truth_encoding_text else None
    check_truth_encoding(inputs, truth_encoding, truth_encoding_text)
    prepare_output_dir(args.output_dir, args.overwrite)
    write_run_record(args.output_dir, vars(args), device,
                     {"postprocess_steps": list(steps), "truth_mask_encoding": truth_encoding_text,
                      "model_config": segmenter.config})
    LOGGER.info("predicting %d images with %s (post-processing: %s)", len(inputs), args.checkpoint, variant_name)

    mask_dir = args.output_dir / "masks"
    if args.export_masks:
        mask_dir.mkdir()
    rows, index_rows, kept, seconds = [], [], {}, []
    for image_id, image_path, truth_path in tqdm(inputs, disable=args.no_progress, desc="images"):
        radiograph = read_image(image_path)
        started = time.perf_counter()
        raw = segmenter.predict(radiograph.pixels)
        processed = postprocess(raw, steps)
        seconds.append(time.perf_counter() - started)
        if args.export_masks:
            mask_path = mask_dir / f"{image_id}.png"
            if not cv2.imwrite(str(mask_path), processed):
                raise OSError(f"could not write {mask_path}")
            index_rows.append({"image_id": image_id, "image_path": str(Path(image_path).resolve()),
                               "mask_path": str(mask_path.resolve()), "mask_encoding": "labels:1,2",
                               "width": radiograph.original_width, "height": radiograph.original_height})
        if truth_path is None:
            continue
        truth = truth_encoding.read(truth_path)
        if truth.shape != raw.shape:
            raise ValueError(f"truth mask {truth_path} is {truth.shape[1]}x{truth.shape[0]} (width x height) but "
                             f"image {image_path} is {raw.shape[1]}x{raw.shape[0]}; give the mask the image's size")
        variants = {"none": raw} if not steps else {"none": raw, variant_name: processed}
        for name, labels in variants.items():
            rows.append({"image_id": image_id, "variant": name, "width": raw.shape[1], "height": raw.shape[0],
                         **lung_scores(labels, truth)})
        kept[image_id] = (radiograph.pixels, truth, processed)

    timing = {"images": len(seconds), "mean_seconds_per_image": float(np.mean(seconds)), "device": device}
    LOGGER.info("inference with post-processing: %.3f s per image on %s", timing["mean_seconds_per_image"], device)
    if args.export_masks:
        atomic_write_csv(args.output_dir / "masks_index.csv", pd.DataFrame(index_rows))
    if not rows:
        LOGGER.info("no ground truth given: masks predicted, nothing scored")
        return

    per_image = pd.DataFrame(rows)
    atomic_write_csv(args.output_dir / "per_image.csv", per_image)
    summary = summary_table(per_image, args.bootstrap)
    atomic_write_csv(args.output_dir / "summary.csv", summary)
    header = (f"Segmentation of {len(kept)} images ({args.part} part of {args.split}) with {args.checkpoint}; "
              f"{timing['mean_seconds_per_image']:.3f} s per image on {device}.\n\n")
    atomic_write_text(args.output_dir / "summary.md", header + markdown_summary(summary))

    chosen = per_image[per_image["variant"] == variant_name].sort_values("both_dice", kind="stable")
    if args.overlays > 0:
        overlay_dir = args.output_dir / "overlays"
        overlay_dir.mkdir()
        count = min(args.overlays, len(chosen))
        middle = len(chosen) // 2
        picks = {"worst": chosen.iloc[:count], "median": chosen.iloc[middle: middle + count],
                 "best": chosen.iloc[::-1].iloc[:count]}
        for rank_name, picked in picks.items():
            for row in picked.itertuples():
                pixels, truth, predicted = kept[row.image_id]
                title = f"{rank_name} {row.image_id} Dice R {row.right_dice:.3f} L {row.left_dice:.3f}"
                cv2.imwrite(str(overlay_dir / f"{rank_name}_{row.image_id}.png"),
                            draw_overlay(pixels, truth, predicted, title))

    for variant, group in per_image.groupby("variant", sort=False):
        LOGGER.info("%s: mean Dice right %.4f left %.4f both %.4f over %d images", variant,
                    group["right_dice"].mean(), group["left_dice"].mean(), group["both_dice"].mean(), len(group))


if __name__ == "__main__":
    run_script(main, get_args_parser())
