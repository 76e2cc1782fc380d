"""Measurement exports: parsing, merging and matching to image and mask files.

Two layouts are read:

- ``wide``: one id column (``image_id`` or ``image_name``) and numeric columns named like
  ``landmarks.csv``: ``right_dome_x``, ``right_dome_y``, ``left_dome_x`` ... ``left_cardio_y``.
  The dome columns are required, the others optional.
- ``clinical``: ``image_name`` and one ``"(x, y)"`` string per hemidiaphragm dome, by default
  ``ref_point_fst_lung`` (the image-left dome, i.e. patient right) and ``ref_point_snd_lung``.
  Whole-pixel values such as ``"(175, 347)"`` are kept as floats.

Each CSV row becomes one record (see ``RECORD_COLUMNS``) with either usable points or a
rejection ``reason`` from ``REASONS``. ``build_metadata_table`` merges the records of all
exports, filters them by split or image list, matches them to image and mask files, maps the
points into original-image pixels and returns the metadata table plus every rejected row with
its reason. No row is dropped without a reason and no value is filled from another row.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hemidiaphragm.datasets import IMAGE_SUFFIXES, MaskEncoding
from hemidiaphragm.imaging import EXIF_ORIENTATION_TAG, ImageReadError, read_image
from hemidiaphragm.landmarks import LANDMARK_COLUMNS, POINT_NAMES, SIDES, derive_landmarks
from hemidiaphragm.metadata import METADATA_COLUMNS, REQUIRED_POINTS, write_metadata
from hemidiaphragm.runs import atomic_write_csv, atomic_write_text

LOGGER = logging.getLogger(__name__)

LAYOUTS = ("auto", "wide", "clinical")
CLINICAL_FIRST_COLUMN = "ref_point_fst_lung"
CLINICAL_SECOND_COLUMN = "ref_point_snd_lung"
ID_COLUMN_CANDIDATES = ("image_id", "image_name")
MASK_FILE_SUFFIXES = IMAGE_SUFFIXES + (".gif",)
# Tried in this order by --mask-suffix auto; a name matching more than one is ambiguous.
AUTO_MASK_NAME_SUFFIXES = ("", "_mask", "_segm", "_seg", "_label", "_labels")

REASONS = {
    "missing_image_name": "the image name cell is empty",
    "missing_coordinate": "a required coordinate is empty, or only one of x and y is given",
    "nan_coordinate": "a coordinate is NaN or infinite",
    "unparseable_coordinate": "a coordinate is not a number, or a clinical cell is not an '(x, y)' pair",
    "conflicting_duplicate": "the image has more than one row, and the rows disagree or one of them is unusable",
    "not_in_split": "the image is not listed in the split file",
    "missing_image": "no image file with this name in the image folder",
    "ambiguous_image": "more than one image file has this name (different extensions)",
    "unreadable_image": "the image file could not be read",
    "missing_mask": "no mask file with this name in the mask folder",
    "ambiguous_mask": "more than one mask file matches this name",
    "unreadable_mask": "the mask file could not be read",
    "mask_size_mismatch": "the mask and the image differ in size",
    "outside_image": "a point lies outside the image",
    "swapped_sides": "the patient-right dome is not left of the patient-left dome in the image, so the sides "
                     "look swapped",
    "derivation_failed": "the points could not be derived from the mask (see hemidiaphragm.landmarks)",
}

RECORD_COLUMNS = ("source_file", "source_line", "image_name", "image_id", *LANDMARK_COLUMNS, "reason", "detail")
REJECTED_COLUMNS = ("image_id", "image_name", "source_file", "source_line", "reason", "detail")
POINTS = tuple(f"{side}_{name}" for side in SIDES for name in POINT_NAMES)

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity)"
CLINICAL_POINT = re.compile(
    rf"^\s*[\(\[]?\s*(?P<x>{NUMBER})\s*(?:[,;]\s*|\s+)(?P<y>{NUMBER})\s*[\)\]]?\s*$", re.IGNORECASE
)


class MeasurementError(ValueError):
    """A measurement file cannot be read as a whole (missing file or columns, unknown layout)."""


# --------------------------------------------------------------------------------------------
# Coordinate frames


@dataclass(frozen=True)
class CoordinateFrame:
    """The pixel grid a measurement's points refer to: the original image, or a resized W x H copy.

    A point in a resized frame maps to original pixels with the pixel-centre convention,
    ``x_original = (x + 0.5) * original_width / width - 0.5`` (and the same for y).
    """

    width: int | None = None
    height: int | None = None

    @classmethod
    def parse(cls, text: str) -> "CoordinateFrame":
        if text == "original":
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise ValueError(f"invalid coordinate frame {text!r}; expected 'original' or WxH such as '512x512'")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return "original" if self.width is None else f"{self.width}x{self.height}"

    def to_original(self, x: float, y: float, original_width: int, original_height: int) -> tuple[float, float]:
        if self.width is None:
            return x, y
        return (
            (x + 0.5) * original_width / self.width - 0.5,
            (y + 0.5) * original_height / self.height - 0.5,
        )


# --------------------------------------------------------------------------------------------
# Reading one export


def read_measurements(
    path: str | Path,
    *,
    layout: str = "auto",
    id_column: str | None = None,
    right_column: str | None = None,
    left_column: str | None = None,
    first_is: str = "patient-right",
) -> pd.DataFrame:
    """Parse one measurement CSV into records (``RECORD_COLUMNS``), one per data row.

    Args:
        layout: ``wide``, ``clinical`` or ``auto`` (wide when ``right_dome_x`` is a column,
            clinical when the dome string columns are).
        id_column: column with the image names; default the first of ``image_id``,
            ``image_name`` present.
        right_column, left_column: clinical columns of the patient-right and patient-left
            domes; default from ``first_is``.
        first_is: ``patient-right`` when ``ref_point_fst_lung`` is the patient-right dome
            (image left, the usual order), ``patient-left`` otherwise.

    Points stay in the export's frame; ``build_metadata_table`` maps them. A row that
    cannot be used keeps NaN points and gets a ``reason`` and a ``detail``.

    Raises:
        MeasurementError: the file is missing or lacks the columns the layout needs.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "not found"
        raise MeasurementError(f"measurement file {path} {problem}; give the CSV file with --measurements")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MeasurementError(f"measurement file {path} could not be parsed as CSV: {error}") from error
    if not isinstance(table.index, pd.RangeIndex):
        # pandas turns the surplus leading fields of rows longer than the header into an index.
        header_fields = len(table.columns)
        raise MeasurementError(
            f"measurement file {path}: the rows have more fields than the header's {header_fields}; "
            'put point strings that contain a comma in double quotes, e.g. "(100, 300)"'
        )
    table.columns = [str(column).strip() for column in table.columns]

    right_column, left_column = _clinical_columns(right_column, left_column, first_is)
    layout = _detect_layout(path, table, layout, right_column, left_column)
    id_column = _id_column(path, table, id_column)

    records = []
    for index, row in table.iterrows():
        record = _empty_record(path, index + 2, row[id_column])
        if not record["image_id"]:
            _reject(record, "missing_image_name", f"column {id_column} is empty")
        elif layout == "wide":
            _parse_wide_row(row, record)
        else:
            _parse_clinical_row(row, record, right_column, left_column)
        if not record["reason"]:
            _check_sides(record, layout, right_column, left_column)
        records.append(record)
    LOGGER.info("read %d rows from %s (%s layout)", len(records), path, layout)
    return pd.DataFrame(records, columns=list(RECORD_COLUMNS))


