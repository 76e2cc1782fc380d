"""Split the geometric rule's dome error into the part from the corners and the part from the outline.

The geometric rule (``hemidiaphragm/landmarks.py``) finds the costophrenic angle and the
cardiophrenic corner on a lung outline, then takes the dome as the arc point furthest above
the chord between them. Its dome error therefore has two sources: corners found in the wrong
place, and an outline that differs from the reference outline near the dome. This script
scores the rule on two mask sources, the reference masks of the metadata and the exported
predicted masks, each in two ways:

- ``geometric rule``: corners and dome from the outline, as ``derive_landmarks.py`` does;
- ``reference corners``: the arc between the outline points nearest to the reference
  costophrenic angle and cardiophrenic corner, and the dome on that arc.

If the predicted outline with reference corners still scores far worse than the reference
outline, no better corner detector can close the gap: the outline near the dome is the limit.

Example (the folders that ``pipeline.sh`` writes):
    python tools/dome_error_sources.py --metadata results/jsrt224/metadata/metadata.csv \\
        --mask-index results/jsrt224/segmentation/test/masks_index.csv --part test

Prints a markdown table. Error rate = (right + left dome error) / image width x 100, averaged
over the images where both sides have a point; ``n`` is the number of those images.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from hemidiaphragm.datasets import MaskEncoding
from hemidiaphragm.imaging import LEFT_LUNG, RIGHT_LUNG
from hemidiaphragm.landmark_data import load_landmark_table, replace_masks, select_part
from hemidiaphragm.landmarks import (
    DEFAULT_PLATEAU_TOLERANCE_PX,
    derive_landmarks,
    dome_on_arc,
    largest_region,
    path_avoiding,
    region_outline,
)
from hemidiaphragm.reporting import markdown_table
from hemidiaphragm.runs import run_script

SIDES = (("right", RIGHT_LUNG), ("left", LEFT_LUNG))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", required=True,
                        help="metadata.csv from build_metadata.py, with the costophrenic and cardiophrenic points")
    parser.add_argument("--mask-index", required=True, help="masks_index.csv of the exported predicted masks")
    parser.add_argument("--part", default="test", help="part of the metadata to score (default test)")
    return parser


def point(row: pd.Series, side: str, name: str) -> np.ndarray:
    return np.array([row[f"{side}_{name}_x"], row[f"{side}_{name}_y"]], dtype=np.float64)


def dome_with_reference_corners(lung: np.ndarray, cp: np.ndarray, cardio: np.ndarray) -> np.ndarray:
    """Return the dome on the outline arc between the points nearest to ``cp`` and ``cardio``."""
    region = largest_region(lung)
    if region is None or not (np.isfinite(cp).all() and np.isfinite(cardio).all()):
        return np.full(2, np.nan)
    outline = region_outline(*region)
    start = int(np.argmin(np.hypot(*(outline - cp).T)))
    stop = int(np.argmin(np.hypot(*(outline - cardio).T)))
    apex = int(np.argmin(outline[:, 1]))
    arc = path_avoiding(len(outline), start, stop, apex)
    return np.array(dome_on_arc(outline, arc, None, DEFAULT_PLATEAU_TOLERANCE_PX).dome)


def score_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return per-image dome and corner errors (px) of both scorings on the masks of ``frame``."""
    errors = {key: np.full((len(frame), 2), np.nan) for key in ("rule", "corners", "cp", "cardio")}
    for index, row in frame.iterrows():
        labels = MaskEncoding.parse(row["mask_encoding"]).read(row["mask_path"])
        found = derive_landmarks(labels)
        for column, (side, value) in enumerate(SIDES):
            reference_dome = point(row, side, "dome")
            errors["rule"][index, column] = np.hypot(*(np.array(found[side].dome) - reference_dome))
            for name in ("cp", "cardio"):
                errors[name][index, column] = np.hypot(*(np.array(getattr(found[side], name)) - point(row, side, name)))
            dome = dome_with_reference_corners(labels == value, point(row, side, "cp"), point(row, side, "cardio"))
            errors["corners"][index, column] = np.hypot(*(dome - reference_dome))
    return errors


def table_rows(source: str, errors: dict[str, np.ndarray], widths: np.ndarray) -> list[dict]:
    rows = []
    for key, method in (("rule", "geometric rule"), ("corners", "reference corners")):
        rate = errors[key].sum(axis=1) / widths * 100  # NaN where a side has no point
        rows.append({
            "masks": source,
            "corners": method,
            "error rate %": f"{np.nanmean(rate):.2f}",
            "n": int(np.isfinite(rate).sum()),
            "right dome px": f"{np.nanmean(errors[key][:, 0]):.2f}",
            "left dome px": f"{np.nanmean(errors[key][:, 1]):.2f}",
            "cp px (R/L)": "/".join(f"{v:.2f}" for v in np.nanmean(errors["cp"], axis=0)) if key == "rule" else "",
            "cardio px (R/L)": "/".join(f"{v:.2f}" for v in np.nanmean(errors["cardio"], axis=0)) if key == "rule"
            else "",
        })
    return rows


def main(args: argparse.Namespace) -> None:
    reference = select_part(load_landmark_table(args.metadata), args.part, args.metadata)
    for side, _ in SIDES:
        for name in ("cp", "cardio"):
            if reference[f"{side}_{name}_x"].isna().all():
                raise ValueError(f"{args.metadata} has no {side}_{name} points in part {args.part!r}; this analysis "
                                 "needs the costophrenic and cardiophrenic points of both sides")
    predicted = replace_masks(reference, args.mask_index)
    widths = reference["width"].to_numpy(dtype=np.float64)
    rows = table_rows("reference", score_masks(reference), widths)
    rows += table_rows("predicted", score_masks(predicted), widths)
    print(markdown_table(pd.DataFrame(rows)), end="")


if __name__ == "__main__":
    run_script(main, get_args_parser())
