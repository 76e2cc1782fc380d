"""Locate both hemidiaphragm domes in radiographs with the two-stage heatmap model.

Each image is read with ``hemidiaphragm.imaging`` (PNG, JPEG, TIFF, DICOM). Its lung mask
comes from a segmentation checkpoint with the chosen post-processing, from exported masks,
or from the metadata. Stage 1 runs on the whole letterboxed input, stage 2 on a crop around
each stage-1 point, and each dome is decoded in the band around its own lung's lower
border. Where a mask is available, the mask-derived geometric baseline
(``hemidiaphragm.landmarks.derive_landmarks``) is computed on the same mask.

Reads:  images (a folder, a text file with one path per line, a metadata CSV or a split
        file with a data root), the stage-1 and optional stage-2 checkpoints, and a
        segmentation checkpoint, a masks_index.csv or the metadata's masks.
Writes: <output-dir>/run.json, predictions.csv (one row per image, points in
        original pixels) and, with --overlays, overlays/<image_id>.png.

predictions.csv columns: image_id, image_path, width, height, pixel_spacing_mm,
mask_source, constrained, then for each dome (right_dome, left_dome): the final point
(``_x``, ``_y``), its heatmap peak (``_peak``) and flags (``_flags``, ';'-separated:
low_peak, outside_lung_band, missing_lung, and outside_image for a point beyond the image
border, outside -0.5 .. width - 0.5 or -0.5 .. height - 0.5; such a point is written as
decoded, not clipped), the stage-1 point, peak and flags (``_stage1_x`` ...), and the
geometric baseline (``_geometric_x``, ``_geometric_y``, ``_geometric_failure``).

Example:
    python heatmap_test/predict.py --coarse-checkpoint runs/heatmap/mask_coarse/best.pt \
        --fine-checkpoint runs/heatmap/mask_fine/best.pt --seg-checkpoint runs/seg/best.pt \
        --split data_splits/jsrt224/fold0.csv --data-root ../shared/data/jsrt224 --part test \
        --output-dir runs/heatmap/predict_test --overlays
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hemidiaphragm.datasets import MaskEncoding, find_file, list_image_ids
from hemidiaphragm.heatmap_model import TwoStagePredictor, load_heatmap_stage
from hemidiaphragm.heatmaps import LANDMARKS
from hemidiaphragm.imaging import read_image
from hemidiaphragm.landmark_data import check_index_masks, load_landmark_table, read_mask_index
from hemidiaphragm.landmark_plots import draw_overlay, write_png
from hemidiaphragm.landmarks import derive_landmarks
from hemidiaphragm.postprocess import parse_steps
from hemidiaphragm.runs import (
    atomic_write_csv,
    positive_int,
    prepare_output_dir,
    resolve_device,
    run_script,
    setup_logging,
    write_run_record,
)
from hemidiaphragm.splits import ids_in, read_split

LOGGER = logging.getLogger("heatmap_predict")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict hemidiaphragm dome points with the two-stage heatmap model.")
    parser.add_argument("--coarse-checkpoint", type=Path, required=True, help="stage-1 best.pt")
    parser.add_argument("--fine-checkpoint", type=Path, default=None,
                        help="stage-2 best.pt; without it the final points are the stage-1 points")
    parser.add_argument("--output-dir", type=Path, required=True, help="new folder for predictions.csv and overlays")

    group = parser.add_argument_group("images (choose one source)")
    group.add_argument("--images", type=Path, default=None,
                       help="a folder of images, or a text file with one image path per line")
    group.add_argument("--metadata", type=Path, default=None,
                       help="metadata CSV; its image paths (and, with --use-metadata-masks, its masks) are used")
    group.add_argument("--split", type=Path, default=None,
                       help="split CSV whose --part ids are read from <data-root>/images (with --data-root), or "
                            "which replaces the metadata's part column (with --metadata)")
    group.add_argument("--data-root", type=Path, default=None, help="dataset folder with images/ (with --split)")
    group.add_argument("--part", default=None, help="train, val or test: only images of this part")

    group = parser.add_argument_group("lung masks (choose at most one source)")
    group.add_argument("--seg-checkpoint", type=Path, default=None, help="segmentation best.pt to predict masks")
    group.add_argument("--postprocess", default="largest,fill",
                       help="post-processing of predicted masks: comma-separated steps from largest, close, fill, "
                            "hull, or none")
    group.add_argument("--mask-index", type=Path, default=None,
                       help="masks_index.csv of exported predicted masks, one per image; its mask_encoding "
                            "column is used where present, else labels 1/2")
    group.add_argument("--use-metadata-masks", action="store_true",
                       help="use the metadata's mask_path (ground truth; for comparisons only)")

    group = parser.add_argument_group("decoding")
    group.add_argument("--no-constraint", action="store_true",
                       help="search the whole heatmap instead of the band around each lung's lower border")
    group.add_argument("--band-radius-512", type=float, default=None,
                       help="band radius in pixels of the 512 frame (original pixels x 512 / max(width, height)); "
                            "default: the stage-1 checkpoint's value")
    group.add_argument("--min-peak", type=float, default=None,
                       help="flag peaks below this heatmap value as low_peak; default: the checkpoint's value")

    group = parser.add_argument_group("run control")
    group.add_argument("--overlays", action="store_true", help="write overlays/<image_id>.png for every image")
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    group.add_argument("--threads", type=positive_int, default=None,
                       help="CPU threads for torch; default: torch's choice")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


@dataclass
class ImageItem:
    """One image to process, with whatever the chosen sources know about it."""

    image_id: str
    image_path: Path
    mask_path: Path | None = None
    mask_encoding: str | None = None
    spacing_mm: float = float("nan")


def list_items(args: argparse.Namespace) -> list[ImageItem]:
    """Collect the images from exactly one of --images, --metadata or --split with --data-root."""
    sources = [args.images is not None, args.metadata is not None, args.data_root is not None]
    if sum(sources) != 1:
        raise SystemExit("choose exactly one image source: --images, --metadata, or --split with --data-root")

    if args.metadata is not None:
        table = load_landmark_table(args.metadata, args.split)
        if args.part:
            table = table[table["part"] == args.part]
            if table.empty:
                raise SystemExit(f"{args.metadata} has no rows with part {args.part!r}")
        return [
            ImageItem(row.image_id, Path(row.image_path), Path(row.mask_path) if row.mask_path else None,
                      row.mask_encoding or None, float(row.pixel_spacing_mm))
            for row in table.itertuples(index=False)
        ]

    if args.data_root is not None:
        if args.split is None or args.part is None:
            raise SystemExit("--data-root needs --split and --part to choose the images")
        ids = ids_in(read_split(args.split), args.part)
        return [ImageItem(image_id, find_file(args.data_root / "images", image_id)) for image_id in ids]

    if args.images.is_dir():
        return [ImageItem(image_id, find_file(args.images, image_id)) for image_id in list_image_ids(args.images)]
    if not args.images.is_file():
        raise SystemExit(f"--images {args.images} is neither a folder nor a list file")
    items = []
    for line_number, line in enumerate(args.images.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = Path(text)
        if not path.is_absolute():
            path = (args.images.parent / path).resolve()
        if not path.is_file():
            raise SystemExit(f"{args.images}, line {line_number}: image {path} not found")
        items.append(ImageItem(path.stem, path))
    if not items:
        raise SystemExit(f"--images {args.images} lists no image paths")
    return items


class MaskSource:
    """Lung labels per image from a segmenter, a masks_index.csv or the metadata, or none."""

    def __init__(self, args: argparse.Namespace, device: str):
        chosen = [args.seg_checkpoint is not None, args.mask_index is not None, args.use_metadata_masks]
        if sum(chosen) > 1:
            raise SystemExit("choose at most one mask source: --seg-checkpoint, --mask-index or --use-metadata-masks")
        if args.use_metadata_masks and args.metadata is None:
            raise SystemExit("--use-metadata-masks needs --metadata")
        self.segmenter = None
        self.index = None
        self.name = "none"
        self.steps = parse_steps(args.postprocess)
        if args.seg_checkpoint is not None:
            from hemidiaphragm.segmentation import load_segmenter

            self.segmenter = load_segmenter(args.seg_checkpoint, device)
            self.name = "segmenter"
        elif args.mask_index is not None:
            self.index = read_mask_index(args.mask_index)  # image_id -> (mask path, mask encoding)
            check_index_masks(self.index, args.mask_index)
            self.name = "mask_index"
        elif args.use_metadata_masks:
            self.name = "metadata"

    def labels(self, item: ImageItem, pixels: np.ndarray) -> np.ndarray | None:
        if self.segmenter is not None:
            return self.segmenter.predict(pixels, self.steps)
        if self.index is not None:
            if item.image_id not in self.index:
                raise SystemExit(f"the mask index has no mask for image {item.image_id}; export its mask first")
            path, encoding = self.index[item.image_id]
            return MaskEncoding.parse(encoding).read(path)
        if self.name == "metadata":
            if item.mask_path is None:
                raise SystemExit(f"metadata row of image {item.image_id} has no mask_path")
            return MaskEncoding.parse(item.mask_encoding).read(item.mask_path)
        return None


def point_flags(flags: list[str], xy: np.ndarray, width: int, height: int) -> str:
    """Join a point's decoder flags, adding outside_image when the point lies beyond the image border."""
    flags = list(flags)
    x, y = float(xy[0]), float(xy[1])
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5) and "outside_image" not in flags:
        flags.append("outside_image")
    return ";".join(flags)


