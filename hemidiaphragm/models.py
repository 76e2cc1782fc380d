"""Network construction from a plain config dict stored in every checkpoint."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch


def build_unet(config: dict) -> torch.nn.Module:
    """Build a U-Net from segmentation-models-pytorch.

    ``config`` keys: ``encoder_name`` (for example ``resnet18``), ``in_channels``,
    ``classes``, and optionally ``encoder_depth`` (default 5), ``decoder_channels``
    (one per encoder level) and ``encoder_weights`` (None: random initialisation, which
    needs no download).
    """
    depth = int(config.get("encoder_depth", 5))
    decoder_channels = config.get("decoder_channels") or [256, 128, 64, 32, 16][:depth]
    return smp.Unet(
        encoder_name=config["encoder_name"],
        encoder_weights=config.get("encoder_weights"),
        encoder_depth=depth,
        decoder_channels=list(decoder_channels),
        in_channels=int(config["in_channels"]),
        classes=int(config["classes"]),
    )
