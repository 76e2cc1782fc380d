"""Preparation adapters: each public layout, made small in the test, into the standard layout."""

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG, read_image
from hemidiaphragm.metadata import read_metadata

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "heatmap_preprocessing" / "prepare_dataset.py"

# Patient-right lung outline (image left) in a 200 x 200 frame; see test_landmarks.py for why
# its dome is (60, 130). The left lung is its mirror image.
RIGHT_OUTLINE = np.array([(60, 20), (85, 30), (90, 100), (95, 150), (60, 130), (25, 165), (20, 80)], float)


@functools.cache
def load_prepare_module():
    """Import the script as a module (dataclasses need it registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location("prepare_dataset_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def lung_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 (size, size) masks (0/255) of the image-left and the image-right lung."""
    scale = size / 200
    image_left, image_right = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    outline = RIGHT_OUTLINE * scale
    mirrored = outline.copy()
    mirrored[:, 0] = size - 1 - mirrored[:, 0]
    cv2.fillPoly(image_left, [np.round(outline).astype(np.int32)], 255)
    cv2.fillPoly(image_right, [np.round(mirrored).astype(np.int32)], 255)
    return image_left, image_right


def run_prepare(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], cwd=ROOT, capture_output=True, text=True)


def centre_column(labels: np.ndarray, value: int) -> float:
    return float(np.nonzero(labels == value)[1].mean())


