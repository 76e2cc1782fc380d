"""Metadata CSV: round trip and loud failures on missing columns and bad values."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.metadata import METADATA_COLUMNS, MetadataError, read_metadata, write_metadata


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((24, 32), np.uint8))
    return path


def make_row(image_file, **changes) -> dict:
    row = {
        "image_id": "a", "dataset": "toy", "part": "train", "image_path": str(image_file), "mask_path": "",
        "mask_encoding": "", "width": 32, "height": 24, "pixel_spacing_mm": math.nan,
        "right_dome_x": 8.25, "right_dome_y": 12.0, "left_dome_x": 24.0, "left_dome_y": 13.5,
        "right_cp_x": math.nan, "right_cp_y": math.nan, "right_cardio_x": math.nan, "right_cardio_y": math.nan,
        "left_cp_x": 30.0, "left_cp_y": 20.0, "left_cardio_x": math.nan, "left_cardio_y": math.nan,
    }
    row.update(changes)
    return row


def write_text_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_round_trip_keeps_values(tmp_path, image_file):
    written = write_metadata(pd.DataFrame([make_row(image_file)]), tmp_path / "metadata.csv")
    read = read_metadata(tmp_path / "metadata.csv")
    assert list(read.columns) == list(METADATA_COLUMNS)
    assert read.loc[0, "right_dome_x"] == 8.25
    assert read.loc[0, "width"] == 32
    assert math.isnan(read.loc[0, "right_cp_x"])
    assert read.loc[0, "left_cp_x"] == 30.0
    assert read.loc[0, "part"] == "train"
    pd.testing.assert_frame_equal(written, read)


def test_written_file_has_empty_cells_for_nan(tmp_path, image_file):
    write_metadata(pd.DataFrame([make_row(image_file)]), tmp_path / "metadata.csv")
    line = (tmp_path / "metadata.csv").read_text().splitlines()[1]
    assert ",,,,,30.0,20.0,," in line
    assert "nan" not in line.lower()


def test_missing_column_named(tmp_path, image_file):
    row = make_row(image_file)
    del row["left_dome_y"]
    path = write_text_csv(tmp_path / "m.csv", [row])
    with pytest.raises(MetadataError, match="left_dome_y"):
        read_metadata(path)


def test_bad_value_names_line_and_column(tmp_path, image_file):
    rows = [make_row(image_file), make_row(image_file, image_id="b", right_dome_y="abc")]
    path = write_text_csv(tmp_path / "m.csv", rows)
    with pytest.raises(MetadataError, match=r"line 3 \(image_id 'b'\), column right_dome_y: 'abc'"):
        read_metadata(path)


def test_missing_dome_rejected(tmp_path, image_file):
    path = write_text_csv(tmp_path / "m.csv", [make_row(image_file, left_dome_x=math.nan)])
    with pytest.raises(MetadataError, match="left_dome_x: empty"):
        read_metadata(path)


def test_point_outside_image_rejected(tmp_path, image_file):
    # The image is 32 px wide, so x may reach 31.5 (the right edge of the last pixel).
    write_metadata(pd.DataFrame([make_row(image_file, right_dome_x=31.5)]), tmp_path / "ok.csv")
    with pytest.raises(MetadataError, match="outside the 32x24 image"):
        write_metadata(pd.DataFrame([make_row(image_file, right_dome_x=31.6)]), tmp_path / "bad.csv")


def test_half_given_optional_point_rejected(tmp_path, image_file):
    with pytest.raises(MetadataError, match="right_cp_x/right_cp_y: give both"):
        write_metadata(pd.DataFrame([make_row(image_file, right_cp_x=3.0)]), tmp_path / "m.csv")


def test_duplicate_id_rejected(tmp_path, image_file):
    rows = [make_row(image_file), make_row(image_file)]
    with pytest.raises(MetadataError, match="already used on line 2"):
        write_metadata(pd.DataFrame(rows), tmp_path / "m.csv")


def test_unknown_part_rejected(tmp_path, image_file):
    with pytest.raises(MetadataError, match="column part: 'training'"):
        write_metadata(pd.DataFrame([make_row(image_file, part="training")]), tmp_path / "m.csv")


def test_relative_path_rejected(tmp_path, image_file):
    with pytest.raises(MetadataError, match="not an absolute path"):
        write_metadata(pd.DataFrame([make_row(image_file, image_path="a.png")]), tmp_path / "m.csv")


def test_missing_image_file_rejected(tmp_path, image_file):
    row = make_row(image_file, image_path=str(tmp_path / "gone.png"))
    with pytest.raises(MetadataError, match="gone.png not found"):
        write_metadata(pd.DataFrame([row]), tmp_path / "m.csv")
    write_metadata(pd.DataFrame([row]), tmp_path / "m.csv", check_files=False)


def test_mask_needs_encoding(tmp_path, image_file):
    with pytest.raises(MetadataError, match="mask_encoding: empty"):
        write_metadata(pd.DataFrame([make_row(image_file, mask_path=str(image_file))]), tmp_path / "m.csv")
    with pytest.raises(MetadataError, match="invalid mask encoding"):
        write_metadata(pd.DataFrame([make_row(image_file, mask_path=str(image_file), mask_encoding="labels:1")]),
                       tmp_path / "m.csv")


def test_size_must_be_whole_pixels(tmp_path, image_file):
    with pytest.raises(MetadataError, match="column width: '32.5'"):
        write_metadata(pd.DataFrame([make_row(image_file, width=32.5)]), tmp_path / "m.csv")


def test_negative_spacing_rejected(tmp_path, image_file):
    with pytest.raises(MetadataError, match="pixel_spacing_mm"):
        write_metadata(pd.DataFrame([make_row(image_file, pixel_spacing_mm=-0.1)]), tmp_path / "m.csv")


def test_infinite_value_rejected(tmp_path, image_file):
    path = write_text_csv(tmp_path / "m.csv", [make_row(image_file, left_cp_x="inf")])
    with pytest.raises(MetadataError, match="not finite"):
        read_metadata(path)


def test_extra_columns_kept_after_standard(tmp_path, image_file):
    write_metadata(pd.DataFrame([make_row(image_file, note="x")]), tmp_path / "m.csv")
    read = read_metadata(tmp_path / "m.csv")
    assert list(read.columns) == list(METADATA_COLUMNS) + ["note"]
    assert read.loc[0, "note"] == "x"


def test_all_errors_listed_together(tmp_path, image_file):
    rows = [make_row(image_file, image_id=f"i{n}", right_dome_x="bad") for n in range(3)]
    with pytest.raises(MetadataError, match="3 invalid value"):
        write_metadata(pd.DataFrame(rows), tmp_path / "m.csv")


def test_missing_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_metadata.py"):
        read_metadata(tmp_path / "none.csv")


def test_many_missing_columns_short(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("image_id,right_x,right_y\na,1,2\n")
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    message = str(caught.value)
    assert "dataset, part, image_path, mask_path and " in message
    assert "more;" in message
    assert len(message) < 300
