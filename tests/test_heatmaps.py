"""Heatmap encoding and decoding, the lung band, coordinate round trips and flips."""

from __future__ import annotations

import numpy as np
import pytest

from hemidiaphragm.geometry import Crop, Letterbox
from hemidiaphragm.heatmap_model import adaptive_wing_loss, decode_coarse
from hemidiaphragm.heatmaps import (
    FLAG_LOW_PEAK,
    FLAG_MISSING_LUNG,
    FLAG_OUTSIDE_BAND,
    decode_heatmap,
    gaussian_heatmaps,
    landmark_flags,
    lower_border_band,
)
from hemidiaphragm.landmark_data import (
    Augmentation,
    CoarseDataset,
    FineDataset,
    LandmarkSample,
    flip_horizontal,
    input_swap,
    perturb_labels,
)

SUBPIXEL_POINTS = [(10.0, 12.0), (10.3, 12.7), (31.55, 5.25), (0.4, 20.9), (47.6, 35.45)]


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("point", SUBPIXEL_POINTS)
def test_encode_decode_subpixel(sigma, point):
    heatmap = gaussian_heatmaps(np.array([point]), height=36, width=48, sigma_px=sigma)[0]
    decoded = decode_heatmap(heatmap)
    assert abs(decoded.x - point[0]) < 0.1
    assert abs(decoded.y - point[1]) < 0.1


def test_gaussian_peak_value_and_shape():
    maps = gaussian_heatmaps(np.array([[4.0, 2.0], [1.0, 1.0]]), height=5, width=7, sigma_px=1.0)
    assert maps.shape == (2, 5, 7)
    assert maps.dtype == np.float32
    assert maps[0, 2, 4] == pytest.approx(1.0)
    # One pixel away along x: exp(-1 / 2).
    assert maps[0, 2, 5] == pytest.approx(np.exp(-0.5), rel=1e-6)


def test_gaussian_nan_point_gives_zero_channel():
    maps = gaussian_heatmaps(np.array([[np.nan, 3.0], [2.0, 2.0]]), height=6, width=6, sigma_px=1.0)
    assert not maps[0].any()
    assert maps[1].max() == pytest.approx(1.0)


def test_gaussian_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(np.array([[1.0, 1.0]]), 4, 4, 0.0)


def test_decode_noisy_heatmap_stays_close():
    rng = np.random.default_rng(3)
    point = np.array([[20.35, 14.8]])
    heatmap = gaussian_heatmaps(point, 32, 40, 2.0)[0] + rng.normal(0, 0.02, size=(32, 40)).astype(np.float32)
    decoded = decode_heatmap(heatmap)
    assert abs(decoded.x - 20.35) < 0.3
    assert abs(decoded.y - 14.8) < 0.3


def test_decode_constrained_to_allowed_region():
    heatmap = gaussian_heatmaps(np.array([[5.0, 5.0], [20.0, 15.0]]), 24, 30, 1.5)
    combined = heatmap[0] + 0.6 * heatmap[1]
    allowed = np.zeros(combined.shape, dtype=bool)
    allowed[10:, 15:] = True
    decoded = decode_heatmap(combined, allowed)
    assert decoded.x == pytest.approx(20.0, abs=0.1)
    assert decoded.y == pytest.approx(15.0, abs=0.1)
    assert decoded.peak == pytest.approx(0.6, abs=0.01)
    assert not decoded.max_inside_allowed
    assert decoded.constrained


def test_decode_empty_region_is_unconstrained():
    heatmap = gaussian_heatmaps(np.array([[5.0, 5.0]]), 12, 12, 1.5)[0]
    decoded = decode_heatmap(heatmap, np.zeros((12, 12), dtype=bool))
    assert decoded.x == pytest.approx(5.0, abs=0.01)
    assert not decoded.constrained
    assert not decoded.max_inside_allowed


def test_decode_rejects_nan():
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        decode_heatmap(heatmap)


def test_flags_from_decoded_peaks():
    heatmap = 0.2 * gaussian_heatmaps(np.array([[5.0, 5.0]]), 12, 12, 1.5)[0]
    allowed = np.zeros((12, 12), dtype=bool)
    allowed[8:, 8:] = True
    decoded = decode_heatmap(heatmap, allowed)
    assert landmark_flags(decoded, True, 0.3) == [FLAG_OUTSIDE_BAND, FLAG_LOW_PEAK]
    unconstrained = decode_heatmap(heatmap)
    assert landmark_flags(unconstrained, False, 0.1) == [FLAG_MISSING_LUNG]
    assert landmark_flags(unconstrained, None, 0.1) == []
    assert landmark_flags(unconstrained, None, 0.3) == [FLAG_LOW_PEAK]


