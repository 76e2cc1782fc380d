"""Heatmap networks, their losses, checkpoint loading and two-stage inference.

A heatmap checkpoint's ``model_config`` contains everything needed to rebuild the network
and preprocess its input, so inference needs the checkpoint alone:

- common: ``task`` (``landmark_heatmap``), ``stage`` (``coarse`` or ``fine``), the
  :func:`hemidiaphragm.models.build_unet` keys, ``input_mode``, ``input_channels``,
  ``landmarks`` (channel order), ``sigma_px`` (Gaussian sigma in heatmap pixels),
  ``heatmap_stride`` (always 1: heatmaps have the input's resolution), ``normalisation``,
  ``band_radius_512`` and ``min_peak`` (decoding defaults);
- coarse: ``input_size`` (side of the letterboxed square, pixels);
- fine: ``crop_size_px`` (window side in original pixels) and ``crop_output_size``
  (side of the resampled crop, pixels), ``jitter_px`` (training offset sigma).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hemidiaphragm.checkpoint import load_checkpoint
from hemidiaphragm.geometry import Crop, Letterbox
from hemidiaphragm.heatmaps import (
    LANDMARK_LUNG_LABELS,
    LANDMARKS,
    decode_heatmap,
    landmark_flags,
    lower_border_band,
)
from hemidiaphragm.landmark_data import coarse_input, fine_input, full_resolution_channels
from hemidiaphragm.models import build_unet

TASK = "landmark_heatmap"
STAGES = ("coarse", "fine")
LOSSES = ("mse", "adaptive_wing")


def band_radius_px(band_radius_512: float, height: int, width: int) -> float:
    """Convert a radius in the 512-pixel frame to original pixels of an image."""
    return band_radius_512 * max(height, width) / 512


# ---------------------------------------------------------------------------------------------
# Losses.


def adaptive_wing_loss(
    prediction: torch.Tensor, target: torch.Tensor, omega: float = 14.0, theta: float = 0.5,
    epsilon: float = 1.0, alpha: float = 2.1, foreground_weight: float = 10.0,
) -> torch.Tensor:
    """Adaptive wing loss with a foreground weight map (Wang, Bo and Fuxin, ICCV 2019).

    Near the Gaussian peaks (target close to 1) the loss behaves like a log loss that keeps a
    large gradient for small errors. On the background (target 0) it is nearly quadratic.
    Pixels in a 3x3 dilation of ``target > 0.2`` are weighted by ``foreground_weight + 1``.
    Shapes: prediction and target (B, K, H, W).
    """
    difference = (prediction - target).abs()
    power = alpha - target
    ratio = theta / epsilon
    linear_slope = omega * power * ratio ** (power - 1) / (epsilon * (1 + ratio**power))
    linear_offset = theta * linear_slope - omega * torch.log1p(ratio**power)
    losses = torch.where(
        difference < theta,
        omega * torch.log1p((difference / epsilon) ** power),
        linear_slope * difference - linear_offset,
    )
    foreground = F.max_pool2d((target > 0.2).float(), kernel_size=3, stride=1, padding=1)
    return (losses * (1 + foreground_weight * foreground)).mean()


def heatmap_loss(name: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Compute the named loss (``mse`` or ``adaptive_wing``) of (B, K, H, W) heatmaps."""
    if name == "mse":
        return F.mse_loss(prediction, target)
    if name == "adaptive_wing":
        return adaptive_wing_loss(prediction, target)
    raise ValueError(f"unknown heatmap loss {name!r}; choose from {', '.join(LOSSES)}")


# ---------------------------------------------------------------------------------------------
# Loading a stage and decoding its output.


@dataclass
class HeatmapStage:
    """A trained heatmap network with its configuration."""

    model: torch.nn.Module
    config: dict
    device: str
    checkpoint_path: Path

    @property
    def stage(self) -> str:
        return self.config["stage"]

    @property
    def input_mode(self) -> str:
        return self.config["input_mode"]

    @torch.no_grad()
    def heatmaps(self, inputs: np.ndarray) -> np.ndarray:
        """Run the network on (B, C, S, S) inputs and return (B, K, S, S) heatmaps."""
        batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
        return self.model(batch).float().cpu().numpy()


def load_heatmap_stage(path: str | Path, device: str = "cpu", expected_stage: str | None = None) -> HeatmapStage:
    """Rebuild a heatmap network from its checkpoint alone.

    Raises:
        ValueError: the checkpoint is not a heatmap checkpoint, or not of ``expected_stage``.
    """
    payload = load_checkpoint(path, map_location=device)
    config = payload["model_config"]
    if config.get("task") != TASK:
        raise ValueError(f"checkpoint {path} is a {config.get('task')!r} checkpoint, not a {TASK!r} one")
    if expected_stage is not None and config.get("stage") != expected_stage:
        raise ValueError(
            f"checkpoint {path} is a stage {config.get('stage')!r} checkpoint, but a {expected_stage!r} "
            "one was expected; check the order of the coarse and fine checkpoints"
        )
    if tuple(config.get("landmarks", ())) != LANDMARKS:
        raise ValueError(f"checkpoint {path} predicts {config.get('landmarks')}, expected {list(LANDMARKS)}")
    model = build_unet(config)
    model.load_state_dict(payload["model_state"])
    model.to(device).eval()
    return HeatmapStage(model=model, config=config, device=device, checkpoint_path=Path(path))


@dataclass
class DecodedLandmarks:
    """Points of all landmarks in original pixels, with peak values and flags."""

    xy: np.ndarray  # (K, 2)
    peaks: np.ndarray  # (K,)
    flags: list[list[str]] = field(default_factory=list)