def normalise_image_name(name: str) -> str:
    """Turn ``images/X.png``, ``X.PNG`` or ``X`` into the image id ``X``."""
    base = re.split(r"[\\/]", name.strip())[-1]
    stem, dot, suffix = base.rpartition(".")
    if dot and f".{suffix.lower()}" in MASK_FILE_SUFFIXES:
        return stem
    return base


def _clinical_columns(right_column, left_column, first_is) -> tuple[str, str]:
    if first_is not in ("patient-right", "patient-left"):
        raise ValueError(f"first_is must be 'patient-right' or 'patient-left'; got {first_is!r}")
    first, second = CLINICAL_FIRST_COLUMN, CLINICAL_SECOND_COLUMN
    default_right, default_left = (first, second) if first_is == "patient-right" else (second, first)
    return right_column or default_right, left_column or default_left


def _detect_layout(path, table, layout, right_column, left_column) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    has_wide = all(f"{point}_{axis}" in table.columns for point in REQUIRED_POINTS for axis in "xy")
    has_clinical = right_column in table.columns and left_column in table.columns
    if layout == "auto":
        if has_wide:
            return "wide"
        if has_clinical:
            return "clinical"
        raise MeasurementError(
            f"measurement file {path}: cannot tell the layout from its columns {list(table.columns)}; "
            f"expected right_dome_x, right_dome_y, left_dome_x, left_dome_y (wide) or "
            f"{right_column} and {left_column} (clinical; set --right-column/--left-column for other names)"
        )
    if layout == "wide" and not has_wide:
        raise MeasurementError(
            f"measurement file {path} lacks the wide-layout dome columns right_dome_x, right_dome_y, "
            f"left_dome_x, left_dome_y; it has {list(table.columns)}"
        )
    if layout == "clinical" and not has_clinical:
        raise MeasurementError(
            f"measurement file {path} lacks the clinical columns {right_column!r} and {left_column!r}; "
            f"it has {list(table.columns)} (set --right-column/--left-column)"
        )
    return layout


