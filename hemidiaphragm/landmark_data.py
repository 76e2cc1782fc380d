"""Inputs, targets and training samples of the two heatmap stages.

Both stages read the metadata CSV (see ``hemidiaphragm.metadata``): one row per image
with the image and mask paths and the reference dome points in original pixels.

Input modes (channels, in this order):

- ``mask``: patient-right lung, patient-left lung (0 or 1, soft after resampling);
- ``image``: the radiograph, standardised to zero mean and unit variance;
- ``image+mask``: the radiograph, then the two lung channels.

Stage 1 (coarse) letterboxes the whole input to ``input_size`` pixels (aspect ratio kept,
zero padding). Stage 2 (fine) cuts, for one landmark, a window of ``crop_size_px``
original pixels centred near that landmark and resamples it to ``crop_output_size``
pixels. Heatmaps have the resolution of the network input in both stages.

Training augmentation is one random affine map applied to the inputs and to the points
with the same matrix, a gamma change of the radiograph, a contrast and brightness change
of the standardised radiograph, and optionally a horizontal flip. A flip mirrors the
anatomy, so it swaps the right and left lung channels and the right and left heatmap
channels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from hemidiaphragm.datasets import MaskEncoding
from hemidiaphragm.geometry import Crop, Letterbox
from hemidiaphragm.heatmaps import LANDMARK_LUNG_LABELS, LANDMARKS, gaussian_heatmaps, lower_border_band
from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG, LungMaskWarning, read_image

INPUT_MODES = {
    "mask": ("right_lung", "left_lung"),
    "image": ("image",),
    "image+mask": ("image", "right_lung", "left_lung"),
}
POINT_COLUMNS = tuple((f"{name}_x", f"{name}_y") for name in LANDMARKS)
# A flip maps landmark k to LANDMARK_SWAP[k] (right dome <-> left dome).
LANDMARK_SWAP = (1, 0)
PREDICTED_MASK_ENCODING = "labels:1,2"


def input_channel_names(mode: str) -> tuple[str, ...]:
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown input mode {mode!r}; choose from {', '.join(INPUT_MODES)}")
    return INPUT_MODES[mode]


def input_swap(mode: str) -> list[int]:
    """Return the channel permutation that a horizontal flip applies to the inputs of ``mode``."""
    names = input_channel_names(mode)
    mirrored = {"right_lung": "left_lung", "left_lung": "right_lung"}
    return [names.index(mirrored.get(name, name)) for name in names]


def mode_needs_mask(mode: str) -> bool:
    return "right_lung" in input_channel_names(mode)


def standardise(pixels: np.ndarray) -> np.ndarray:
    """Return ``pixels`` as float32 with zero mean and unit variance."""
    pixels = pixels.astype(np.float32)
    return (pixels - pixels.mean()) / max(float(pixels.std()), 1e-6)


def lung_channels(labels: np.ndarray) -> np.ndarray:
    """Return (H, W, 2) float32 indicator channels: patient-right lung, patient-left lung."""
    return np.stack([labels == RIGHT_LUNG, labels == LEFT_LUNG], axis=-1).astype(np.float32)


def check_inputs(mode: str, pixels: np.ndarray | None, labels: np.ndarray | None, source: str) -> None:
    if "image" in input_channel_names(mode) and pixels is None:
        raise ValueError(f"{source}: input mode {mode!r} needs the radiograph, but none was given")
    if mode_needs_mask(mode) and labels is None:
        raise ValueError(f"{source}: input mode {mode!r} needs a lung mask, but none was given")
    if pixels is not None and labels is not None and pixels.shape != labels.shape:
        raise ValueError(
            f"{source}: the mask is {labels.shape[1]}x{labels.shape[0]} but the image is "
            f"{pixels.shape[1]}x{pixels.shape[0]}; masks must have the size of their image"
        )


# ---------------------------------------------------------------------------------------------
# Network inputs, shared by training and inference so that both preprocess identically.


def coarse_input(
    mode: str, pixels: np.ndarray | None, labels: np.ndarray | None, input_size: int, gamma: float = 1.0
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox the channels of ``mode`` to an (input_size, input_size, C) float32 array.

    The radiograph is resized by area averaging and standardised over the resized image
    (padding is set to 0, the mean). Lung channels are area-averaged indicators in [0, 1].
    """
    check_inputs(mode, pixels, labels, "coarse input")
    reference = pixels if pixels is not None else labels
    box = Letterbox.fit(reference.shape[0], reference.shape[1], input_size)
    channels = []
    for name in input_channel_names(mode):
        if name == "image":
            resized = box.forward_image(np.clip(pixels, 0.0, 1.0).astype(np.float32) ** gamma)
            inner = (
                slice(box.pad_y, box.pad_y + box.resized_height),
                slice(box.pad_x, box.pad_x + box.resized_width),
            )
            image = np.zeros_like(resized)
            image[inner] = standardise(resized[inner])
            channels.append(image)
        elif name == "right_lung":
            channels.append(box.forward_image((labels == RIGHT_LUNG).astype(np.float32)))
        else:
            channels.append(box.forward_image((labels == LEFT_LUNG).astype(np.float32)))
    return np.stack(channels, axis=-1), box


