"""Overlays of dome points on radiographs and the error distribution plot.

Colours (BGR in OpenCV): reference points are green crosses, final predictions red
circles, stage-1 points orange and the geometric baseline magenta. The patient-right lung
outline is cyan and the patient-left one yellow. Points are drawn with sub-pixel precision.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG

COLOURS = {
    "reference": (0, 200, 0),
    "prediction": (0, 0, 255),
    "stage1": (0, 140, 255),
    "geometric": (255, 0, 255),
    "right_lung": (255, 255, 0),
    "left_lung": (0, 255, 255),
}
# cv2 drawing functions take coordinates as integers scaled by 2**SHIFT_BITS.
SHIFT_BITS = 4
MIN_OVERLAY_SIDE = 512


def write_png(path: Path, image: np.ndarray) -> None:
    """Encode ``image`` as PNG and move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode the overlay {path} as PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, path)


def draw_overlay(
    pixels: np.ndarray,
    points: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    caption: str = "",
) -> np.ndarray:
    """Draw point sets on a radiograph, upscaled so the short side is at least 512 pixels.

    Args:
        pixels: float (H, W) radiograph in [0, 1].
        points: name -> (K, 2) points in original pixels; names are keys of ``COLOURS``.
            NaN points are skipped.
        labels: optional lung labels (H, W) whose outlines are drawn.
        caption: text written in the top-left corner.

    Returns:
        uint8 BGR image.
    """
    height, width = pixels.shape
    zoom = max(1, int(np.ceil(MIN_OVERLAY_SIDE / min(height, width))))
    grey = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    canvas = cv2.cvtColor(cv2.resize(grey, (width * zoom, height * zoom), interpolation=cv2.INTER_LINEAR),
                          cv2.COLOR_GRAY2BGR)
    if labels is not None:
        for value, name in ((RIGHT_LUNG, "right_lung"), (LEFT_LUNG, "left_lung")):
            lung = cv2.resize((labels == value).astype(np.uint8), (width * zoom, height * zoom),
                              interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(lung, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, COLOURS[name], 1)

    radius = max(3, zoom * 2) << SHIFT_BITS
    for name, xy in points.items():
        colour = COLOURS[name]
        for x, y in np.asarray(xy, dtype=np.float64).reshape(-1, 2):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            # A pixel centre at original x sits at (x + 0.5) * zoom - 0.5 in the upscaled image.
            centre = (int(round(((x + 0.5) * zoom - 0.5) * (1 << SHIFT_BITS))),
                      int(round(((y + 0.5) * zoom - 0.5) * (1 << SHIFT_BITS))))
            if name == "reference":
                cv2.drawMarker(canvas, (centre[0] >> SHIFT_BITS, centre[1] >> SHIFT_BITS), colour,
                               cv2.MARKER_CROSS, max(9, zoom * 5), 1)
            else:
                cv2.circle(canvas, centre, radius, colour, 1, cv2.LINE_AA, SHIFT_BITS)
    if caption:
        cv2.putText(canvas, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def plot_error_distribution(errors: dict[str, np.ndarray], out_png: Path, unit_label: str) -> None:
    """Plot the cumulative distribution of radial errors per method into one PNG.

    ``errors`` maps a method name to its errors (any shape; NaN values are left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left_axis, right_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(errors)
    finite = [np.sort(np.asarray(errors[name], dtype=np.float64).ravel()) for name in names]
    finite = [values[np.isfinite(values)] for values in finite]
    for name, values in zip(names, finite):
        if values.size:
            left_axis.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=name)
    left_axis.set_xlabel(f"radial error ({unit_label})")
    left_axis.set_ylabel("fraction of points")
    left_axis.grid(alpha=0.3)
    if any(values.size for values in finite):
        left_axis.legend(fontsize=7)
    else:
        left_axis.text(0.5, 0.5, "no points returned", ha="center", va="center", transform=left_axis.transAxes)
    right_axis.boxplot([values if values.size else [np.nan] for values in finite], orientation="horizontal")
    right_axis.set_yticks(range(1, len(names) + 1), names, fontsize=7)
    right_axis.set_xlabel(f"radial error ({unit_label})")
    right_axis.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)
