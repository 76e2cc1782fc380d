"""Measurement exports: parsing, merging, matching to files and the rejected-row report."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.measurements import (
    BuildOptions,
    CoordinateFrame,
    MeasurementError,
    build_metadata_table,
    merge_records,
    normalise_image_name,
    read_measurements,
)
from hemidiaphragm.metadata import read_metadata

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 40, 30  # non-square on purpose


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Images a, b, c, d (40 x 30) with label masks named <id>_segm.png."""
    root = tmp_path / "toy"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image_id in ("a", "b", "c", "d"):
        cv2.imwrite(str(root / "images" / f"{image_id}.png"), np.full((HEIGHT, WIDTH), 128, np.uint8))
        labels = np.zeros((HEIGHT, WIDTH), np.uint8)
        labels[5:25, 4:16], labels[5:25, 24:36] = 1, 2
        cv2.imwrite(str(root / "masks" / f"{image_id}_segm.png"), labels)
    return root


def options_for(root: Path, **changes) -> BuildOptions:
    values = dict(images_dir=root / "images", dataset="toy", masks_dir=root / "masks", mask_suffix="auto",
                  mask_encoding="labels:1,2")
    values.update(changes)
    return BuildOptions(**values)


def test_clinical_pairs_parsed_as_floats(tmp_path):
    path = write_csv(tmp_path / "m.csv", '''
image_name,ref_point_fst_lung,ref_point_snd_lung
a.png,"(175, 347)","( 416 ,362 )"
b,"[1.5; 2.25]","3 4"
''')
    records = read_measurements(path)
    assert records.loc[0, "image_id"] == "a"
    assert records.loc[0, "right_dome_x"] == 175.0
    assert records.loc[0, "left_dome_y"] == 362.0
    assert records.loc[1, "right_dome_y"] == 2.25
    assert records.loc[1, "left_dome_x"] == 3.0
    assert (records["reason"] == "").all()


def test_first_is_patient_left_swaps_sides(tmp_path):
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(3, 2)","(1, 4)"')
    records = read_measurements(path, first_is="patient-left")
    assert records.loc[0, "reason"] == ""
    assert records.loc[0, "right_dome_x"] == 1.0
    assert records.loc[0, "left_dome_x"] == 3.0


def test_clinical_swapped_sides_rejected(tmp_path):
    path = write_csv(tmp_path / "m.csv",
                     'image_name,ref_point_fst_lung,ref_point_snd_lung\nJPCLN006,"(184, 170)","(58, 170)"')
    records = read_measurements(path)
    assert records.loc[0, "reason"] == "swapped_sides"
    assert "x 184" in records.loc[0, "detail"]
    assert "x 58" in records.loc[0, "detail"]
    assert "--first-is patient-left" in records.loc[0, "detail"]
    assert math.isnan(records.loc[0, "right_dome_x"])