def test_jsrt_original_end_to_end(tmp_path):
    source = tmp_path / "jsrt"
    (source / "All247images").mkdir(parents=True)
    raw = np.full((2048, 2048), 1000, dtype=">u2")
    raw[0, 0] = 4095
    (source / "All247images" / "JPCLN001.IMG").write_bytes(raw.tobytes())
    image_left, image_right = lung_masks(1024)
    for folder, mask in (("right lung", image_left), ("left lung", image_right)):
        (source / "scr" / "masks" / folder).mkdir(parents=True)
        Image.fromarray(mask).save(source / "scr" / "masks" / folder / "JPCLN001.gif")

    out = tmp_path / "out"
    result = run_prepare("--layout", "jsrt-original", "--source", str(source), "--points-source", "masks",
                         "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]

    labels = cv2.imread(str(out / "masks" / "JPCLN001.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (2048, 2048)
    # Nearest-neighbour upsampling by 2: mask pixel (r, c) fills image pixels (2r..2r+1, 2c..2c+1).
    small = (image_left > 0).astype(np.uint8) + 2 * (image_right > 0).astype(np.uint8)
    assert np.array_equal(labels, np.kron(small, np.ones((2, 2), np.uint8)))

    image = read_image(out / "images" / "JPCLN001.png")
    assert image.pixels.shape == (2048, 2048)
    assert image.pixels[0, 0] == pytest.approx(0.0, abs=1e-4)  # raw 4095 is the darkest value
    assert image.pixels[5, 5] == pytest.approx(1 - 1000 / 4095, abs=1e-4)

    metadata = read_metadata(out / "metadata.csv")
    assert len(metadata) == 1
    assert metadata.loc[0, "pixel_spacing_mm"] == pytest.approx(0.175)
    assert metadata.loc[0, "mask_encoding"] == "labels:1,2"
    # The dome of the 200-px outline scaled by 2048 / 200, within a few pixels of the staircase.
    assert metadata.loc[0, "right_dome_x"] == pytest.approx(60 * 2048 / 200, abs=12)
    assert metadata.loc[0, "right_dome_y"] == pytest.approx(130 * 2048 / 200, abs=12)


def make_montgomery(root: Path, right_folder_holds: str) -> None:
    for folder in ("CXR_png", "ManualMask/rightMask", "ManualMask/leftMask"):
        (root / folder).mkdir(parents=True)
    cv2.imwrite(str(root / "CXR_png" / "MCUCXR_0001_0.png"), np.full((100, 100), 90, np.uint8))
    image_left, image_right = lung_masks(100)
    right, left = (image_left, image_right) if right_folder_holds == "image-left" else (image_right, image_left)
    cv2.imwrite(str(root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png"), right)
    cv2.imwrite(str(root / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png"), left)


@pytest.mark.parametrize(("side_from", "right_on_image_left"), [("position", True), ("folder-name", False)])
def test_montgomery_sides(tmp_path, side_from, right_on_image_left):
    module = load_prepare_module()
    make_montgomery(tmp_path / "mc", right_folder_holds="image-right")
    args = module.get_args_parser().parse_args(
        ["--layout", "montgomery", "--source", str(tmp_path / "mc"), "--side-from", side_from,
         "--output-dir", str(tmp_path / "out")])
    items = module.list_montgomery(args)
    problems, _ = module.write_standard_layout(items, tmp_path / "out", "montgomery")
    labels = cv2.imread(str(tmp_path / "out" / "masks" / "MCUCXR_0001_0.png"), cv2.IMREAD_UNCHANGED)
    is_left = centre_column(labels, RIGHT_LUNG) < centre_column(labels, LEFT_LUNG)
    assert is_left == right_on_image_left
    assert (tmp_path / "out" / "images" / "MCUCXR_0001_0.png").read_bytes() == (
        tmp_path / "mc" / "CXR_png" / "MCUCXR_0001_0.png").read_bytes()
    assert [p["reason"] for p in problems] == ([] if side_from == "position" else ["mask_warning"])


def test_shenzhen_combined_masks_split(tmp_path):
    module = load_prepare_module()
    source = tmp_path / "ChinaSet"
    (source / "CXR_png").mkdir(parents=True)
    (source / "mask").mkdir()
    cv2.imwrite(str(source / "CXR_png" / "CHNCXR_0001_0.png"), np.full((100, 100), 90, np.uint8))
    cv2.imwrite(str(source / "CXR_png" / "CHNCXR_0002_1.png"), np.full((100, 100), 90, np.uint8))
    image_left, image_right = lung_masks(100)
    cv2.imwrite(str(source / "mask" / "CHNCXR_0001_0_mask.png"), np.maximum(image_left, image_right))

    args = module.get_args_parser().parse_args(
        ["--layout", "shenzhen", "--source", str(source), "--output-dir", str(tmp_path / "out")])
    items = module.list_shenzhen(args)
    assert [item.read_labels is not None for item in items] == [True, False]
    module.write_standard_layout(items, tmp_path / "out", "shenzhen")
    labels = cv2.imread(str(tmp_path / "out" / "masks" / "CHNCXR_0001_0.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(labels == RIGHT_LUNG, image_left > 0)
    assert np.array_equal(labels == LEFT_LUNG, image_right > 0)
    assert not (tmp_path / "out" / "masks" / "CHNCXR_0002_1.png").exists()
    assert (tmp_path / "out" / "images" / "CHNCXR_0002_1.png").exists()


def test_folder_label_encoding_and_resize(tmp_path):
    module = load_prepare_module()
    source = tmp_path / "generic"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    cv2.imwrite(str(source / "images" / "p1.png"), np.full((100, 100), 90, np.uint8))
    image_left, image_right = lung_masks(50)  # half the image size: resized, and reported
    cv2.imwrite(str(source / "masks" / "p1.png"), np.where(image_left > 0, 150, np.where(image_right > 0, 200, 0))
                .astype(np.uint8))
    args = module.get_args_parser().parse_args(
        ["--layout", "folder", "--source", str(source), "--mask-encoding", "labels:150,200",
         "--output-dir", str(tmp_path / "out")])
    problems, _ = module.write_standard_layout(module.list_folder(args), tmp_path / "out", "folder")
    labels = cv2.imread(str(tmp_path / "out" / "masks" / "p1.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (100, 100)
    assert set(np.unique(labels)) == {0, RIGHT_LUNG, LEFT_LUNG}
    assert [p["reason"] for p in problems] == ["mask_resized"]


def test_folder_aspect_mismatch_left_out(tmp_path):
    module = load_prepare_module()
    source = tmp_path / "generic"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    cv2.imwrite(str(source / "images" / "p1.png"), np.full((100, 100), 90, np.uint8))
    labels = np.zeros((60, 100), np.uint8)
    labels[10:50, 10:40], labels[10:50, 60:90] = 1, 2
    cv2.imwrite(str(source / "masks" / "p1.png"), labels)
    args = module.get_args_parser().parse_args(
        ["--layout", "folder", "--source", str(source), "--output-dir", str(tmp_path / "out")])
    problems, _ = module.write_standard_layout(module.list_folder(args), tmp_path / "out", "folder")
    assert [p["reason"] for p in problems] == ["mask_size_mismatch"]
    assert not (tmp_path / "out" / "masks" / "p1.png").exists()


def test_shared_layout_references_files(tmp_path):
    source = tmp_path / "jsrt224"  # the folder name selects the labels:150,200 preset
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    cv2.imwrite(str(source / "images" / "JPCLN001.png"), np.full((100, 100), 90, np.uint8))
    image_left, image_right = lung_masks(100)
    cv2.imwrite(str(source / "masks" / "JPCLN001.png"),
                np.where(image_left > 0, 150, np.where(image_right > 0, 200, 0)).astype(np.uint8))
    pd.DataFrame([{"image_id": "JPCLN001", "right_dome_x": 30.0, "right_dome_y": 65.0, "left_dome_x": 69.0,
                   "left_dome_y": 65.0}]).to_csv(source / "landmarks.csv", index=False)

    result = run_prepare("--layout", "shared", "--source", str(source), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = read_metadata(tmp_path / "out" / "metadata.csv")
    assert metadata.loc[0, "image_path"] == str((source / "images" / "JPCLN001.png").resolve())
    assert metadata.loc[0, "mask_encoding"] == "labels:150,200"
    assert metadata.loc[0, "dataset"] == "out"
    assert not (tmp_path / "out" / "images").exists()


@pytest.mark.parametrize("layout", ["folder", "shenzhen", "shared"])
def test_empty_source_leaves_no_output(tmp_path, layout):
    source = tmp_path / "empty"
    (source / "images").mkdir(parents=True)
    (source / "CXR_png").mkdir()
    result = run_prepare("--layout", layout, "--source", str(source), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
