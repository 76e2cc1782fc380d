"""masks_index.csv reading: relative paths, the encoding column, repeated ids and bad paths."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.datasets import MaskEncoding
from hemidiaphragm.landmark_data import check_index_masks, read_mask_index, replace_masks
from hemidiaphragm.segmentation import check_sides


def write_index(path, text):
    path.write_text(text)
    return path


def test_encoding_column_used(tmp_path):
    index = write_index(tmp_path / "masks_index.csv",
                        "image_id,mask_path,mask_encoding\na,masks/a.png,\"labels:150,200\"\nb,/x/b.png,\n")
    masks = read_mask_index(index)
    assert masks["a"] == ((tmp_path / "masks/a.png").resolve(), "labels:150,200")
    assert masks["b"][1] == "labels:1,2"
    assert str(masks["b"][0]) == "/x/b.png"


def test_without_encoding_column_predicted(tmp_path):
    index = write_index(tmp_path / "i.csv", "image_id,mask_path\n007,a.png\n")
    masks = read_mask_index(index)
    assert list(masks) == ["007"]  # ids stay text, leading zeros kept
    assert masks["007"][1] == "labels:1,2"


def test_replace_masks_carries_encoding(tmp_path):
    index = write_index(tmp_path / "i.csv", "image_id,mask_path,mask_encoding\na,a.png,combined\n")
    frame = replace_masks(pd.DataFrame({"image_id": ["a"], "mask_path": ["old.png"], "mask_encoding": ["x"]}), index)
    assert frame.loc[0, "mask_encoding"] == "combined"
    assert frame.loc[0, "mask_path"] == str((tmp_path / "a.png").resolve())


def test_repeated_id_rejected(tmp_path):
    index = write_index(tmp_path / "i.csv", "image_id,mask_path\na,a.png\nb,b.png\na,c.png\n")
    with pytest.raises(ValueError, match=r"lists image\(s\) \['a'\] more than once"):
        read_mask_index(index)


def test_bad_encoding_names_line(tmp_path):
    index = write_index(tmp_path / "i.csv", "image_id,mask_path,mask_encoding\na,a.png,labels:1\n")
    with pytest.raises(ValueError, match="i.csv, line 2"):
        read_mask_index(index)


def test_folder_and_missing_file_named(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        read_mask_index(tmp_path)
    with pytest.raises(ValueError, match="gone.csv not found"):
        read_mask_index(tmp_path / "gone.csv")


def test_empty_mask_path_names_line(tmp_path):
    index = write_index(tmp_path / "i.csv", "image_id,mask_path\na,a.png\nb,\n")
    with pytest.raises(ValueError, match="i.csv, line 3: image 'b' has an empty mask_path"):
        read_mask_index(index)


def test_unreadable_index_named(tmp_path):
    empty = write_index(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match="empty.csv could not be read as a CSV file"):
        read_mask_index(empty)


def label_mask(path):
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 2:8] = 1
    labels[5:15, 12:18] = 2
    cv2.imwrite(str(path), labels)


def test_wrong_index_encoding_rejected(tmp_path):
    for name in ("a", "b"):
        label_mask(tmp_path / f"{name}.png")
    right = write_index(tmp_path / "right.csv", "image_id,mask_path,mask_encoding\na,a.png,\"labels:1,2\"\nb,b.png,\n")
    check_index_masks(read_mask_index(right), right)
    wrong = write_index(tmp_path / "wrong.csv", "image_id,mask_path,mask_encoding\na,a.png,\"labels:150,200\"\n"
                        "b,b.png,\"labels:150,200\"\n")
    with pytest.raises(ValueError, match="the first 2 masks listed in .*wrong.csv .* each lack a lung"):
        check_index_masks(read_mask_index(wrong), wrong)


def two_lungs(right_first: bool = True) -> np.ndarray:
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 2:8] = 1 if right_first else 2
    labels[5:15, 12:18] = 2 if right_first else 1
    return labels


def test_training_masks_sides_checked():
    encoding = MaskEncoding.parse("labels:1,2")
    check_sides([("a", None, two_lungs()), ("b", None, two_lungs(right_first=False))], encoding)
    with pytest.raises(ValueError, match="in all 2 masks the patient-right lung lies to the image right"):
        check_sides([("a", None, two_lungs(False)), ("b", None, two_lungs(False))], encoding)
    only_right = np.where(two_lungs() == 2, 0, two_lungs())
    with pytest.raises(ValueError, match="none of the 1 masks has a patient-left lung"):
        check_sides([("a", None, only_right)], encoding)
