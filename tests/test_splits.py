"""Split generation and the disjointness check that every consumer runs."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hemidiaphragm.splits import SplitError, check_split, ids_in, make_folds, read_split

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "data_splits"


def test_folds_test_every_image_once():
    ids = [f"case{i:03d}" for i in range(23)]
    folds = make_folds(ids, k=5, seed=1)
    tested = [image_id for frame in folds for image_id in ids_in(frame, "test")]
    assert sorted(tested) == ids
    for frame in folds:
        check_split(frame)


def test_folds_are_seeded():
    ids = [f"case{i}" for i in range(20)]
    first = make_folds(ids, 4, seed=3)[0]
    again = make_folds(ids, 4, seed=3)[0]
    other = make_folds(ids, 4, seed=4)[0]
    assert first.equals(again)
    assert not first.equals(other)


def test_folds_group_patients():
    ids = ["p1_a", "p1_b", "p2_a", "p3_a", "p3_b", "p4_a", "p5_a"]
    for frame in make_folds(ids, 3, seed=0, group_regex=r"^(p\d+)_"):
        parts = frame.groupby("patient_id")["part"].nunique()
        assert (parts == 1).all()


def test_check_split_rejects_duplicate_id():
    frame = pd.DataFrame({"image_id": ["a", "b", "a"], "part": ["train", "val", "test"]})
    with pytest.raises(SplitError, match="more than once"):
        check_split(frame)


def test_check_split_rejects_patient_in_two_parts():
    frame = pd.DataFrame({"image_id": ["a1", "a2"], "patient_id": ["a", "a"], "part": ["train", "test"]})
    with pytest.raises(SplitError, match="more than one part"):
        check_split(frame)


def test_check_split_rejects_unknown_part():
    frame = pd.DataFrame({"image_id": ["a"], "part": ["holdout"]})
    with pytest.raises(SplitError, match="unknown part"):
        check_split(frame)


@pytest.mark.parametrize("dataset, count", [("jsrt224", 247), ("shenzhen512", 566)])
def test_committed_splits_are_disjoint(dataset, count):
    files = sorted((SPLITS / dataset).glob("fold*.csv"))
    assert len(files) == 5
    tested = []
    for path in files:
        frame = read_split(path)
        assert len(frame) == count
        tested += ids_in(frame, "test")
    assert len(tested) == len(set(tested)) == count


def test_group_regex_without_group_rejected():
    with pytest.raises(SplitError, match="no capture group"):
        make_folds(["p1_a", "p2_a", "p3_a"], 3, seed=0, group_regex=r"^p\d")


def test_group_regex_invalid_rejected():
    with pytest.raises(SplitError, match="not a valid regular expression"):
        make_folds(["p1_a", "p2_a", "p3_a"], 3, seed=0, group_regex="(")


def test_check_split_rejects_empty_id():
    frame = pd.DataFrame({"image_id": ["a", ""], "patient_id": ["a", "b"], "part": ["test", "train"]})
    with pytest.raises(SplitError, match="empty image_id on line"):
        check_split(frame, "split.csv")


def test_make_splits_overwrite_removes_extra_folds(tmp_path):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for index in range(6):
        cv2.imwrite(str(images / f"img{index}.png"), np.zeros((4, 4), np.uint8))
    command = [sys.executable, str(ROOT / "data_splits" / "make_splits.py"), "--data-root", str(tmp_path / "data"),
               "--output-dir", str(tmp_path / "splits")]
    subprocess.run([*command, "--folds", "5"], check=True, capture_output=True)
    subprocess.run([*command, "--folds", "3", "--overwrite"], check=True, capture_output=True)

    assert sorted(path.name for path in (tmp_path / "splits").glob("fold*.csv")) == [
        "fold0.csv", "fold1.csv", "fold2.csv"]


def test_read_split_empty_file_named(tmp_path):
    path = tmp_path / "fold0.csv"
    path.write_text("")
    with pytest.raises(SplitError, match="fold0.csv is empty") as caught:
        read_split(path)
    assert "image_id,patient_id,part" in str(caught.value)
