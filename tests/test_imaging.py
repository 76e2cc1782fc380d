"""Tests for hemidiaphragm.imaging: each writes tiny files into tmp_path and reads them back."""

from __future__ import annotations

import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hemidiaphragm.imaging import (
    BACKGROUND,
    LEFT_LUNG,
    RIGHT_LUNG,
    ImageReadError,
    LungMaskWarning,
    Radiograph,
    read_image,
    read_lung_mask,
    read_lung_mask_pair,
    split_lungs,
)

DIGITAL_XRAY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


# --------------------------------------------------------------------------------------------
# Helpers


def png_bytes_with_chunk(array: np.ndarray, chunk_type: bytes, payload: bytes) -> bytes:
    """Encode ``array`` as PNG and insert one extra chunk right after IHDR."""
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    data = encoded.tobytes()
    header_end = 8 + 25  # signature, then IHDR: length 4 + type 4 + payload 13 + CRC 4
    crc = zlib.crc32(chunk_type + payload) & 0xFFFFFFFF
    chunk = struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)
    return data[:header_end] + chunk + data[header_end:]


def write_dicom(path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **attributes):
    """Write an uncompressed DICOM file: uint16 (H, W) grey samples or uint8 (H, W, 3) RGB samples."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = stored.shape[:2]
    dataset.PhotometricInterpretation = photometric
    if stored.ndim == 3:
        dataset.SamplesPerPixel = 3
        dataset.PlanarConfiguration = 0
        dataset.BitsAllocated = dataset.BitsStored = 8
        dataset.HighBit = 7
    else:
        dataset.SamplesPerPixel = 1
        dataset.BitsAllocated = 16
        dataset.BitsStored = bits_stored
        dataset.HighBit = bits_stored - 1
    dataset.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = stored.astype("<u2" if stored.ndim == 2 else "u1").tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_palette_image(path, indices: np.ndarray, palette: dict[int, tuple[int, int, int]]):
    """Write a palette (mode "P") PNG or GIF whose listed indices have the given RGB colours."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    table = [0] * 768
    for index, colour in palette.items():
        table[3 * index:3 * index + 3] = colour
    image.putpalette(table)
    image.save(path)
    return path


def centroid_column(labels: np.ndarray, label: int) -> float:
    return float(np.nonzero(labels == label)[1].mean())


# --------------------------------------------------------------------------------------------
# Radiographs: PNG, JPEG, GIF


def test_png_8bit_scaled_by_255(tmp_path):
    stored = np.array([[0, 51, 255], [255, 0, 102]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), stored)

    image = read_image(tmp_path / "a.png")

    assert isinstance(image, Radiograph)
    assert image.pixels.dtype == np.float32
    assert (image.original_height, image.original_width) == (2, 3)
    assert image.spacing_mm is None
    np.testing.assert_allclose(image.pixels, [[0.0, 0.2, 1.0], [1.0, 0.0, 0.4]], atol=1e-6)


def test_png_16bit_full_range(tmp_path):
    stored = np.array([[0, 4096, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), stored)

    pixels = read_image(tmp_path / "a.png").pixels

    assert pixels[0, 2] == pytest.approx(1.0)
    assert pixels[0, 1] == pytest.approx(4096 / 65535)  # not clipped, not stretched by the max
    assert pixels[0, 0] == 0.0


def test_png_16bit_not_stretched_by_max(tmp_path):
    # A 12-bit image stored unscaled in a 16-bit PNG without sBIT keeps the full 16-bit scale.
    stored = np.array([[0, 2048, 4095]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), stored)

    pixels = read_image(tmp_path / "a.png").pixels

    assert pixels[0, 2] == pytest.approx(4095 / 65535)


def test_png_16bit_sbit_12_unscaled(tmp_path):
    stored = np.array([[0, 2048, 4095]], dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png_bytes_with_chunk(stored, b"sBIT", bytes([12])))

    pixels = read_image(tmp_path / "a.png").pixels

    assert pixels[0, 2] == pytest.approx(1.0)
    assert pixels[0, 1] == pytest.approx(2048 / 4095)


def test_png_16bit_sbit_scaled_values(tmp_path):
    # Samples already scaled to 16 bits, as the PNG specification recommends, despite sBIT = 12.
    stored = np.array([[0, 4096, 65535]], dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png_bytes_with_chunk(stored, b"sBIT", bytes([12])))

    pixels = read_image(tmp_path / "a.png").pixels

    assert pixels[0, 2] == pytest.approx(1.0)
    assert pixels[0, 1] == pytest.approx(4096 / 65535)


def test_png_palette_through_palette(tmp_path):
    indices = np.array([[0, 1], [2, 3]])
    palette = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (10, 20, 30)}
    write_palette_image(tmp_path / "a.png", indices, palette)

    pixels = read_image(tmp_path / "a.png").pixels

    expected = [[0.0, 0.299], [0.587, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255]]
    np.testing.assert_allclose(pixels, expected, atol=1e-5)


