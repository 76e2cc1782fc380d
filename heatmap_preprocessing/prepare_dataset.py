"""Preprocessing stage: convert a public dataset's own layout into the standard layout.

The standard layout is ``images/<id>.<ext>``, ``masks/<id>.png`` and ``metadata.csv``. Every
mask written here is a uint8 PNG label map of the image's size, 0 background, 1 patient-right
lung, 2 patient-left lung (mask encoding ``labels:1,2``), whatever the source encoding was.

Layouts (``--layout``):

- ``shared``: a set that is already in the standard layout (``../shared/data/jsrt224``,
  ``shenzhen512``). Nothing is copied: metadata.csv points at the files where they are, with
  the set's own mask encoding (``labels:150,200`` for jsrt224, ``combined`` for shenzhen512).
  The points default to the set's ``landmarks.csv``.
- ``jsrt-original``: JSRT ``.IMG`` files (2048 x 2048, 12-bit raw, found anywhere under
  ``--source``) with the SCR lung masks (``--masks-source``: the folder holding ``right lung/``
  and ``left lung/`` with ``<id>.gif``). Images are written as 16-bit PNG (the 12-bit values
  of ``read_image`` scaled to 0-65535) with pixel spacing 0.175 mm. The SCR masks are 1024 x
  1024, so they are upsampled by 2 with nearest neighbour: mask pixel (r, c) becomes image
  pixels (2r..2r+1, 2c..2c+1), which keeps pixel centres aligned ((x + 0.5) * 2 - 0.5).
- ``montgomery``: ``CXR_png/<id>.png`` with ``ManualMask/rightMask/<id>.png`` and
  ``ManualMask/leftMask/<id>.png``. By default (``--side-from position``) the lung lying on
  the image left becomes the patient-right lung, whatever its folder name. The log reports
  how often that disagreed with the folder names.
- ``shenzhen``: ``CXR_png/<id>.png`` and combined masks ``<id>_mask.png`` of both lungs
  (``--masks-source``, default ``mask/`` under ``--source``), split into the two lungs by
  connected components.
- ``folder``: ``images/`` and ``masks/`` under ``--source`` (or ``--images-subdir`` and
  ``--masks-subdir``) with any ``--mask-encoding`` and ``--mask-suffix``.

Images that are PNG or JPEG are copied byte for byte. A mask whose size differs from its
image with the same aspect ratio (within 1%) is resized with nearest neighbour and listed in
``preparation_problems.csv`` as ``mask_resized`` (expected for JSRT, where it is only logged);
other mismatches and unreadable files are listed there too and left out.

The points come from ``--measurements`` (any layout ``build_metadata.py`` reads) or, with
``--points-source masks``, from the written masks (``hemidiaphragm.landmarks``). metadata.csv
and the same reports as ``build_metadata.py`` are written into ``--output-dir``.

Example:
    python heatmap_preprocessing/prepare_dataset.py --layout montgomery \\
        --source ~/data/MontgomerySet --points-source masks --output-dir ~/data/montgomery
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from hemidiaphragm.datasets import IMAGE_SUFFIXES, PRESET_MASK_ENCODINGS, MaskEncoding
from hemidiaphragm.imaging import (
    LEFT_LUNG,
    RIGHT_LUNG,
    ImageReadError,
    read_image,
    read_lung_mask,
    read_lung_mask_pair,
)
from hemidiaphragm.measurements import (
    BuildOptions,
    CoordinateFrame,
    add_points_arguments,
    build_metadata_table,
    find_mask,
    index_files,
    load_records,
    write_build_outputs,
)
from hemidiaphragm.runs import atomic_write_csv, prepare_output_dir, run_script, setup_logging, write_run_record
from hemidiaphragm.splits import PARTS, read_split

LOGGER = logging.getLogger("hemidiaphragm.prepare_dataset")
LAYOUTS = ("shared", "jsrt-original", "montgomery", "shenzhen", "folder")
OUTPUT_MASK_ENCODING = "labels:1,2"
ASPECT_TOLERANCE = 0.01
COPIED_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class SourceItem:
    """One image of the source dataset and how to read its lung labels (None: no mask)."""

    image_id: str
    image_path: Path
    read_labels: Callable[[], np.ndarray] | None = None
    mask_description: str = ""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("source")
    source.add_argument("--layout", choices=LAYOUTS, required=True, help="layout of --source (see the module help)")
    source.add_argument("--source", type=Path, required=True, help="root folder of the dataset as downloaded")
    source.add_argument("--masks-source", type=Path, default=None,
                        help="mask folder when it is not inside --source: jsrt-original, the SCR folder holding "
                             "'right lung/' and 'left lung/' (default: searched under --source); shenzhen, the "
                             "folder of <id>_mask.png (default: SOURCE/mask)")
    source.add_argument("--images-subdir", default="images", help="folder layout: image folder under --source")
    source.add_argument("--masks-subdir", default="masks", help="folder layout: mask folder under --source")
    source.add_argument("--mask-encoding", default="labels:1,2",
                        help="folder layout: 'labels:R,L' or 'combined' encoding of the source masks")
    source.add_argument("--mask-suffix", default="auto",
                        help="folder layout: mask name = image id + this + extension; 'auto' tries '', _mask, "
                             "_segm, _seg, _label, _labels")
    source.add_argument("--side-from", choices=("position", "folder-name"), default="position",
                        help="montgomery: label the lung on the image left as patient right (position), or "
                             "trust the rightMask/leftMask folder names")

    add_points_arguments(parser.add_argument_group("points"), layout_flag="--measurements-layout")

    selection = parser.add_argument_group("selection and labels")
    selection.add_argument("--split", type=Path, default=None, help="split CSV (image_id, patient_id, part)")
    selection.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts of --split to keep")
    selection.add_argument("--dataset-name", default=None,
                           help="value of the dataset column (default: the name of --output-dir)")
    selection.add_argument("--pixel-spacing-mm", type=float, default=None,
                           help="isotropic pixel size of the source images in mm (default: 0.175 for JSRT, "
                                "from DICOM headers, else empty)")
    selection.add_argument("--verify", choices=("decode", "header"), default="decode",
                           help="how build checks the written files: decode fully, or read sizes only")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True, help="folder for images/, masks/ and metadata.csv")
    run.add_argument("--strict", action="store_true",
                     help="fail (exit status 1, no metadata.csv) when anything is rejected or dropped")
    run.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output-dir")
    return parser


# --------------------------------------------------------------------------------------------
# Listing each layout's files


def list_jsrt_original(args: argparse.Namespace) -> list[SourceItem]:
    images = sorted(path for path in args.source.rglob("*") if path.suffix.lower() == ".img" and path.is_file())
    if not images:
        raise SystemExit(f"no .IMG files under {args.source}; --layout jsrt-original expects the JSRT raw images")
    scr = args.masks_source or _find_folder_containing(args.source, "right lung")
    right_dir, left_dir = (scr / "right lung", scr / "left lung") if scr else (None, None)
    if scr is None or not right_dir.is_dir() or not left_dir.is_dir():
        LOGGER.warning("no SCR 'right lung'/'left lung' folders found (%s); images are written without masks", scr)

    items = []
    for path in images:
        image_id = path.stem
        item = SourceItem(image_id, path)
        if right_dir is not None and right_dir.is_dir():
            right, left = _find_case_insensitive(right_dir, f"{image_id}.gif"), _find_case_insensitive(
                left_dir, f"{image_id}.gif")
            if right and left:
                item.read_labels = _pair_reader(right, left)
                item.mask_description = f"{right} + {left}"
        items.append(item)
    return items


def list_montgomery(args: argparse.Namespace) -> list[SourceItem]:
    images_dir = args.source / "CXR_png"
    right_dir = args.source / "ManualMask" / "rightMask"
    left_dir = args.source / "ManualMask" / "leftMask"
    _require_dir(images_dir, "montgomery")
    items = []
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() != ".png":
            continue
        item = SourceItem(path.stem, path)
        right, left = right_dir / path.name, left_dir / path.name
        if right.is_file() and left.is_file():
            item.read_labels = _pair_reader(right, left, by_position=args.side_from == "position")
            item.mask_description = f"{right} + {left}"
        items.append(item)
    return items


def list_shenzhen(args: argparse.Namespace) -> list[SourceItem]:
    images_dir = args.source / "CXR_png"
    _require_dir(images_dir, "shenzhen")
    masks_dir = args.masks_source or next(
        (args.source / name for name in ("mask", "masks") if (args.source / name).is_dir()), None)
    mask_index = index_files(masks_dir) if masks_dir else {}
    if masks_dir is None:
        LOGGER.warning("no mask folder (--masks-source, SOURCE/mask) found; images are written without masks")
    items = []
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        item = SourceItem(path.stem, path)
        found = find_mask(mask_index, path.stem, "_mask")
        if len(found) == 1:
            item.read_labels = _single_reader(found[0], MaskEncoding(None, None))
            item.mask_description = str(found[0])
        items.append(item)
    return items


def list_folder(args: argparse.Namespace) -> list[SourceItem]:
    images_dir = args.source / args.images_subdir
    masks_dir = args.source / args.masks_subdir
    _require_dir(images_dir, "folder")
    encoding = MaskEncoding.parse(args.mask_encoding)
    mask_index = index_files(masks_dir) if masks_dir.is_dir() else {}
    items = []
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        item = SourceItem(path.stem, path)
        found = find_mask(mask_index, path.stem, args.mask_suffix)
        if len(found) == 1:
            item.read_labels = _single_reader(found[0], encoding)
            item.mask_description = str(found[0])
        elif len(found) > 1:
            LOGGER.warning("%s: several masks match (%s); none is used", path.stem, ", ".join(p.name for p in found))
        items.append(item)
    return items


def _pair_reader(right: Path, left: Path, by_position: bool = False) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        with warnings.catch_warnings():
            # Swapped folders are expected with by_position and handled below.
            if by_position:
                warnings.filterwarnings("ignore", message=".*may be swapped")
            labels = read_lung_mask_pair(right, left)
        if by_position and _right_lung_on_image_right(labels):
            labels = np.where(labels == RIGHT_LUNG, LEFT_LUNG, np.where(labels == LEFT_LUNG, RIGHT_LUNG, 0))
            labels = labels.astype(np.uint8)
            read.swapped = True
        return labels

    read.swapped = False
    return read


def _single_reader(path: Path, encoding: MaskEncoding) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        if encoding.right_value is None:
            return read_lung_mask(path)
        return encoding.read(path)

    return read


def _right_lung_on_image_right(labels: np.ndarray) -> bool:
    right_columns = np.nonzero(labels == RIGHT_LUNG)[1]
    left_columns = np.nonzero(labels == LEFT_LUNG)[1]
    if len(right_columns) == 0 or len(left_columns) == 0:
        return False
    return right_columns.mean() > left_columns.mean()


def _find_folder_containing(root: Path, name: str) -> Path | None:
    for path in sorted(root.rglob(name)):
        if path.is_dir():
            return path.parent
    return None


def _find_case_insensitive(folder: Path, name: str) -> Path | None:
    exact = folder / name
    if exact.is_file():
        return exact
    lowered = name.lower()
    return next((path for path in folder.iterdir() if path.name.lower() == lowered), None)


def _require_dir(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found; --layout {layout} expects it (see --help)")


# --------------------------------------------------------------------------------------------
# Writing the standard layout


def write_standard_layout(items: list[SourceItem], out_dir: Path, layout: str) -> tuple[list[dict], dict]:
    """Write images/ and masks/; return the problems found and the pixel spacing per image id."""
    images_out, masks_out = out_dir / "images", out_dir / "masks"
    images_out.mkdir(parents=True, exist_ok=True)
    masks_out.mkdir(parents=True, exist_ok=True)

    problems, spacing_by_id = [], {}
    swapped = 0
    for item in items:
        try:
            radiograph = read_image(item.image_path)
        except ImageReadError as error:
            problems.append(_problem(item, "unreadable_image", str(error)))
            continue
        _write_image(item.image_path, radiograph.pixels, images_out / item.image_id)
        if radiograph.spacing_mm is not None:
            spacing_by_id[item.image_id] = radiograph.spacing_mm

        if item.read_labels is None:
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                labels = item.read_labels()
        except (ImageReadError, ValueError) as error:
            problems.append(_problem(item, "unreadable_mask", str(error)))
            continue
        for message in caught:
            problems.append(_problem(item, "mask_warning", str(message.message)))
        swapped += int(getattr(item.read_labels, "swapped", False))

        height, width = radiograph.pixels.shape
        if labels.shape != (height, width):
            labels, problem = _fit_mask(labels, height, width, item, quiet=layout == "jsrt-original")
            if problem:
                problems.append(problem)
            if labels is None:
                continue
        _write_png(masks_out / f"{item.image_id}.png", labels)

    if layout == "montgomery":
        LOGGER.info("montgomery: in %d of %d images the rightMask lung lies on the image right and was labelled "
                    "patient-left (--side-from position)", swapped, len(items))
    return problems, spacing_by_id


def _fit_mask(labels: np.ndarray, height: int, width: int, item: SourceItem, quiet: bool):
    mask_height, mask_width = labels.shape
    detail = f"mask {mask_width}x{mask_height} px, image {width}x{height} px"
    if abs((mask_width / mask_height) / (width / height) - 1) > ASPECT_TOLERANCE:
        return None, _problem(item, "mask_size_mismatch", detail + "; aspect ratios differ, mask left out")
    # INTER_NEAREST_EXACT samples the source pixel whose centre is nearest, (x + 0.5) * s - 0.5.
    resized = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    if quiet:
        return resized, None
    LOGGER.warning("%s: %s; resized with nearest neighbour", item.image_id, detail)
    return resized, _problem(item, "mask_resized", detail + "; resized with nearest neighbour")


def _write_image(source: Path, pixels: np.ndarray, target_stem: Path) -> None:
    if source.suffix.lower() in COPIED_SUFFIXES:
        target = target_stem.with_suffix(source.suffix.lower())
        _atomic_copy(source, target)
        return
    # Other formats (JSRT raw, DICOM, TIFF) become 16-bit PNG so no grey level is lost.
    values = np.clip(np.rint(pixels * 65535.0), 0, 65535).astype(np.uint16)
    _write_png(target_stem.with_suffix(".png"), values)


def _write_png(path: Path, values: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", values)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as stream:
        stream.write(encoded.tobytes())
    os.replace(temporary, path)


def _atomic_copy(source: Path, target: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _problem(item: SourceItem, reason: str, detail: str) -> dict:
    return {"image_id": item.image_id, "source": str(item.image_path), "mask": item.mask_description,
            "reason": reason, "detail": detail}


# --------------------------------------------------------------------------------------------
# Main


LISTERS = {
    "jsrt-original": list_jsrt_original,
    "montgomery": list_montgomery,
    "shenzhen": list_shenzhen,
    "folder": list_folder,
}


def main(args: argparse.Namespace) -> int:
    if not args.source.is_dir():
        raise SystemExit(f"--source {args.source} not found")
    try:
        frame = CoordinateFrame.parse(args.coordinate_frame)
    except ValueError as error:
        raise SystemExit(f"--coordinate-frame: {error}") from error
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if set(parts) - set(PARTS):
        raise SystemExit(f"--parts {args.parts!r}: choose from {PARTS}")
    setup_logging()
    # The sources are listed and the split read before the output folder is prepared, so a
    # wrong --source or --layout leaves an earlier run, and a new folder, untouched.
    items = None
    if args.layout == "shared":
        _require_dir(args.source / "images", "shared")
        if not any(path.suffix.lower() in IMAGE_SUFFIXES for path in (args.source / "images").iterdir()):
            raise SystemExit(f"{args.source / 'images'} contains no images ({', '.join(IMAGE_SUFFIXES)}); "
                             "check --source")
    else:
        items = LISTERS[args.layout](args)
        if not items:
            raise SystemExit(f"no images found under {args.source} for --layout {args.layout}; check --source "
                             "and --layout (see --help)")
    split = read_split(args.split) if args.split else None

    out_dir = prepare_output_dir(args.output_dir, args.overwrite)
    setup_logging(out_dir)
    write_run_record(out_dir, vars(args), device="cpu")
    dataset = args.dataset_name or out_dir.resolve().name
    measurements = list(args.measurements)

    if args.layout == "shared":
        source = args.source.resolve()
        images_dir, masks_dir = source / "images", source / "masks"
        mask_encoding = PRESET_MASK_ENCODINGS.get(source.name, OUTPUT_MASK_ENCODING)
        if not measurements and args.points_source == "measurements" and (source / "landmarks.csv").is_file():
            measurements = [source / "landmarks.csv"]
        spacing_by_id: dict = {}
        LOGGER.info("shared layout: metadata points at the files in %s (mask encoding %s)", source, mask_encoding)
    else:
        LOGGER.info("%s: %d images, %d with masks", args.layout, len(items),
                    sum(item.read_labels is not None for item in items))
        problems, spacing_by_id = write_standard_layout(items, out_dir, args.layout)
        columns = ["image_id", "source", "mask", "reason", "detail"]
        atomic_write_csv(out_dir / "preparation_problems.csv", pd.DataFrame(problems, columns=columns))
        for reason, count in sorted(Counter(problem["reason"] for problem in problems).items()):
            LOGGER.warning("preparation: %d image(s) with %s (see preparation_problems.csv)", count, reason)
        images_dir, masks_dir, mask_encoding = out_dir / "images", out_dir / "masks", OUTPUT_MASK_ENCODING

    spacing = args.pixel_spacing_mm
    options = BuildOptions(
        images_dir=images_dir.resolve(),
        dataset=dataset,
        masks_dir=masks_dir.resolve() if masks_dir.is_dir() else None,
        mask_suffix="auto" if args.layout in ("shared",) else "",
        mask_encoding=mask_encoding,
        coordinate_frame=frame,
        split=split,
        parts=parts,
        pixel_spacing_mm=spacing,
        spacing_by_id=spacing_by_id,
        verify=args.verify,
        # Source sets such as Shenzhen have images without masks; those rows keep their points.
        require_masks=args.layout == "shared",
    )
    records = load_records(args, options, measurements=measurements)
    result = build_metadata_table(records, options, tolerance_px=args.duplicate_tolerance_px)
    return write_build_outputs(result, out_dir, strict=args.strict)


if __name__ == "__main__":
    run_script(main, get_args_parser())
