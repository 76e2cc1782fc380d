"""The metadata CSV: one row per image, the hand-off from preprocessing to the heatmap stages.

Columns, in this order (``METADATA_COLUMNS``):

==================  ==========================================================================
column              content
==================  ==========================================================================
image_id            file stem of the image, unique in the file
dataset             dataset name, e.g. ``jsrt224``
part                ``train``, ``val``, ``test`` or empty (no split given)
image_path          absolute path of the image
mask_path           absolute path of the ground-truth lung mask, or empty when there is none
mask_encoding       how the mask stores the lungs: ``labels:R,L`` or ``combined`` (see
                    ``hemidiaphragm.datasets.MaskEncoding``); empty when ``mask_path`` is empty
width, height       size of the image file in pixels (the original frame of every point)
pixel_spacing_mm    isotropic pixel size in mm, empty when unknown
right_dome_x/_y     patient-right hemidiaphragm dome, required
left_dome_x/_y      patient-left hemidiaphragm dome, required
right_cp_x/_y ...   costophrenic angles and cardiophrenic corners (``right_cp``,
                    ``right_cardio``, ``left_cp``, ``left_cardio``), optional: both x and y, or
                    both empty
==================  ==========================================================================

All points are in pixels of the image file: x is the column, y the row, (0, 0) the centre of
the top-left pixel, so a point inside the image has -0.5 <= x <= width - 0.5 and
-0.5 <= y <= height - 0.5. Columns after the standard ones are kept as text and not checked.

``read_metadata`` and ``write_metadata`` both validate the table and raise
:class:`MetadataError` naming the file, the CSV line, the image id and the column.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hemidiaphragm.datasets import MaskEncoding
from hemidiaphragm.runs import atomic_write_text
from hemidiaphragm.splits import PARTS

REQUIRED_POINTS = ("right_dome", "left_dome")
OPTIONAL_POINTS = ("right_cp", "right_cardio", "left_cp", "left_cardio")
POINT_COLUMNS = tuple(f"{point}_{axis}" for point in REQUIRED_POINTS + OPTIONAL_POINTS for axis in ("x", "y"))

METADATA_COLUMNS = (
    "image_id",
    "dataset",
    "part",
    "image_path",
    "mask_path",
    "mask_encoding",
    "width",
    "height",
    "pixel_spacing_mm",
    *POINT_COLUMNS,
)

# Points are written with this many decimals: 1e-4 px is far below any annotation's precision.
POINT_DECIMALS = 4
MAX_LISTED_ERRORS = 10


class MetadataError(ValueError):
    """A metadata table lacks a column or contains an invalid value."""


def read_metadata(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a metadata CSV.

    Returns a DataFrame with the columns of ``METADATA_COLUMNS`` first: text columns as str
    (empty string when empty), ``width``/``height`` as int64, ``pixel_spacing_mm`` and the
    point columns as float64 with NaN where empty. With ``check_files`` every image and mask
    path must exist.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MetadataError: a column is missing or a value is invalid; the message names the file,
            the CSV line, the image id and the column.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a CSV file" if path.is_dir() else "not found"
        raise FileNotFoundError(
            f"metadata file {path} {problem}; build it with heatmap_preprocessing/build_metadata.py"
        )
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    return validate_metadata(text, source=str(path), check_files=check_files)


def write_metadata(frame: pd.DataFrame, path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Validate ``frame`` and write it atomically as CSV in the standard column order.

    Returns the validated, typed frame that was written.
    """
    text = frame.copy()
    for column in text.columns:
        text[column] = [_to_text(value) for value in text[column]]
    typed = validate_metadata(text, source=f"metadata for {path}", check_files=check_files)

    output = typed.copy()
    for column in POINT_COLUMNS + ("pixel_spacing_mm",):
        output[column] = [_format_float(value) for value in output[column]]
    atomic_write_text(path, output.to_csv(index=False, lineterminator="\n"))
    return typed


