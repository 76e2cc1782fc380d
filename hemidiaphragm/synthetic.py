"""Generate the synthetic chest-radiograph demo set, deterministically from a seed.

Stage: data (demo only). The images are drawn, not acquired. They are not radiographs, and
no result on them tells anything about real patients. They exist so that the whole
pipeline runs on a fresh machine without downloading anything, and so that tests can
check landmark code against reference points that are known exactly.

Each image has two lung fields on a grey body silhouette, with a brighter mediastinum,
heart and spine, rib-like stripes, lung texture and noise, and the word SYNTHETIC in the
top-left corner. The lower border of each lung (the diaphragmatic arc) is an analytic
curve between the costophrenic angle ``cp`` (the lowest lateral point) and the
cardiophrenic corner ``cardio``::

    x(t) = cp_x + t * (cardio_x - cp_x)
    y(t) = cp_y + t * (cardio_y - cp_y) - dome_height_px * f(t),    t in [0, 1]
    f(t) = t**a * (1 - t)**b / (t0**a * (1 - t0)**b),               t0 = a / (a + b)

Every point of the arc sits ``dome_height_px * f(t)`` pixels vertically above the chord
from ``cp`` to ``cardio``, so its perpendicular distance to the chord is that times a
constant (the cosine of the chord's slope). The dome, defined in this project as the arc
point furthest above the chord, is therefore exactly the point at ``t0``.

Files written under ``--output-dir`` (the standard dataset layout):

- ``images/synthetic_0001.png`` ...: 8-bit grey images of ``--size`` x ``--size`` pixels;
- ``masks/synthetic_0001.png`` ...: label maps, 0 background, 1 patient-right lung (image
  left), 2 patient-left lung (mask encoding ``labels:1,2``); a pixel is lung when its
  centre lies inside the lung outline;
- ``landmarks.csv``: the same wide layout as the real sets' ``landmarks.csv`` (image_id,
  then right_/left_ dome, cp and cardio x and y, in pixels with (0, 0) at the centre of
  the top-left pixel);
- ``shapes.csv``: the arc parameters (a, b, dome height) behind each row of landmarks.csv;
- ``README.txt``: says that the set is synthetic and how it was made.

The images carry no pixel spacing, so errors on this set are in pixels only.

Example:
    python -m hemidiaphragm.synthetic --output-dir results/synthetic/data --count 60 --size 256 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG
from hemidiaphragm.runs import atomic_write_text, run_script, seed_value

LOGGER = logging.getLogger("hemidiaphragm.synthetic")

ID_PREFIX = "synthetic_"
MASK_ENCODING = "labels:1,2"
LANDMARK_COLUMNS = [
    "image_id",
    "right_dome_x", "right_dome_y", "right_cp_x", "right_cp_y", "right_cardio_x", "right_cardio_y",
    "left_dome_x", "left_dome_y", "left_cp_x", "left_cp_y", "left_cardio_x", "left_cardio_y",
]
# Samples along each part of a lung outline. Even on a 1024 px image they are under 2 px
# apart, which keeps the polygon within an estimated 0.03 px of the analytic curve.
OUTLINE_SAMPLES = 400


@dataclass(frozen=True)
class LungShape:
    """One lung field in image pixels: outline corners and the diaphragmatic arc.

    ``side`` is the patient side ("right" is on the image left). ``apex``, ``cp`` and
    ``cardio`` are (x, y) points. ``rise_exponent`` (a) and ``fall_exponent`` (b) set where
    along the chord the dome sits. ``dome_height_px`` is the dome's vertical height above
    the chord, and ``heart_bulge_px`` is how far the heart border bows laterally.
    """

    side: str
    apex: tuple[float, float]
    cp: tuple[float, float]
    cardio: tuple[float, float]
    dome_height_px: float
    rise_exponent: float
    fall_exponent: float
    heart_bulge_px: float

    @property
    def dome_fraction(self) -> float:
        """Chord parameter t0 of the dome, between 0 (cp) and 1 (cardio)."""
        return self.rise_exponent / (self.rise_exponent + self.fall_exponent)

    def arc_offset(self, t: np.ndarray) -> np.ndarray:
        """Vertical height of the arc above the chord at chord parameters ``t``, in pixels."""
        t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
        a, b, t0 = self.rise_exponent, self.fall_exponent, self.dome_fraction
        peak = t0**a * (1.0 - t0) ** b
        return self.dome_height_px * (t**a * (1.0 - t) ** b) / peak

    def arc_points(self, t: np.ndarray) -> np.ndarray:
        """Points (N, 2) of the diaphragmatic arc at chord parameters ``t``, as (x, y)."""
        t = np.asarray(t, dtype=np.float64)
        cp = np.asarray(self.cp)
        cardio = np.asarray(self.cardio)
        points = cp[None, :] + t[:, None] * (cardio - cp)[None, :]
        points[:, 1] -= self.arc_offset(t)
        return points

    def dome(self) -> tuple[float, float]:
        """Return the arc point furthest above the cp-cardio chord, as (x, y)."""
        x, y = self.arc_points(np.array([self.dome_fraction]))[0]
        return float(x), float(y)

    def outline(self) -> np.ndarray:
        """Closed outline (N, 2) as (x, y): lateral wall, diaphragmatic arc, medial wall."""
        apex_x, apex_y = self.apex
        cp_x, cp_y = self.cp

        # Lateral wall: a quarter ellipse from the apex (horizontal tangent) down to the
        # costophrenic angle (vertical tangent), so the angle is the lowest lateral point.
        theta = np.linspace(0.0, np.pi / 2, OUTLINE_SAMPLES, endpoint=False)
        lateral = np.stack(
            [apex_x + (cp_x - apex_x) * np.sin(theta), cp_y - (cp_y - apex_y) * np.cos(theta)], axis=1
        )

        arc = self.arc_points(np.linspace(0.0, 1.0, OUTLINE_SAMPLES, endpoint=False))

        # Medial wall: a cubic Bezier from the cardiophrenic corner up the heart border and
        # the mediastinum to the apex. ``lateral_sign`` points away from the midline.
        lateral_sign = np.sign(cp_x - self.cardio[0])
        height = cp_y - apex_y
        controls = np.array([
            self.cardio,
            (self.cardio[0] + lateral_sign * self.heart_bulge_px, self.cardio[1] - 0.35 * height),
            (apex_x - lateral_sign * 0.12 * height, apex_y + 0.25 * height),
            self.apex,
        ])
        s = np.linspace(0.0, 1.0, OUTLINE_SAMPLES, endpoint=False)[:, None]
        medial = (
            (1 - s) ** 3 * controls[0] + 3 * (1 - s) ** 2 * s * controls[1]
            + 3 * (1 - s) * s**2 * controls[2] + s**3 * controls[3]
        )
        return np.concatenate([lateral, arc, medial], axis=0)

    def landmarks(self) -> dict[str, float]:
        """Reference points as landmarks.csv columns for this side."""
        dome_x, dome_y = self.dome()
        return {
            f"{self.side}_dome_x": dome_x, f"{self.side}_dome_y": dome_y,
            f"{self.side}_cp_x": float(self.cp[0]), f"{self.side}_cp_y": float(self.cp[1]),
            f"{self.side}_cardio_x": float(self.cardio[0]), f"{self.side}_cardio_y": float(self.cardio[1]),
        }


def sample_lungs(rng: np.random.Generator, size: int) -> tuple[LungShape, LungShape]:
    """Draw the two lung shapes of one image; ranges are fractions of the image size."""

    def uniform(low: float, high: float) -> float:
        return float(rng.uniform(low, high)) * size

    right_cp = (uniform(0.09, 0.14), uniform(0.74, 0.80))
    right = LungShape(
        side="right",
        apex=(uniform(0.31, 0.35), uniform(0.09, 0.13)),
        cp=right_cp,
        # The right cardiophrenic corner sits a little above the right costophrenic angle.
        cardio=(uniform(0.40, 0.43), right_cp[1] - uniform(0.04, 0.09)),
        dome_height_px=uniform(0.05, 0.08),
        rise_exponent=float(rng.uniform(1.6, 2.6)),
        fall_exponent=float(rng.uniform(1.6, 2.6)),
        heart_bulge_px=uniform(0.02, 0.04),
    )
    left_cp = (uniform(0.86, 0.91), uniform(0.76, 0.83))
    left = LungShape(
        side="left",
        apex=(uniform(0.65, 0.69), uniform(0.10, 0.14)),
        cp=left_cp,
        # The heart pushes the left cardiophrenic corner further up and out.
        cardio=(uniform(0.62, 0.66), left_cp[1] - uniform(0.08, 0.13)),
        dome_height_px=uniform(0.04, 0.07),
        rise_exponent=float(rng.uniform(1.6, 2.6)),
        fall_exponent=float(rng.uniform(1.6, 2.6)),
        heart_bulge_px=uniform(0.05, 0.08),
    )
    return right, left


def rasterize(outline: np.ndarray, size: int) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centres lie inside ``outline``.

    Scanline fill with the even-odd rule: on each pixel row y, the crossings of the
    outline's edges with the line at height y bound the inside runs. An edge counts when
    exactly one of its ends is at or above y, so a vertex on the line is counted once.
    """
    start_x, start_y = outline[:, 0], outline[:, 1]
    end_x, end_y = np.roll(start_x, -1), np.roll(start_y, -1)
    columns = np.arange(size)
    mask = np.zeros((size, size), dtype=bool)
    for row in range(size):
        crosses = (start_y <= row) != (end_y <= row)
        if not crosses.any():
            continue
        fraction = (row - start_y[crosses]) / (end_y[crosses] - start_y[crosses])
        crossings = np.sort(start_x[crosses] + fraction * (end_x[crosses] - start_x[crosses]))
        for left, right in zip(crossings[0::2], crossings[1::2]):
            mask[row, (columns > left) & (columns < right)] = True
    return mask


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px)
    return field / max(float(field.std()), 1e-12)


