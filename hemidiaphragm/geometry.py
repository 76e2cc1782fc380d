"""Exact coordinate maps between original images and network frames.

Convention used everywhere in this project: x is the column, y is the row, and the
centre of the top-left pixel is (0, 0). A pixel with index (row, col) therefore covers
[col - 0.5, col + 0.5] x [row - 0.5, row + 0.5].

With pixel centres at integers, resizing an image of width W to width w by a factor
s = w / W maps a point as x_new = (x + 0.5) * s - 0.5, which is what OpenCV's
``INTER_LINEAR`` resize assumes. Every map here has an exact inverse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Resize with the aspect ratio kept, then pad to a square ``size`` x ``size`` frame.

    The image is scaled by ``scale`` so that its longer side equals ``size``, then placed
    with ``pad_x`` columns on the left and ``pad_y`` rows on top (padding is split as
    evenly as possible, the extra pixel going to the right or bottom).

    Example:
        >>> box = Letterbox.fit(original_height=200, original_width=100, size=100)
        >>> box.scale, box.pad_x, box.pad_y
        (0.5, 25, 0)
    """

    original_height: int
    original_width: int
    size: int
    scale: float
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, original_height: int, original_width: int, size: int) -> "Letterbox":
        if original_height <= 0 or original_width <= 0 or size <= 0:
            raise ValueError(
                f"invalid letterbox sizes: original {original_width}x{original_height}, "
                f"target {size}; all must be positive"
            )
        scale = size / max(original_height, original_width)
        resized_width = min(size, max(1, round(original_width * scale)))
        resized_height = min(size, max(1, round(original_height * scale)))
        return cls(
            original_height=int(original_height),
            original_width=int(original_width),
            size=int(size),
            scale=float(scale),
            pad_x=(size - resized_width) // 2,
            pad_y=(size - resized_height) // 2,
        )

    @property
    def resized_width(self) -> int:
        return min(self.size, max(1, round(self.original_width * self.scale)))

    @property
    def resized_height(self) -> int:
        return min(self.size, max(1, round(self.original_height * self.scale)))

    # The effective per-axis factors differ from ``scale`` by rounding of the resized size.
    @property
    def scale_x(self) -> float:
        return self.resized_width / self.original_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.original_height

    def to_dict(self) -> dict:
        return asdict(self)

    def forward_points(self, xy_original_px: np.ndarray) -> np.ndarray:
        """Map (N, 2) points from original pixels to the letterboxed frame."""
        xy = np.asarray(xy_original_px, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + 0.5) * self.scale_x - 0.5 + self.pad_x
        out[..., 1] = (xy[..., 1] + 0.5) * self.scale_y - 0.5 + self.pad_y
        return out

    def inverse_points(self, xy_letterbox_px: np.ndarray) -> np.ndarray:
        """Map (N, 2) points from the letterboxed frame back to original pixels."""
        xy = np.asarray(xy_letterbox_px, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.pad_x + 0.5) / self.scale_x - 0.5
        out[..., 1] = (xy[..., 1] - self.pad_y + 0.5) / self.scale_y - 0.5
        return out

    def forward_image(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """Letterbox an (H, W) or (H, W, C) array; padding is zero."""
        if image.shape[0] != self.original_height or image.shape[1] != self.original_width:
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]} but this letterbox was fitted "
                f"to {self.original_width}x{self.original_height}"
            )
        resized = cv2.resize(
            image, (self.resized_width, self.resized_height), interpolation=interpolation
        )
        out = np.zeros((self.size, self.size) + image.shape[2:], dtype=image.dtype)
        out[
            self.pad_y : self.pad_y + self.resized_height,
            self.pad_x : self.pad_x + self.resized_width,
        ] = resized.reshape((self.resized_height, self.resized_width) + image.shape[2:])
        return out

    def forward_mask(self, mask: np.ndarray) -> np.ndarray:
        """Letterbox a label map with nearest-neighbour sampling (labels are not blended)."""
        return self.forward_image(mask, interpolation=cv2.INTER_NEAREST)

    def inverse_image(
        self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR
    ) -> np.ndarray:
        """Crop the padding off an (S, S[, C]) array and resize it to the original size.

        For class probabilities use linear interpolation and take the arg-max afterwards,
        which gives smoother boundaries than resizing a label map.
        """
        inner = array[
            self.pad_y : self.pad_y + self.resized_height,
            self.pad_x : self.pad_x + self.resized_width,
        ]
        return cv2.resize(
            np.ascontiguousarray(inner),
            (self.original_width, self.original_height),
            interpolation=interpolation,
        )


@dataclass(frozen=True)
class Crop:
    """A window of ``size`` x ``size`` original pixels, resampled to ``output_size``.

    The window is centred on ``(centre_x, centre_y)`` in original pixels and may extend
    past the image border, where it is padded with zeros. ``output_size / size`` is the
    zoom factor.
    """

    centre_x: float
    centre_y: float
    size: float
    output_size: int

    @property
    def zoom(self) -> float:
        return self.output_size / self.size

    @property
    def left(self) -> float:
        """Original x of the window's left edge (not a pixel centre)."""
        return self.centre_x - self.size / 2

    @property
    def top(self) -> float:
        return self.centre_y - self.size / 2

    def forward_points(self, xy_original_px: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_original_px, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.left) * self.zoom - 0.5
        out[..., 1] = (xy[..., 1] - self.top) * self.zoom - 0.5
        return out

    def inverse_points(self, xy_crop_px: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_crop_px, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + 0.5) / self.zoom + self.left
        out[..., 1] = (xy[..., 1] + 0.5) / self.zoom + self.top
        return out

    def affine_matrix(self) -> np.ndarray:
        """Return the 2x3 matrix taking original pixel centres to crop pixel centres."""
        zoom = self.zoom
        return np.array(
            [
                [zoom, 0.0, -self.left * zoom - 0.5],
                [0.0, zoom, -self.top * zoom - 0.5],
            ],
            dtype=np.float64,
        )

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Cut the window out of an (H, W[, C]) array, zero outside the image."""
        return cv2.warpAffine(
            image,
            self.affine_matrix(),
            (self.output_size, self.output_size),
            flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
