"""Lung segmentation data, loss and inference shared by the training and test scripts.

Inputs are letterboxed (aspect ratio kept, zero padding) to ``input_size`` squares; the
network predicts three classes (0 background, 1 patient-right lung, 2 patient-left lung)
and predictions are mapped back to the original size through the exact inverse.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hemidiaphragm.checkpoint import load_checkpoint
from hemidiaphragm.datasets import MaskEncoding, find_file
from hemidiaphragm.geometry import Letterbox
from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG, LungMaskWarning, read_image
from hemidiaphragm.models import build_unet
from hemidiaphragm.postprocess import postprocess

NUM_CLASSES = 3


def normalise(pixels: np.ndarray) -> np.ndarray:
    """Standardise one image to zero mean and unit variance (per image, float32)."""
    pixels = pixels.astype(np.float32)
    return (pixels - pixels.mean()) / max(float(pixels.std()), 1e-6)


def augmentation() -> A.Compose:
    """Radiograph augmentation: mild affine, brightness/contrast/gamma and noise.

    Seed it with ``set_random_seed`` before each epoch so that a resumed run draws the
    same augmentations as an uninterrupted one.
    """
    return A.Compose([
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-8, 8),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.7),
        A.RandomGamma(gamma_limit=(80, 125), p=0.5),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
    ])


def flip_sides(labels: np.ndarray) -> np.ndarray:
    swapped = labels.copy()
    swapped[labels == RIGHT_LUNG] = LEFT_LUNG
    swapped[labels == LEFT_LUNG] = RIGHT_LUNG
    return swapped


def check_sides(items: list, mask_encoding: MaskEncoding) -> None:
    """Raise ValueError when no mask has one of the lungs, or every mask has them swapped.

    ``items`` are ``(image_id, image, labels)`` tuples. Single masks with these faults only warn
    (``read_lung_mask``), but in every mask at once they mean a wrong ``--mask-encoding``.
    """
    advice = f"under mask encoding '{mask_encoding}'; check --mask-encoding against the mask values"
    for side, name in ((RIGHT_LUNG, "patient-right"), (LEFT_LUNG, "patient-left")):
        if not any((labels == side).any() for _, _, labels in items):
            raise ValueError(f"none of the {len(items)} masks has a {name} lung {advice}")
    swapped = 0
    for _, _, labels in items:
        right_columns, left_columns = np.nonzero(labels == RIGHT_LUNG)[1], np.nonzero(labels == LEFT_LUNG)[1]
        if right_columns.size and left_columns.size and right_columns.mean() > left_columns.mean():
            swapped += 1
    if swapped == len(items):
        raise ValueError(f"in all {len(items)} masks the patient-right lung lies to the image right of the "
                         f"patient-left lung {advice} (the two values are probably in the wrong order)")


class SegmentationDataset(torch.utils.data.Dataset):
    """Letterboxed images and label maps, held in memory.

    With ``augment`` the samples are augmented, and with ``flip_probability`` > 0 also
    mirrored left-right; a mirrored radiograph shows the patient's right lung on the
    image right, so the right and left labels are swapped with it. Call
    ``set_epoch`` before each epoch: it reseeds both from ``(seed, epoch)``.
    """

    def __init__(self, data_root: Path, image_ids: list[str], input_size: int, mask_encoding: MaskEncoding,
                 augment: bool = False, flip_probability: float = 0.0, seed: int = 0):
        self.transform = augmentation() if augment else None
        self.flip_probability = flip_probability
        self.seed = seed
        self.flip_rng = np.random.default_rng([seed, 0])
        self.items = []
        # Mask warnings are held back until every mask is read, because with a wrong encoding each
        # mask would warn and the single error raised below is clearer than hundreds of warnings.
        with warnings.catch_warnings(record=True) as mask_warnings:
            warnings.simplefilter("always", LungMaskWarning)
            for image_id in image_ids:
                radiograph = read_image(find_file(data_root / "images", image_id))
                labels = mask_encoding.read(find_file(data_root / "masks", image_id, (".png", ".gif", ".bmp")))
                if labels.shape != radiograph.pixels.shape:
                    raise ValueError(
                        f"mask of {image_id} is {labels.shape[1]}x{labels.shape[0]} but the image is "
                        f"{radiograph.original_width}x{radiograph.original_height}; masks must match their images"
                    )
                box = Letterbox.fit(radiograph.original_height, radiograph.original_width, input_size)
                self.items.append((image_id, box.forward_image(radiograph.pixels), box.forward_mask(labels)))
        no_lung = [image_id for image_id, _, labels in self.items if not labels.any()]
        if no_lung:
            raise ValueError(
                f"{len(no_lung)} of {len(self.items)} masks contain no lung under mask encoding "
                f"'{mask_encoding}' (first: {no_lung[:3]}); check --mask-encoding against the mask values"
            )
        check_sides(self.items, mask_encoding)
        for record in mask_warnings:
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)

    def set_epoch(self, epoch: int) -> None:
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 100_003 + epoch)
        self.flip_rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        _, image, labels = self.items[index]
        if self.transform is not None:
            out = self.transform(image=image, mask=labels)
            image, labels = out["image"], out["mask"]
        if self.flip_probability > 0 and self.flip_rng.random() < self.flip_probability:
            image = image[:, ::-1]
            labels = flip_sides(labels[:, ::-1])
        image = normalise(np.clip(image, 0.0, 1.0))
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(labels.astype(np.int64))


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice averaged over the two lung classes.

    Shapes: logits (B, 3, S, S), target (B, S, S) with labels 0..2.
    """
    cross_entropy = F.cross_entropy(logits, target)
    probabilities = logits.softmax(dim=1)[:, 1:]
    one_hot = F.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].float()
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1.0) / (total + 1.0)
    return cross_entropy + (1 - dice).mean()


