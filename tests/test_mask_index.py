"""masks_index.csv reading: relative paths, the encoding column, repeated ids and bad paths."""

from __future__ import annotations

import pandas as pd
import pytest

from hemidiaphragm.landmark_data import read_mask_index, replace_masks


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
