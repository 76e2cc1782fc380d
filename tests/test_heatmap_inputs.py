"""Input checks of the heatmap scripts: errors before the output folder, one-line messages, scoring of failures."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from test_heatmap_end_to_end import TRAIN_FLAGS, make_metadata, run_script
from test_run_arguments import load_script, parse

from hemidiaphragm.checkpoint import load_checkpoint, save_checkpoint
from hemidiaphragm.models import build_unet

ROOT = Path(__file__).resolve().parents[1]


def run_failing(*arguments: str) -> str:
    """Run a script that should fail; return its stderr after checking it is a message, not a traceback."""
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stderr


def earlier_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "keep.txt").write_text("earlier result")
    return folder


def write_metadata_rows(tmp_path: Path, count: int = 2, **changes) -> Path:
    """Write a metadata CSV of ``count`` rows on one tiny image, with ``changes`` applied to every row."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((24, 32), np.uint8))
    rows = []
    for index in range(count):
        row = {
            "image_id": f"i{index}", "dataset": "toy", "part": "test", "image_path": str(image), "mask_path": "",
            "mask_encoding": "", "width": 32, "height": 24, "pixel_spacing_mm": math.nan,
            "right_dome_x": 8.0, "right_dome_y": 12.0, "left_dome_x": 24.0, "left_dome_y": 13.0,
        }
        for point in ("right_cp", "right_cardio", "left_cp", "left_cardio"):
            row[f"{point}_x"] = row[f"{point}_y"] = math.nan
        row.update(changes)
        rows.append(row)
    path = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_untrained_coarse(path: Path) -> None:
    train = load_script("heatmap_train/train.py")
    args, _ = parse(train, "--stage", "coarse", "--metadata", "m.csv", "--output-dir", "x", "--encoder",
                    "mobilenet_v2", "--decoder-channels", "16,8,8", "--input-size", "32")
    config = train.model_config(args, None)
    save_checkpoint(path, {"model_state": build_unet(config).state_dict(), "model_config": config, "args": {},
                           "epoch": 0, "best_metric": 0.0, "best_metric_name": "none"})


def test_train_overwrite_missing_metadata_keeps_run(tmp_path):
    out = earlier_run(tmp_path / "run")
    stderr = run_failing("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(tmp_path / "missing.csv"),
                         "--output-dir", str(out), "--overwrite")
    assert stderr.startswith("error:")
    assert "missing.csv" in stderr
    assert (out / "keep.txt").read_text() == "earlier result"


def test_fine_without_jitter_leaves_no_folder(tmp_path):
    stderr = run_failing("heatmap_train/train.py", "--stage", "fine", "--metadata", str(tmp_path / "m.csv"),
                         "--output-dir", str(tmp_path / "run"))
    assert "--jitter-px or a --coarse-checkpoint" in stderr
    assert stderr.startswith("error:")
    assert not (tmp_path / "run").exists()


def test_train_nan_metadata_one_line_error(tmp_path):
    metadata = write_metadata_rows(tmp_path, right_dome_x="nan", part="train")
    stderr = run_failing("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(metadata), "--output-dir",
                         str(tmp_path / "run"))
    assert stderr.startswith("error:")
    assert "right_dome_x" in stderr
    assert not (tmp_path / "run").exists()


def test_train_resume_without_last_checkpoint(tmp_path):
    stderr = run_failing("heatmap_train/train.py", "--resume", "--output-dir", str(tmp_path))
    assert "without --resume" in stderr


def test_predict_overwrite_missing_checkpoint_keeps_run(tmp_path):
    out = earlier_run(tmp_path / "run")
    stderr = run_failing("heatmap_test/predict.py", "--coarse-checkpoint", str(tmp_path / "missing.pt"), "--images",
                         str(tmp_path), "--output-dir", str(out), "--overwrite")
    assert "missing.pt not found" in stderr
    assert (out / "keep.txt").read_text() == "earlier result"


def test_predict_bad_inputs_leave_no_folder(tmp_path):
    coarse = tmp_path / "coarse.pt"
    write_untrained_coarse(coarse)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((24, 32), np.uint8))
    stderr = run_failing("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse), "--images", str(images),
                         "--mask-index", str(tmp_path / "index.csv"), "--use-metadata-masks",
                         "--output-dir", str(tmp_path / "two_sources"))
    assert "choose at most one mask source" in stderr
    assert not (tmp_path / "two_sources").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    stderr = run_failing("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse), "--images", str(empty),
                         "--output-dir", str(tmp_path / "no_images"))
    assert stderr.startswith("error:")
    assert "contains no images" in stderr
    assert not (tmp_path / "no_images").exists()

    index = tmp_path / "masks_index.csv"
    pd.DataFrame({"image_id": ["a"], "mask_path": [str(tmp_path / "gone.png")]}).to_csv(index, index=False)
    stderr = run_failing("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse), "--images", str(images),
                         "--mask-index", str(index), "--output-dir", str(tmp_path / "gone_masks"))
    assert "mask file(s) not found" in stderr
    assert "gone.png" in stderr
    assert not (tmp_path / "gone_masks").exists()

    stderr = run_failing("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse), "--images", str(images),
                         "--band-radius-512", "-5", "--output-dir", str(tmp_path / "negative_band"))
    assert "--band-radius-512 -5.0 must be a positive number" in stderr
    assert not (tmp_path / "negative_band").exists()