def _id_column(path, table, id_column) -> str:
    if id_column:
        if id_column not in table.columns:
            raise MeasurementError(
                f"measurement file {path} has no id column {id_column!r}; it has {list(table.columns)}"
            )
        return id_column
    for candidate in ID_COLUMN_CANDIDATES:
        if candidate in table.columns:
            return candidate
    raise MeasurementError(
        f"measurement file {path} has none of the id columns {ID_COLUMN_CANDIDATES}; set --id-column"
    )


def _empty_record(path: Path, line: int, raw_name: str) -> dict:
    record = {column: math.nan for column in LANDMARK_COLUMNS}
    record.update(
        source_file=str(path),
        source_line=str(line),
        image_name=raw_name,
        image_id=normalise_image_name(raw_name),
        reason="",
        detail="",
    )
    return record


def _reject(record: dict, reason: str, detail: str) -> None:
    if not record["reason"]:  # the first problem of a row is its reason
        record["reason"], record["detail"] = reason, detail
    for column in LANDMARK_COLUMNS:
        record[column] = math.nan


def _parse_number(text: str) -> tuple[float | None, str]:
    """Return (value, problem) with problem in '', 'missing_coordinate', 'nan_coordinate', 'unparseable_coordinate'."""
    value = text.strip()
    if not value:
        return None, "missing_coordinate"
    try:
        number = float(value)
    except ValueError:
        return None, "unparseable_coordinate"
    if not math.isfinite(number):
        return None, "nan_coordinate"
    return number, ""


def _parse_wide_row(row: pd.Series, record: dict) -> None:
    # Files written by derive_landmarks.py carry the failure code of a lung without points.
    failures = [f"{side} lung: {row[f'{side}_failure']}" for side in SIDES
                if f"{side}_failure" in row.index and row[f"{side}_failure"].strip()]
    if failures:
        _reject(record, "derivation_failed", "; ".join(failures))
        return
    for point in POINTS:
        columns = (f"{point}_x", f"{point}_y")
        present = [column in row.index for column in columns]
        if not any(present):
            continue
        texts = [row[column] if column in row.index else "" for column in columns]
        if point not in REQUIRED_POINTS and not any(text.strip() for text in texts):
            continue  # an optional point may be left out entirely

        values = []
        for column, text in zip(columns, texts):
            number, problem = _parse_number(text)
            if problem:
                _reject(record, problem, f"column {column}: {text!r}")
                return
            values.append(number)
        record[columns[0]], record[columns[1]] = values


def _parse_clinical_row(row: pd.Series, record: dict, right_column: str, left_column: str) -> None:
    for side, column in (("right", right_column), ("left", left_column)):
        text = row[column]
        if not text.strip():
            _reject(record, "missing_coordinate", f"column {column} ({side} dome) is empty")
            return
        match = CLINICAL_POINT.match(text)
        if match is None:
            _reject(record, "unparseable_coordinate", f"column {column} ({side} dome): {text!r} is not '(x, y)'")
            return
        x, y = float(match.group("x")), float(match.group("y"))
        if not (math.isfinite(x) and math.isfinite(y)):
            _reject(record, "nan_coordinate", f"column {column} ({side} dome): {text!r}")
            return
        record[f"{side}_dome_x"], record[f"{side}_dome_y"] = x, y


def _check_sides(record: dict, layout: str, right_column: str, left_column: str) -> None:
    """Reject a row whose patient-right dome is not left of the patient-left dome in the image.

    On a PA radiograph the patient's right side is on the image left, so ``right_dome_x`` must
    be smaller than ``left_dome_x`` in any frame (resizing keeps the order of x values).
    """
    right_x, left_x = record["right_dome_x"], record["left_dome_x"]
    if math.isnan(right_x) or math.isnan(left_x) or right_x < left_x:
        return
    if layout == "clinical":
        where = (f"patient-right dome (column {right_column}) x {right_x:g}, "
                 f"patient-left dome (column {left_column}) x {left_x:g}")
        fix = " If the first column holds the patient-left dome, pass --first-is patient-left."
    else:
        where = f"right_dome_x {right_x:g}, left_dome_x {left_x:g}"
        fix = " Check which columns hold the patient's right and left sides."
    _reject(record, "swapped_sides",
            f"{where}: on a PA radiograph the patient-right dome lies on the image left (smaller x), "
            f"so the sides look swapped.{fix}")


