"""Reading radiographs and lung masks, in one place.

``read_image`` returns a :class:`Radiograph`: float32 pixels of shape (H, W) in [0, 1], where
1 is bright (bone, soft tissue) and 0 is dark (air). It also records the file, the size and,
where the file contains it, the pixel spacing in mm. The size and all pixel coordinates refer
to the image as displayed, after any EXIF orientation. Supported inputs:

=====================  ==========================================================================
format                 how the values become [0, 1]
=====================  ==========================================================================
PNG 8/16-bit           divided by the bit depth's maximum (255 or 65535). A 16-bit PNG with an
                       sBIT chunk of s < 16 bits whose values all fit in s bits is divided by
                       2**s - 1 instead (see ``_max_sample_value``). Never stretched by the image max.
PNG palette, GIF       converted through the palette to RGB, then to grey (ITU-R BT.601 luma).
RGB, RGBA              grey by BT.601 luma; the alpha channel is dropped, not composited.
JPEG, TIFF, BMP, WebP  as PNG; the EXIF orientation tag is applied exactly once.
DICOM                  modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), then the VOI
                       LUT Sequence or the window (WindowCenter/Width, first value), MONOCHROME1
                       inverted. Spacing from PixelSpacing, else ImagerPixelSpacing.
JSRT raw ``.IMG``      2048 x 2048 12-bit values as big-endian uint16 with no header; high raw
                       values are dark, so the output is ``1 - value / 4095``. Spacing 0.175 mm.
=====================  ==========================================================================

``read_lung_mask`` and ``read_lung_mask_pair`` return a uint8 label map with the project's
labels: 0 background, 1 patient-right lung, 2 patient-left lung. On a PA radiograph the
patient-right lung is on the image left. Doubtful masks (a lung missing, right and left
apparently swapped, lungs joined into one region, large extra regions dropped) raise a
:class:`LungMaskWarning` instead of passing silently.

Unreadable files (missing, empty, truncated, corrupt, wrong size) raise :class:`ImageReadError`,
a ``ValueError`` whose message names the file.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi

BACKGROUND, RIGHT_LUNG, LEFT_LUNG = 0, 1, 2
SIDE_NAMES = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}

# JSRT database (Shiraishi et al., AJR 2000): 2048 x 2048 pixels, 12 bits, 0.175 mm pixels.
JSRT_SHAPE = (2048, 2048)
JSRT_FILE_BYTES = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2
JSRT_MAX_VALUE = 4095
JSRT_SPACING_MM = (0.175, 0.175)

EXIF_ORIENTATION_TAG = 0x0112
# ITU-R BT.601 luma weights in OpenCV's channel order (blue, green, red), as cv2.cvtColor
# and PIL's convert("L") use them.
LUMA_WEIGHTS_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)

# PNG colour types (PNG specification, IHDR chunk).
PNG_GREY, PNG_RGB, PNG_PALETTE, PNG_GREY_ALPHA, PNG_RGBA = 0, 2, 3, 4, 6

# PIL modes whose values are single-channel integers that a mask can carry directly.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass
class Radiograph:
    """A radiograph as float32 (H, W) in [0, 1], with where it came from."""

    pixels: np.ndarray
    path: Path
    original_height: int
    original_width: int
    spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)


class ImageReadError(ValueError):
    """A file is missing, empty, truncated or not an image this project can read."""


class LungMaskWarning(UserWarning):
    """A lung mask was read but looks wrong: a lung is missing, sides are swapped or regions were dropped."""


# --------------------------------------------------------------------------------------------
# Radiographs


def read_image(path: str | Path, *, apply_voi_lut: bool = True) -> Radiograph:
    """Read a radiograph as float32 (H, W) in [0, 1], 1 = bright.

    The format is taken from the file's first bytes (PNG, JPEG, GIF, TIFF, BMP, DICOM), except
    that a ``.img`` file is read as JSRT raw data and a ``.dcm``/``.dicom`` file as DICOM even
    without the DICOM preamble. ``apply_voi_lut=False`` skips the DICOM VOI LUT and window, so
    DICOM values are scaled by the range of the modality LUT output instead.

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt or of an unsupported kind.
    """
    path = Path(path)
    data = _read_file_bytes(path, "image")
    suffix = path.suffix.lower()

    if data[128:132] == b"DICM" or suffix in (".dcm", ".dicom"):
        return _read_dicom(path, data, apply_voi_lut)
    if suffix == ".img":
        return _read_jsrt_raw(path, data)
    return _read_raster(path, data)


def _read_file_bytes(path: Path, kind: str) -> bytes:
    if not path.exists():
        raise ImageReadError(f"{kind} {path} not found")
    if not path.is_file():
        raise ImageReadError(f"{kind} {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"{kind} {path} could not be read: {error}") from error
    if not data:
        raise ImageReadError(f"{kind} {path} is empty (0 bytes)")
    return data


def _read_raster(path: Path, data: bytes) -> Radiograph:
    # OpenCV decodes PNG, JPEG, TIFF, BMP and WebP, keeping 16-bit colour that PIL would cut to
    # 8 bits. IMREAD_UNCHANGED also keeps OpenCV from applying the EXIF orientation, so it is
    # applied once, below. GIF goes through PIL because OpenCV builds may lack the GIF codec.
    is_gif = data[:6] in (b"GIF87a", b"GIF89a")
    if is_gif:
        decoded = _decode_with_pil_as_bgr(path, data)
    else:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(
            f"image {path} could not be decoded: the file is corrupt, truncated or not an image "
            "(expected PNG, JPEG, TIFF, BMP, GIF, DICOM or JSRT .img)"
        )

    significant_bits = None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        chunks = _png_chunks_before_image_data(data)
        significant_bits = _png_significant_bits(chunks)
        orientation = _png_exif_orientation(chunks)
    elif is_gif:
        orientation = 1
    else:
        orientation = _exif_orientation(data)

    pixels = _to_unit_grey(path, decoded, significant_bits)
    pixels = _apply_exif_orientation(pixels, orientation, path)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    return Radiograph(pixels, path, pixels.shape[0], pixels.shape[1])


def _decode_with_pil_as_bgr(path: Path, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"image {path} could not be decoded: {error}") from error
    return rgb[..., ::-1]


def _to_unit_grey(path: Path, decoded: np.ndarray, significant_bits: int | None) -> np.ndarray:
    """Convert decoded samples (H, W) or (H, W, C) in BGR(A) order to float32 grey in [0, 1]."""
    if decoded.dtype in (np.uint8, np.uint16):
        max_value = _max_sample_value(decoded, significant_bits)
    elif decoded.dtype in (np.float32, np.float64):
        max_value = 1.0
        finite = np.isfinite(decoded).all()
        if not finite or decoded.min() < 0.0 or decoded.max() > 1.0:
            raise ImageReadError(
                f"image {path} has floating-point values outside [0, 1] "
                f"(min {np.nanmin(decoded)}, max {np.nanmax(decoded)}); save it as 8- or 16-bit integers"
            )
    else:
        raise ImageReadError(
            f"image {path} has {decoded.dtype} samples; only unsigned 8- and 16-bit integers and "
            "floats in [0, 1] are supported"
        )

    if decoded.ndim == 2:
        grey = decoded.astype(np.float32)
    elif decoded.shape[2] in (3, 4):
        # (H, W, 3 or 4) -> (H, W); a fourth channel is alpha and is dropped.
        grey = decoded[..., :3].astype(np.float32) @ LUMA_WEIGHTS_BGR
    elif decoded.shape[2] in (1, 2):
        grey = decoded[..., 0].astype(np.float32)
    else:
        raise ImageReadError(f"image {path} has {decoded.shape[2]} channels; expected 1 to 4")

    grey /= np.float32(max_value)
    return grey


def _max_sample_value(samples: np.ndarray, significant_bits: int | None) -> int:
    """Return the value that maps to 1.0 for unsigned integer samples.

    The PNG specification recommends that encoders scale samples of fewer significant bits up to the
    full range and to record the original depth in sBIT, so 65535 (or 255) is the default.
    Some exporters instead store, say, 12-bit values unscaled in a 16-bit PNG and declare
    sBIT = 12. Where sBIT declares s bits and every sample fits in s bits, the samples are
    read as unscaled s-bit values (divided by 2**s - 1). Otherwise the full range is used.

    NOTE: a spec-conforming sBIT image that is so dark that every sample stays below 2**s is
    read as unscaled and comes out too bright; without sBIT the full range is always used.
    """
    full_range = int(np.iinfo(samples.dtype).max)
    bits = samples.dtype.itemsize * 8
    if significant_bits is None or not 1 <= significant_bits < bits:
        return full_range
    declared_max = 2**significant_bits - 1
    if int(samples.max()) <= declared_max:
        return declared_max
    return full_range


def _png_chunks_before_image_data(data: bytes) -> dict[bytes, bytes]:
    """Return the first payload of each PNG chunk type that comes before the first IDAT chunk."""
    chunks: dict[bytes, bytes] = {}
    position = 8
    while position + 8 <= len(data):
        length, chunk_type = struct.unpack(">I4s", data[position:position + 8])
        if chunk_type == b"IDAT":
            break
        chunks.setdefault(chunk_type, data[position + 8:position + 8 + length])
        position += 12 + length  # length, type, payload, CRC
    return chunks


def _png_significant_bits(chunks: dict[bytes, bytes]) -> int | None:
    header = chunks.get(b"IHDR", b"")
    significant = chunks.get(b"sBIT")
    if len(header) < 13 or not significant:
        return None
    colour_type = header[9]
    if colour_type == PNG_PALETTE:
        return None  # palette entries are 8-bit RGB, whatever sBIT declares
    colour_channels = {PNG_GREY: 1, PNG_GREY_ALPHA: 1, PNG_RGB: 3, PNG_RGBA: 3}.get(colour_type, 1)
    return max(significant[:colour_channels])


def _png_exif_orientation(chunks: dict[bytes, bytes]) -> int:
    # NOTE: an eXIf chunk after the image data is not read. Writers such as Pillow put it before
    # IDAT, where this reader looks.
    payload = chunks.get(b"eXIf")
    if not payload:
        return 1
    exif = Image.Exif()
    try:
        exif.load(payload)
    except (OSError, SyntaxError, ValueError, struct.error):
        return 1
    return int(exif.get(EXIF_ORIENTATION_TAG, 1))


def _exif_orientation(data: bytes) -> int:
    """Return the EXIF orientation (1 to 8) of a JPEG, TIFF or WebP file, or 1 when it has none."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error):
        # PIL cannot parse the header although OpenCV decoded the pixels, so there is no
        # orientation to apply.
        return 1