def prediction_row(item: ImageItem, pixels: np.ndarray, labels, prediction, spacing_mm: float, source: str) -> dict:
    row = {
        "image_id": item.image_id, "image_path": str(item.image_path),
        "width": pixels.shape[1], "height": pixels.shape[0], "pixel_spacing_mm": spacing_mm,
        "mask_source": source, "constrained": prediction.constrained,
    }
    for k, name in enumerate(LANDMARKS):
        row[f"{name}_x"], row[f"{name}_y"] = (float(v) for v in prediction.final.xy[k])
        row[f"{name}_peak"] = float(prediction.final.peaks[k])
        row[f"{name}_flags"] = point_flags(prediction.final.flags[k], prediction.final.xy[k], *pixels.shape[::-1])
    for k, name in enumerate(LANDMARKS):
        row[f"{name}_stage1_x"], row[f"{name}_stage1_y"] = (float(v) for v in prediction.stage1.xy[k])
        row[f"{name}_stage1_peak"] = float(prediction.stage1.peaks[k])
        row[f"{name}_stage1_flags"] = point_flags(prediction.stage1.flags[k], prediction.stage1.xy[k],
                                                  *pixels.shape[::-1])
    geometric = derive_landmarks(labels) if labels is not None else None
    for name in LANDMARKS:
        side = name.split("_")[0]
        if geometric is None:
            row[f"{name}_geometric_x"] = row[f"{name}_geometric_y"] = float("nan")
            row[f"{name}_geometric_failure"] = "no_mask"
        else:
            row[f"{name}_geometric_x"], row[f"{name}_geometric_y"] = geometric[side].dome
            row[f"{name}_geometric_failure"] = geometric[side].failure
    return row