def records_from_masks(mask_paths: dict[str, Path], encoding: MaskEncoding) -> pd.DataFrame:
    """Derive records from lung masks (``derive_landmarks``) in place of a measurement export.

    A lung whose points cannot be derived makes the row ``derivation_failed``, with the
    failure code of each failed side in ``detail``.
    """
    records = []
    for image_id, mask_path in sorted(mask_paths.items()):
        record = _empty_record(Path(mask_path), 0, image_id)
        record["source_line"] = ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the build step reads the mask again and reports them
                labels = encoding.read(mask_path)
        except (ImageReadError, ValueError) as error:
            _reject(record, "unreadable_mask", str(error))
            records.append(record)
            continue
        result = derive_landmarks(labels)
        failures = [f"{side} lung: {result[side].failure}" for side in SIDES if result[side].failure]
        if failures:
            _reject(record, "derivation_failed", "; ".join(failures))
        else:
            for side in SIDES:
                for name in POINT_NAMES:
                    record[f"{side}_{name}_x"], record[f"{side}_{name}_y"] = getattr(result[side], name)
        records.append(record)
    return pd.DataFrame(records, columns=list(RECORD_COLUMNS))


# --------------------------------------------------------------------------------------------
# Merging exports


def merge_records(records: pd.DataFrame, tolerance_px: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Merge the records of all exports into one row per image id.

    Rows for the same id are merged column by column when every given value agrees within
    ``tolerance_px``. When two rows give different values for one coordinate, or one row for
    the id was rejected, every row of that id is rejected as ``conflicting_duplicate``:
    which row is right cannot be decided here.

    Returns:
        ``(merged, rejected, identical_duplicates)``. ``merged`` has one record per id, whose
        ``source_line`` lists every line used. ``rejected`` has the rejected records with their
        reasons. ``identical_duplicates`` counts the extra rows that repeated an id with
        consistent values.
    """
    rows = records.to_dict("records")
    rejected_rows = [row for row in rows if row["reason"]]
    first_rejection = {}
    for row in rejected_rows:
        first_rejection.setdefault(row["image_id"], row)

    groups: dict[str, list[dict]] = {}
    for row in rows:
        if not row["reason"]:
            groups.setdefault(row["image_id"], []).append(row)

    merged_rows = []
    identical_duplicates = 0
    for image_id in sorted(groups):
        group = groups[image_id]
        lines = _source_lines(group)
        if image_id in first_rejection:
            other = first_rejection[image_id]
            detail = (
                f"another row for this image was rejected ({_source_lines([other])}, {other['reason']}); "
                f"rows {lines}"
            )
            rejected_rows += [_with_reason(row, "conflicting_duplicate", detail) for row in group]
            continue

        merged, conflict = _merge_group(group, tolerance_px)
        if conflict:
            detail = f"{conflict}; rows {lines}"
            rejected_rows += [_with_reason(row, "conflicting_duplicate", detail) for row in group]
            continue
        identical_duplicates += len(group) - 1
        merged["source_file"] = "; ".join(sorted({row["source_file"] for row in group}))
        merged["source_line"] = lines
        merged_rows.append(merged)

    merged_frame = pd.DataFrame(merged_rows, columns=list(RECORD_COLUMNS))
    rejected_frame = pd.DataFrame(rejected_rows, columns=list(RECORD_COLUMNS))
    return merged_frame, rejected_frame, identical_duplicates


def _source_lines(rows: list[dict]) -> str:
    """Return '4' or '4; 17' for rows of one file, 'a.csv:4; b.csv:17' for rows of several files."""
    if len({row["source_file"] for row in rows}) == 1:
        return "; ".join(str(row["source_line"]) for row in rows)
    return "; ".join(f"{Path(row['source_file']).name}:{row['source_line']}" for row in rows)


def _merge_group(group: list[dict], tolerance_px: float) -> tuple[dict, str]:
    merged = dict(group[0])
    if len(group) == 1:
        return merged, ""
    for point in POINTS:
        columns = (f"{point}_x", f"{point}_y")
        given_points = np.array(
            [[row[columns[0]], row[columns[1]]] for row in group if not math.isnan(row[columns[0]])]
        )
        if len(given_points) == 0:
            continue
        spread = given_points.max(axis=0) - given_points.min(axis=0)
        if (spread > tolerance_px).any():
            listed = ", ".join(f"({x:g}, {y:g})" for x, y in given_points)
            return merged, f"{point} differs between rows: {listed}"
        merged[columns[0]], merged[columns[1]] = given_points[0]
    return merged, ""


def _with_reason(row: dict, reason: str, detail: str) -> dict:
    row = dict(row)
    row["reason"], row["detail"] = reason, detail
    for column in LANDMARK_COLUMNS:
        row[column] = math.nan
    return row


# --------------------------------------------------------------------------------------------
# Matching files and building the metadata table


def index_files(folder: Path, suffixes=MASK_FILE_SUFFIXES) -> dict[str, list[Path]]:
    """Map each file stem in ``folder`` (suffix case ignored) to its files."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} not found")
    index: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            index.setdefault(path.stem, []).append(path.resolve())
    return index


