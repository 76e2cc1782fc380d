"""Checkpoint round trip, resume and one real-data train-and-evaluate run."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hemidiaphragm.checkpoint import load_checkpoint, save_checkpoint
from hemidiaphragm.imaging import read_lung_mask
from hemidiaphragm.segmentation import flip_sides, load_segmenter

ROOT = Path(__file__).resolve().parents[1]


def run_script(*arguments: str) -> None:
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_checkpoint_round_trip(tmp_path):
    payload = {"model_state": {"w": torch.arange(4.0)}, "model_config": {"task": "x"}, "args": {"lr": 0.1},
               "epoch": 3, "best_metric": 0.5, "best_metric_name": "val_dice_mean"}
    save_checkpoint(tmp_path / "a.pt", payload)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["model_state"]["w"], torch.arange(4.0))
    assert loaded["epoch"] == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_checkpoint_truncated_file_names_path(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt"):
        load_checkpoint(path)


def test_flip_swaps_lung_labels():
    labels = np.array([[0, 1, 2]], np.uint8)
    assert flip_sides(labels).tolist() == [[0, 2, 1]]


def make_tiny_split(tmp_path, shared_data) -> Path:
    ids = sorted(p.stem for p in (shared_data / "jsrt224" / "images").glob("*.png"))[:9]
    parts = ["train"] * 4 + ["val"] * 2 + ["test"] * 3
    split = tmp_path / "split.csv"
    pd.DataFrame({"image_id": ids, "patient_id": ids, "part": parts}).to_csv(split, index=False)
    return split


TRAIN_FLAGS = ("--input-size", "64", "--decoder-channels", "32,16,8", "--batch-size", "2", "--threads", "2",
               "--no-progress", "--seed", "5")


def test_resume_ends_where_uninterrupted_run_ends(tmp_path, shared_data):
    split = make_tiny_split(tmp_path, shared_data)
    common = ("segmentation_train/train.py", "--data-root", str(shared_data / "jsrt224"), "--split", str(split),
              *TRAIN_FLAGS)
    run_script(*common, "--epochs", "3", "--output-dir", str(tmp_path / "straight"))
    run_script(*common, "--epochs", "3", "--output-dir", str(tmp_path / "interrupted"), "--max-minutes", "0")
    first = load_checkpoint(tmp_path / "interrupted" / "last.pt")
    assert first["epoch"] == 1
    run_script("segmentation_train/train.py", "--resume", "--output-dir", str(tmp_path / "interrupted"),
               "--no-progress", "--threads", "2")

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "interrupted" / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 3
    for name, tensor in straight["model_state"].items():
        assert torch.allclose(tensor.float(), resumed["model_state"][name].float(), atol=1e-5), name
    straight_log = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    resumed_log = pd.read_csv(tmp_path / "interrupted" / "metrics.csv")
    assert resumed_log["epoch"].tolist() == [1, 2, 3]
    assert np.allclose(straight_log["val_loss"], resumed_log["val_loss"], rtol=1e-4)


def test_output_dir_not_overwritten(tmp_path, shared_data):
    split = make_tiny_split(tmp_path, shared_data)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    result = subprocess.run(
        [sys.executable, "segmentation_train/train.py", "--data-root", str(shared_data / "jsrt224"), "--split",
         str(split), "--output-dir", str(out), "--epochs", "1", *TRAIN_FLAGS],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "earlier result"


def test_train_and_evaluate_on_jsrt224(tmp_path, shared_data):
    split = make_tiny_split(tmp_path, shared_data)
    run_dir, eval_dir = tmp_path / "seg", tmp_path / "eval"
    run_script("segmentation_train/train.py", "--data-root", str(shared_data / "jsrt224"), "--split", str(split),
               "--output-dir", str(run_dir), "--epochs", "2", *TRAIN_FLAGS)
    for name in ("run.json", "metrics.csv", "curves.png", "best.pt", "last.pt", "train.log"):
        assert (run_dir / name).is_file(), name
    run_script("segmentation_test/evaluate.py", "--checkpoint", str(run_dir / "best.pt"), "--data-root",
               str(shared_data / "jsrt224"), "--split", str(split), "--part", "test", "--export-masks",
               "--bootstrap", "200", "--output-dir", str(eval_dir), "--no-progress", "--threads", "2")

    per_image = pd.read_csv(eval_dir / "per_image.csv")
    assert len(per_image) == 3 * 2  # three test images, raw and post-processed
    assert per_image["both_dice"].between(0, 1).all()
    index = pd.read_csv(eval_dir / "masks_index.csv")
    assert len(index) == 3
    exported = read_lung_mask(index["mask_path"][0], right_value=1, left_value=2)
    assert exported.shape == (224, 224)
    assert len(list((eval_dir / "overlays").glob("*.png"))) == 3
    segmenter = load_segmenter(run_dir / "best.pt")
    assert segmenter.predict(np.zeros((100, 150), np.float32)).shape == (100, 150)

    # An invalid mask encoding with --overwrite fails before the earlier evaluation is removed.
    result = subprocess.run(
        [sys.executable, "segmentation_test/evaluate.py", "--checkpoint", str(run_dir / "best.pt"), "--data-root",
         str(shared_data / "jsrt224"), "--split", str(split), "--part", "test", "--mask-encoding", "bogus",
         "--overwrite", "--output-dir", str(eval_dir)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "bogus" in result.stderr
    assert (eval_dir / "per_image.csv").is_file()

    # A valid encoding that finds no lung in the truth masks fails the same way.
    result = subprocess.run(
        [sys.executable, "segmentation_test/evaluate.py", "--checkpoint", str(run_dir / "best.pt"), "--data-root",
         str(shared_data / "jsrt224"), "--split", str(split), "--part", "test", "--mask-encoding", "labels:1,2",
         "--overwrite", "--output-dir", str(eval_dir)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "contain no lung under mask encoding 'labels:1,2'" in result.stderr
    assert (eval_dir / "per_image.csv").is_file()

    # A split without the requested part fails before an output folder is made.
    no_test = tmp_path / "no_test.csv"
    frame = pd.read_csv(split)
    frame[frame["part"] != "test"].to_csv(no_test, index=False)
    result = subprocess.run(
        [sys.executable, "segmentation_test/evaluate.py", "--checkpoint", str(run_dir / "best.pt"), "--data-root",
         str(shared_data / "jsrt224"), "--split", str(no_test), "--part", "test",
         "--output-dir", str(tmp_path / "eval_missing")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "has no 'test' images" in result.stderr
    assert not (tmp_path / "eval_missing").exists()


def test_resume_copied_run_writes_in_copy(tmp_path, shared_data):
    split = make_tiny_split(tmp_path, shared_data)
    run_script("segmentation_train/train.py", "--data-root", str(shared_data / "jsrt224"), "--split", str(split),
               "--output-dir", str(tmp_path / "original"), "--epochs", "2", "--max-minutes", "0", *TRAIN_FLAGS)
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    run_script("segmentation_train/train.py", "--resume", "--output-dir", str(tmp_path / "copy"),
               "--no-progress", "--threads", "1")

    assert load_checkpoint(tmp_path / "original" / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "copy" / "last.pt")["epoch"] == 2


def test_resume_without_last_checkpoint_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, "segmentation_train/train.py", "--resume", "--output-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "without --resume" in result.stderr


def test_wrong_mask_encoding_is_rejected(tmp_path, shared_data):
    split = make_tiny_split(tmp_path, shared_data)
    result = subprocess.run(
        [sys.executable, "segmentation_train/train.py", "--data-root", str(shared_data / "jsrt224"), "--split",
         str(split), "--output-dir", str(tmp_path / "run"), "--epochs", "1", "--mask-encoding", "labels:1,2",
         *TRAIN_FLAGS],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "contain no lung under mask encoding 'labels:1,2'" in result.stderr
    assert "Traceback" not in result.stderr


def run_failing(*arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result


def test_overwrite_with_bad_split_keeps_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    result = run_failing("segmentation_train/train.py", "--data-root", str(tmp_path), "--split",
                         str(tmp_path / "missing.csv"), "--output-dir", str(out), "--overwrite")
    assert "missing.csv not found" in result.stderr
    assert (out / "keep.txt").read_text() == "earlier result"


def test_missing_image_leaves_no_output_dir(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    split = tmp_path / "split.csv"
    pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["a", "b"], "part": ["train", "val"]}).to_csv(split,
                                                                                                    index=False)
    result = run_failing("segmentation_train/train.py", "--data-root", str(tmp_path / "data"), "--split", str(split),
                         "--output-dir", str(tmp_path / "run"))
    assert "no file for id 'a'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_images_dir_excludes_split(tmp_path):
    result = run_failing("segmentation_test/evaluate.py", "--checkpoint", str(tmp_path / "best.pt"), "--images-dir",
                         str(tmp_path), "--data-root", str(tmp_path), "--split", str(tmp_path / "split.csv"),
                         "--output-dir", str(tmp_path / "eval"))
    assert "cannot be combined with --data-root or --split" in result.stderr
    assert not (tmp_path / "eval").exists()