def full_resolution_channels(
    mode: str, pixels: np.ndarray | None, labels: np.ndarray | None, gamma: float = 1.0, zoom: float = 1.0
) -> np.ndarray:
    """Return the (H, W, C) float32 channels of ``mode`` at original resolution, ready for crops.

    For a crop that shrinks the image (``zoom`` < 1) the channels are blurred with a Gaussian
    of sigma (1 / zoom - 1) / 2 original pixels first, so that the bilinear resampling of the
    crop averages over every original pixel instead of skipping some (anti-aliasing).
    """
    check_inputs(mode, pixels, labels, "fine input")
    channels = []
    for name in input_channel_names(mode):
        if name == "image":
            channels.append(standardise(np.clip(pixels, 0.0, 1.0).astype(np.float32) ** gamma))
        elif name == "right_lung":
            channels.append((labels == RIGHT_LUNG).astype(np.float32))
        else:
            channels.append((labels == LEFT_LUNG).astype(np.float32))
    stacked = np.stack(channels, axis=-1)
    if zoom < 1:
        sigma = (1 / zoom - 1) / 2
        blurred = [cv2.GaussianBlur(stacked[..., c], (0, 0), sigma) for c in range(stacked.shape[-1])]
        stacked = np.stack(blurred, axis=-1)
    return stacked