def render_image(rng: np.random.Generator, size: int, labels: np.ndarray) -> np.ndarray:
    """Draw a radiograph-like uint8 image around the lung label map ``labels``."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) / size
    centre_x = float(rng.uniform(0.49, 0.51))

    # Soft tissue: an elliptic body silhouette on dark air, blurred at the skin line.
    body = (((cols - centre_x) / 0.47) ** 2 + ((rows - 0.62) / 0.72) ** 2) <= 1.0
    image = 0.08 + float(rng.uniform(0.50, 0.58)) * ndimage.gaussian_filter(body.astype(float), 0.01 * size)

    # Mediastinum, heart and spine are denser than the surrounding soft tissue.
    mediastinum = (np.abs(cols - centre_x) < 0.07) & (rows > 0.05) & (rows < 0.85)
    heart = (((cols - centre_x - 0.06) / 0.17) ** 2 + ((rows - 0.63) / 0.13) ** 2) <= 1.0
    spine = (np.abs(cols - centre_x) < 0.035).astype(float)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * rows / 0.055)
    image += 0.12 * ndimage.gaussian_filter((mediastinum | heart).astype(float), 0.01 * size)
    image += ndimage.gaussian_filter(spine, 0.006 * size) * (0.05 + 0.03 * vertebrae)

    # Lung fields: much less dense, with some low-frequency texture for vessels.
    lungs = (labels > 0).astype(float)
    lung_darkening = float(rng.uniform(0.30, 0.38))
    texture = 0.03 * smooth_noise(rng, size, 0.015 * size)
    image -= ndimage.gaussian_filter(lungs, 0.004 * size + 0.5) * lung_darkening
    image += lungs * texture

    # Posterior ribs: curved stripes over the thorax, fading towards the abdomen.
    phase = float(rng.uniform(0.0, 1.0))
    rib_spacing = float(rng.uniform(0.075, 0.095))
    curve = rows - float(rng.uniform(0.7, 1.1)) * (cols - centre_x) ** 2
    ribs = np.clip(np.cos(2 * np.pi * (curve / rib_spacing + phase)), 0.0, 1.0) ** 3
    image += 0.05 * ribs * body * np.clip((0.85 - rows) / 0.2, 0.0, 1.0)

    image += 0.012 * rng.standard_normal((size, size))
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

    # The word SYNTHETIC in the corner marks every figure made from these images.
    scale = size / 640.0
    cv2.putText(pixels, "SYNTHETIC", (max(2, size // 64), max(8, size // 20)), cv2.FONT_HERSHEY_SIMPLEX,
                scale, 255, max(1, size // 256), cv2.LINE_8)
    return pixels


def generate_case(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Return (image uint8, labels uint8, landmarks row, shape row) of case ``index``.

    Each case draws from its own generator seeded with (seed, index), so a case does not
    depend on how many cases are generated.
    """
    rng = np.random.default_rng([seed, index])
    right, left = sample_lungs(rng, size)

    labels = np.zeros((size, size), dtype=np.uint8)
    labels[rasterize(right.outline(), size)] = RIGHT_LUNG
    labels[rasterize(left.outline(), size)] = LEFT_LUNG

    image = render_image(rng, size, labels)

    image_id = f"{ID_PREFIX}{index + 1:04d}"
    landmarks = {"image_id": image_id, **right.landmarks(), **left.landmarks()}
    shape = {"image_id": image_id}
    for lung in (right, left):
        shape[f"{lung.side}_rise_exponent"] = lung.rise_exponent
        shape[f"{lung.side}_fall_exponent"] = lung.fall_exponent
        shape[f"{lung.side}_dome_height_px"] = lung.dome_height_px
        shape[f"{lung.side}_dome_fraction"] = lung.dome_fraction
    return image, labels, landmarks, shape


