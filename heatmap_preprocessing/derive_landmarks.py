"""Preprocessing stage and baseline: derive hemidiaphragm points from lung masks or contours.

For every image the rule in ``hemidiaphragm/landmarks.py`` finds, per lung, the costophrenic
angle, the cardiophrenic corner and the dome (the point of the diaphragmatic arc furthest
above the chord between the two corners). Sources:

- lung masks (ground truth or predicted): ``--masks-dir`` with ``--mask-encoding``;
- contour point files: ``--contours-dir`` holding ``RL/<id>.npy`` (patient-right lung) and
  ``LL/<id>.npy`` (patient-left lung), float (N, 2) arrays of (x, y) in a ``--contour-frame``
  grid, mapped to the ``--image-size`` grid of the images.

With ``--reference`` (a wide CSV such as ``landmarks.csv``) the derived points are compared
with the reference points: per-landmark median, 95th percentile and maximum distance in
pixels, and the mean offset (dx, dy).

Writes into ``--output-dir``:

- ``landmarks.csv``: ``image_id``, the twelve point columns in original-image pixels,
  ``<side>_dome_height_px`` and ``<side>_failure``. ``build_metadata.py --measurements`` reads it.
- ``failures.csv`` and ``timing.json``;
- with ``--reference``, ``distances.csv`` (one row per image and landmark) and ``comparison.csv``.

Example:
    python heatmap_preprocessing/derive_landmarks.py --masks-dir ../shared/data/jsrt224/masks \\
        --mask-encoding labels:150,200 --reference ../shared/data/jsrt224/landmarks.csv \\
        --output-dir /tmp/derived/jsrt224
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from hemidiaphragm.datasets import DEFAULT_MASK_ENCODING, PRESET_MASK_ENCODINGS, MaskEncoding
from hemidiaphragm.imaging import ImageReadError
from hemidiaphragm.landmarks import (
    DEFAULT_ANCHOR_HEIGHT_FRACTION,
    DEFAULT_PLATEAU_TOLERANCE_PX,
    POINT_NAMES,
    SCR_CORNER_INDICES,
    SCR_POINT_COUNTS,
    SIDES,
    LungLandmarks,
    derive_landmarks,
    derive_landmarks_from_contour,
    landmarks_to_row,
)
from hemidiaphragm.measurements import CoordinateFrame, find_mask, index_files, read_measurements
from hemidiaphragm.runs import (
    atomic_write_csv,
    atomic_write_text,
    prepare_output_dir,
    run_script,
    setup_logging,
    write_run_record,
)
from hemidiaphragm.splits import PARTS, read_split

LOGGER = logging.getLogger("hemidiaphragm.derive_landmarks")
CONTOUR_FOLDERS = {"right": "RL", "left": "LL"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("source (give --masks-dir or --contours-dir)")
    source.add_argument("--masks-dir", type=Path, default=None, help="folder of lung masks, one per image")
    source.add_argument("--mask-encoding", default="auto",
                        help="'labels:R,L' or 'combined'; 'auto' uses the preset of the dataset folder above "
                             f"--masks-dir {PRESET_MASK_ENCODINGS}, else {DEFAULT_MASK_ENCODING}")
    source.add_argument("--mask-suffix", default="auto",
                        help="mask file name = image id + this + extension; 'auto' tries '', _mask, _segm, "
                             "_seg, _label, _labels")
    source.add_argument("--contours-dir", type=Path, default=None,
                        help="folder with RL/ and LL/ subfolders of <id>.npy contours, (N, 2) float (x, y)")
    source.add_argument("--contour-frame", default="1024x1024",
                        help="WxH pixel grid of the contour coordinates")
    source.add_argument("--image-size", default="224x224",
                        help="WxH of the images the contours belong to; output points are in this grid")
    source.add_argument("--contour-mapping", choices=("pixel-centre", "scale"), default="pixel-centre",
                        help="map contour points to the image grid with the pixel-centre convention "
                             "x = (x' + 0.5) * W / W' - 0.5 (the project's), or by plain scaling x = x' * W / W' "
                             "(how jsrt224/landmarks.csv was made from contours1024)")
    source.add_argument("--corners", choices=("geometric", "scr-indices"), default="geometric",
                        help="contours only: find the corners with the geometric rule, or take the SCR vertex "
                             f"indices {SCR_CORNER_INDICES} (needs {SCR_POINT_COUNTS}-point contours)")

    rule = parser.add_argument_group("rule")
    rule.add_argument("--plateau-tolerance-px", type=float, default=None,
                      help="outline points within this height (px, image grid) of the highest point form the "
                           "dome's plateau, whose middle is the dome; 0 takes the highest point (default: "
                           f"{DEFAULT_PLATEAU_TOLERANCE_PX} for masks, whose outline is a staircase, 0 for contours)")
    rule.add_argument("--anchor-height-fraction", type=float, default=DEFAULT_ANCHOR_HEIGHT_FRACTION,
                      help="height of the medial anchor for the cardiophrenic corner, from the lung top (0) "
                           "to its bottom (1)")

    selection = parser.add_argument_group("selection and comparison")
    selection.add_argument("--split", type=Path, default=None, help="split CSV; keep the images of --parts")
    selection.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts of --split to keep")
    selection.add_argument("--reference", type=Path, default=None,
                           help="wide CSV of reference points (right_dome_x ... columns, original pixels) "
                                "to compare against")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True, help="folder for landmarks.csv and the reports")
    run.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output-dir")
    return parser


def select_ids(ids: list[str], args: argparse.Namespace) -> list[str]:
    if args.split is None:
        return ids
    split = read_split(args.split)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    keep = set(split.loc[split["part"].isin(parts), "image_id"])
    return [image_id for image_id in ids if image_id in keep]


def derive_from_masks(args: argparse.Namespace) -> tuple[list[dict], dict]:
    masks_dir = args.masks_dir.resolve()
    encoding_text = args.mask_encoding
    if encoding_text == "auto":
        encoding_text = PRESET_MASK_ENCODINGS.get(masks_dir.parent.name, DEFAULT_MASK_ENCODING)
    encoding = MaskEncoding.parse(encoding_text)
    LOGGER.info("masks %s, encoding %s", masks_dir, encoding)

    index = index_files(masks_dir)
    ids = _mask_ids(index, args.mask_suffix)
    rows, read_seconds, derive_seconds = [], [], []
    for image_id in select_ids(ids, args):
        found = find_mask(index, image_id, args.mask_suffix)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                labels = encoding.read(found[0])
        except (ImageReadError, ValueError) as error:
            LOGGER.error("%s: mask %s could not be read: %s", image_id, found[0], error)
            rows.append(_failed_row(image_id, "unreadable_mask"))
            continue
        for item in caught:
            LOGGER.warning("%s: %s", image_id, item.message)
        middle = time.perf_counter()
        result = derive_landmarks(
            labels,
            plateau_tolerance_px=_plateau_tolerance(args, DEFAULT_PLATEAU_TOLERANCE_PX),
            anchor_height_fraction=args.anchor_height_fraction,
        )
        derive_seconds.append(time.perf_counter() - middle)
        read_seconds.append(middle - start)
        rows.append({"image_id": image_id, **landmarks_to_row(result)})
    return rows, _timing(read_seconds, derive_seconds)


def _mask_ids(index: dict, mask_suffix: str) -> list[str]:
    suffixes = ("", "_mask", "_segm", "_seg", "_label", "_labels") if mask_suffix == "auto" else (mask_suffix,)
    ids = set()
    for stem in index:
        for suffix in suffixes:
            if suffix and stem.endswith(suffix):
                ids.add(stem[: -len(suffix)])
                break
        else:
            ids.add(stem)
    return sorted(ids)


def derive_from_contours(args: argparse.Namespace) -> tuple[list[dict], dict]:
    contour_frame = CoordinateFrame.parse(args.contour_frame)
    image_frame = CoordinateFrame.parse(args.image_size)
    if contour_frame.width is None or image_frame.width is None:
        raise SystemExit("--contour-frame and --image-size must be WxH, e.g. 1024x1024 and 224x224")
    folders = {side: args.contours_dir / name for side, name in CONTOUR_FOLDERS.items()}
    for side, folder in folders.items():
        if not folder.is_dir():
            raise SystemExit(f"contour folder {folder} ({side} lung) not found; --contours-dir needs RL/ and LL/")
    ids = sorted(path.stem for path in folders["right"].glob("*.npy"))

    rows, derive_seconds = [], []
    for image_id in select_ids(ids, args):
        start = time.perf_counter()
        result = {}
        for side, folder in folders.items():
            path = folder / f"{image_id}.npy"
            if not path.is_file():
                LOGGER.error("%s: contour %s not found", image_id, path)
                result[side] = LungLandmarks(failure="missing_lung")
                continue
            points = _map_contour(np.load(path), contour_frame, image_frame, args.contour_mapping)
            corners = None
            if args.corners == "scr-indices":
                if len(points) != SCR_POINT_COUNTS[side]:
                    raise SystemExit(
                        f"{path} has {len(points)} points; --corners scr-indices needs the SCR "
                        f"{SCR_POINT_COUNTS[side]}-point {side}-lung contour"
                    )
                corners = SCR_CORNER_INDICES[side]
            result[side] = derive_landmarks_from_contour(
                points,
                side,
                image_size=(image_frame.width, image_frame.height),
                corner_indices=corners,
                plateau_tolerance_px=_plateau_tolerance(args, 0.0),
                anchor_height_fraction=args.anchor_height_fraction,
            )
        derive_seconds.append(time.perf_counter() - start)
        rows.append({"image_id": image_id, **landmarks_to_row(result)})
    return rows, _timing([], derive_seconds)


def _plateau_tolerance(args: argparse.Namespace, default: float) -> float:
    return default if args.plateau_tolerance_px is None else args.plateau_tolerance_px


def _map_contour(points: np.ndarray, contour_frame: CoordinateFrame, image_frame: CoordinateFrame,
                 mapping: str) -> np.ndarray:
    scale = np.array([image_frame.width / contour_frame.width, image_frame.height / contour_frame.height])
    if mapping == "scale":
        return points * scale
    return (points + 0.5) * scale - 0.5


def _failed_row(image_id: str, code: str) -> dict:
    failed = LungLandmarks(failure=code)
    return {"image_id": image_id, **landmarks_to_row({"right": failed, "left": failed})}


def _timing(read_seconds: list[float], derive_seconds: list[float]) -> dict:
    def milliseconds(values):
        return {"mean_ms": 1000 * float(np.mean(values)), "median_ms": 1000 * float(np.median(values)),
                "max_ms": 1000 * float(np.max(values))} if values else None

    return {"images": len(derive_seconds), "read": milliseconds(read_seconds), "derive": milliseconds(derive_seconds)}


def compare(derived: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return per-image distances and per-landmark statistics against reference records.

    ``reference`` is the table that ``read_measurements(path, layout="wide")`` returns.
    """
    unusable = reference[reference["reason"] != ""]
    for _, row in unusable.iterrows():
        LOGGER.warning("reference row %s (%s) skipped: %s: %s", row["source_line"], row["image_id"], row["reason"],
                       row["detail"])
    reference = reference[reference["reason"] == ""].set_index("image_id")
    by_id = derived.set_index("image_id")
    common = [image_id for image_id in by_id.index if image_id in reference.index]

    rows = []
    for image_id in common:
        for side in SIDES:
            failure = by_id.at[image_id, f"{side}_failure"]
            for name in POINT_NAMES:
                point = f"{side}_{name}"
                ref_x, ref_y = reference.at[image_id, f"{point}_x"], reference.at[image_id, f"{point}_y"]
                if np.isnan(ref_x):
                    continue
                dx = by_id.at[image_id, f"{point}_x"] - ref_x
                dy = by_id.at[image_id, f"{point}_y"] - ref_y
                rows.append({"image_id": image_id, "landmark": point, "failure": failure,
                             "dx": dx, "dy": dy, "distance_px": float(np.hypot(dx, dy))})
    distances = pd.DataFrame(rows, columns=["image_id", "landmark", "failure", "dx", "dy", "distance_px"])

    summary = []
    for point in (f"{side}_{name}" for side in SIDES for name in POINT_NAMES):
        subset = distances[distances["landmark"] == point]
        ok = subset[subset["failure"] == ""]
        values = ok["distance_px"].to_numpy()
        summary.append({
            "landmark": point,
            "images": len(subset),
            "failed": int((subset["failure"] != "").sum()),
            "median_px": float(np.median(values)) if len(values) else np.nan,
            "p95_px": float(np.percentile(values, 95)) if len(values) else np.nan,
            "max_px": float(values.max()) if len(values) else np.nan,
            "mean_dx_px": float(ok["dx"].mean()) if len(values) else np.nan,
            "mean_dy_px": float(ok["dy"].mean()) if len(values) else np.nan,
        })
    return distances, pd.DataFrame(summary)


