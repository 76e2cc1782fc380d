"""Self-describing checkpoints, written atomically and read with ``weights_only=True``.

A checkpoint is a dict with these keys:

- ``model_state``: the ``state_dict`` of the network;
- ``model_config``: the keyword arguments that rebuild the network (see
  ``hemidiaphragm.models``), plus anything a consumer needs to preprocess inputs
  (input size, input channels, mask label values);
- ``args``: the resolved command-line arguments of the run, as plain types;
- ``epoch``, ``best_metric``, ``best_metric_name``, ``best_epoch``;
- ``optimizer_state``, ``scheduler_state`` and ``rng_state`` for resuming.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from hemidiaphragm.runs import check_resume_without_overwrite, make_temporary_file, merge_resumed_arguments

LOGGER = logging.getLogger(__name__)

REQUIRED_KEYS = ("model_state", "model_config", "args", "epoch", "best_metric", "best_metric_name")


def to_plain(value: Any) -> Any:
    """Convert argparse values (paths, tuples) into types that ``weights_only`` loads."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file and an atomic rename."""
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise KeyError(f"checkpoint payload lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = make_temporary_file(path)
    os.close(handle)
    try:
        torch.save(payload, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` and check its keys."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a checkpoint file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"checkpoint {path} {problem}; give a best.pt or last.pt of a training run")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"checkpoint {path} ({path.stat().st_size} bytes) could not be read "
            f"({type(error).__name__}: {first_line}); it is truncated or not a torch checkpoint, so use "
            "another best.pt or last.pt"
        ) from error
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {path} is not a dict; it was not written by this project")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it was not written by this project")
    return payload


def load_resumed_run(
    args: argparse.Namespace,
    explicit: set[str],
    overridable: Iterable[str],
    changeable: Iterable[str],
    paths: Iterable[str],
) -> tuple[argparse.Namespace, dict]:
    """Load ``<output_dir>/last.pt`` and return the resumed run's arguments and the checkpoint.

    The arguments are the stored ones merged with the command line by
    ``merge_resumed_arguments``; the ``paths`` flags come back as ``Path`` objects.

    Raises:
        SystemExit: ``last.pt`` is missing.
        ValueError: ``--overwrite`` is given, or a flag differs from its stored value.
    """
    check_resume_without_overwrite(args)
    last = args.output_dir / "last.pt"
    if not last.is_file():
        raise SystemExit(f"cannot resume: {last} not found; "
                         "start a new run without --resume, or pass the folder of an earlier run")
    checkpoint = load_checkpoint(last)
    stored = dict(checkpoint["args"])
    merged, changed = merge_resumed_arguments(args, explicit, stored, overridable, changeable, paths)
    for name in changed:
        LOGGER.warning("resuming with --%s %s in place of %s; the learning-rate schedule follows the new value",
                       name, merged[name], stored[name])
    for name in paths:
        if merged.get(name) is not None:
            merged[name] = Path(merged[name])
    return argparse.Namespace(**merged), checkpoint


def rng_state() -> dict:
    import random

    import numpy as np

    numpy_state = np.random.get_state()
    return {
        "python": to_plain(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np

    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state[0], numpy_state[1].numpy(), int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4]))
    )
    torch.set_rng_state(state["torch"])
