"""Preprocessing stage: build one validated metadata CSV for a dataset.

Reads one or more measurement exports (wide ``landmarks.csv``-style columns or the clinical
``"(x, y)"`` layout), the image folder, optionally the mask folder, a split file or an image
list. With ``--points-source masks`` the points are derived from the ground-truth masks
instead of read from an export.

Writes into ``--output-dir``:

- ``metadata.csv``: one row per usable image (schema in ``hemidiaphragm/metadata.py``);
- ``rejected.csv``: every export row that could not be used, with ``reason`` and ``detail``;
- ``images_without_points.csv``: images of the split, image list or image folder that no
  export mentions (not rejections: the export has no row for them);
- ``dropped_points.csv``: optional points (costophrenic angle, cardiophrenic corner) left
  empty because they lie outside the image; the row itself is kept;
- ``mask_warnings.csv``: doubtful masks that were still accepted (a lung missing, regions dropped);
- ``summary.json`` and ``run.json`` (arguments, command, git commit, library versions), and a log.

Example:
    python heatmap_preprocessing/build_metadata.py --data-root ../shared/data/shenzhen512 \\
        --measurements ../shared/data/shenzhen512/measurements.csv \\
        --split data_splits/shenzhen512/fold0.csv --output-dir /tmp/meta/shenzhen512
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from hemidiaphragm.datasets import DEFAULT_MASK_ENCODING, PRESET_MASK_ENCODINGS, MaskEncoding
from hemidiaphragm.measurements import (
    BuildOptions,
    CoordinateFrame,
    add_points_arguments,
    build_metadata_table,
    load_records,
    write_build_outputs,
)
from hemidiaphragm.runs import positive_float, prepare_output_dir, run_script, setup_logging, write_run_record
from hemidiaphragm.splits import PARTS, read_split

LOGGER = logging.getLogger("hemidiaphragm.build_metadata")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    files = parser.add_argument_group("input files")
    files.add_argument("--data-root", type=Path, default=None,
                       help="dataset folder in the standard layout (images/, masks/); sets --images-dir, "
                            "--masks-dir, --dataset-name and the mask encoding preset unless those are given")
    files.add_argument("--images-dir", type=Path, default=None, help="folder of the images (default: DATA_ROOT/images)")
    files.add_argument("--masks-dir", type=Path, default=None,
                       help="folder of the ground-truth lung masks (default: DATA_ROOT/masks when it exists; "
                            "none otherwise, leaving mask_path empty)")
    files.add_argument("--allow-missing-masks", action="store_true",
                       help="keep an image whose mask is missing, with an empty mask_path (listed in "
                            "mask_warnings.csv); without it such rows are rejected as missing_mask")
    files.add_argument("--mask-suffix", default="auto",
                       help="mask file name = image id + this + extension, e.g. '_mask'; 'auto' tries "
                            "'', _mask, _segm, _seg, _label, _labels and rejects a name matching two")
    files.add_argument("--mask-encoding", default="auto",
                       help="'labels:R,L' (label map values of the patient-right and patient-left lungs) or "
                            "'combined' (one mask of both lungs); 'auto' uses the preset of a known dataset "
                            f"name {PRESET_MASK_ENCODINGS}, else {DEFAULT_MASK_ENCODING}")

    add_points_arguments(parser.add_argument_group("points"), layout_flag="--layout")

    selection = parser.add_argument_group("selection and labels")
    selection.add_argument("--split", type=Path, default=None,
                           help="split CSV (image_id, patient_id, part); fills the part column and rejects "
                                "export rows for images it does not list")
    selection.add_argument("--parts", default=",".join(PARTS),
                           help="comma-separated parts of --split to keep (train, val, test)")
    selection.add_argument("--image-list", type=Path, default=None,
                           help="text file with one image id per line, or a CSV with an image_id column; "
                                "keeps only these images")
    selection.add_argument("--dataset-name", default=None,
                           help="value of the dataset column (default: the name of DATA_ROOT, else of the "
                                "images folder's parent)")
    selection.add_argument("--pixel-spacing-mm", type=positive_float, default=None,
                           help="isotropic pixel size of the image files in mm (default: from DICOM or JSRT "
                                "files, else empty)")
    selection.add_argument("--verify", choices=("decode", "header"), default="decode",
                           help="decode: read every image and mask fully (finds truncated files, checks the "
                                "mask encoding and reports doubtful masks); header: read only their sizes, "
                                "about 25 times faster")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True, help="folder for metadata.csv and the reports")
    run.add_argument("--strict", action="store_true",
                     help="fail (exit status 1, no metadata.csv) when any export row is rejected or any "
                          "optional point dropped")
    run.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output-dir")
    return parser


def resolve_inputs(args: argparse.Namespace) -> dict:
    """Work out folders, dataset name and mask encoding from the flags, without changing ``args``."""
    images_dir = args.images_dir or (args.data_root / "images" if args.data_root else None)
    if images_dir is None:
        raise SystemExit("give --data-root or --images-dir")
    masks_dir = args.masks_dir
    if masks_dir is None and args.data_root is not None and (args.data_root / "masks").is_dir():
        masks_dir = args.data_root / "masks"

    root_name = Path(args.data_root).resolve().name if args.data_root else Path(images_dir).resolve().parent.name
    dataset = args.dataset_name or root_name
    mask_encoding = args.mask_encoding
    if mask_encoding == "auto":
        mask_encoding = PRESET_MASK_ENCODINGS.get(root_name, DEFAULT_MASK_ENCODING)
    MaskEncoding.parse(mask_encoding)  # fails early on a typo

    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts {args.parts!r}: unknown part(s) {unknown}; choose from {PARTS}")
    return {
        "images_dir": Path(images_dir).resolve(),
        "masks_dir": Path(masks_dir).resolve() if masks_dir else None,
        "dataset": dataset,
        "mask_encoding": mask_encoding,
        "parts": parts,
    }


def read_image_list(path: Path) -> set[str]:
    if not path.is_file():
        raise SystemExit(f"--image-list {path} not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and lines[0].split(",")[0] == "image_id":
        return set(pd.read_csv(path, dtype=str, keep_default_na=False)["image_id"])
    return set(lines)


def main(args: argparse.Namespace) -> int:
    inputs = resolve_inputs(args)
    try:
        frame = CoordinateFrame.parse(args.coordinate_frame)
    except ValueError as error:
        raise SystemExit(f"--coordinate-frame: {error}") from error
    # Read every input before the output folder is prepared, so a bad split, image list or
    # measurement file leaves an earlier run, and a new folder, untouched.
    setup_logging()
    split = read_split(args.split) if args.split else None
    image_list = read_image_list(args.image_list) if args.image_list else None
    options = BuildOptions(
        images_dir=inputs["images_dir"],
        dataset=inputs["dataset"],
        masks_dir=inputs["masks_dir"],
        mask_suffix=args.mask_suffix,
        mask_encoding=inputs["mask_encoding"],
        coordinate_frame=frame,
        split=split,
        parts=inputs["parts"],
        image_list=image_list,
        pixel_spacing_mm=args.pixel_spacing_mm,
        verify=args.verify,
        require_masks=not args.allow_missing_masks,
    )
    records = load_records(args, options)
    if split is not None and len(records) and not set(records["image_id"]) & set(split["image_id"]):
        raise SystemExit(f"--split {args.split} lists none of the {records['image_id'].nunique()} images of the "
                         f"measurements (for example {records['image_id'].iloc[0]}); use the split of this data set")
    out_dir = prepare_output_dir(args.output_dir, args.overwrite)
    setup_logging(out_dir)
    resolved = {name: str(value) for name, value in inputs.items()}
    write_run_record(out_dir, vars(args), device="cpu", extra={"resolved_inputs": resolved})
    result = build_metadata_table(records, options, tolerance_px=args.duplicate_tolerance_px)
    return write_build_outputs(result, out_dir, strict=args.strict)



if __name__ == "__main__":
    run_script(main, get_args_parser())
