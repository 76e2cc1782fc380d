"""Run folders, run records, per-epoch metric logs and atomic file writes.

Every stage script writes into its own output folder. Before any work it stores
``run.json`` (resolved arguments, command line, git commit and dirty flag, library
versions, device, host) and starts ``train.log``; training scripts append one row per
epoch to ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

LOGGER = logging.getLogger("hemidiaphragm")

TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "pandas",
    "scikit-image",
    "pydicom",
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def prepare_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Create ``path`` for a new run, refusing to reuse a non-empty folder.

    Raises:
        FileExistsError: ``path`` contains files and ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {out} already contains files from an earlier run; "
                "choose another --output-dir, pass --resume to continue it, or pass "
                "--overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def git_state() -> dict:
    """Return the commit hash and whether the working tree has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout
        return {"git_commit": commit, "git_dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_record(out_dir: Path, args: Mapping, device: str, extra: Mapping | None = None) -> dict:
    """Write ``run.json`` describing this run; an existing record is kept as ``run.N.json``."""
    record = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(args).items()},
        "device": device,
        "host": platform.node(),
        **git_state(),
        "libraries": library_versions(),
    }
    if extra:
        record.update(extra)
    target = out_dir / "run.json"
    if target.exists():
        # A resumed run keeps the first record and adds its own beside it.
        index = 1
        while (out_dir / f"run.{index}.json").exists():
            index += 1
        target = out_dir / f"run.{index}.json"
    atomic_write_text(target, json.dumps(record, indent=2, default=str) + "\n")
    return record


def setup_logging(out_dir: Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to the console and, when ``out_dir`` is given, to ``out_dir/train.log``."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    root.addHandler(console)
    if out_dir is not None:
        file_handler = logging.FileHandler(Path(out_dir) / "train.log")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    return LOGGER


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return name


def add_run_control_arguments(parser, seed_help: str = "seed of weights, data order and augmentation") -> None:
    """Add the run-control flags that every training script shares to ``parser`` (or an argument group)."""
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after the epoch that brings the wall time over this many minutes")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use at most this many train and val images each (for smoke tests)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch; default: torch's choice")
    parser.add_argument("--seed", type=int, default=2026, help=seed_help)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last.pt with its stored arguments")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-batch progress bar")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV atomically, without the index."""
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


class MetricsLog:
    """Append one record per epoch to ``metrics.csv`` and log the same line.

    The column order is fixed by the first record. On resume, rows for epochs after the
    resumed epoch are dropped first so that the file matches an uninterrupted run.
    """

    def __init__(self, path: Path, resume_after_epoch: int | None = None):
        self.path = Path(path)
        self.fields: list[str] | None = None
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as stream:
                rows = list(csv.DictReader(stream))
            if rows:
                self.fields = list(rows[0].keys())
            if resume_after_epoch is not None:
                rows = [row for row in rows if int(row["epoch"]) <= resume_after_epoch]
            self._rewrite(rows)

    def _rewrite(self, rows: Iterable[Mapping]) -> None:
        rows = list(rows)
        if self.fields is None:
            self.path.unlink(missing_ok=True)
            return
        lines = [",".join(self.fields)]
        lines += [",".join(str(row[name]) for name in self.fields) for row in rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def append(self, record: Mapping) -> None:
        formatted = {
            key: (f"{value:.6g}" if isinstance(value, float) else str(value))
            for key, value in record.items()
        }
        if self.fields is None:
            self.fields = list(formatted.keys())
            self.path.write_text(",".join(self.fields) + "\n", encoding="utf-8")
        missing = [name for name in self.fields if name not in formatted]
        if missing:
            raise KeyError(f"metrics record lacks the columns {missing} of {self.path}")
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(",".join(formatted[name] for name in self.fields) + "\n")
            stream.flush()
        LOGGER.info(" ".join(f"{name}={formatted[name]}" for name in self.fields))


def plot_curves(metrics_csv: Path, out_png: Path, columns: Iterable[str]) -> None:
    """Plot the given ``metrics.csv`` columns against epoch into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    columns = [name for name in columns if name in frame.columns]
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for axis, name in zip(axes[0], columns):
        axis.plot(frame["epoch"], frame[name], marker=".")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)
