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

    Raises:
        ValueError: the encoder name is unknown to segmentation-models-pytorch.
    """
    depth = int(config.get("encoder_depth", 5))
    decoder_channels = config.get("decoder_channels") or [256, 128, 64, 32, 16][:depth]
    encoder_name = config["encoder_name"]
    try:
        return smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=config.get("encoder_weights"),
            encoder_depth=depth,
            decoder_channels=list(decoder_channels),
            in_channels=int(config["in_channels"]),
            classes=int(config["classes"]),
        )
    except KeyError as error:  # segmentation-models-pytorch raises KeyError for an unknown encoder name
        raise ValueError(f"--encoder {encoder_name!r} is not a segmentation-models-pytorch encoder; "
                         "choose one such as resnet18, mobilenet_v2 or a timm encoder as tu-<name>") from error


def check_unet_input_size(flag: str, size: int, depth: int) -> None:
    """Raise ValueError unless ``size`` is a positive multiple of ``2 ** depth``, as a U-Net of that depth needs."""
    factor = 2**depth
    if size < factor or size % factor:
        raise ValueError(f"{flag} {size} must be a positive multiple of {factor}, because the U-Net halves it "
                         f"{depth} times (for example {4 * factor} or {8 * factor})")