def find_mask(index: dict[str, list[Path]], image_id: str, mask_suffix: str) -> list[Path]:
    """Return the mask files for ``image_id``: ``<id><mask_suffix>.<ext>``, or every auto suffix."""
    suffixes = AUTO_MASK_NAME_SUFFIXES if mask_suffix == "auto" else (mask_suffix,)
    found: list[Path] = []
    for suffix in suffixes:
        found += index.get(f"{image_id}{suffix}", [])
    return found


@dataclass
class BuildOptions:
    """Input folders, file naming and selection for ``build_metadata_table``.

    ``build_metadata.py --help`` describes each field under the flag of the same name.
    """

    images_dir: Path
    dataset: str
    masks_dir: Path | None = None
    mask_suffix: str = "auto"
    mask_encoding: str = "labels:1,2"
    coordinate_frame: CoordinateFrame = field(default_factory=CoordinateFrame)
    split: pd.DataFrame | None = None
    parts: tuple[str, ...] = ("train", "val", "test")
    image_list: set[str] | None = None
    pixel_spacing_mm: float | None = None
    # (row, column) spacing in mm per image id, for images whose files no longer record it.
    spacing_by_id: dict[str, tuple[float, float]] | None = None
    verify: str = "decode"
    # False: an image without a mask keeps its row with an empty mask_path (listed in mask_warnings).
    require_masks: bool = True


@dataclass
class BuildResult:
    """The metadata table and the reports of everything that did not make it in."""

    metadata: pd.DataFrame
    rejected: pd.DataFrame
    without_points: pd.DataFrame
    mask_warnings: pd.DataFrame
    dropped_points: pd.DataFrame
    counts: dict

    def summary(self) -> str:
        by_reason = Counter(self.rejected["reason"])
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items())) or "none"
        return (
            f"metadata rows {len(self.metadata)}; rejected rows {len(self.rejected)} ({reasons}); "
            f"images without points {len(self.without_points)}; "
            f"rows outside the selected parts or image list {self.counts['filtered_out']}; "
            f"identical duplicate rows merged {self.counts['identical_duplicates']}; "
            f"optional points dropped {len(self.dropped_points)}; mask warnings {len(self.mask_warnings)}"
        )


def build_metadata_table(records: pd.DataFrame, options: BuildOptions, tolerance_px: float = 0.0) -> BuildResult:
    """Merge measurement records and match them to files, returning metadata and reports.

    The steps are: merge duplicates (``merge_records``), keep the ids in the split's selected
    parts or the image list, find, read and size-check each image and mask, then map the
    points to original pixels and check that they lie inside the image. A dome outside the image
    rejects the row; an optional point (costophrenic angle, cardiophrenic corner) outside
    it is left empty and listed in ``dropped_points``. Images that the split, the
    image list or (without both) the image folder lists but no export mentions go to
    ``without_points``; they are not rejections.
    """
    merged, rejected, identical_duplicates = merge_records(records, tolerance_px)
    rejected_rows = rejected.to_dict("records")
    split_parts = _split_parts(options.split)
    image_index = index_files(options.images_dir, IMAGE_SUFFIXES)
    mask_index = index_files(options.masks_dir) if options.masks_dir is not None else None
    encoding = MaskEncoding.parse(options.mask_encoding)

    metadata_rows, warning_rows, dropped_rows = [], [], []
    filtered_out = 0
    for record in merged.to_dict("records"):
        image_id = record["image_id"]
        image_paths = image_index.get(image_id, [])
        if not image_paths:
            rejected_rows.append(_with_reason(record, "missing_image", f"no {image_id}.<ext> in {options.images_dir}"))
            continue
        if len(image_paths) > 1:
            names = ", ".join(path.name for path in image_paths)
            rejected_rows.append(_with_reason(record, "ambiguous_image", f"files {names}"))
            continue
        if split_parts is not None and image_id not in split_parts:
            rejected_rows.append(_with_reason(record, "not_in_split", "the split file does not list this image"))
            continue
        if (split_parts is not None and split_parts[image_id] not in options.parts) or (
            options.image_list is not None and image_id not in options.image_list
        ):
            filtered_out += 1
            continue

        row, problem = _match_files(record, image_paths[0], options, mask_index, encoding, warning_rows, dropped_rows)
        if problem:
            rejected_rows.append(_with_reason(record, *problem))
            continue
        row["part"] = split_parts[image_id] if split_parts is not None else ""
        metadata_rows.append(row)

    metadata = pd.DataFrame(metadata_rows, columns=list(METADATA_COLUMNS))
    rejected_rows.sort(key=_line_order)
    rejected_frame = pd.DataFrame(rejected_rows, columns=list(RECORD_COLUMNS))[list(REJECTED_COLUMNS)]
    mentioned = set(merged["image_id"]) | set(rejected["image_id"])
    expected_ids = _expected_ids(options, split_parts, image_index)
    without = sorted(expected_ids - mentioned)
    without_points = pd.DataFrame(
        {"image_id": without, "reason": ["no_reference_points"] * len(without)}, columns=["image_id", "reason"]
    )
    counts = {"filtered_out": filtered_out, "identical_duplicates": identical_duplicates, "records": len(records)}
    return BuildResult(
        metadata=metadata,
        rejected=rejected_frame.reset_index(drop=True),
        without_points=without_points,
        mask_warnings=pd.DataFrame(warning_rows, columns=["image_id", "mask_path", "warning"]),
        dropped_points=pd.DataFrame(dropped_rows, columns=["image_id", "point", "reason", "detail"]),
        counts=counts,
    )