def main(args: argparse.Namespace) -> None:
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    # Every input is checked before the output folder is prepared, so a missing checkpoint or
    # a wrong combination of sources leaves an earlier run, and a new folder, untouched.
    if args.band_radius_512 is not None and not args.band_radius_512 > 0:
        raise SystemExit(f"error: --band-radius-512 {args.band_radius_512} must be a positive number of pixels")
    if args.min_peak is not None and not args.min_peak >= 0:
        raise SystemExit(f"error: --min-peak {args.min_peak} must be 0 or more (targets peak at 1)")
    coarse = load_heatmap_stage(args.coarse_checkpoint, device, expected_stage="coarse")
    fine = load_heatmap_stage(args.fine_checkpoint, device, expected_stage="fine") if args.fine_checkpoint else None
    predictor = TwoStagePredictor(coarse, fine, constrain=not args.no_constraint,
                                  band_radius_512=args.band_radius_512, min_peak=args.min_peak)
    items = list_items(args)
    masks = MaskSource(args, device)
    if predictor.needs_mask and masks.name == "none":
        raise SystemExit(
            f"the checkpoints read a lung mask (input modes {coarse.input_mode!r}"
            f"{'' if fine is None else ', ' + repr(fine.input_mode)}); give --seg-checkpoint, --mask-index or "
            "--use-metadata-masks"
        )
    if masks.index is not None:
        unlisted = [item.image_id for item in items if item.image_id not in masks.index]
        if unlisted:
            raise SystemExit(f"{args.mask_index} has no mask for {len(unlisted)} image(s), for example "
                             f"{unlisted[:3]}; export the masks of the same images first")
    mask_paths = []
    if masks.index is not None:
        mask_paths = [masks.index[item.image_id][0] for item in items]
    elif masks.name == "metadata":
        mask_paths = [Path(item.mask_path) for item in items if item.mask_path is not None]
    missing = [str(path) for path in mask_paths if not path.is_file()]
    if missing:
        raise SystemExit(f"error: {len(missing)} mask file(s) not found, for example {missing[:3]}; "
                         "export the masks again or correct the mask paths")
    prepare_output_dir(args.output_dir, args.overwrite)
    write_run_record(args.output_dir, vars(args), device, {
        "coarse_model_config": coarse.config, "fine_model_config": fine.config if fine else None,
    })
    LOGGER.info("predicting %d images; masks from %s; constraint %s", len(items), masks.name,
                "off" if args.no_constraint else f"on (band radius {predictor.band_radius_512:g} in the 512 frame)")

    rows = []
    for item in tqdm(items, desc="predict", disable=args.no_progress):
        radiograph = read_image(item.image_path)
        labels = masks.labels(item, radiograph.pixels)
        if labels is not None and labels.shape != radiograph.pixels.shape:
            raise SystemExit(
                f"mask of image {item.image_id} is {labels.shape[1]}x{labels.shape[0]} but the image is "
                f"{radiograph.original_width}x{radiograph.original_height}"
            )
        prediction = predictor.predict(radiograph.pixels, labels)
        spacing = item.spacing_mm
        if radiograph.spacing_mm is not None and not np.isfinite(spacing):
            spacing = float(np.mean(radiograph.spacing_mm))
        rows.append(prediction_row(item, radiograph.pixels, labels, prediction, spacing, masks.name))
        if args.overlays:
            overlay = draw_overlay(
                radiograph.pixels,
                {"stage1": prediction.stage1.xy, "prediction": prediction.final.xy},
                labels, caption=item.image_id,
            )
            write_png(args.output_dir / "overlays" / f"{item.image_id}.png", overlay)

    table = pd.DataFrame(rows)
    atomic_write_csv(args.output_dir / "predictions.csv", table)
    flagged = sum(bool(row[f"{name}_flags"]) for row in rows for name in LANDMARKS)
    LOGGER.info("wrote %s (%d images, %d flagged dome points)", args.output_dir / "predictions.csv", len(rows),
                flagged)


if __name__ == "__main__":
    run_script(main, get_args_parser())