def write_png(path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}; check that the folder is writable and the disk is not full")


def generate_dataset(output_dir: str | Path, count: int, size: int, seed: int, overwrite: bool = False) -> Path:
    """Write ``count`` synthetic cases of ``size`` x ``size`` pixels into ``output_dir``.

    Raises:
        FileExistsError: ``output_dir`` contains files and ``overwrite`` is false.
        ValueError: ``count`` or ``size`` is out of range.
    """
    if count < 1:
        raise ValueError(f"--count {count}: at least one image is needed")
    if size < 64:
        raise ValueError(f"--size {size}: images smaller than 64 px leave the lungs too few pixels; use 64 or more")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} already contains files; choose another --output-dir or pass --overwrite to replace them"
            )
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    landmark_rows, shape_rows = [], []
    for index in range(count):
        image, labels, landmarks, shape = generate_case(seed, index, size)
        write_png(out / "images" / f"{landmarks['image_id']}.png", image)
        write_png(out / "masks" / f"{landmarks['image_id']}.png", labels)
        landmark_rows.append(landmarks)
        shape_rows.append(shape)

    # Fixed decimals keep the CSV files byte-identical between runs with the same seed.
    atomic_write_text(
        out / "landmarks.csv",
        pd.DataFrame(landmark_rows, columns=LANDMARK_COLUMNS).to_csv(
            index=False, lineterminator="\n", float_format="%.4f"
        ),
    )
    atomic_write_text(
        out / "shapes.csv",
        pd.DataFrame(shape_rows).to_csv(index=False, lineterminator="\n", float_format="%.6f"),
    )
    atomic_write_text(out / "README.txt", readme_text(count, size, seed))
    return out