def test_png_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 100, 50, 0)  # fully transparent: the colour still counts
    rgba[0, 1] = (255, 255, 255, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")

    pixels = read_image(tmp_path / "a.png").pixels

    assert pixels[0, 0] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-5)
    assert pixels[0, 1] == pytest.approx(1.0)


def test_jpeg_exif_orientation_6(tmp_path):
    stored = np.zeros((24, 40), dtype=np.uint8)  # 24 rows, 40 columns as stored
    stored[:8, :8] = 255  # bright block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "a.jpg", quality=100, exif=exif.tobytes())

    image = read_image(tmp_path / "a.jpg")

    assert image.pixels.shape == (40, 24)
    assert (image.original_height, image.original_width) == (40, 24)
    assert image.pixels[:8, -8:].mean() > 0.9  # stored top-left ends up top-right
    assert image.pixels[:8, :8].mean() < 0.1
    assert image.pixels[-8:, -8:].mean() < 0.1


def test_jpeg_without_exif_unrotated(tmp_path):
    stored = np.zeros((24, 40), dtype=np.uint8)
    stored[:8, :8] = 255
    Image.fromarray(stored).save(tmp_path / "a.jpg", quality=100)

    pixels = read_image(tmp_path / "a.jpg").pixels

    assert pixels.shape == (24, 40)
    assert pixels[:8, :8].mean() > 0.9


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pil(tmp_path, orientation):
    stored = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5) * 10  # every pixel distinct
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "a.png", exif=exif.tobytes())  # lossless eXIf PNG
    with Image.open(tmp_path / "a.png") as image:
        expected = np.asarray(ImageOps.exif_transpose(image)).astype(np.float32) / 255

    pixels = read_image(tmp_path / "a.png").pixels

    np.testing.assert_array_equal(pixels, expected)


def test_float_tiff_kept(tmp_path):
    stored = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    cv2.imwrite(str(tmp_path / "a.tif"), stored)

    pixels = read_image(tmp_path / "a.tif").pixels

    np.testing.assert_array_equal(pixels, stored)


def test_float_tiff_out_of_range(tmp_path):
    cv2.imwrite(str(tmp_path / "a.tif"), np.array([[0.0, 2.5]], dtype=np.float32))

    with pytest.raises(ImageReadError, match="a.tif has floating-point values outside"):
        read_image(tmp_path / "a.tif")