def validate_metadata(text: pd.DataFrame, source: str = "metadata", *, check_files: bool = True) -> pd.DataFrame:
    """Check a table whose cells are all strings and return it typed (see ``read_metadata``)."""
    missing = [column for column in METADATA_COLUMNS if column not in text.columns]
    if missing:
        missing_text = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise MetadataError(
            f"{source}: missing column(s) {missing_text}; build a metadata file with "
            "heatmap_preprocessing/build_metadata.py (its columns are listed in heatmap_preprocessing/README.md)"
        )
    extra = [column for column in text.columns if column not in METADATA_COLUMNS]
    text = text[list(METADATA_COLUMNS) + extra].reset_index(drop=True)

    errors: list[str] = []
    typed = {column: [] for column in METADATA_COLUMNS}
    seen_ids: dict[str, int] = {}
    for index, row in text.iterrows():
        # Line 1 of the CSV is the header, so data row 0 is line 2.
        where = f"{source}, line {index + 2} (image_id {row['image_id']!r})"
        values = _validate_row(row, where, seen_ids, index + 2, check_files, errors)
        for column in METADATA_COLUMNS:
            typed[column].append(values[column])

    if errors:
        listed = "\n  ".join(errors[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
        raise MetadataError(f"{len(errors)} invalid value(s):\n  {listed}{more}")

    result = pd.DataFrame(typed, columns=list(METADATA_COLUMNS))
    result["width"] = result["width"].astype("int64")
    result["height"] = result["height"].astype("int64")
    for column in POINT_COLUMNS + ("pixel_spacing_mm",):
        result[column] = result[column].astype("float64")
    for column in extra:
        result[column] = text[column].astype(str)
    return result


def _validate_row(row, where: str, seen_ids: dict, line: int, check_files: bool, errors: list) -> dict:
    values: dict = {}

    image_id = row["image_id"].strip()
    if not image_id:
        errors.append(f"{where}, column image_id: empty; every row needs an id")
    elif image_id in seen_ids:
        errors.append(f"{where}, column image_id: {image_id!r} already used on line {seen_ids[image_id]}")
    else:
        seen_ids[image_id] = line
    values["image_id"] = image_id

    values["dataset"] = row["dataset"].strip()
    if not values["dataset"]:
        errors.append(f"{where}, column dataset: empty; give the dataset name")

    values["part"] = row["part"].strip()
    if values["part"] not in PARTS + ("",):
        errors.append(f"{where}, column part: {values['part']!r} is not one of {PARTS} or empty")

    values["image_path"] = _check_path(row["image_path"], "image_path", where, check_files, errors, required=True)
    values["mask_path"] = _check_path(row["mask_path"], "mask_path", where, check_files, errors, required=False)

    encoding = row["mask_encoding"].strip()
    if values["mask_path"] and not encoding:
        errors.append(f"{where}, column mask_encoding: empty although mask_path is set; use 'labels:R,L' or 'combined'")
    elif encoding:
        try:
            MaskEncoding.parse(encoding)
        except ValueError as error:
            errors.append(f"{where}, column mask_encoding: {error}")
    values["mask_encoding"] = encoding

    for column in ("width", "height"):
        values[column] = _parse_size(row[column], column, where, errors)

    spacing = _parse_float(row["pixel_spacing_mm"], "pixel_spacing_mm", where, errors, required=False)
    if not math.isnan(spacing) and spacing <= 0:
        errors.append(f"{where}, column pixel_spacing_mm: {spacing} must be positive or empty")
    values["pixel_spacing_mm"] = spacing

    for point in REQUIRED_POINTS + OPTIONAL_POINTS:
        required = point in REQUIRED_POINTS
        errors_before = len(errors)
        x = _parse_float(row[f"{point}_x"], f"{point}_x", where, errors, required)
        y = _parse_float(row[f"{point}_y"], f"{point}_y", where, errors, required)
        if len(errors) > errors_before:
            pass  # the coordinate's own error is listed; a pairing error would only repeat it
        elif math.isnan(x) != math.isnan(y):
            errors.append(f"{where}, columns {point}_x/{point}_y: give both coordinates or neither")
        elif not math.isnan(x):
            _check_inside(point, x, y, values["width"], values["height"], where, errors)
        values[f"{point}_x"], values[f"{point}_y"] = x, y
    return values


def _check_path(raw: str, column: str, where: str, check_files: bool, errors: list, required: bool) -> str:
    value = raw.strip()
    if not value:
        if required:
            errors.append(f"{where}, column {column}: empty; every row needs an image file")
        return ""
    if not Path(value).is_absolute():
        errors.append(f"{where}, column {column}: {value!r} is not an absolute path")
    elif check_files and not Path(value).is_file():
        errors.append(f"{where}, column {column}: file {value} not found")
    return value


def _parse_size(raw: str, column: str, where: str, errors: list) -> int:
    try:
        number = float(raw)
    except ValueError:
        errors.append(f"{where}, column {column}: {raw!r} is not a number")
        return 0
    if not number.is_integer() or number < 1:
        errors.append(f"{where}, column {column}: {raw!r} must be a positive whole number of pixels")
        return 0
    return int(number)


def _parse_float(raw: str, column: str, where: str, errors: list, required: bool) -> float:
    value = raw.strip()
    if not value:
        if required:
            errors.append(f"{where}, column {column}: empty; this column is required")
        return math.nan
    try:
        number = float(value)
    except ValueError:
        errors.append(f"{where}, column {column}: {value!r} is not a number")
        return math.nan
    if not math.isfinite(number):
        errors.append(f"{where}, column {column}: {value!r} is not finite; leave optional values empty instead")
        return math.nan
    return number


def _check_inside(point: str, x: float, y: float, width: int, height: int, where: str, errors: list) -> None:
    if width < 1 or height < 1:
        return  # the size error is already listed
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        errors.append(
            f"{where}, columns {point}_x/{point}_y: ({x}, {y}) lies outside the {width}x{height} image "
            f"(valid x -0.5 to {width - 0.5}, y -0.5 to {height - 0.5})"
        )


def _to_text(value) -> str:
    if value is None or (np.isscalar(value) and pd.isna(value)) or value is pd.NA:
        return ""
    return str(value)


def _format_float(value: float) -> str:
    if math.isnan(value):
        return ""
    rounded = round(float(value), POINT_DECIMALS)
    return repr(rounded) if not rounded.is_integer() else f"{rounded:.1f}"


def empty_metadata() -> pd.DataFrame:
    """Return an empty table with the metadata columns."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in METADATA_COLUMNS})