def warp_channels(channels: np.ndarray, matrix: np.ndarray, output_size: int) -> np.ndarray:
    """Warp (H, W, C) channels by the 2x3 ``matrix`` (pixel centres at integers), zero outside.

    OpenCV's ``warpAffine`` handles at most four channels per call, so wider inputs are
    warped in groups.
    """
    groups = []
    for start in range(0, channels.shape[-1], 4):
        part = np.ascontiguousarray(channels[..., start : start + 4])
        warped = cv2.warpAffine(
            part, matrix, (output_size, output_size), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        groups.append(warped.reshape(output_size, output_size, -1))
    return np.concatenate(groups, axis=-1)


def fine_input(channels: np.ndarray, crop: Crop, matrix: np.ndarray | None = None) -> np.ndarray:
    """Cut the crop window out of full-resolution channels, optionally with a further affine.

    ``matrix`` (2x3, crop frame to crop frame) composes after the crop map, so the whole
    transform is a single resampling.
    """
    transform = crop.affine_matrix()
    if matrix is not None:
        transform = compose_affine(matrix, transform)
    return warp_channels(channels, transform, crop.output_size)


# ---------------------------------------------------------------------------------------------
# Affine maps and flips.


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Return the 2x3 matrix of ``outer`` applied after ``inner``."""
    outer3 = np.vstack([outer, [0.0, 0.0, 1.0]])
    inner3 = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (outer3 @ inner3)[:2]


def apply_affine(matrix: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Map (N, 2) points by a 2x3 matrix."""
    points = np.asarray(points_xy, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random training transforms (all off when ``enabled`` is false)."""

    enabled: bool = True
    rotation_deg: float = 6.0
    scale: float = 0.06  # zoom drawn from [1 - scale, 1 + scale]
    shift_fraction: float = 0.04  # shift drawn per axis from +-fraction of the frame side
    gamma: float = 0.2  # gamma drawn log-uniformly from [1 / (1 + gamma), 1 + gamma]
    contrast: float = 0.1  # standardised image multiplied by a factor in [1 - c, 1 + c]
    brightness: float = 0.1  # and shifted by up to +-brightness standard deviations
    flip_probability: float = 0.0
    # Amplitude (standard deviation, original pixels) of a smooth random displacement of the
    # lung masks, which imitates segmentation errors so that the network learns not to trust
    # the mask outline to the pixel. 0 leaves the masks as they are.
    mask_noise_px: float = 0.0

    def draw_affine(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw a rotation, zoom and shift about the centre of a ``size`` square frame."""
        angle = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale)
        shift = rng.uniform(-self.shift_fraction, self.shift_fraction, size=2) * size
        centre = (size - 1) / 2
        rotation = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        offset = centre + shift - rotation @ np.array([centre, centre])
        return np.hstack([rotation, offset[:, None]])

    def draw_gamma(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.uniform(-np.log1p(self.gamma), np.log1p(self.gamma))))