def _apply_exif_orientation(pixels: np.ndarray, orientation: int, path: Path) -> np.ndarray:
    """Transform stored pixels to display orientation for EXIF orientation 1 to 8."""
    if orientation == 1:
        return pixels
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1, :]
    if orientation == 5:
        return pixels.T
    if orientation == 6:
        return np.rot90(pixels, k=-1)  # 90 degrees clockwise
    if orientation == 7:
        return np.rot90(pixels, k=2).T
    if orientation == 8:
        return np.rot90(pixels, k=1)  # 90 degrees anticlockwise
    warnings.warn(
        f"image {path} has EXIF orientation {orientation}, outside the valid 1 to 8; it is ignored",
        stacklevel=4,
    )
    return pixels


# --------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(path: Path, data: bytes, apply_voi_lut: bool) -> Radiograph:
    has_preamble = data[128:132] == b"DICM"
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError(
                f"DICOM file {path} has {frames} frames; only single-frame radiographs are supported"
            )
        stored = dataset.pixel_array
    except ImageReadError:
        raise
    except (
        InvalidDicomError, AttributeError, KeyError, ValueError, TypeError, EOFError, OSError,
        NotImplementedError, RuntimeError, struct.error,
    ) as error:
        raise ImageReadError(
            f"DICOM file {path} could not be read: {error}. Compressed transfer syntaxes need a "
            "pydicom pixel data plugin (for example pylibjpeg)"
        ) from error

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        pixels = _dicom_grey_to_unit(path, dataset, stored, apply_voi_lut)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels  # MONOCHROME1: the minimum value is displayed white
    elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and stored.ndim == 3:
        # pydicom converts YBR to RGB by default; flip to BGR for the shared luma weights.
        max_value = 2 ** int(dataset.BitsStored) - 1
        pixels = stored[..., ::-1].astype(np.float32) @ LUMA_WEIGHTS_BGR / np.float32(max_value)
    else:
        raise ImageReadError(
            f"DICOM file {path} has PhotometricInterpretation {photometric}; supported are "
            "MONOCHROME1, MONOCHROME2, RGB and YBR_FULL"
        )

    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    spacing_mm = _dicom_spacing_mm(path, dataset)
    return Radiograph(pixels, path, pixels.shape[0], pixels.shape[1], spacing_mm)


