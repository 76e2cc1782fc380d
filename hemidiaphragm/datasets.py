"""Dataset layouts on disk and how their masks are encoded.

A dataset folder in the standard layout has ``images/<id>.<ext>`` and, for labelled sets,
``masks/<id>.png``. How the mask encodes the lungs differs between sources, so each
known dataset has a preset; ``--mask-encoding`` on the command line overrides it:

- ``labels:R,L``: a label map where value R is the patient-right lung and L the left
  (JSRT SCR masks use ``labels:150,200``; masks this project exports use ``labels:1,2``);
- ``combined``: one mask of both lungs, thresholded at 127 and split into right and left
  by connected components (the Shenzhen masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemidiaphragm.imaging import read_lung_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom", ".img")

PRESET_MASK_ENCODINGS = {
    "jsrt224": "labels:150,200",
    "shenzhen512": "combined",
}
DEFAULT_MASK_ENCODING = "labels:1,2"


@dataclass(frozen=True)
class MaskEncoding:
    right_value: int | None
    left_value: int | None

    @classmethod
    def parse(cls, text: str) -> "MaskEncoding":
        if text == "combined":
            return cls(None, None)
        if text.startswith("labels:"):
            try:
                right, left = (int(part) for part in text[len("labels:"):].split(","))
            except ValueError:
                raise ValueError(
                    f"invalid mask encoding {text!r}; expected 'labels:R,L' with two integers "
                    "or 'combined'"
                ) from None
            return cls(right, left)
        raise ValueError(f"invalid mask encoding {text!r}; expected 'labels:R,L' or 'combined'")

    def __str__(self) -> str:
        if self.right_value is None:
            return "combined"
        return f"labels:{self.right_value},{self.left_value}"

    def read(self, path: str | Path) -> np.ndarray:
        return read_lung_mask(path, self.right_value, self.left_value)


def default_mask_encoding(data_root: str | Path) -> str:
    """Return the preset for a known dataset folder name, else ``labels:1,2``."""
    return PRESET_MASK_ENCODINGS.get(Path(data_root).resolve().name, DEFAULT_MASK_ENCODING)


def find_file(folder: Path, image_id: str, suffixes=IMAGE_SUFFIXES) -> Path:
    """Return ``folder/<image_id><suffix>`` for the first suffix that exists."""
    for suffix in suffixes:
        for candidate in (folder / f"{image_id}{suffix}", folder / f"{image_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"no file for id {image_id!r} in {folder} (looked for {', '.join(suffixes)})"
    )


def list_image_ids(images_dir: str | Path) -> list[str]:
    folder = Path(images_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    ids = sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not ids:
        raise FileNotFoundError(f"image folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    return ids