def _line_order(row: dict) -> tuple:
    first_line = re.search(r"\d+", str(row["source_line"]))
    return (str(row["source_file"]), int(first_line.group()) if first_line else 0, str(row["image_id"]))


def _split_parts(split: pd.DataFrame | None) -> dict[str, str] | None:
    if split is None:
        return None
    return dict(zip(split["image_id"], split["part"]))


def _expected_ids(options: BuildOptions, split_parts, image_index) -> set[str]:
    if split_parts is not None:
        ids = {image_id for image_id, part in split_parts.items() if part in options.parts}
        return ids & options.image_list if options.image_list is not None else ids
    if options.image_list is not None:
        return set(options.image_list)
    return set(image_index)


def _match_files(record, image_path: Path, options: BuildOptions, mask_index, encoding, warning_rows, dropped_rows):
    """Return (metadata row, None) or (None, (reason, detail)) for one merged record."""
    image_id = record["image_id"]
    try:
        width, height, spacing_mm = read_image_size(image_path, options.verify)
    except ImageReadError as error:
        return None, ("unreadable_image", str(error))

    mask_path = ""
    if mask_index is not None:
        masks = find_mask(mask_index, image_id, options.mask_suffix)
        if not masks and not options.require_masks:
            warning_rows.append({"image_id": image_id, "mask_path": "",
                                 "warning": f"no mask in {options.masks_dir}; mask_path left empty"})
        elif not masks:
            detail = f"no mask for {image_id} in {options.masks_dir} (suffix {options.mask_suffix})"
            return None, ("missing_mask", detail)
        elif len(masks) > 1:
            return None, ("ambiguous_mask", "files " + ", ".join(p.name for p in masks))
        else:
            problem = _check_mask(masks[0], encoding, width, height, image_id, warning_rows, options.verify)
            if problem:
                return None, problem
            mask_path = str(masks[0])

    row = {
        "image_id": image_id,
        "dataset": options.dataset,
        "image_path": str(image_path),
        "mask_path": mask_path,
        "mask_encoding": str(encoding) if mask_path else "",
        "width": width,
        "height": height,
        "pixel_spacing_mm": _spacing(
            options.pixel_spacing_mm, spacing_mm or (options.spacing_by_id or {}).get(image_id), image_id
        ),
    }
    for point in POINTS:
        x, y = record[f"{point}_x"], record[f"{point}_y"]
        if math.isnan(x):
            row[f"{point}_x"], row[f"{point}_y"] = math.nan, math.nan
            continue
        x_original, y_original = options.coordinate_frame.to_original(x, y, width, height)
        if not (-0.5 <= x_original <= width - 0.5 and -0.5 <= y_original <= height - 0.5):
            frame = options.coordinate_frame
            given = f"({x:g}, {y:g}) in the {frame} frame" + (
                f" = ({x_original:.2f}, {y_original:.2f}) in original pixels" if frame.width else ""
            )
            detail = f"{point} {given} is outside the {width}x{height} image"
            if point in REQUIRED_POINTS:
                return None, ("outside_image", detail)
            dropped_rows.append({"image_id": image_id, "point": point, "reason": "outside_image", "detail": detail})
            LOGGER.warning("%s: optional point dropped: %s", image_id, detail)
            x_original, y_original = math.nan, math.nan
        row[f"{point}_x"], row[f"{point}_y"] = x_original, y_original
    return row, None


