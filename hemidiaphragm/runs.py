"""Run folders, run records, per-epoch metric logs and atomic file writes.

Every stage script writes into its own output folder. Before any work it stores
``run.json`` (resolved arguments, command line, git commit and dirty flag, library
versions, device, host) and starts ``train.log``; training scripts append one row per
epoch to ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
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


def positive_int(text: str) -> int:
    """Parse an argparse value that must be a whole number of at least 1."""
    return _bounded_number(text, int, 1, "a whole number of at least 1")


def non_negative_int(text: str) -> int:
    """Parse an argparse value that must be a whole number of 0 or more."""
    return _bounded_number(text, int, 0, "a whole number of 0 or more")


def positive_float(text: str) -> float:
    """Parse an argparse value that must be a finite number above 0."""
    value = _bounded_number(text, float, 0.0, "a finite number above 0")
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number above 0")
    return value


def seed_value(text: str) -> int:
    """Parse an argparse seed: a whole number from 0 to 2**32 - 1, the range numpy accepts."""
    value = _bounded_number(text, int, 0, "a whole number from 0 to 4294967295")
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 4294967295")
    return value


def _bounded_number(text: str, kind, minimum, expected: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
    if not value >= minimum:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
    return value


def check_ranges(args: argparse.Namespace, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Raise ValueError for a numeric flag that is NaN, infinite or outside its ``(low, high)`` range.

    ``ranges`` maps argument names to inclusive bounds; ``math.inf`` as ``high`` means no upper
    bound. Flags left at None are skipped.
    """
    for name, (low, high) in ranges.items():
        value = getattr(args, name, None)
        if value is None or (math.isfinite(value) and low <= value <= high):
            continue
        flag = "--" + name.replace("_", "-")
        allowed = f"at least {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
        raise ValueError(f"{flag} {value} must be a finite number {allowed}")


