"""Train both heatmap stages, predict and evaluate on a few real jsrt224 images."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from hemidiaphragm.checkpoint import load_checkpoint, save_checkpoint
from hemidiaphragm.imaging import read_lung_mask
from hemidiaphragm.metadata import write_metadata
from hemidiaphragm.models import build_unet

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = ("--encoder", "mobilenet_v2", "--decoder-channels", "16,8,8", "--batch-size", "4", "--threads", "2",
               "--no-progress", "--seed", "3")


def run_script(script: str, *arguments: str) -> None:
    """Run a stage script's ``main`` in this process, which spares a torch import per call."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.main(module.get_args_parser().parse_args(list(arguments)))


def make_metadata(tmp_path: Path, shared_data: Path) -> Path:
    """Write a metadata CSV of 8 jsrt224 images: 4 train, 2 val, 2 test."""
    root = shared_data / "jsrt224"
    landmarks = pd.read_csv(root / "landmarks.csv").sort_values("image_id").head(8)
    frame = pd.DataFrame({
        "image_id": landmarks["image_id"],
        "dataset": "jsrt224",
        "part": ["train"] * 4 + ["val"] * 2 + ["test"] * 2,
        "image_path": [str(root / "images" / f"{i}.png") for i in landmarks["image_id"]],
        "mask_path": [str(root / "masks" / f"{i}.png") for i in landmarks["image_id"]],
        "mask_encoding": "labels:150,200",
        "width": 224,
        "height": 224,
        "pixel_spacing_mm": 1.6,
    })
    for column in ("right_dome_x", "right_dome_y", "left_dome_x", "left_dome_y"):
        frame[column] = landmarks[column].to_numpy()
    for point in ("right_cp", "right_cardio", "left_cp", "left_cardio"):
        frame[f"{point}_x"] = frame[f"{point}_y"] = np.nan
    path = tmp_path / "metadata.csv"
    write_metadata(frame, path)
    return path


def write_mask_index(tmp_path: Path, metadata: pd.DataFrame) -> Path:
    """Export the ground-truth masks as labels 1/2 with a masks_index.csv, as segmentation_test does."""
    folder = tmp_path / "masks"
    folder.mkdir()
    rows = []
    for row in metadata.itertuples(index=False):
        labels = read_lung_mask(row.mask_path, right_value=150, left_value=200)
        path = folder / f"{row.image_id}.png"
        cv2.imwrite(str(path), labels)
        rows.append({"image_id": row.image_id, "image_path": row.image_path, "mask_path": str(path),
                     "width": 224, "height": 224})
    index = tmp_path / "masks_index.csv"
    pd.DataFrame(rows).to_csv(index, index=False)
    return index


def write_untrained_segmenter(path: Path) -> None:
    config = {"task": "lung_segmentation", "encoder_name": "mobilenet_v2", "encoder_weights": None,
              "encoder_depth": 3, "decoder_channels": [16, 8, 8], "in_channels": 1, "classes": 3, "input_size": 64}
    payload = {"model_state": build_unet(config).state_dict(), "model_config": config, "args": {}, "epoch": 0,
               "best_metric": 0.0, "best_metric_name": "none"}
    save_checkpoint(path, payload)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    tmp_path = tmp_path_factory.mktemp("heatmap")
    metadata = make_metadata(tmp_path, shared_data)
    coarse, fine = tmp_path / "coarse", tmp_path / "fine"
    run_script("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(metadata), "--output-dir",
               str(coarse), "--input-size", "32", "--epochs", "2", *TRAIN_FLAGS)
    run_script("heatmap_train/train.py", "--stage", "fine", "--metadata", str(metadata), "--output-dir", str(fine),
               "--coarse-checkpoint", str(coarse / "best.pt"), "--crop-size-px", "32", "--crop-output-size", "32",
               "--repeats", "1", "--epochs", "2", *TRAIN_FLAGS)
    return tmp_path, metadata, coarse, fine


def test_training_outputs(trained):
    _, _, coarse, fine = trained
    for run in (coarse, fine):
        for name in ("run.json", "train.log", "metrics.csv", "curves.png", "best.pt", "last.pt"):
            assert (run / name).is_file(), f"{run.name}/{name}"
        metrics = pd.read_csv(run / "metrics.csv")
        assert metrics["epoch"].tolist() == [1, 2]
        assert np.isfinite(metrics["val_mre_px"]).all()
    config = load_checkpoint(fine / "best.pt")["model_config"]
    assert config["stage"] == "fine"
    assert config["crop_size_px"] == 32
    assert config["jitter_px"] == pytest.approx(load_checkpoint(coarse / "best.pt")["best_metric"])