def test_lower_border_band_of_rectangle():
    labels = np.zeros((40, 30), dtype=np.uint8)
    labels[10:21, 5:16] = 1  # lowest lung row is 20 in columns 5..15
    band = lower_border_band(labels, 1, radius_px=2.0)
    assert band[20, 10]
    assert band[22, 10]
    assert band[18, 10]
    assert not band[23, 10]
    assert not band[15, 10]
    assert band[20, 17]  # two columns beside the lung's last column
    assert not band[20, 18]


def test_lower_border_band_missing_lung():
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[2:5, 2:5] = 1
    assert not lower_border_band(labels, 2, 3.0).any()


def test_letterbox_round_trip_non_square():
    box = Letterbox.fit(original_height=90, original_width=150, size=64)
    points = np.array([[0.0, 0.0], [149.0, 89.0], [73.3, 40.7], [-0.5, -0.5]])
    assert np.allclose(box.inverse_points(box.forward_points(points)), points, atol=1e-9)


def test_crop_round_trip_with_zoom():
    crop = Crop(centre_x=100.3, centre_y=57.8, size=128.0, output_size=64)
    points = np.array([[100.3, 57.8], [40.0, 10.0], [163.7, 121.2]])
    assert np.allclose(crop.inverse_points(crop.forward_points(points)), points, atol=1e-9)


def test_crop_maps_pixel_to_forward_point():
    image = np.zeros((80, 90), dtype=np.float32)
    image[33, 41] = 1.0
    crop = Crop(centre_x=40.5, centre_y=30.5, size=32.0, output_size=32)
    window = crop.apply(image)
    row, col = np.unravel_index(np.argmax(window), window.shape)
    expected = crop.forward_points(np.array([41.0, 33.0]))
    assert (col, row) == (round(expected[0]), round(expected[1]))
    assert window[row, col] == pytest.approx(1.0)


def test_coarse_decode_maps_to_original_pixels():
    box = Letterbox.fit(original_height=180, original_width=240, size=64)
    original = np.array([[70.4, 120.6], [171.2, 131.9]])
    heatmaps = gaussian_heatmaps(box.forward_points(original), 64, 64, 1.5)
    decoded = decode_coarse(heatmaps, box, None, [None, None], min_peak=0.3)
    # A 0.1-pixel decoding tolerance grows by the inverse scale (240 / 64) in original pixels.
    assert np.abs(decoded.xy - original).max() < 0.1 / box.scale


def test_flip_swaps_channels_and_points():
    inputs = np.stack([np.full((4, 6), 1.0), np.full((4, 6), 2.0), np.full((4, 6), 3.0)]).astype(np.float32)
    inputs[1, 0, 0] = 9.0
    heatmaps = np.zeros((2, 4, 6), dtype=np.float32)
    heatmaps[0, 1, 1] = 1.0  # right dome
    heatmaps[1, 2, 4] = 1.0  # left dome
    points = np.array([[1.0, 1.0], [4.0, 2.0]])
    swap = input_swap("image+mask")
    flipped_inputs, flipped_heatmaps, flipped_points = flip_horizontal(inputs, heatmaps, points, swap)
    assert swap == [0, 2, 1]
    assert flipped_inputs[0].mean() == pytest.approx(1.0)
    assert flipped_inputs[1].mean() == pytest.approx(3.0)
    assert flipped_inputs[2, 0, 5] == pytest.approx(9.0)
    assert flipped_heatmaps[0, 2, 1] == 1.0  # the old left dome, mirrored, is now channel 0
    assert flipped_heatmaps[1, 1, 4] == 1.0
    assert np.allclose(flipped_points, [[1.0, 2.0], [4.0, 1.0]])


def test_input_swap_per_mode():
    assert input_swap("mask") == [1, 0]
    assert input_swap("image") == [0]


def marked_sample(height: int = 70, width: int = 90) -> LandmarkSample:
    """A sample whose radiograph is a bright square centred on each dome, with simple lungs."""
    points = np.array([[25.0, 40.0], [64.0, 44.0]])
    pixels = np.full((height, width), 0.1, dtype=np.float32)
    for x, y in points.astype(int):
        pixels[y - 1 : y + 2, x - 1 : x + 2] = 1.0
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[10:41, 10:40] = 1
    labels[10:45, 50:80] = 2
    return LandmarkSample("synthetic", pixels, labels, points, width, height)