def test_predict_flags_point_outside_image():
    predict = load_script("heatmap_test/predict.py")
    assert predict.point_flags(["low_peak"], np.array([10.0, 224.11]), 224, 224) == "low_peak;outside_image"
    assert predict.point_flags([], np.array([-0.5, 223.5]), 224, 224) == ""


def test_evaluate_overwrite_missing_predictions_keeps_run(tmp_path):
    out = earlier_run(tmp_path / "run")
    metadata = write_metadata_rows(tmp_path)
    stderr = run_failing("heatmap_test/evaluate.py", "--metadata", str(metadata), "--predictions",
                         f"mask={tmp_path / 'missing.csv'}", "--output-dir", str(out), "--overwrite")
    assert "missing.csv not found" in stderr
    assert (out / "keep.txt").read_text() == "earlier result"


def test_evaluate_scores_method_that_always_failed(tmp_path):
    metadata = write_metadata_rows(tmp_path)
    table = pd.DataFrame({"image_id": ["i0", "i1"], "width": 32, "height": 24})
    for name in ("right_dome", "left_dome"):
        for infix in ("", "_stage1"):
            table[f"{name}{infix}_x"] = table[f"{name}{infix}_y"] = np.nan
            table[f"{name}{infix}_flags"] = "missing_lung"
    predictions = tmp_path / "predictions.csv"
    table.to_csv(predictions, index=False)
    out = tmp_path / "evaluate"
    run_script("heatmap_test/evaluate.py", "--metadata", str(metadata), "--predictions", f"mask={predictions}",
               "--bootstrap", "10", "--no-overlays", "--output-dir", str(out))
    summary = pd.read_csv(out / "summary.csv")
    failed = summary[(summary["method"] == "stage1") & (summary["landmark"] == "both")
                     & (summary["metric"] == "failed")]
    assert failed["value"].tolist() == [4]
    assert "| mask | stage1 |" in (out / "summary.md").read_text()


def test_heatmap_resume_writes_in_copy(tmp_path, shared_data):
    metadata = make_metadata(tmp_path, shared_data)
    run_script("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(metadata), "--input-size", "32",
               "--epochs", "2", "--max-minutes", "0", "--output-dir", str(tmp_path / "original"), *TRAIN_FLAGS)
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    run_script("heatmap_train/train.py", "--resume", "--output-dir", str(tmp_path / "copy"), "--no-progress",
               "--threads", "1")

    assert load_checkpoint(tmp_path / "original" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "original" / "run.1.json").exists()
    assert load_checkpoint(tmp_path / "copy" / "last.pt")["epoch"] == 2
    assert (tmp_path / "copy" / "run.1.json").is_file()


def test_resume_finished_run_more_epochs(tmp_path, shared_data):
    metadata = make_metadata(tmp_path, shared_data)
    out = tmp_path / "run"
    run_script("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(metadata), "--input-size", "32",
               "--epochs", "1", "--output-dir", str(out), *TRAIN_FLAGS)
    run_script("heatmap_train/train.py", "--resume", "--epochs", "2", "--output-dir", str(out), "--no-progress",
               "--threads", "1")
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="--lr 0.5"):
        run_script("heatmap_train/train.py", "--resume", "--lr", "0.5", "--output-dir", str(out))


def test_evaluate_rejects_metadata_as_predictions(tmp_path):
    metadata = write_metadata_rows(tmp_path)
    stderr = run_failing("heatmap_test/evaluate.py", "--metadata", str(metadata), "--predictions",
                         f"mask={metadata}", "--output-dir", str(tmp_path / "evaluate"))
    assert "lacks the column 'right_dome_flags'" in stderr
    assert not (tmp_path / "evaluate").exists()


def test_derive_missing_masks_dir_leaves_no_folder(tmp_path):
    stderr = run_failing("heatmap_preprocessing/derive_landmarks.py", "--masks-dir", str(tmp_path / "nope"),
                         "--output-dir", str(tmp_path / "run"))
    assert stderr.startswith("error: --masks-dir")
    assert "is not a folder" in stderr
    assert not (tmp_path / "run").exists()


def test_derive_bad_reference_leaves_no_folder(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    reference = tmp_path / "reference.csv"
    reference.write_text("a,b\n1,2\n")
    stderr = run_failing("heatmap_preprocessing/derive_landmarks.py", "--masks-dir", str(masks), "--reference",
                         str(reference), "--output-dir", str(tmp_path / "run"))
    assert "lacks the wide-layout dome columns" in stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_negative_bootstrap_rejected(tmp_path):
    stderr = run_failing("heatmap_test/evaluate.py", "--metadata", "m.csv", "--predictions", "p.csv",
                         "--bootstrap", "-5", "--output-dir", str(tmp_path / "run"))
    assert "argument --bootstrap: '-5' is not a whole number of at least 1" in stderr
    assert not (tmp_path / "run").exists()