def test_predict_and_evaluate(trained):
    tmp_path, metadata, coarse, fine = trained
    index = write_mask_index(tmp_path, pd.read_csv(metadata))
    predicted = tmp_path / "predict_index"
    run_script("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse / "best.pt"), "--fine-checkpoint",
               str(fine / "best.pt"), "--metadata", str(metadata), "--part", "test", "--mask-index", str(index),
               "--output-dir", str(predicted), "--overlays", "--threads", "2", "--no-progress")
    table = pd.read_csv(predicted / "predictions.csv")
    assert len(table) == 2
    for column in ("right_dome_x", "left_dome_y", "right_dome_peak", "left_dome_flags", "right_dome_stage1_x",
                   "left_dome_stage1_peak", "right_dome_geometric_x", "left_dome_geometric_failure"):
        assert column in table.columns, column
    assert np.isfinite(table[["right_dome_x", "right_dome_y", "left_dome_x", "left_dome_y"]].to_numpy()).all()
    assert table["mask_source"].eq("mask_index").all()
    assert len(list((predicted / "overlays").glob("*.png"))) == 2

    stage1_only = tmp_path / "predict_stage1"
    run_script("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse / "best.pt"), "--metadata",
               str(metadata), "--part", "test", "--use-metadata-masks", "--output-dir", str(stage1_only),
               "--threads", "2", "--no-progress")

    evaluation = tmp_path / "evaluate"
    run_script("heatmap_test/evaluate.py", "--metadata", str(metadata), "--part", "test", "--predictions",
               f"mask={predicted / 'predictions.csv'}", "--predictions",
               f"mask-gt={stage1_only / 'predictions.csv'}", "--bootstrap", "100", "--output-dir", str(evaluation))
    for name in ("per_image.csv", "summary.csv", "summary.md", "error_distribution.png"):
        assert (evaluation / name).is_file(), name
    assert len(list((evaluation / "overlays").glob("*.png"))) == 3
    summary = pd.read_csv(evaluation / "summary.csv")
    methods = set(zip(summary["input"], summary["method"]))
    assert methods == {("mask", "geometric"), ("mask", "stage1"), ("mask", "two-stage"), ("mask-gt", "stage1")}
    for metric in ("mean_error_px", "mean_error_512", "pck_512_5", "pck_mm_2.5"):
        assert metric in set(summary["metric"]), metric
    per_image = pd.read_csv(evaluation / "per_image.csv")
    assert len(per_image) == 2 * 4
    assert "error_rate_percent" in per_image.columns
    assert "two-stage" in (evaluation / "summary.md").read_text()


def test_predict_from_images_with_segmenter(trained, shared_data):
    tmp_path, _, coarse, fine = trained
    segmenter = tmp_path / "segmenter.pt"
    write_untrained_segmenter(segmenter)
    listing = tmp_path / "images.txt"
    listing.write_text(f"{shared_data / 'jsrt224' / 'images' / 'JPCLN001.png'}\n")
    out = tmp_path / "predict_images"
    run_script("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse / "best.pt"), "--fine-checkpoint",
               str(fine / "best.pt"), "--images", str(listing), "--seg-checkpoint", str(segmenter),
               "--output-dir", str(out), "--threads", "2", "--no-progress")
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["image_id"].tolist() == ["JPCLN001"]
    assert table["mask_source"].iloc[0] == "segmenter"


def test_predict_needs_mask_for_mask_model(trained, shared_data):
    tmp_path, _, coarse, _ = trained
    with pytest.raises(SystemExit, match="--seg-checkpoint"):
        run_script("heatmap_test/predict.py", "--coarse-checkpoint", str(coarse / "best.pt"), "--images",
                   str(shared_data / "jsrt224" / "images"), "--output-dir", str(tmp_path / "no_mask"))


def test_resume_matches_uninterrupted_run(trained):
    tmp_path, metadata, _, _ = trained
    common = ("heatmap_train/train.py", "--stage", "coarse", "--metadata", str(metadata), "--input-size", "32",
              "--epochs", "2", *TRAIN_FLAGS)
    run_script(*common, "--output-dir", str(tmp_path / "straight"))
    run_script(*common, "--output-dir", str(tmp_path / "interrupted"), "--max-minutes", "0")
    assert load_checkpoint(tmp_path / "interrupted" / "last.pt")["epoch"] == 1
    run_script("heatmap_train/train.py", "--resume", "--output-dir", str(tmp_path / "interrupted"), "--no-progress",
               "--threads", "2")
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "interrupted" / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 2
    for name, tensor in straight["model_state"].items():
        assert torch.allclose(tensor.float(), resumed["model_state"][name].float(), atol=1e-5), name
    assert pd.read_csv(tmp_path / "interrupted" / "metrics.csv")["epoch"].tolist() == [1, 2]