def _dicom_grey_to_unit(path: Path, dataset, stored: np.ndarray, apply_voi_lut: bool) -> np.ndarray:
    """Apply the modality LUT, then the VOI LUT or window, mapping the output range onto [0, 1]."""
    values = apply_modality_lut(stored, dataset)

    if apply_voi_lut and dataset.get("VOILUTSequence"):
        # apply_voi indexes its table with integers; rescaled values are integral in practice.
        lut_input = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        depth = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return apply_voi(lut_input, dataset).astype(np.float32) / np.float32(2**depth - 1)

    if apply_voi_lut and "WindowCenter" in dataset and "WindowWidth" in dataset:
        centre = _first_value(dataset.WindowCenter)
        width = _first_value(dataset.WindowWidth)
        function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return _apply_window(path, values.astype(np.float64), centre, width, function)

    # pydicom keeps only the BitsStored low bits of each sample, so the values stay inside this
    # range and the clip only removes floating-point rounding.
    low, high = _modality_output_range(dataset)
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _first_value(value) -> float:
    # WindowCenter and WindowWidth may contain several alternative windows; the first is used.
    if isinstance(value, (list, tuple, MultiValue)):
        return float(value[0])
    return float(value)


def _apply_window(path: Path, values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2 and C.11.2.1.3) with output range [0, 1]."""
    if function == "LINEAR":
        if width < 1:
            raise ImageReadError(f"DICOM file {path} has WindowWidth {width}; LINEAR windows need >= 1")
        if width == 1:
            return (values > centre - 0.5).astype(np.float64)
        return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if width <= 0:
        raise ImageReadError(f"DICOM file {path} has WindowWidth {width}; {function} windows need > 0")
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    raise ImageReadError(
        f"DICOM file {path} has VOILUTFunction {function}; supported are LINEAR, LINEAR_EXACT and SIGMOID"
    )


def _modality_output_range(dataset) -> tuple[float, float]:
    """Return the (low, high) values the modality LUT can output for the stored bit depth."""
    if dataset.get("ModalityLUTSequence"):
        depth = int(dataset.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)

    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)

    if "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
        ends = (low * slope + intercept, high * slope + intercept)
        low, high = min(ends), max(ends)
    return low, high


def _dicom_spacing_mm(path: Path, dataset) -> tuple[float, float] | None:
    """Return (row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing, else None.

    ImagerPixelSpacing is measured at the detector, so without a magnification correction it
    overstates anatomical sizes by the geometric magnification (an estimated 5 to 15% for chest
    radiographs, depending on the source-to-detector distance).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        try:
            row_mm, column_mm = (float(item) for item in value)
        except (TypeError, ValueError):
            row_mm = column_mm = math.nan
        if all(math.isfinite(item) and item > 0 for item in (row_mm, column_mm)):
            return row_mm, column_mm
        warnings.warn(
            f"DICOM file {path} has an invalid {keyword} {value!r} (expected two positive numbers, "
            "row then column spacing in mm); it is ignored",
            stacklevel=4,
        )
    return None


# --------------------------------------------------------------------------------------------
# JSRT raw


def _read_jsrt_raw(path: Path, data: bytes) -> Radiograph:
    """Read a JSRT ``.IMG`` file: 2048 x 2048 12-bit values as big-endian uint16, no header.

    JSRT stores film-density-like values, high values being dark (air) and low values bright
    (bone), so the output is inverted to match the other formats.

    NOTE: this polarity follows public JSRT converters (for example imlab-uiip/lung-segmentation-2d,
    which computes ``1 - value / 4096``). No raw JSRT file was available to check it here, so
    compare one output against the JSRT PNG previews before relying on it.
    """
    if len(data) != JSRT_FILE_BYTES:
        raise ImageReadError(
            f"JSRT raw image {path} has {len(data)} bytes; expected {JSRT_FILE_BYTES} bytes "
            "(2048 x 2048 12-bit values stored as big-endian uint16, no header)"
        )
    stored = np.frombuffer(data, dtype=">u2").reshape(JSRT_SHAPE)
    max_stored = int(stored.max())
    if max_stored > JSRT_MAX_VALUE:
        raise ImageReadError(
            f"JSRT raw image {path} has value {max_stored}, above the 12-bit maximum {JSRT_MAX_VALUE}; "
            "the file is not a JSRT image or its bytes are little-endian"
        )
    pixels = 1.0 - stored.astype(np.float32) / np.float32(JSRT_MAX_VALUE)
    return Radiograph(pixels, path, JSRT_SHAPE[0], JSRT_SHAPE[1], JSRT_SPACING_MM)


# --------------------------------------------------------------------------------------------
# Lung masks


def read_lung_mask(
    path: str | Path,
    right_value: int | None = None,
    left_value: int | None = None,
    threshold: int = 127,
    *,
    max_silent_fraction: float = 0.01,
) -> np.ndarray:
    """Read a lung mask as uint8 labels 0/1/2 (background, patient-right, patient-left).

    With ``right_value`` and ``left_value`` the file is a label map: pixels equal to
    ``right_value`` are the patient-right lung, pixels equal to ``left_value`` the patient-left
    lung, and every other value (a heart label, say) is background. Palette images are read as
    their palette indices, not their colours. JSRT SCR label maps use 150 (right), 200 (left)
    and 250 (heart).

    Without them the file is one mask of both lungs. A mask whose values are all 0 or 1 uses 1
    as foreground. Otherwise a pixel is foreground when its grey value is above ``threshold``
    (on the 0 to 255 scale, so 16-bit masks compare against ``threshold * 257``). Palette and
    colour masks are converted to grey first. The foreground is split by :func:`split_lungs`.

    The EXIF orientation, if any, is applied, as :func:`read_image` does.

    Returns:
        uint8 array (H, W) of 0 background, 1 patient-right lung, 2 patient-left lung.

    Warns:
        LungMaskWarning: a lung is empty, the right lung lies to the image right of the left
        lung, or :func:`split_lungs` had to guess or drop regions.

    Raises:
        ImageReadError: the file is missing, empty, corrupt, or a label map in colour.
        ValueError: only one of ``right_value``/``left_value`` is given, or ``threshold`` is
            outside 0 to 254.
    """
    path = Path(path)
    if (right_value is None) != (left_value is None):
        raise ValueError(
            f"right_value={right_value} and left_value={left_value}: give both (label map) or neither "
            "(one mask of both lungs)"
        )

    if right_value is not None:
        if right_value == left_value:
            raise ValueError(f"right_value and left_value are both {right_value}; they must differ")
        values = _read_mask_values(path, palette_indices=True)
        labels = np.zeros(values.shape, dtype=np.uint8)
        labels[values == right_value] = RIGHT_LUNG
        labels[values == left_value] = LEFT_LUNG
        _warn_if_implausible(labels, f"mask {path} (right value {right_value}, left value {left_value})")
        return labels

    foreground = _read_mask_foreground(path, threshold)
    return split_lungs(foreground, source=path, max_silent_fraction=max_silent_fraction)


def read_lung_mask_pair(right_path: str | Path, left_path: str | Path, threshold: int = 127) -> np.ndarray:
    """Read one mask file per lung (Montgomery layout ``rightMask/x.png``, ``leftMask/x.png``).

    ``right_path`` contains the patient-right lung, which lies on the image left of a PA view.
    Each file's foreground is decided as in :func:`read_lung_mask` without label values, and
    all of it is kept (no connected-component filtering).

    Returns:
        uint8 array (H, W) of 0 background, 1 patient-right lung, 2 patient-left lung.

    Warns:
        LungMaskWarning: a file has no foreground, or the right lung lies to the image right
        of the left lung (the files may be swapped).

    Raises:
        ImageReadError: a file cannot be read, or the two files differ in size.
        ValueError: the two masks overlap.
    """
    right_path, left_path = Path(right_path), Path(left_path)
    right = _read_mask_foreground(right_path, threshold)
    left = _read_mask_foreground(left_path, threshold)
    if right.shape != left.shape:
        raise ImageReadError(
            f"right-lung mask {right_path} is {right.shape[1]}x{right.shape[0]} px but left-lung mask "
            f"{left_path} is {left.shape[1]}x{left.shape[0]} px; they must be the same size"
        )

    overlap = int(np.count_nonzero(right & left))
    if overlap:
        raise ValueError(
            f"right-lung mask {right_path} and left-lung mask {left_path} overlap in {overlap} pixels; "
            "each pixel can belong to one lung only"
        )

    labels = np.zeros(right.shape, dtype=np.uint8)
    labels[right] = RIGHT_LUNG
    labels[left] = LEFT_LUNG
    _warn_if_implausible(labels, f"masks {right_path} (right) and {left_path} (left)")
    return labels


def split_lungs(
    both_lungs: np.ndarray,
    *,
    source: str | Path | None = None,
    max_silent_fraction: float = 0.01,
) -> np.ndarray:
    """Split a binary mask of both lungs into patient-right (image left) and patient-left lungs.

    The two largest 8-connected regions are kept. The one whose centroid has the smaller column
    becomes the patient-right lung (1), the other the patient-left lung (2).

    - More than two regions: the extra ones are dropped. A ``LungMaskWarning`` lists them when
      the largest dropped one has more than ``max_silent_fraction`` of the smaller kept lung's
      area, so anti-aliasing specks pass silently.
    - One region: it is labelled by which side of the centre column its centroid lies on,
      the other lung is left empty, and a ``LungMaskWarning`` reports it (and whether the region
      crosses the centre column, meaning the two lungs are probably joined).
    - No region: all background, with a ``LungMaskWarning``.

    ``source`` only names the mask in warnings.

    Returns:
        uint8 array of the input's shape: 0 background, 1 patient-right lung, 2 patient-left lung.
    """
    foreground = np.asarray(both_lungs).astype(bool)
    name = f"mask {source}" if source is not None else "lung mask"
    labels = np.zeros(foreground.shape, dtype=np.uint8)
    count, components, stats, centroids = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    if count == 1:
        warnings.warn(f"{name} has no lung pixels; both lungs are empty", LungMaskWarning, stacklevel=2)
        return labels

    areas = stats[1:, cv2.CC_STAT_AREA]
    by_area = np.argsort(-areas, kind="stable") + 1  # component ids, largest first
    lung_ids, dropped_ids = by_area[:2], by_area[2:]

    if len(lung_ids) == 1:
        _label_single_region(labels, components, stats, centroids, lung_ids[0], name)
        return labels

    right_id, left_id = sorted(lung_ids, key=lambda component: centroids[component, 0])
    labels[components == right_id] = RIGHT_LUNG
    labels[components == left_id] = LEFT_LUNG

    if len(dropped_ids):
        dropped_areas = [int(stats[component, cv2.CC_STAT_AREA]) for component in dropped_ids]
        smaller_kept_area = int(min(stats[lung_ids, cv2.CC_STAT_AREA]))
        if max(dropped_areas) > max_silent_fraction * smaller_kept_area:
            warnings.warn(
                f"{name} has {count - 1} separate regions; kept the two largest (smaller one "
                f"{smaller_kept_area} px) and dropped {len(dropped_ids)} with areas {dropped_areas} px",
                LungMaskWarning,
                stacklevel=2,
            )
    return labels


def _label_single_region(labels, components, stats, centroids, component, name) -> None:
    width = labels.shape[1]
    centre_column = (width - 1) / 2  # pixel centres at integer columns
    centroid_x = float(centroids[component, 0])
    side = RIGHT_LUNG if centroid_x < centre_column else LEFT_LUNG
    labels[components == component] = side

    first_column = int(stats[component, cv2.CC_STAT_LEFT])
    last_column = first_column + int(stats[component, cv2.CC_STAT_WIDTH]) - 1
    message = (
        f"{name} has one lung region (centroid x = {centroid_x:.1f} px, image width {width} px); "
        f"it is labelled the patient-{SIDE_NAMES[side]} lung and the "
        f"patient-{SIDE_NAMES[3 - side]} lung is empty."
    )
    if first_column < centre_column < last_column:
        message += " The region crosses the centre column, so the two lungs are probably joined."
    warnings.warn(message, LungMaskWarning, stacklevel=3)


def _warn_if_implausible(labels: np.ndarray, name: str) -> None:
    centroid_columns = {}
    for side in (RIGHT_LUNG, LEFT_LUNG):
        columns = np.nonzero(labels == side)[1]
        if columns.size == 0:
            warnings.warn(
                f"{name}: the patient-{SIDE_NAMES[side]} lung is empty; check the mask encoding",
                LungMaskWarning,
                stacklevel=3,
            )
        else:
            centroid_columns[side] = float(columns.mean())

    if len(centroid_columns) == 2 and centroid_columns[RIGHT_LUNG] >= centroid_columns[LEFT_LUNG]:
        warnings.warn(
            f"{name}: the patient-right lung (centroid x = {centroid_columns[RIGHT_LUNG]:.1f} px) is not "
            f"to the image left of the patient-left lung (x = {centroid_columns[LEFT_LUNG]:.1f} px); "
            "right and left may be swapped",
            LungMaskWarning,
            stacklevel=3,
        )


def _read_mask_foreground(path: Path, threshold: int) -> np.ndarray:
    """Return a boolean (H, W) foreground of a mask of one or both lungs."""
    if not 0 <= threshold <= 254:
        raise ValueError(f"threshold {threshold} is outside 0 to 254 (grey value on the 0 to 255 scale)")
    values = _read_mask_values(path, palette_indices=False)
    if int(values.max()) <= 1:
        return values == 1
    scale = 257 if values.dtype != np.uint8 else 1  # 65535 / 255: same fraction of a 16-bit range
    return values > threshold * scale


def _read_mask_values(path: Path, palette_indices: bool) -> np.ndarray:
    """Read a mask as a single-channel integer array in display orientation.

    PIL reads every mask format (OpenCV builds may lack GIF and cannot return palette indices).
    With ``palette_indices`` a palette image gives its indices; otherwise palette and colour
    images are converted to grey by BT.601 luma.
    """
    data = _read_file_bytes(path, "mask")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
            values = _mask_image_to_array(path, image, palette_indices)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        raise ImageReadError(
            f"mask {path} could not be decoded: the file is corrupt, truncated or not an image ({error})"
        ) from error
    return np.ascontiguousarray(_apply_exif_orientation(values, orientation, path))


def _mask_image_to_array(path: Path, image: Image.Image, palette_indices: bool) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)  # 0/1
    if mode == "L":
        return np.asarray(image)
    if mode == "LA":
        return np.asarray(image)[..., 0]
    if mode == "P":
        return np.asarray(image) if palette_indices else np.asarray(image.convert("L"))
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageReadError(
                f"mask {path} has values from {values.min()} to {values.max()}, outside the 16-bit range"
            )
        return values.astype(np.uint16)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        if not palette_indices:
            return np.asarray(image.convert("L"))
        rgb = np.asarray(image.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise ImageReadError(
                f"label map {path} has coloured pixels; label maps must be single-channel or grey "
                "(convert it to 8-bit greyscale, or read it as one mask of both lungs)"
            )
        return rgb[..., 0]
    raise ImageReadError(f"mask {path} has PIL mode {mode}, which is not supported; save it as 8-bit greyscale")
