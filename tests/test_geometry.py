"""Round trips and hand-computed values of the letterbox and crop maps."""

import numpy as np
import pytest

from hemidiaphragm.geometry import Crop, Letterbox


def test_letterbox_portrait_values():
    box = Letterbox.fit(original_height=200, original_width=100, size=100)
    assert box.scale == 0.5
    assert (box.resized_width, box.resized_height) == (50, 100)
    assert (box.pad_x, box.pad_y) == (25, 0)


def test_letterbox_maps_pixel_edges():
    # The left edge of the first pixel (x = -0.5) lands on the left edge of the resized image.
    box = Letterbox.fit(original_height=200, original_width=100, size=100)
    edge = box.forward_points(np.array([[-0.5, -0.5]]))
    assert edge[0, 0] == pytest.approx(25 - 0.5)
    assert edge[0, 1] == pytest.approx(-0.5)
    far_edge = box.forward_points(np.array([[99.5, 199.5]]))
    assert far_edge[0, 0] == pytest.approx(25 + 50 - 0.5)
    assert far_edge[0, 1] == pytest.approx(99.5)


@pytest.mark.parametrize("height, width, size", [(224, 224, 224), (512, 512, 256), (2048, 1700, 320),
                                                 (333, 517, 128), (7, 301, 64)])
def test_letterbox_points_round_trip(height, width, size):
    box = Letterbox.fit(height, width, size)
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.5, -0.5], [width - 0.5, height - 0.5], size=(50, 2))
    back = box.inverse_points(box.forward_points(points))
    assert np.abs(back - points).max() < 1e-9


def test_letterbox_image_keeps_marked_pixel():
    image = np.zeros((40, 20), dtype=np.float32)
    image[30, 5] = 1.0
    box = Letterbox.fit(40, 20, 80)  # zoom 2, pad 20 columns on the left
    boxed = box.forward_image(image, interpolation=0)
    row, column = np.unravel_index(np.argmax(boxed), boxed.shape)
    centre = box.forward_points(np.array([[5.0, 30.0]]))[0]
    assert abs(column - centre[0]) <= 0.5
    assert abs(row - centre[1]) <= 0.5


def test_letterbox_inverse_image_restores_size():
    image = np.random.default_rng(1).random((90, 60)).astype(np.float32)
    box = Letterbox.fit(90, 60, 64)
    restored = box.inverse_image(box.forward_image(image))
    assert restored.shape == (90, 60)


def test_letterbox_rejects_wrong_image_size():
    box = Letterbox.fit(10, 10, 20)
    with pytest.raises(ValueError, match="fitted"):
        box.forward_image(np.zeros((11, 10)))


def test_crop_round_trip_and_centre():
    crop = Crop(centre_x=100.3, centre_y=50.7, size=64, output_size=128)
    centre = crop.forward_points(np.array([[100.3, 50.7]]))[0]
    # The window centre is the middle of the output, between pixels 63 and 64.
    assert centre == pytest.approx([63.5, 63.5])
    points = np.array([[0.0, 0.0], [90.25, 40.5], [131.9, 82.6]])
    assert np.abs(crop.inverse_points(crop.forward_points(points)) - points).max() < 1e-9


def test_crop_apply_matches_point_map():
    image = np.zeros((100, 120), dtype=np.float32)
    image[40, 70] = 1.0
    # A half-pixel centre puts original pixel centres exactly on crop pixel centres at zoom 1.
    crop = Crop(centre_x=64.5, centre_y=44.5, size=32, output_size=32)
    window = crop.apply(image, interpolation=0)
    row, column = np.unravel_index(np.argmax(window), window.shape)
    expected = crop.forward_points(np.array([[70.0, 40.0]]))[0]
    assert (column, row) == (round(expected[0]), round(expected[1]))


def test_crop_past_border_is_zero():
    image = np.ones((20, 20), dtype=np.float32)
    window = Crop(centre_x=0.0, centre_y=0.0, size=10, output_size=10).apply(image)
    assert window[0, 0] == 0.0
    assert window[-1, -1] == 1.0