def perturb_labels(labels: np.ndarray, amplitude_px: float, rng: np.random.Generator) -> np.ndarray:
    """Displace a label map by a smooth random field of ``amplitude_px`` standard deviation.

    Each displacement component is white noise blurred with a Gaussian of 3% of the longer
    image side and rescaled to the requested standard deviation, so outlines move by a few
    pixels in smooth waves instead of pixel noise.
    """
    height, width = labels.shape
    smoothing = max(2.0, 0.03 * max(height, width))
    fields = []
    for _ in range(2):
        field = cv2.GaussianBlur(rng.normal(size=(height, width)).astype(np.float32), (0, 0), smoothing)
        fields.append(field * (amplitude_px / max(float(field.std()), 1e-6)))
    rows, columns = np.mgrid[:height, :width].astype(np.float32)
    return cv2.remap(labels, columns + fields[0], rows + fields[1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def noisy_labels(sample: "LandmarkSample", augmentation: Augmentation, seed: int, epoch: int, index: int):
    """Return the sample's labels, perturbed when the augmentation asks for mask noise.

    The noise has its own generator, so switching it on leaves every other random draw as it was.
    """
    if not augmentation.enabled or augmentation.mask_noise_px <= 0 or sample.labels is None:
        return sample.labels
    rng = np.random.default_rng([seed, epoch, index, 1])
    return perturb_labels(sample.labels, augmentation.mask_noise_px, rng)


def flip_horizontal(
    inputs: np.ndarray, heatmaps: np.ndarray, points_xy: np.ndarray, channel_swap: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror a sample left-right and swap the right and left channels.

    Args:
        inputs: (C, H, W) network inputs; ``channel_swap`` permutes their channels.
        heatmaps: (K, H, W) targets, K = len(LANDMARKS).
        points_xy: (K, 2) points in the frame of the arrays.

    Returns:
        The mirrored inputs, heatmaps and points; landmark k of the result is landmark
        ``LANDMARK_SWAP[k]`` of the input, at x' = W - 1 - x.
    """
    width = inputs.shape[-1]
    swap = list(LANDMARK_SWAP)
    mirrored_inputs = inputs[channel_swap, :, ::-1]
    mirrored_heatmaps = heatmaps[swap, :, ::-1]
    mirrored_points = np.asarray(points_xy, dtype=np.float64)[swap].copy()
    mirrored_points[:, 0] = width - 1 - mirrored_points[:, 0]
    return np.ascontiguousarray(mirrored_inputs), np.ascontiguousarray(mirrored_heatmaps), mirrored_points


# ---------------------------------------------------------------------------------------------
# Samples read from the metadata CSV.


@dataclass
class LandmarkSample:
    """One image with its mask and reference points, held in memory."""

    image_id: str
    pixels: np.ndarray | None  # float32 (H, W) in [0, 1]
    labels: np.ndarray | None  # uint8 (H, W): 0 background, 1 patient-right, 2 patient-left lung
    points_xy: np.ndarray  # (K, 2) original pixels, rows in the order of LANDMARKS
    width: int
    height: int
    bands: dict = field(default_factory=dict)  # radius_px -> (K, H, W) bool lung bands

    def lung_bands(self, radius_px: float) -> np.ndarray | None:
        """Return (K, H, W) lower-border bands of each landmark's lung, cached per radius."""
        if self.labels is None:
            return None
        if radius_px not in self.bands:
            self.bands[radius_px] = np.stack(
                [lower_border_band(self.labels, label, radius_px) for label in LANDMARK_LUNG_LABELS]
            )
        return self.bands[radius_px]


def reference_points(frame: pd.DataFrame) -> np.ndarray:
    """Return the (N, K, 2) reference points of a metadata table."""
    columns = [name for pair in POINT_COLUMNS for name in pair]
    return frame[columns].to_numpy(dtype=np.float64).reshape(len(frame), len(LANDMARKS), 2)


def read_mask_index(mask_index_path: str | Path) -> dict[str, tuple[Path, str]]:
    """Read a ``masks_index.csv`` into ``{image_id: (mask path, mask encoding)}``.

    Relative mask paths are taken from the index file's folder. The ``mask_encoding`` column
    is used where the index has it, else the encoding of exported predictions (``labels:1,2``).

    Raises:
        ValueError: the file is missing or a folder, lacks a column, repeats an image id or
            has an invalid encoding.
    """
    mask_index_path = Path(mask_index_path)
    if not mask_index_path.is_file():
        problem = "is a folder" if mask_index_path.is_dir() else "not found"
        raise ValueError(f"mask index {mask_index_path} {problem}; give the masks_index.csv that "
                         "segmentation_test/evaluate.py --export-masks wrote")
    try:
        index = pd.read_csv(mask_index_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"mask index {mask_index_path} could not be read as a CSV file: {error}") from None
    for column in ("image_id", "mask_path"):
        if column not in index.columns:
            raise ValueError(f"{mask_index_path} lacks the column {column!r}; expected a masks_index.csv")
    repeated = sorted(set(index["image_id"][index["image_id"].duplicated()]))
    if repeated:
        raise ValueError(f"{mask_index_path} lists image(s) {repeated[:3]} more than once; keep one mask per image")
    encodings = index["mask_encoding"] if "mask_encoding" in index.columns else [PREDICTED_MASK_ENCODING] * len(index)
    masks = {}
    for line, (image_id, mask_path, encoding) in enumerate(zip(index["image_id"], index["mask_path"], encodings), 2):
        encoding = encoding or PREDICTED_MASK_ENCODING
        if not mask_path:
            raise ValueError(f"{mask_index_path}, line {line}: image {image_id!r} has an empty mask_path")
        try:
            MaskEncoding.parse(encoding)
        except ValueError as error:
            raise ValueError(f"{mask_index_path}, line {line}: {error}") from None
        path = Path(mask_path)
        masks[image_id] = (path if path.is_absolute() else (mask_index_path.parent / path).resolve(), encoding)
    return masks


def check_index_masks(masks: dict[str, tuple[Path, str]], source: str | Path, sample: int = 5) -> None:
    """Raise ValueError when the first ``sample`` listed masks that exist all lack a lung.

    A mask read with the wrong encoding loses one or both lungs. One such mask can be a
    genuine failure, but when every sampled mask has an empty lung the encoding is wrong.
    Missing files are skipped here; the readers report them.
    """
    existing = [(path, encoding) for path, encoding in masks.values() if Path(path).is_file()][:sample]
    if not existing:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LungMaskWarning)  # empty lungs are what this check looks for
        for path, encoding in existing:
            labels = MaskEncoding.parse(encoding).read(path)
            if (labels == RIGHT_LUNG).any() and (labels == LEFT_LUNG).any():
                return
    raise ValueError(f"the first {len(existing)} masks listed in {source} (from {existing[0][0]}) each lack a lung "
                     f"under their encoding '{existing[0][1]}'; check the mask_encoding column against the mask "
                     "values (exported predictions are labels:1,2)")


def replace_masks(frame: pd.DataFrame, mask_index_path: str | Path) -> pd.DataFrame:
    """Point every row to the mask listed for it in a ``masks_index.csv`` (see ``read_mask_index``).

    Raises:
        ValueError: the index is invalid or lacks an image id of ``frame``.
    """
    masks = read_mask_index(mask_index_path)
    check_index_masks(masks, mask_index_path)
    missing = [image_id for image_id in frame["image_id"] if image_id not in masks]
    if missing:
        raise ValueError(
            f"{mask_index_path} has no mask for {len(missing)} image(s), for example {missing[:3]}; "
            "export masks for those images or choose another part"
        )
    frame = frame.copy()
    frame["mask_path"] = [str(masks[image_id][0]) for image_id in frame["image_id"]]
    frame["mask_encoding"] = [masks[image_id][1] for image_id in frame["image_id"]]
    return frame


def load_landmark_table(
    metadata_path: str | Path, split_path: str | Path | None = None, mask_index_path: str | Path | None = None
) -> pd.DataFrame:
    """Read the metadata CSV, optionally take the parts from a split file and the masks from an index.

    Raises:
        ValueError: an image of the metadata is missing from the split file.
    """
    from hemidiaphragm.metadata import read_metadata
    from hemidiaphragm.splits import read_split

    frame = read_metadata(metadata_path)
    if split_path is not None:
        split = read_split(split_path)
        parts = dict(zip(split["image_id"], split["part"]))
        missing = [image_id for image_id in frame["image_id"] if image_id not in parts]
        if missing:
            raise ValueError(
                f"split file {split_path} does not list {len(missing)} image(s) of {metadata_path}, "
                f"for example {missing[:3]}; use the split made for this dataset"
            )
        frame = frame.copy()
        frame["part"] = [parts[image_id] for image_id in frame["image_id"]]
    if mask_index_path is not None:
        frame = replace_masks(frame, mask_index_path)
    return frame


def select_part(frame: pd.DataFrame, part: str, source: str) -> pd.DataFrame:
    selected = frame[frame["part"] == part].reset_index(drop=True)
    if selected.empty:
        raise ValueError(f"{source} has no rows with part {part!r}; check the part column or --split")
    return selected


def load_samples(frame: pd.DataFrame, mode: str, source: str = "metadata") -> list[LandmarkSample]:
    """Read the images and masks that ``mode`` needs for every row of a metadata table.

    The mask is read whenever the row has one, because the lung band of the anatomical
    constraint needs it even for image-only inputs.

    Raises:
        ValueError: a needed mask path is empty, a point is missing, or sizes disagree.
    """
    input_channel_names(mode)
    samples = []
    points = reference_points(frame)
    for row_number, row in enumerate(frame.itertuples(index=False)):
        where = f"{source}, row {row_number + 1} (image {row.image_id})"
        if not np.isfinite(points[row_number]).all():
            raise ValueError(f"{where}: a dome coordinate is missing; every training row needs both domes")
        pixels = None
        if "image" in input_channel_names(mode):
            pixels = read_image(row.image_path).pixels
        labels = None
        mask_path = row.mask_path if isinstance(row.mask_path, str) else ""
        if mask_path:
            labels = MaskEncoding.parse(row.mask_encoding).read(mask_path)
        elif mode_needs_mask(mode):
            raise ValueError(f"{where}: input mode {mode!r} needs a mask, but mask_path is empty")
        height, width = int(row.height), int(row.width)
        for name, array in (("image", pixels), ("mask", labels)):
            if array is not None and array.shape != (height, width):
                raise ValueError(
                    f"{where}: the {name} is {array.shape[1]}x{array.shape[0]} but the metadata says "
                    f"{width}x{height}"
                )
        samples.append(LandmarkSample(str(row.image_id), pixels, labels, points[row_number], width, height))
    return samples


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Return the generator of one sample in one epoch, so a resumed run draws the same values."""
    return np.random.default_rng([seed, epoch, index])


class CoarseDataset(torch.utils.data.Dataset):
    """Stage 1 samples: the letterboxed input and one Gaussian heatmap per landmark.

    Items are ``(inputs (C, S, S), heatmaps (K, S, S), index)`` as float32 tensors and an int.
    """

    def __init__(self, samples: list[LandmarkSample], mode: str, input_size: int, sigma_px: float,
                 augmentation: Augmentation | None = None, seed: int = 0):
        self.samples = samples
        self.mode = mode
        self.input_size = input_size
        self.sigma_px = sigma_px
        self.augmentation = augmentation if augmentation is not None else Augmentation(enabled=False)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        augmentation = self.augmentation
        rng = sample_rng(self.seed, self.epoch, index)
        gamma = augmentation.draw_gamma(rng) if augmentation.enabled else 1.0
        labels = noisy_labels(sample, augmentation, self.seed, self.epoch, index)
        channels, box = coarse_input(self.mode, sample.pixels, labels, self.input_size, gamma)
        points = box.forward_points(sample.points_xy)

        if augmentation.enabled:
            matrix = augmentation.draw_affine(rng, self.input_size)
            channels = warp_channels(channels, matrix, self.input_size)
            points = apply_affine(matrix, points)
        inputs = np.ascontiguousarray(channels.transpose(2, 0, 1))  # (S, S, C) -> (C, S, S)
        if augmentation.enabled:
            adjust_intensity(inputs, self.mode, augmentation, rng)

        heatmaps = gaussian_heatmaps(points, self.input_size, self.input_size, self.sigma_px)
        if augmentation.enabled and rng.random() < augmentation.flip_probability:
            inputs, heatmaps, points = flip_horizontal(inputs, heatmaps, points, input_swap(self.mode))
        return torch.from_numpy(inputs), torch.from_numpy(heatmaps), index


def adjust_intensity(inputs: np.ndarray, mode: str, augmentation: Augmentation, rng: np.random.Generator) -> None:
    """Change contrast and brightness of the standardised radiograph channel in place."""
    names = input_channel_names(mode)
    if "image" not in names:
        return
    channel = names.index("image")
    factor = rng.uniform(1 - augmentation.contrast, 1 + augmentation.contrast)
    offset = rng.uniform(-augmentation.brightness, augmentation.brightness)
    inputs[channel] = inputs[channel] * factor + offset


class FineDataset(torch.utils.data.Dataset):
    """Stage 2 samples: one crop per (image, landmark, repeat), centred near that landmark.

    The crop centre is the reference point plus a Gaussian offset of ``jitter_px`` original
    pixels per axis, the error stage 1 makes, so that stage 2 learns to correct it. Offsets
    are truncated at ``max_jitter_fraction`` of the window so the landmark stays inside.
    With ``fixed_offsets`` every epoch uses the offsets of epoch 0 (for validation), and
    with ``centres_xy`` (N, K, 2) the crops are centred on those points instead, for
    example on stage-1 predictions.

    Items are ``(inputs (C, O, O), heatmaps (K, O, O), landmark, centre_xy (2,), index)``.
    After a flip, ``landmark`` is the mirrored landmark's channel.
    """

    def __init__(self, samples: list[LandmarkSample], mode: str, crop_size_px: float, output_size: int,
                 sigma_px: float, jitter_px: float, augmentation: Augmentation | None = None,
                 repeats: int = 1, seed: int = 0, fixed_offsets: bool = False,
                 max_jitter_fraction: float = 0.4, centres_xy: np.ndarray | None = None):
        self.samples = samples
        self.mode = mode
        self.crop_size_px = crop_size_px
        self.output_size = output_size
        self.sigma_px = sigma_px
        self.jitter_px = jitter_px
        self.augmentation = augmentation if augmentation is not None else Augmentation(enabled=False)
        self.repeats = repeats
        self.seed = seed
        self.fixed_offsets = fixed_offsets
        self.max_jitter_fraction = max_jitter_fraction
        self.centres_xy = None if centres_xy is None else np.asarray(centres_xy, dtype=np.float64)
        self.epoch = 0
        self.items = [
            (sample_index, landmark)
            for _ in range(repeats)
            for sample_index in range(len(samples))
            for landmark in range(len(LANDMARKS))
        ]
        # Channels without gamma change are built once; augmented ones are rebuilt per item.
        self.zoom = output_size / crop_size_px
        self.plain_channels = [full_resolution_channels(mode, s.pixels, s.labels, zoom=self.zoom) for s in samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def crop_centre(self, rng: np.random.Generator, reference_xy: np.ndarray) -> np.ndarray:
        limit = self.max_jitter_fraction * self.crop_size_px
        offset = np.clip(rng.normal(0.0, self.jitter_px, size=2), -limit, limit) if self.jitter_px > 0 else 0.0
        return reference_xy + offset

    def __getitem__(self, index: int):
        sample_index, landmark = self.items[index]
        sample = self.samples[sample_index]
        augmentation = self.augmentation
        rng = sample_rng(self.seed, 0 if self.fixed_offsets else self.epoch, index)
        if self.centres_xy is not None:
            centre = self.centres_xy[sample_index, landmark]
        else:
            centre = self.crop_centre(rng, sample.points_xy[landmark])
        crop = Crop(float(centre[0]), float(centre[1]), float(self.crop_size_px), self.output_size)

        matrix = None
        channels = self.plain_channels[sample_index]
        if augmentation.enabled:
            matrix = augmentation.draw_affine(rng, self.output_size)
            gamma = 1.0
            if "image" in input_channel_names(self.mode):
                gamma = augmentation.draw_gamma(rng)
            if gamma != 1.0 or augmentation.mask_noise_px > 0:
                labels = noisy_labels(sample, augmentation, self.seed, self.epoch, index)
                channels = full_resolution_channels(self.mode, sample.pixels, labels, gamma, self.zoom)
        inputs = np.ascontiguousarray(fine_input(channels, crop, matrix).transpose(2, 0, 1))
        points = crop.forward_points(sample.points_xy)
        if matrix is not None:
            points = apply_affine(matrix, points)
        if augmentation.enabled:
            adjust_intensity(inputs, self.mode, augmentation, rng)

        heatmaps = gaussian_heatmaps(points, self.output_size, self.output_size, self.sigma_px)
        if augmentation.enabled and rng.random() < augmentation.flip_probability:
            inputs, heatmaps, points = flip_horizontal(inputs, heatmaps, points, input_swap(self.mode))
            landmark = LANDMARK_SWAP[landmark]
        return (torch.from_numpy(inputs), torch.from_numpy(heatmaps), landmark,
                torch.tensor(centre, dtype=torch.float64), index)