def decoder_widths(text: str) -> list[int]:
    """Parse ``--decoder-channels``: comma-separated whole numbers of at least 1."""
    try:
        widths = [int(part) for part in str(text).split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ValueError(f"--decoder-channels {text!r} must be comma-separated whole numbers of at least 1, "
                         "one per U-Net level (for example 128,64,32,16,8)")
    return widths


# Errors from bad input (a missing file, a wrong column, a value out of range). Their messages
# already name the file, row or value, so a script prints them without a traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


def run_script(main, parser: argparse.ArgumentParser) -> None:
    """Parse the command line, call ``main(args)`` and exit with its return code.

    Input errors and string exits end the script with one line that starts with ``error:``,
    whichever stage raised them, so every script reports bad input the same way.
    """
    args = parser.parse_args()
    try:
        code = main(args)
    except INPUT_ERRORS as error:
        raise SystemExit(f"error: {error}") from None
    except SystemExit as stop:
        if isinstance(stop.code, str) and not stop.code.startswith("error:"):
            raise SystemExit(f"error: {stop.code}") from None
        raise
    raise SystemExit(code)


def prepare_output_dir(path: str | os.PathLike, overwrite: bool, resumable: bool = False) -> Path:
    """Create ``path`` for a new run, refusing to reuse a non-empty folder.

    ``resumable`` adds the hint to pass ``--resume``, for the scripts that have that flag.

    Raises:
        FileExistsError: ``path`` contains files and ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            resume_hint = "pass --resume to continue it, " if resumable else ""
            raise FileExistsError(
                f"output folder {out} already contains files from an earlier run; "
                f"choose another --output-dir, {resume_hint}or pass --overwrite to replace it"
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


class _RecordBuffer(logging.Handler):
    """Log records kept in memory until the run's output folder exists (the first 10,000 only)."""

    MAX_RECORDS = 10_000

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.MAX_RECORDS:
            self.records.append(record)


def setup_logging(out_dir: Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to the console and, when ``out_dir`` is given, to ``out_dir/train.log``.

    A call without ``out_dir`` also keeps the records in memory, and the next call with
    ``out_dir`` writes them into ``train.log`` first. Scripts check their inputs before they
    create the output folder, and this keeps the log lines of that check.
    """
    root = logging.getLogger()
    root.setLevel(level)
    buffered_records = []
    for handler in list(root.handlers):
        if isinstance(handler, _RecordBuffer):
            buffered_records = handler.records
        root.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    root.addHandler(console)
    if out_dir is None:
        root.addHandler(_RecordBuffer())
    else:
        file_handler = logging.FileHandler(Path(out_dir) / "train.log")
        file_handler.setFormatter(formatter)
        for record in buffered_records:
            file_handler.handle(record)
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


# Namespace attribute in which RunArgumentParser lists the options given on the command line.
EXPLICIT_OPTIONS = "explicit_options"


class RunArgumentParser(argparse.ArgumentParser):
    """ArgumentParser that also stores which options the command line gave explicitly.

    ``parse_args`` adds a sorted list of their destinations to the namespace as
    ``explicit_options``, so that a resumed run can tell a flag given with its default value
    from a flag left out. ``pop_explicit_options`` removes the list again before the
    arguments are recorded.
    """

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        # A copy without defaults or required flags yields only the options that were given.
        probe = copy.deepcopy(self)
        for action in probe._actions:
            action.default = argparse.SUPPRESS
            action.required = False
        command_line_options, _ = argparse.ArgumentParser.parse_known_args(probe, args)
        setattr(parsed, EXPLICIT_OPTIONS, sorted(vars(command_line_options)))
        return parsed, extras


def pop_explicit_options(args: argparse.Namespace) -> set[str]:
    """Remove and return the option names that ``RunArgumentParser`` stored in ``args``."""
    return set(vars(args).pop(EXPLICIT_OPTIONS, ()))


def _same_value(given, stored, is_path: bool) -> bool:
    if given is None or stored is None:
        return given is None and stored is None
    if is_path:
        return Path(given).resolve() == Path(stored).resolve()
    if isinstance(given, (list, tuple)) and isinstance(stored, (list, tuple)):
        return list(given) == list(stored)
    return given == stored


def check_resume_without_overwrite(args: argparse.Namespace) -> None:
    """Raise ValueError when both ``--resume`` and ``--overwrite`` are given."""
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume and --overwrite exclude each other: --resume continues the run in "
            f"{args.output_dir}, --overwrite deletes it; drop one of them"
        )


def merge_resumed_arguments(
    args: argparse.Namespace,
    explicit: set[str],
    stored: Mapping,
    overridable: Iterable[str],
    changeable: Iterable[str] = (),
    paths: Iterable[str] = (),
) -> tuple[dict, list[str]]:
    """Return the arguments of a resumed run and the names of the changeable flags it changed.

    The stored arguments are kept, except the ``overridable`` flags, which always come from
    ``args``, and the ``changeable`` flags, which come from ``args`` when given explicitly.
    A path flag may also point somewhere new when its stored file or folder no longer
    exists, so that a run moved together with its inputs can be resumed.

    Raises:
        ValueError: ``--overwrite`` is given, or an explicitly given flag that is neither
            overridable nor changeable differs from its stored value.
    """
    check_resume_without_overwrite(args)
    overridable, changeable, paths = set(overridable), set(changeable), set(paths)
    merged = dict(stored)
    for name in overridable:
        merged[name] = getattr(args, name)
    changed, conflicts = [], []
    for name in sorted(explicit - overridable - {"overwrite"}):
        value = getattr(args, name)
        if name in stored and _same_value(value, stored[name], name in paths):
            continue
        if name in changeable:
            merged[name] = value
            changed.append(name)
            continue
        if name in paths and value is not None and stored.get(name) is not None and not Path(stored[name]).exists():
            merged[name] = value
            continue
        flag = "--" + name.replace("_", "-")
        conflicts.append(f"{flag} {value} (stored: {stored.get(name, 'not recorded')})")
    if conflicts:
        raise ValueError(
            f"cannot resume {args.output_dir} with changed settings: {'; '.join(conflicts)}. A resumed run "
            "keeps the arguments stored in its last.pt, so leave these flags out, or give a new --output-dir "
            "without --resume to start a new run with them"
        )
    return merged, changed


def add_run_control_arguments(parser, seed_help: str = "seed of weights, data order and augmentation") -> None:
    """Add the run-control flags that every training script shares to ``parser`` (or an argument group)."""
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after the epoch that brings the wall time over this many minutes")
    parser.add_argument("--max-images", type=positive_int, default=None,
                        help="use at most this many train and val images each (for smoke tests)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch; default: torch's choice")
    parser.add_argument("--seed", type=seed_value, default=2026, help=seed_help)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last.pt with its stored arguments")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-batch progress bar")


def current_umask() -> int:
    """Return the process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temporary_file(path: Path) -> tuple[int, str]:
    """Create a temporary file beside ``path`` with the permissions a plain ``open`` would give it.

    ``tempfile.mkstemp`` creates files with mode 0600, and the rename would carry that mode
    over to the final file. So the mode is set to 0666 less the umask, as ``open`` does.
    """
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
    except BaseException:
        os.close(handle)
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return handle, tmp_name


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = make_temporary_file(path)
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