def _check_mask(mask_path: Path, encoding: MaskEncoding, width: int, height: int, image_id: str, warning_rows,
                verify: str):
    if verify == "header":
        try:
            mask_width, mask_height, _ = read_image_size(mask_path, "header")
        except ImageReadError as error:
            return "unreadable_mask", str(error)
        if (mask_height, mask_width) != (height, width):
            detail = f"mask {mask_path.name} is {mask_width}x{mask_height} px, image is {width}x{height} px"
            return "mask_size_mismatch", detail
        return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            labels = encoding.read(mask_path)
        except (ImageReadError, ValueError) as error:
            return "unreadable_mask", str(error)
    for item in caught:
        warning_rows.append({"image_id": image_id, "mask_path": str(mask_path), "warning": str(item.message)})
        LOGGER.warning("%s: %s", image_id, item.message)
    if labels.shape != (height, width):
        return "mask_size_mismatch", (
            f"mask {mask_path.name} is {labels.shape[1]}x{labels.shape[0]} px, image is {width}x{height} px"
        )
    return None


def read_image_size(path: Path, verify: str = "decode") -> tuple[int, int, tuple[float, float] | None]:
    """Return (width, height, spacing_mm or None) of an image as ``read_image`` would show it.

    ``verify="decode"`` decodes the whole file with ``read_image``. ``"header"`` reads only the
    header through PIL. That was about 25 times faster on 512 px PNGs, but it does not notice
    a truncated pixel stream. Files PIL cannot open (JSRT ``.IMG``, DICOM) are decoded in
    either mode.

    Raises:
        ImageReadError: the file cannot be read.
    """
    if verify not in ("decode", "header"):
        raise ValueError(f"verify must be 'decode' or 'header'; got {verify!r}")
    if verify == "header" and path.suffix.lower() not in (".img", ".dcm", ".dicom"):
        try:
            with Image.open(path) as image:
                width, height = image.size
                orientation = _header_orientation(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageReadError(f"image {path} could not be read: {error}") from error
        # EXIF orientations 5 to 8 turn the image by 90 degrees, as read_image applies them.
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return width, height, None
    radiograph = read_image(path)
    return radiograph.original_width, radiograph.original_height, radiograph.spacing_mm


def _header_orientation(image: Image.Image) -> int:
    # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixel
    # data. read_image only reads the chunk before the data, which PIL puts in image.info.
    if image.format == "PNG":
        payload = image.info.get("exif")
        if not payload:
            return 1
        exif = Image.Exif()
        try:
            exif.load(payload)
        except (OSError, SyntaxError, ValueError, struct.error):
            return 1  # read_image also ignores an EXIF block it cannot parse
        return int(exif.get(EXIF_ORIENTATION_TAG, 1))
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, struct.error):
        return 1


def _spacing(given: float | None, from_file: tuple[float, float] | None, image_id: str) -> float:
    if given is not None:
        return float(given)
    if from_file is None:
        return math.nan
    if not np.isclose(from_file[0], from_file[1], rtol=1e-6):
        LOGGER.warning(
            "%s: pixel spacing %s mm (row, column) is not isotropic; pixel_spacing_mm is left empty",
            image_id, from_file,
        )
        return math.nan
    return float(from_file[0])


# --------------------------------------------------------------------------------------------
# Command-line pieces shared by build_metadata.py and prepare_dataset.py


def add_points_arguments(group, layout_flag: str = "--layout") -> None:
    """Add the flags that choose the point source and how to parse it to an argparse group.

    ``layout_flag`` names the measurement-layout flag; the parsed value is always
    ``args.measurements_layout``.
    """
    group.add_argument("--points-source", choices=("measurements", "masks"), default="measurements",
                       help="read the points from --measurements exports, or derive them from the masks "
                            "(hemidiaphragm.landmarks)")
    group.add_argument("--measurements", type=Path, action="append", default=[],
                       help="measurement CSV; repeat to merge several exports (rows for the same image must agree)")
    group.add_argument(layout_flag, dest="measurements_layout", choices=LAYOUTS, default="auto",
                       help="measurement layout: wide (right_dome_x ... columns), clinical ('(x, y)' strings), "
                            "or auto (decided per file from its columns)")
    group.add_argument("--id-column", default=None,
                       help="column with the image names (default: image_id, else image_name)")
    group.add_argument("--first-is", choices=("patient-right", "patient-left"), default="patient-right",
                       help="clinical layout: which dome ref_point_fst_lung is; patient-right is the image-left "
                            "dome of a PA view")
    group.add_argument("--right-column", default=None,
                       help="clinical layout: column of the patient-right dome (overrides --first-is)")
    group.add_argument("--left-column", default=None,
                       help="clinical layout: column of the patient-left dome (overrides --first-is)")
    group.add_argument("--coordinate-frame", default="original",
                       help="pixel grid of the exported points: 'original' (pixels of the image file) or WxH "
                            "of a resized copy, e.g. 512x512, mapped with x = (x' + 0.5) * W / W' - 0.5")
    group.add_argument("--duplicate-tolerance-px", type=float, default=0.0,
                       help="rows for the same image whose coordinates differ by more than this (px, export "
                            "frame) are rejected as conflicting duplicates")