def main(args: argparse.Namespace) -> int:
    if (args.masks_dir is None) == (args.contours_dir is None):
        raise SystemExit("give exactly one of --masks-dir and --contours-dir")
    # The inputs are checked before the output folder is prepared, so a wrong path leaves nothing behind.
    source_flag, source = ("--masks-dir", args.masks_dir) if args.masks_dir is not None else (
        "--contours-dir", args.contours_dir)
    if not Path(source).is_dir():
        raise SystemExit(f"{source_flag} {source} is not a folder")
    reference = read_measurements(args.reference, layout="wide") if args.reference is not None else None
    out_dir = prepare_output_dir(args.output_dir, args.overwrite)
    setup_logging(out_dir)
    write_run_record(out_dir, vars(args), device="cpu")

    rows, timing = derive_from_masks(args) if args.masks_dir is not None else derive_from_contours(args)
    if not rows:
        LOGGER.error("no images found to derive points from")
        return 1
    derived = pd.DataFrame(rows)
    atomic_write_csv(out_dir / "landmarks.csv", derived.round(4))

    failures = [
        {"image_id": row["image_id"], "side": side, "failure": row[f"{side}_failure"]}
        for row in rows for side in SIDES if row[f"{side}_failure"]
    ]
    atomic_write_csv(out_dir / "failures.csv", pd.DataFrame(failures, columns=["image_id", "side", "failure"]))
    atomic_write_text(out_dir / "timing.json", json.dumps(timing, indent=2) + "\n")
    reading = f", {timing['read']['mean_ms']:.1f} ms/image reading masks" if timing["read"] else ""
    LOGGER.info("derived points for %d images, %d lung(s) failed; %.1f ms/image deriving%s",
                len(rows), len(failures), timing["derive"]["mean_ms"], reading)
    for item in failures:
        LOGGER.warning("%s %s lung: %s", item["image_id"], item["side"], item["failure"])

    if reference is not None:
        distances, summary = compare(derived, reference)
        atomic_write_csv(out_dir / "distances.csv", distances.round(4))
        atomic_write_csv(out_dir / "comparison.csv", summary.round(3))
        for _, row in summary.iterrows():
            LOGGER.info("%-13s n=%d failed=%d median=%.2f px p95=%.2f px max=%.2f px mean dx=%+.2f dy=%+.2f",
                        row["landmark"], row["images"], row["failed"], row["median_px"], row["p95_px"],
                        row["max_px"], row["mean_dx_px"], row["mean_dy_px"])
    return 0


if __name__ == "__main__":
    run_script(main, get_args_parser())