def blob_centre(channel: np.ndarray) -> np.ndarray:
    weights = np.clip(channel - np.median(channel), 0, None)
    weights = np.where(weights > 0.5 * weights.max(), weights, 0)
    rows, cols = np.mgrid[: channel.shape[0], : channel.shape[1]]
    return np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_coarse_augmentation_moves_points_with_image(flip):
    augmentation = Augmentation(rotation_deg=10, scale=0.1, shift_fraction=0.05, gamma=0.0, contrast=0.0,
                                brightness=0.0, flip_probability=flip)
    dataset = CoarseDataset([marked_sample()], "image", input_size=96, sigma_px=1.5, augmentation=augmentation, seed=1)
    dataset.set_epoch(3)
    inputs, heatmaps, _ = dataset[0]
    image = inputs[0].numpy()
    for channel in heatmaps.numpy():
        decoded = decode_heatmap(channel)
        around = np.zeros_like(image)
        row, col = round(decoded.y), round(decoded.x)
        around[row - 4 : row + 5, col - 4 : col + 5] = image[row - 4 : row + 5, col - 4 : col + 5]
        centre = blob_centre(around)
        assert abs(centre[0] - decoded.x) < 0.5
        assert abs(centre[1] - decoded.y) < 0.5


def test_coarse_flip_mirrors_and_swaps_domes():
    def item(flip: float):
        augmentation = Augmentation(rotation_deg=10, scale=0.1, shift_fraction=0.05, flip_probability=flip)
        dataset = CoarseDataset([marked_sample()], "image+mask", 64, 1.5, augmentation, seed=4)
        dataset.set_epoch(2)
        return dataset[0]

    plain_inputs, plain_heatmaps, _ = item(0.0)
    mirrored_inputs, mirrored_heatmaps, _ = item(1.0)
    # Both draw the same affine map; the flip comes last, so the results mirror each other.
    assert np.allclose(mirrored_heatmaps[0].numpy(), plain_heatmaps[1].numpy()[:, ::-1], atol=1e-6)
    assert np.allclose(mirrored_inputs[1].numpy(), plain_inputs[2].numpy()[:, ::-1], atol=1e-6)
    assert np.allclose(mirrored_inputs[0].numpy(), plain_inputs[0].numpy()[:, ::-1], atol=1e-6)


def test_fine_crop_contains_landmark_at_target_peak():
    augmentation = Augmentation(rotation_deg=8, scale=0.08, shift_fraction=0.05, gamma=0.0, contrast=0.0,
                                brightness=0.0)
    dataset = FineDataset([marked_sample()], "image", crop_size_px=32, output_size=48, sigma_px=1.5, jitter_px=3.0,
                          augmentation=augmentation, seed=5)
    for index in range(len(dataset)):
        inputs, heatmaps, landmark, centre, _ = dataset[index]
        decoded = decode_heatmap(heatmaps[landmark].numpy())
        centre_of_blob = blob_centre(inputs[0].numpy())
        assert abs(centre_of_blob[0] - decoded.x) < 0.6
        assert abs(centre_of_blob[1] - decoded.y) < 0.6


def test_fine_offsets_fixed_for_validation():
    dataset = FineDataset([marked_sample()], "mask", crop_size_px=32, output_size=32, sigma_px=1.5, jitter_px=3.0,
                          fixed_offsets=True, seed=2)
    dataset.set_epoch(1)
    first = dataset[0][3].numpy()
    dataset.set_epoch(7)
    assert np.array_equal(dataset[0][3].numpy(), first)


def test_adaptive_wing_zero_for_perfect_prediction():
    import torch

    target = torch.from_numpy(gaussian_heatmaps(np.array([[5.0, 5.0]]), 12, 12, 1.5))[None]
    assert adaptive_wing_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    assert adaptive_wing_loss(target * 0.5, target).item() > 0


def test_perturb_labels_moves_outline_only():
    labels = np.zeros((80, 80), dtype=np.uint8)
    labels[20:60, 10:35] = 1
    labels[20:60, 45:70] = 2
    perturbed = perturb_labels(labels, 1.5, np.random.default_rng(0))
    changed = perturbed != labels
    assert changed.any()
    assert set(np.unique(perturbed)) <= {0, 1, 2}
    assert perturbed[40, 22] == 1  # lung centres, far from any outline, keep their label
    assert perturbed[40, 57] == 2
    assert perturbed[5, 40] == 0
    assert changed.mean() < 0.1


def test_perturb_labels_zero_amplitude_identity():
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[5:20, 5:15] = 1
    assert np.array_equal(perturb_labels(labels, 0.0, np.random.default_rng(1)), labels)