def lung_presence(labels: np.ndarray | None) -> list[bool | None]:
    if labels is None:
        return [None] * len(LANDMARKS)
    return [bool(np.any(labels == label)) for label in LANDMARK_LUNG_LABELS]


def decode_coarse(
    heatmaps: np.ndarray, box: Letterbox, bands: np.ndarray | None, lung_present: list[bool | None],
    min_peak: float,
) -> DecodedLandmarks:
    """Decode (K, S, S) stage-1 heatmaps and map the points back to original pixels.

    ``bands`` are (K, H, W) lung bands in original pixels, or None for no constraint.
    """
    points, peaks, flags = [], [], []
    for landmark in range(len(LANDMARKS)):
        allowed = None
        if bands is not None:
            allowed = box.forward_mask(bands[landmark].astype(np.uint8)) > 0
        decoded = decode_heatmap(heatmaps[landmark], allowed)
        points.append((decoded.x, decoded.y))
        peaks.append(decoded.peak)
        flags.append(landmark_flags(decoded, lung_present[landmark], min_peak))
    xy = box.inverse_points(np.array(points))
    return DecodedLandmarks(xy=xy, peaks=np.array(peaks), flags=flags)


def decode_fine(
    heatmap: np.ndarray, crop: Crop, band: np.ndarray | None, lung_present: bool | None, min_peak: float,
) -> tuple[np.ndarray, float, list[str]]:
    """Decode one stage-2 channel and map the point from the crop back to original pixels."""
    allowed = None
    if band is not None:
        allowed = crop.apply(band.astype(np.uint8), interpolation=cv2.INTER_NEAREST) > 0
    decoded = decode_heatmap(heatmap, allowed)
    xy = crop.inverse_points(np.array([decoded.x, decoded.y]))
    return xy, decoded.peak, landmark_flags(decoded, lung_present, min_peak)


@dataclass
class LandmarkPrediction:
    """Both stages' results for one image, in original pixels."""

    stage1: DecodedLandmarks
    final: DecodedLandmarks
    constrained: bool


class TwoStagePredictor:
    """Stage 1 on the letterboxed image, then stage 2 on a crop around each stage-1 point.

    Args:
        coarse: the stage-1 network.
        fine: the stage-2 network, or None for stage 1 alone (``final`` is then stage 1).
        constrain: search each landmark only in the band around its lung's lower border.
            This needs a mask. Without one the search is unconstrained and no band flag is set.
        band_radius_512: band radius in pixels of the 512-pixel frame; default from the
            coarse checkpoint.
        min_peak: a peak below this value is flagged ``low_peak``; default from the checkpoint.
    """

    def __init__(self, coarse: HeatmapStage, fine: HeatmapStage | None = None, constrain: bool = True,
                 band_radius_512: float | None = None, min_peak: float | None = None):
        if coarse.stage != "coarse":
            raise ValueError(f"{coarse.checkpoint_path} is not a stage-1 (coarse) checkpoint")
        if fine is not None and fine.stage != "fine":
            raise ValueError(f"{fine.checkpoint_path} is not a stage-2 (fine) checkpoint")
        self.coarse = coarse
        self.fine = fine
        self.constrain = constrain
        self.band_radius_512 = float(band_radius_512 if band_radius_512 is not None
                                     else coarse.config["band_radius_512"])
        self.min_peak = float(min_peak if min_peak is not None else coarse.config["min_peak"])

    @property
    def needs_mask(self) -> bool:
        modes = [self.coarse.input_mode] + ([self.fine.input_mode] if self.fine is not None else [])
        return any("mask" in mode for mode in modes)

    def bands(self, labels: np.ndarray | None) -> np.ndarray | None:
        if labels is None or not self.constrain:
            return None
        radius = band_radius_px(self.band_radius_512, labels.shape[0], labels.shape[1])
        return np.stack([lower_border_band(labels, label, radius) for label in LANDMARK_LUNG_LABELS])

    def predict(self, pixels: np.ndarray, labels: np.ndarray | None = None) -> LandmarkPrediction:
        """Locate the landmarks in one radiograph (float32 (H, W) in [0, 1]) with its lung labels."""
        bands = self.bands(labels)
        present = lung_presence(labels) if self.constrain else [None] * len(LANDMARKS)

        size = int(self.coarse.config["input_size"])
        channels, box = coarse_input(self.coarse.input_mode, pixels, labels, size)
        heatmaps = self.coarse.heatmaps(channels.transpose(2, 0, 1)[None])[0]
        stage1 = decode_coarse(heatmaps, box, bands, present, self.min_peak)
        if self.fine is None:
            return LandmarkPrediction(stage1=stage1, final=stage1, constrained=bands is not None)

        config = self.fine.config
        zoom = int(config["crop_output_size"]) / float(config["crop_size_px"])
        full = full_resolution_channels(self.fine.input_mode, pixels, labels, zoom=zoom)
        crops = [
            Crop(float(x), float(y), float(config["crop_size_px"]), int(config["crop_output_size"]))
            for x, y in stage1.xy
        ]
        batch = np.stack([fine_input(full, crop).transpose(2, 0, 1) for crop in crops])
        fine_heatmaps = self.fine.heatmaps(batch)  # (K crops, K channels, O, O)

        points, peaks, flags = [], [], []
        for landmark, crop in enumerate(crops):
            band = bands[landmark] if bands is not None else None
            xy, peak, landmark_flag = decode_fine(
                fine_heatmaps[landmark, landmark], crop, band, present[landmark], self.min_peak
            )
            points.append(xy)
            peaks.append(peak)
            flags.append(landmark_flag)
        final = DecodedLandmarks(xy=np.array(points), peaks=np.array(peaks), flags=flags)
        return LandmarkPrediction(stage1=stage1, final=final, constrained=bands is not None)