def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice per image and lung in the letterboxed frame, shape (B, 2).

    This is the validation score used for early stopping. It is computed at network
    resolution, so it is an approximation of the Dice at original resolution that
    ``segmentation_test/evaluate.py`` reports.
    """
    prediction = logits.argmax(dim=1)
    scores = []
    for label in (RIGHT_LUNG, LEFT_LUNG):
        predicted = prediction == label
        truth = target == label
        intersection = (predicted & truth).sum(dim=(1, 2)).float()
        total = predicted.sum(dim=(1, 2)).float() + truth.sum(dim=(1, 2)).float()
        scores.append(torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(scores, dim=1)


@dataclass
class Segmenter:
    """A trained segmentation network with the preprocessing it was trained with."""

    model: torch.nn.Module
    config: dict
    device: str

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @torch.no_grad()
    def predict_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Return class probabilities (3, H, W) at the original size of ``pixels`` (H, W)."""
        box = Letterbox.fit(pixels.shape[0], pixels.shape[1], self.input_size)
        image = normalise(box.forward_image(pixels.astype(np.float32)))
        batch = torch.from_numpy(image)[None, None].to(self.device)
        probabilities = self.model(batch).softmax(dim=1)[0].permute(1, 2, 0).cpu().numpy()  # (S, S, 3)
        original = box.inverse_image(probabilities, interpolation=cv2.INTER_LINEAR)  # (H, W, 3)
        return np.ascontiguousarray(original.transpose(2, 0, 1))

    def predict(self, pixels: np.ndarray, postprocess_steps: tuple[str, ...] = ()) -> np.ndarray:
        """Return labels (H, W) uint8: 0 background, 1 patient-right, 2 patient-left lung."""
        labels = self.predict_probabilities(pixels).argmax(axis=0).astype(np.uint8)
        return postprocess(labels, postprocess_steps)


def load_segmenter(checkpoint_path: str | Path, device: str = "cpu") -> Segmenter:
    """Rebuild a segmentation network from a checkpoint alone."""
    payload = load_checkpoint(checkpoint_path, map_location=device)
    config = payload["model_config"]
    if config.get("task") != "lung_segmentation":
        raise ValueError(
            f"checkpoint {checkpoint_path} is a {config.get('task')!r} checkpoint, not a lung segmentation one"
        )
    model = build_unet(config)
    model.load_state_dict(payload["model_state"])
    model.to(device).eval()
    return Segmenter(model=model, config=config, device=device)