def readme_text(count: int, size: int, seed: int) -> str:
    return (
        "SYNTHETIC DATA - not radiographs, not from patients.\n"
        "\n"
        f"{count} drawn chest-radiograph-like images of {size}x{size} pixels, generated by\n"
        f"`python -m hemidiaphragm.synthetic --count {count} --size {size} --seed {seed}`.\n"
        "The same command writes byte-identical files.\n"
        "\n"
        "images/    8-bit grey PNG, the word SYNTHETIC in the top-left corner\n"
        "masks/     label maps: 0 background, 1 patient-right lung (image left), 2 patient-left lung\n"
        "           (mask encoding labels:1,2)\n"
        "landmarks.csv  dome, costophrenic angle (cp) and cardiophrenic corner (cardio) per side,\n"
        "           exact: each diaphragmatic arc is an analytic curve and the dome is its point\n"
        "           furthest above the cp-cardio chord. Pixels, (0, 0) = centre of the top-left pixel.\n"
        "shapes.csv arc parameters behind each row (see hemidiaphragm/synthetic.py).\n"
        "\n"
        "No pixel spacing: errors on this set are in pixels. Results on it test that the\n"
        "pipeline runs; they say nothing about accuracy on real radiographs.\n"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for images/, masks/, landmarks.csv, shapes.csv and README.txt")
    parser.add_argument("--count", type=int, default=60, help="number of images to generate")
    parser.add_argument("--size", type=int, default=256, help="width and height of every image, in pixels")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed; the same seed writes byte-identical files")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier generation")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = generate_dataset(args.output_dir, args.count, args.size, args.seed, args.overwrite)
    LOGGER.info("wrote %d SYNTHETIC images of %dx%d px (seed %d) to %s",
                args.count, args.size, args.size, args.seed, out)


if __name__ == "__main__":
    run_script(main, get_args_parser())
