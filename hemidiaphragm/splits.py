"""K-fold split files: writing, reading and the disjointness check.

A split file is a CSV ``data_splits/<dataset>/fold<k>.csv`` with the columns
``image_id``, ``patient_id`` and ``part`` (``train``, ``val`` or ``test``). Fold k tests on
patient group k, validates on group (k + 1) mod K and trains on the rest, so every image
is tested exactly once over the K folds and no patient appears in two parts.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

PARTS = ("train", "val", "test")


class SplitError(ValueError):
    """A split file is malformed or puts one id or patient into two parts."""


def patient_ids(image_ids: list[str], group_regex: str | None) -> list[str]:
    """Map each image id to a patient id with the first group of ``group_regex``.

    Without a regex every image is its own patient (JSRT and Shenzhen have one image per
    patient).
    """
    if not group_regex:
        return list(image_ids)
    try:
        pattern = re.compile(group_regex)
    except re.error as error:
        raise SplitError(f"--group-regex {group_regex!r} is not a valid regular expression: {error}") from None
    if pattern.groups < 1:
        raise SplitError(f"--group-regex {group_regex!r} has no capture group; put the patient id in (...)")
    groups = []
    for image_id in image_ids:
        match = pattern.search(image_id)
        if match is None or match.group(1) is None:
            raise SplitError(f"--group-regex {group_regex!r} does not match image id {image_id!r}")
        groups.append(match.group(1))
    return groups


def make_folds(image_ids: list[str], k: int, seed: int, group_regex: str | None = None) -> list[pd.DataFrame]:
    """Assign patients to ``k`` groups at random (seeded) and build one table per fold."""
    if k < 3:
        raise SplitError(f"k={k}: at least 3 folds are needed for separate train, val and test parts")
    if len(set(image_ids)) != len(image_ids):
        raise SplitError("image ids are not unique")
    patients = patient_ids(image_ids, group_regex)
    unique_patients = sorted(set(patients))
    if len(unique_patients) < k:
        raise SplitError(f"{len(unique_patients)} patients cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(len(unique_patients))
    group_of_patient = {unique_patients[index]: rank % k for rank, index in enumerate(order)}
    groups = np.array([group_of_patient[p] for p in patients])

    folds = []
    for fold in range(k):
        part = np.where(groups == fold, "test", np.where(groups == (fold + 1) % k, "val", "train"))
        folds.append(pd.DataFrame({"image_id": image_ids, "patient_id": patients, "part": part}))
    return folds


def check_split(frame: pd.DataFrame, source: str = "split") -> None:
    """Raise :class:`SplitError` if an id or a patient is in two parts, or a part is bad."""
    for column in ("image_id", "part"):
        if column not in frame.columns:
            raise SplitError(f"{source}: missing column {column!r}")
    bad_parts = sorted(set(frame["part"]) - set(PARTS))
    if bad_parts:
        raise SplitError(f"{source}: unknown part(s) {bad_parts}; expected {PARTS}")
    for column in ("image_id", "patient_id"):
        if column in frame.columns:
            empty_rows = [index + 2 for index in np.flatnonzero(frame[column].astype(str).str.strip() == "")]
            if empty_rows:
                raise SplitError(f"{source}: empty {column} on line(s) {empty_rows[:5]}")
    duplicated = frame["image_id"][frame["image_id"].duplicated()].unique()
    if len(duplicated):
        raise SplitError(f"{source}: image id(s) listed more than once: {list(duplicated[:5])}")
    if "patient_id" in frame.columns:
        parts_per_patient = frame.groupby("patient_id")["part"].nunique()
        leaking = parts_per_patient[parts_per_patient > 1].index.tolist()
        if leaking:
            raise SplitError(f"{source}: patient(s) in more than one part: {leaking[:5]}")


def read_split(path: str | Path) -> pd.DataFrame:
    """Read and check a split file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; make one with data_splits/make_splits.py")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise SplitError(
            f"split file {path} is empty; expected a CSV with the header image_id,patient_id,part and one row "
            "per image (make one with data_splits/make_splits.py)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise SplitError(f"split file {path} could not be parsed as CSV: {error}") from None
    check_split(frame, str(path))
    return frame


def ids_in(split: pd.DataFrame, part: str) -> list[str]:
    if part not in PARTS:
        raise SplitError(f"unknown part {part!r}; expected one of {PARTS}")
    return split.loc[split["part"] == part, "image_id"].tolist()