def test_gif_image_read(tmp_path):
    write_palette_image(tmp_path / "a.gif", np.array([[0, 1]]), {0: (0, 0, 0), 1: (255, 255, 255)})

    pixels = read_image(tmp_path / "a.gif").pixels

    np.testing.assert_allclose(pixels, [[0.0, 1.0]], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Radiographs: DICOM


def test_dicom_monochrome1_rescale_spacing(tmp_path):
    stored = np.array([[0, 1000, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm", stored, "MONOCHROME1",
        RescaleSlope=2, RescaleIntercept=-100, PixelSpacing=[0.143, 0.15],
    )

    image = read_image(path)

    # Modality output range: 0 * 2 - 100 = -100 to 4095 * 2 - 100 = 8090, then inverted.
    assert image.pixels[0, 0] == pytest.approx(1.0)
    assert image.pixels[0, 1] == pytest.approx(1.0 - (1000 * 2 - 100 + 100) / 8190)
    assert image.pixels[0, 2] == pytest.approx(0.0)
    assert image.spacing_mm == (0.143, 0.15)


def test_dicom_monochrome2_window(tmp_path):
    stored = np.array([[1000, 2048, 3000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm", stored, WindowCenter=2048, WindowWidth=1024, ImagerPixelSpacing=[0.2, 0.25],
    )

    image = read_image(path)

    # LINEAR window: 0 at or below 1536, 1 above 2559, ((x - 2047.5) / 1023 + 0.5) between.
    assert image.pixels[0, 0] == 0.0
    assert image.pixels[0, 1] == pytest.approx(0.5 + 0.5 / 1023)
    assert image.pixels[0, 2] == 1.0
    assert image.spacing_mm == (0.2, 0.25)  # fallback to ImagerPixelSpacing


def test_dicom_window_skipped_on_request(tmp_path):
    stored = np.array([[1000, 2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, WindowCenter=2048, WindowWidth=1024)

    image = read_image(path, apply_voi_lut=False)

    np.testing.assert_allclose(image.pixels, [[1000 / 4095, 2048 / 4095, 1.0]], rtol=1e-6)
    assert image.spacing_mm is None


def test_dicom_voi_lut_sequence(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 8])  # 4 entries, first input 0, 8-bit output
    item.add_new("LUTData", "US", [0, 51, 102, 255])
    stored = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, VOILUTSequence=Sequence([item]))

    pixels = read_image(path).pixels

    np.testing.assert_allclose(pixels, [[0.0, 0.2, 0.4, 1.0, 1.0]], atol=1e-6)


def test_dicom_invalid_spacing_warns(tmp_path):
    stored = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, PixelSpacing=[0, 0], ImagerPixelSpacing=[0.2, 0.2])

    with pytest.warns(UserWarning, match="invalid PixelSpacing"):
        image = read_image(path)

    assert image.spacing_mm == (0.2, 0.2)


def test_dicom_multiframe_rejected(tmp_path):
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)  # two frames of 1 x 2 pixels
    path = write_dicom(tmp_path / "a.dcm", stored, NumberOfFrames=2, Rows=1)

    with pytest.raises(ImageReadError, match="a.dcm has 2 frames"):
        read_image(path)


def test_dicom_rgb_to_grey(tmp_path):
    rgb = np.array([[[200, 100, 50], [255, 255, 255]]], dtype=np.uint8)
    path = write_dicom(tmp_path / "a.dcm", rgb, "RGB")

    pixels = read_image(path).pixels

    assert pixels[0, 0] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-5)
    assert pixels[0, 1] == pytest.approx(1.0)


def test_dicom_without_preamble_suffix(tmp_path):
    stored = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored)
    (tmp_path / "b.dcm").write_bytes(path.read_bytes()[132:])  # drop preamble and "DICM"

    pixels = read_image(tmp_path / "b.dcm").pixels

    np.testing.assert_allclose(pixels, [[0.0, 1.0]])


def test_dicom_corrupt_rejected(tmp_path):
    path = tmp_path / "bad.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())

    with pytest.raises(ImageReadError, match="bad.dcm"):
        read_image(path)


# --------------------------------------------------------------------------------------------
# Radiographs: JSRT raw


def test_jsrt_raw_scaling_and_polarity(tmp_path):
    stored = np.full((2048, 2048), 2000, dtype=">u2")
    stored[0, 0] = 0  # raw 0 is the brightest value (bone)
    stored[0, 1] = 4095  # raw 4095 is the darkest (air)
    stored[5, 7] = 1000
    (tmp_path / "JPCLN001.IMG").write_bytes(stored.tobytes())

    image = read_image(tmp_path / "JPCLN001.IMG")

    assert image.pixels.shape == (2048, 2048)
    assert (image.original_height, image.original_width) == (2048, 2048)
    assert image.spacing_mm == (0.175, 0.175)
    assert image.pixels[0, 0] == 1.0
    assert image.pixels[0, 1] == 0.0
    assert image.pixels[5, 7] == pytest.approx(1 - 1000 / 4095)
    assert image.pixels[100, 100] == pytest.approx(1 - 2000 / 4095)


def test_jsrt_raw_wrong_size(tmp_path):
    (tmp_path / "short.img").write_bytes(b"\x00" * 1000)

    with pytest.raises(ImageReadError, match="8388608") as caught:
        read_image(tmp_path / "short.img")

    assert "short.img" in str(caught.value)


def test_jsrt_raw_little_endian_rejected(tmp_path):
    stored = np.full((2048, 2048), 2000, dtype="<u2")  # 2000 little-endian reads as 53255
    (tmp_path / "a.img").write_bytes(stored.tobytes())

    with pytest.raises(ImageReadError, match="little-endian"):
        read_image(tmp_path / "a.img")


# --------------------------------------------------------------------------------------------
# Unreadable files


def test_corrupt_png_rejected(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())

    with pytest.raises(ImageReadError, match="noise.png"):
        read_image(path)


def test_truncated_png_rejected(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", stored)
    data = encoded.tobytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageReadError, match="half.png"):
        read_image(tmp_path / "half.png")


def test_truncated_jpeg_rejected(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", stored)
    data = encoded.tobytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageReadError, match="half.jpg"):
        read_image(tmp_path / "half.jpg")


def test_empty_file_rejected(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")

    with pytest.raises(ImageReadError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")


def test_missing_file_rejected(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.png.*not found"):
        read_image(tmp_path / "nothere.png")


def test_missing_mask_rejected(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.png.*not found"):
        read_lung_mask(tmp_path / "nothere.png", 150, 200)


def test_truncated_mask_rejected(tmp_path, make_lung_labels):
    ok, encoded = cv2.imencode(".png", make_lung_labels() * 100)
    data = encoded.tobytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageReadError, match="half.png"):
        read_lung_mask(tmp_path / "half.png", 100, 200)


def test_image_read_error_is_value_error():
    assert issubclass(ImageReadError, ValueError)


# --------------------------------------------------------------------------------------------
# Lung masks


def test_label_map_jsrt_values(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    stored = np.choose(labels, [0, 150, 200]).astype(np.uint8)
    stored[:4, :4] = 250  # heart label: background here
    cv2.imwrite(str(tmp_path / "m.png"), stored)

    mask = read_lung_mask(tmp_path / "m.png", 150, 200)

    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, labels)
    assert (mask[:4, :4] == BACKGROUND).all()


def test_label_map_palette_indices(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    indices = np.choose(labels, [0, 150, 200])
    # Colours whose grey values are neither 150 nor 200, so only the indices can match.
    palette = {0: (0, 0, 0), 150: (255, 0, 0), 200: (0, 0, 255)}
    write_palette_image(tmp_path / "m.png", indices, palette)

    mask = read_lung_mask(tmp_path / "m.png", 150, 200)

    np.testing.assert_array_equal(mask, labels)


def test_label_map_colour_rejected(tmp_path, make_lung_labels):
    rgb = np.zeros((*make_lung_labels().shape, 3), dtype=np.uint8)
    rgb[make_lung_labels() == 1] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "m.png")

    with pytest.raises(ImageReadError, match="m.png.*coloured"):
        read_lung_mask(tmp_path / "m.png", 150, 200)


def test_label_map_missing_value_warns(tmp_path, make_lung_labels):
    stored = np.choose(make_lung_labels(), [0, 150, 200]).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), stored)

    with pytest.warns(LungMaskWarning, match="patient-left lung is empty"):
        mask = read_lung_mask(tmp_path / "m.png", 150, 201)

    assert (mask == RIGHT_LUNG).any()


def test_label_map_swapped_warns(tmp_path, make_lung_labels):
    stored = np.choose(make_lung_labels(), [0, 200, 150]).astype(np.uint8)  # sides exchanged
    cv2.imwrite(str(tmp_path / "m.png"), stored)

    with pytest.warns(LungMaskWarning, match="swapped"):
        read_lung_mask(tmp_path / "m.png", 150, 200)


def test_one_label_value_rejected(tmp_path):
    with pytest.raises(ValueError, match="give both"):
        read_lung_mask(tmp_path / "m.png", 150, None)


def test_mask_zero_one(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    cv2.imwrite(str(tmp_path / "m.png"), (labels > 0).astype(np.uint8))

    mask = read_lung_mask(tmp_path / "m.png")

    np.testing.assert_array_equal(mask, labels)


def test_mask_zero_255(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    cv2.imwrite(str(tmp_path / "m.png"), (labels > 0).astype(np.uint8) * 255)

    mask = read_lung_mask(tmp_path / "m.png")

    np.testing.assert_array_equal(mask, labels)


def test_mask_antialiased_threshold(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    grey = (labels > 0).astype(np.uint8) * 255
    edge = cv2.dilate((labels > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) & (labels == 0)
    grey[edge.astype(bool)] = 127  # edge pixels at the threshold itself stay background
    cv2.imwrite(str(tmp_path / "m.png"), grey)

    mask = read_lung_mask(tmp_path / "m.png")
    mask_low = read_lung_mask(tmp_path / "m.png", threshold=126)

    np.testing.assert_array_equal(mask, labels)
    assert (mask_low[edge.astype(bool)] > 0).all()


def test_mask_16bit_threshold_scaled(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    cv2.imwrite(str(tmp_path / "m.png"), (labels > 0).astype(np.uint16) * 65535)

    mask = read_lung_mask(tmp_path / "m.png")

    np.testing.assert_array_equal(mask, labels)


def test_mask_gif(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    write_palette_image(tmp_path / "m.gif", labels > 0, {0: (0, 0, 0), 1: (255, 255, 255)})

    mask = read_lung_mask(tmp_path / "m.gif")

    np.testing.assert_array_equal(mask, labels)


def test_label_map_gif(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    write_palette_image(tmp_path / "m.gif", labels, {0: (0, 0, 0), 1: (90, 90, 90), 2: (250, 250, 250)})

    mask = read_lung_mask(tmp_path / "m.gif", 1, 2)

    np.testing.assert_array_equal(mask, labels)


def test_combined_split_sides(tmp_path, make_lung_labels):
    labels = make_lung_labels(40, 100)
    cv2.imwrite(str(tmp_path / "m.png"), (labels > 0).astype(np.uint8) * 255)

    mask = read_lung_mask(tmp_path / "m.png")

    assert centroid_column(mask, RIGHT_LUNG) < 50  # patient right lung on the image left
    assert centroid_column(mask, LEFT_LUNG) > 50
    np.testing.assert_array_equal(mask, labels)


def test_split_both_lungs_one_side():
    # Both regions left of the centre column still get one label each, by column order.
    both = np.zeros((10, 40), dtype=bool)
    both[2:8, 1:5] = True
    both[2:8, 8:12] = True

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = split_lungs(both)

    assert (labels[2:8, 1:5] == RIGHT_LUNG).all()
    assert (labels[2:8, 8:12] == LEFT_LUNG).all()


def test_split_single_region_warns():
    both = np.zeros((10, 40), dtype=bool)
    both[2:8, 25:35] = True  # image right half: the patient-left lung

    with pytest.warns(LungMaskWarning, match="one lung region") as caught:
        labels = split_lungs(both)

    assert (labels[2:8, 25:35] == LEFT_LUNG).all()
    assert not (labels == RIGHT_LUNG).any()
    assert "joined" not in str(caught[0].message)


def test_split_joined_lungs_warns():
    both = np.zeros((10, 40), dtype=bool)
    both[2:8, 5:35] = True  # one region across the centre column

    with pytest.warns(LungMaskWarning, match="probably joined"):
        split_lungs(both)


def test_split_empty_warns():
    with pytest.warns(LungMaskWarning, match="no lung pixels"):
        labels = split_lungs(np.zeros((5, 5), dtype=bool))

    assert not labels.any()


def test_split_drops_speck_silently():
    both = np.zeros((20, 40), dtype=bool)
    both[2:18, 2:12] = True  # 160 px
    both[2:18, 28:38] = True  # 160 px
    both[0, 20] = True  # 1 px speck, below 1% of 160 px

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = split_lungs(both)

    assert labels[0, 20] == BACKGROUND
    assert np.count_nonzero(labels == RIGHT_LUNG) == 160
    assert np.count_nonzero(labels == LEFT_LUNG) == 160


def test_split_drops_large_region_warns():
    both = np.zeros((20, 40), dtype=bool)
    both[2:18, 2:12] = True  # 160 px
    both[2:18, 28:38] = True  # 160 px
    both[15:19, 18:22] = True  # 16 px, 10% of a lung

    with pytest.warns(LungMaskWarning, match=r"dropped 1 with areas \[16\]"):
        labels = split_lungs(both, source="m.png")

    assert (labels[15:19, 18:22] == BACKGROUND).all()


def test_mask_pair_montgomery(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    (tmp_path / "rightMask").mkdir()
    (tmp_path / "leftMask").mkdir()
    cv2.imwrite(str(tmp_path / "rightMask" / "x.png"), (labels == 1).astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "leftMask" / "x.png"), (labels == 2).astype(np.uint8) * 255)

    mask = read_lung_mask_pair(tmp_path / "rightMask" / "x.png", tmp_path / "leftMask" / "x.png")

    np.testing.assert_array_equal(mask, labels)


def test_mask_pair_swapped_warns(tmp_path, make_lung_labels):
    labels = make_lung_labels()
    cv2.imwrite(str(tmp_path / "r.png"), (labels == 2).astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "l.png"), (labels == 1).astype(np.uint8) * 255)

    with pytest.warns(LungMaskWarning, match="swapped"):
        read_lung_mask_pair(tmp_path / "r.png", tmp_path / "l.png")


def test_mask_pair_size_mismatch(tmp_path):
    cv2.imwrite(str(tmp_path / "r.png"), np.zeros((4, 6), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((4, 5), np.uint8))

    with pytest.raises(ImageReadError, match="r.png is 6x4 px.*l.png is 5x4 px"):
        read_lung_mask_pair(tmp_path / "r.png", tmp_path / "l.png")


def test_mask_pair_overlap_rejected(tmp_path):
    right = np.zeros((4, 6), np.uint8)
    right[:, :4] = 255
    left = np.zeros((4, 6), np.uint8)
    left[:, 3:] = 255
    cv2.imwrite(str(tmp_path / "r.png"), right)
    cv2.imwrite(str(tmp_path / "l.png"), left)

    with pytest.raises(ValueError, match="overlap in 4 pixels"):
        read_lung_mask_pair(tmp_path / "r.png", tmp_path / "l.png")


# --------------------------------------------------------------------------------------------
# Real data


def test_real_jsrt_image_and_mask(shared_data):
    image_path = shared_data / "jsrt224" / "images" / "JPCLN001.png"
    mask_path = shared_data / "jsrt224" / "masks" / "JPCLN001.png"

    image = read_image(image_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = read_lung_mask(mask_path, 150, 200)

    assert image.pixels.shape == (224, 224)
    assert 0.0 <= image.pixels.min() < image.pixels.max() <= 1.0
    assert mask.shape == image.pixels.shape
    assert (mask == RIGHT_LUNG).sum() > 1000
    assert (mask == LEFT_LUNG).sum() > 1000
    assert centroid_column(mask, RIGHT_LUNG) < 112
    # Lungs hold air, so they are darker than the image as a whole.
    assert image.pixels[mask > 0].mean() < image.pixels.mean()


def test_real_shenzhen_combined_mask(shared_data):
    mask_path = shared_data / "shenzhen512" / "masks" / "CHNCXR_0001_0.png"

    mask = read_lung_mask(mask_path)

    assert mask.shape == (512, 512)
    assert centroid_column(mask, RIGHT_LUNG) < 256 < centroid_column(mask, LEFT_LUNG)