def load_records(args, options: BuildOptions, measurements: list[Path] | None = None) -> pd.DataFrame:
    """Read the records that ``args`` (from ``add_points_arguments``) point at.

    ``measurements`` replaces ``args.measurements`` when given.

    Raises:
        SystemExit: the flags contradict each other or a measurement file cannot be read.
    """
    measurements = list(args.measurements) if measurements is None else measurements
    if args.points_source == "masks":
        if measurements:
            raise SystemExit("--points-source masks derives the points itself; drop --measurements")
        if str(options.coordinate_frame) != "original":
            raise SystemExit("--points-source masks gives points in mask pixels; drop --coordinate-frame")
        if options.masks_dir is None:
            raise SystemExit("--points-source masks needs a mask folder")
        mask_index = index_files(options.masks_dir)
        mask_paths = {}
        for image_id in sorted(index_files(options.images_dir, IMAGE_SUFFIXES)):
            found = find_mask(mask_index, image_id, options.mask_suffix)
            if len(found) == 1:
                mask_paths[image_id] = found[0]
        LOGGER.info("deriving points from %d masks in %s", len(mask_paths), options.masks_dir)
        return records_from_masks(mask_paths, MaskEncoding.parse(options.mask_encoding))

    if not measurements:
        raise SystemExit("give at least one --measurements file, or --points-source masks")
    frames = []
    for path in measurements:
        try:
            frames.append(
                read_measurements(
                    path,
                    layout=args.measurements_layout,
                    id_column=args.id_column,
                    right_column=args.right_column,
                    left_column=args.left_column,
                    first_is=args.first_is,
                )
            )
        except MeasurementError as error:
            raise SystemExit(f"error: {error}") from error
    return pd.concat(frames, ignore_index=True)


def write_build_outputs(result: BuildResult, out_dir: Path, strict: bool) -> int:
    """Write metadata.csv and the reports into ``out_dir``; return the exit status (0 or 1).

    The reports (rejected.csv, images_without_points.csv, dropped_points.csv,
    mask_warnings.csv, summary.json) are always written. metadata.csv is not written when
    ``strict`` and anything was rejected or dropped, or when no row is usable.
    """
    atomic_write_csv(out_dir / "rejected.csv", result.rejected)
    atomic_write_csv(out_dir / "images_without_points.csv", result.without_points)
    atomic_write_csv(out_dir / "mask_warnings.csv", result.mask_warnings)
    atomic_write_csv(out_dir / "dropped_points.csv", result.dropped_points)
    summary = {
        "metadata_rows": len(result.metadata),
        "rejected_rows": len(result.rejected),
        "rejected_by_reason": {str(k): int(v) for k, v in result.rejected["reason"].value_counts().items()},
        "images_without_points": len(result.without_points),
        "mask_warnings": len(result.mask_warnings),
        "dropped_points": len(result.dropped_points),
        **result.counts,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    for row in result.rejected.to_dict("records"):
        source = Path(str(row["source_file"]).split("; ")[0]).name
        if row["source_line"]:
            source += f" line {row['source_line']}"
        LOGGER.warning("rejected %s (%s): %s: %s", row["image_id"] or "<no name>", source, row["reason"],
                       row["detail"])
    LOGGER.info("%s", result.summary())

    if strict and (len(result.rejected) or len(result.dropped_points)):
        LOGGER.error(
            "--strict: %d rejected row(s) and %d dropped point(s), listed in %s and %s; metadata.csv was not written",
            len(result.rejected), len(result.dropped_points), out_dir / "rejected.csv", out_dir / "dropped_points.csv",
        )
        return 1
    if result.metadata.empty:
        LOGGER.error("no usable rows; metadata.csv was not written (see %s)", out_dir / "rejected.csv")
        return 1
    write_metadata(result.metadata, out_dir / "metadata.csv")
    LOGGER.info("wrote %s (%d rows)", out_dir / "metadata.csv", len(result.metadata))
    return 0