def test_wide_swapped_sides_rejected(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y\na,30,4,30,4")
    records = read_measurements(path)
    assert records.loc[0, "reason"] == "swapped_sides"
    assert "right_dome_x 30, left_dome_x 30" in records.loc[0, "detail"]


def test_jsrt224_landmarks_sides_in_order(shared_data):
    records = read_measurements(shared_data / "jsrt224" / "landmarks.csv")
    assert (records["reason"] == "").all()


def test_custom_clinical_columns(tmp_path):
    path = write_csv(tmp_path / "m.csv", 'file,R,L\na,"(1, 2)","(3, 4)"')
    records = read_measurements(path, id_column="file", right_column="R", left_column="L")
    assert records.loc[0, "left_dome_y"] == 4.0


@pytest.mark.parametrize(
    ("cell", "reason"),
    [('"(nan, 3)"', "nan_coordinate"), ('"(1, x)"', "unparseable_coordinate"), ('""', "missing_coordinate"),
     ('"(1, 2, 3)"', "unparseable_coordinate")],
)
def test_clinical_bad_cells(tmp_path, cell, reason):
    path = write_csv(tmp_path / "m.csv", f'image_name,ref_point_fst_lung,ref_point_snd_lung\na,{cell},"(3, 4)"')
    records = read_measurements(path)
    assert records.loc[0, "reason"] == reason
    assert "ref_point_fst_lung" in records.loc[0, "detail"]
    assert math.isnan(records.loc[0, "left_dome_x"])  # nothing of a rejected row is kept


@pytest.mark.parametrize(
    ("value", "reason"),
    [("NaN", "nan_coordinate"), ("abc", "unparseable_coordinate"), ("", "missing_coordinate")],
)
def test_wide_bad_cells(tmp_path, value, reason):
    path = write_csv(tmp_path / "m.csv", f"image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y\na,1,{value},3,4")
    assert read_measurements(path).loc[0, "reason"] == reason


def test_wide_optional_points(tmp_path):
    path = write_csv(tmp_path / "m.csv", """
image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y,right_cp_x,right_cp_y
a,1,2,3,4,5,6
b,1,2,3,4,,
c,1,2,3,4,5,
""")
    records = read_measurements(path)
    assert records.loc[0, "right_cp_y"] == 6.0
    assert records.loc[1, "reason"] == ""
    assert math.isnan(records.loc[1, "right_cp_x"])
    assert records.loc[2, "reason"] == "missing_coordinate"


def test_derived_failure_column_rejects(tmp_path):
    path = write_csv(tmp_path / "m.csv", """
image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y,right_failure,left_failure
a,,,3,4,touches_border,
""")
    records = read_measurements(path)
    assert records.loc[0, "reason"] == "derivation_failed"
    assert "touches_border" in records.loc[0, "detail"]


def test_unknown_layout_named(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_id,x,y\na,1,2")
    with pytest.raises(MeasurementError, match="cannot tell the layout"):
        read_measurements(path)


def test_unquoted_clinical_points_named(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_name,ref_point_fst_lung,ref_point_snd_lung\na,(100,300),(400,310)")
    with pytest.raises(MeasurementError, match="more fields than the header's 3"):
        read_measurements(path)


def test_names_normalised():
    assert normalise_image_name("images/X_1.png") == "X_1"
    assert normalise_image_name("C:\\data\\X.PNG") == "X"
    assert normalise_image_name("1.2.840.5") == "1.2.840.5"


def test_frame_maps_pixel_centres():
    frame = CoordinateFrame.parse("20x15")
    # Doubling: pixel 0 of the small frame covers original pixels 0 and 1, centre 0.5.
    assert frame.to_original(0.0, 0.0, 40, 30) == (0.5, 0.5)
    assert frame.to_original(19.0, 14.0, 40, 30) == (38.5, 28.5)
    assert CoordinateFrame.parse("original").to_original(3.0, 4.0, 40, 30) == (3.0, 4.0)


def test_frame_rejects_bad_text():
    with pytest.raises(ValueError, match="WxH"):
        CoordinateFrame.parse("512")


def test_identical_duplicates_merged(tmp_path):
    first = write_csv(tmp_path / "one.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(1, 2)","(3, 4)"')
    second = write_csv(tmp_path / "two.csv", """
image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y,right_cp_x,right_cp_y
a,1,2,3,4,5,6
""")
    records = pd.concat([read_measurements(first), read_measurements(second)], ignore_index=True)
    merged, rejected, identical = merge_records(records)
    assert len(merged) == 1
    assert rejected.empty
    assert identical == 1
    assert merged.loc[0, "right_cp_x"] == 5.0  # the union of both exports' points
    assert merged.loc[0, "source_line"] == "one.csv:2; two.csv:2"


def test_duplicate_with_rejected_row_rejects_all(tmp_path):
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
a,"(1, 2)","(3, 4)"
a,"(nan, 2)","(3, 4)"
""")
    merged, rejected, _ = merge_records(read_measurements(path))
    assert merged.empty
    assert sorted(rejected["reason"]) == ["conflicting_duplicate", "nan_coordinate"]


def test_planted_bad_rows_each_reported(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
a,"(10, 20)","(30, 20)"
b,"(nan, 20)","(30, 20)"
c,"10, twenty","(30, 20)"
d,"(10, 30)","(30, 20)"
a,"(11, 20)","(30, 20)"
e,"(10, 20)","(30, 20)"
""")
    result = build_metadata_table(read_measurements(path), options_for(dataset))
    reasons = dict(zip(result.rejected["source_line"], result.rejected["reason"]))
    assert reasons["3"] == "nan_coordinate"
    assert reasons["4"] == "unparseable_coordinate"
    assert reasons["5"] == "outside_image"  # y = 30 is past the last row centre 29 + 0.5
    assert reasons["2"] == "conflicting_duplicate"
    assert reasons["6"] == "conflicting_duplicate"
    assert reasons["7"] == "missing_image"
    assert len(result.rejected) == 6
    assert result.metadata.empty
    assert "rejected rows 6" in result.summary()


def test_good_rows_become_metadata(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(10, 20)","(30, 20)"')
    result = build_metadata_table(read_measurements(path), options_for(dataset))
    row = result.metadata.iloc[0]
    assert row["width"] == WIDTH
    assert row["height"] == HEIGHT
    assert row["mask_path"].endswith("a_segm.png")
    assert row["mask_encoding"] == "labels:1,2"
    assert row["right_dome_x"] == 10.0
    assert sorted(result.without_points["image_id"]) == ["b", "c", "d"]


def test_resized_frame_mapped_then_checked(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(4, 9)","(19, 14)"')
    options = options_for(dataset, coordinate_frame=CoordinateFrame.parse("20x15"))
    row = build_metadata_table(read_measurements(path), options).metadata.iloc[0]
    assert (row["right_dome_x"], row["right_dome_y"]) == (8.5, 18.5)
    assert (row["left_dome_x"], row["left_dome_y"]) == (38.5, 28.5)


def test_optional_point_outside_dropped(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", """
image_id,right_dome_x,right_dome_y,left_dome_x,left_dome_y,right_cp_x,right_cp_y
a,10,20,30,20,5,30
""")
    result = build_metadata_table(read_measurements(path), options_for(dataset))
    assert len(result.metadata) == 1
    assert math.isnan(result.metadata.iloc[0]["right_cp_x"])
    assert result.dropped_points.iloc[0]["point"] == "right_cp"


def test_split_fills_part_and_rejects_unlisted(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
a,"(10, 20)","(30, 20)"
b,"(10, 20)","(30, 20)"
c,"(10, 20)","(30, 20)"
""")
    split = pd.DataFrame({"image_id": ["a", "b", "d"], "patient_id": ["a", "b", "d"], "part": ["train", "test", "val"]})
    result = build_metadata_table(read_measurements(path), options_for(dataset, split=split, parts=("train", "val")))
    assert result.metadata["image_id"].tolist() == ["a"]
    assert result.metadata["part"].tolist() == ["train"]
    assert result.rejected["reason"].tolist() == ["not_in_split"]  # c
    assert result.counts["filtered_out"] == 1  # b is in the test part
    assert result.without_points["image_id"].tolist() == ["d"]


def test_missing_and_ambiguous_masks(tmp_path, dataset):
    (dataset / "masks" / "b_segm.png").unlink()
    cv2.imwrite(str(dataset / "masks" / "c_mask.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
b,"(10, 20)","(30, 20)"
c,"(10, 20)","(30, 20)"
""")
    result = build_metadata_table(read_measurements(path), options_for(dataset))
    assert result.rejected["reason"].tolist() == ["missing_mask", "ambiguous_mask"]


def test_unreadable_image_and_size_mismatch(tmp_path, dataset):
    (dataset / "images" / "b.png").write_bytes(b"not a png")
    cv2.imwrite(str(dataset / "masks" / "c_segm.png"), np.zeros((HEIGHT, WIDTH + 2), np.uint8))
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
b,"(10, 20)","(30, 20)"
c,"(10, 20)","(30, 20)"
""")
    for verify in ("decode", "header"):
        result = build_metadata_table(read_measurements(path), options_for(dataset, verify=verify))
        assert result.rejected["reason"].tolist() == ["unreadable_image", "mask_size_mismatch"], verify


def run_build(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "heatmap_preprocessing/build_metadata.py", *arguments], cwd=ROOT,
                          capture_output=True, text=True)


def test_script_strict_fails_and_keeps_reports(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", """
image_name,ref_point_fst_lung,ref_point_snd_lung
a,"(10, 20)","(30, 20)"
b,"(nan, 20)","(30, 20)"
""")
    common = ["--data-root", str(dataset), "--measurements", str(path)]
    strict = run_build(*common, "--output-dir", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1
    assert not (tmp_path / "strict" / "metadata.csv").exists()
    assert "nan_coordinate" in (tmp_path / "strict" / "rejected.csv").read_text()

    relaxed = run_build(*common, "--output-dir", str(tmp_path / "relaxed"))
    assert relaxed.returncode == 0, relaxed.stderr[-2000:]
    assert len(read_metadata(tmp_path / "relaxed" / "metadata.csv")) == 1
    assert json.loads((tmp_path / "relaxed" / "summary.json").read_text())["rejected_rows"] == 1

    again = run_build(*common, "--output-dir", str(tmp_path / "relaxed"))
    assert again.returncode != 0
    assert "--overwrite" in again.stderr


def test_script_bad_split_leaves_no_folder(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(10, 20)","(30, 20)"')
    result = run_build("--data-root", str(dataset), "--measurements", str(path), "--split",
                       str(tmp_path / "missing.csv"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "missing.csv not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_script_foreign_split_leaves_no_folder(tmp_path, dataset):
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\na,"(10, 20)","(30, 20)"')
    split = write_csv(tmp_path / "split.csv", "image_id,patient_id,part\nother,other,test")
    result = run_build("--data-root", str(dataset), "--measurements", str(path), "--split", str(split),
                       "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "lists none of the 1 images of the measurements (for example a)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_script_missing_measurements_keeps_earlier_run(tmp_path, dataset):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.csv").write_text("earlier result")
    result = run_build("--data-root", str(dataset), "--measurements", str(tmp_path / "typo.csv"),
                       "--output-dir", str(out), "--overwrite")
    assert result.returncode != 0
    assert "error: measurement file" in result.stderr
    assert (out / "metadata.csv").read_text() == "earlier result"


def test_shenzhen512_measurements_all_used(tmp_path, shared_data):
    root = shared_data / "shenzhen512"
    result = run_build("--data-root", str(root), "--measurements", str(root / "measurements.csv"),
                       "--split", "data_splits/shenzhen512/fold0.csv", "--verify", "header",
                       "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = read_metadata(tmp_path / "out" / "metadata.csv")
    assert len(metadata) == 390
    assert len(pd.read_csv(tmp_path / "out" / "rejected.csv")) == 0
    assert set(metadata["part"]) == {"train", "val", "test"}
    assert (metadata["mask_encoding"] == "combined").all()


def test_missing_mask_allowed_when_asked(tmp_path, dataset):
    (dataset / "masks" / "b_segm.png").unlink()
    path = write_csv(tmp_path / "m.csv", 'image_name,ref_point_fst_lung,ref_point_snd_lung\nb,"(10, 20)","(30, 20)"')
    result = build_metadata_table(read_measurements(path), options_for(dataset, require_masks=False))
    assert result.rejected.empty
    assert result.metadata.iloc[0]["mask_path"] == ""
    assert result.metadata.iloc[0]["mask_encoding"] == ""
    assert "mask_path left empty" in result.mask_warnings.iloc[0]["warning"]
