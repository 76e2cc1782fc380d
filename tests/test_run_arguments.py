"""Run-control helpers: explicit flags, resume argument checks, file permissions, early log lines."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from hemidiaphragm.checkpoint import save_checkpoint, to_plain
from hemidiaphragm.runs import (
    atomic_write_text,
    current_umask,
    non_negative_int,
    pop_explicit_options,
    positive_float,
    positive_int,
    run_script,
    setup_logging,
)

ROOT = Path(__file__).resolve().parents[1]


def load_script(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem + "_under_test", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def segmentation_train():
    return load_script("segmentation_train/train.py")


@pytest.fixture(scope="module")
def heatmap_train():
    return load_script("heatmap_train/train.py")


def parse(module, *arguments: str):
    args = module.get_args_parser().parse_args(list(arguments))
    return args, pop_explicit_options(args)


def write_fake_run(module, out: Path, *arguments: str) -> None:
    """Store the resolved arguments of a new run in out/last.pt, as the trainer would."""
    args, explicit = parse(module, *arguments, "--output-dir", str(out))
    resolved, _ = module.resolve_resume(args, explicit)
    payload = {"model_state": {}, "model_config": {}, "args": to_plain(vars(resolved)), "epoch": 1,
               "best_metric": 0.0, "best_metric_name": "none"}
    save_checkpoint(out / "last.pt", payload)


SEGMENTATION_RUN = ("--data-root", "data", "--split", "split.csv", "--lr", "0.002", "--epochs", "3")


def test_parser_records_explicit_default(segmentation_train):
    _, explicit = parse(segmentation_train, "--output-dir", "x", "--lr", "0.002")
    assert explicit == {"output_dir", "lr"}


def test_segmentation_resume_rejects_changed_flag(tmp_path, segmentation_train):
    write_fake_run(segmentation_train, tmp_path, *SEGMENTATION_RUN)
    args, explicit = parse(segmentation_train, "--resume", "--output-dir", str(tmp_path), "--lr", "0.5",
                           "--encoder", "resnet34")
    with pytest.raises(ValueError, match="--lr 0.5 \\(stored: 0.002\\)") as caught:
        segmentation_train.resolve_resume(args, explicit)
    assert "--encoder resnet34 (stored: resnet18)" in str(caught.value)
    assert "new --output-dir" in str(caught.value)


def test_segmentation_resume_accepts_stored_values(tmp_path, segmentation_train, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fake_run(segmentation_train, tmp_path / "run", *SEGMENTATION_RUN)
    # The same paths, given relative to another working directory, are the same inputs.
    monkeypatch.chdir(tmp_path.parent)
    args, explicit = parse(segmentation_train, "--resume", "--output-dir", str(tmp_path / "run"), "--lr", "0.002",
                           "--data-root", f"{tmp_path.name}/data", "--split", f"{tmp_path.name}/split.csv",
                           "--device", "cpu", "--threads", "1")
    resolved, _ = segmentation_train.resolve_resume(args, explicit)
    assert resolved.lr == 0.002
    assert resolved.device == "cpu"
    assert resolved.epochs == 3


def test_segmentation_resume_changes_epochs(tmp_path, segmentation_train):
    write_fake_run(segmentation_train, tmp_path, *SEGMENTATION_RUN)
    args, explicit = parse(segmentation_train, "--resume", "--output-dir", str(tmp_path), "--epochs", "5")
    resolved, _ = segmentation_train.resolve_resume(args, explicit)
    assert resolved.epochs == 5


@pytest.mark.parametrize("script", ["segmentation_train/train.py", "heatmap_train/train.py"])
def test_resume_with_overwrite_rejected(tmp_path, script):
    module = load_script(script)
    args, explicit = parse(module, "--resume", "--overwrite", "--output-dir", str(tmp_path))
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        module.resolve_resume(args, explicit)


HEATMAP_RUN = ("--stage", "coarse", "--metadata", "metadata.csv", "--epochs", "2")


def test_heatmap_resume_rejects_changed_flag(tmp_path, heatmap_train):
    write_fake_run(heatmap_train, tmp_path, *HEATMAP_RUN)
    args, explicit = parse(heatmap_train, "--resume", "--output-dir", str(tmp_path), "--loss", "adaptive_wing")
    with pytest.raises(ValueError, match="--loss adaptive_wing \\(stored: mse\\)"):
        heatmap_train.resolve_resume(args, explicit)


def test_heatmap_resume_changes_epochs(tmp_path, heatmap_train):
    write_fake_run(heatmap_train, tmp_path, *HEATMAP_RUN)
    args, explicit = parse(heatmap_train, "--resume", "--output-dir", str(tmp_path), "--epochs", "4",
                           "--stage", "coarse")
    resolved, _ = heatmap_train.resolve_resume(args, explicit)
    assert resolved.epochs == 4
    assert resolved.output_dir == tmp_path


def test_heatmap_resume_uses_given_output_dir(tmp_path, heatmap_train):
    original, moved = tmp_path / "original", tmp_path / "moved"
    write_fake_run(heatmap_train, original, *HEATMAP_RUN)
    original.rename(moved)
    args, explicit = parse(heatmap_train, "--resume", "--output-dir", str(moved))
    resolved, _ = heatmap_train.resolve_resume(args, explicit)
    assert resolved.output_dir == moved


def test_heatmap_coarse_rejects_fine_flags(heatmap_train):
    args, explicit = parse(heatmap_train, *HEATMAP_RUN, "--output-dir", "x", "--crop-size-px", "32",
                           "--jitter-px", "2")
    with pytest.raises(SystemExit, match="--crop-size-px, --jitter-px only apply to --stage fine"):
        heatmap_train.resolve_resume(args, explicit)


def test_heatmap_needs_stage_without_resume(heatmap_train):
    args, explicit = parse(heatmap_train, "--metadata", "m.csv", "--output-dir", "x")
    with pytest.raises(SystemExit, match="--stage and --metadata are required"):
        heatmap_train.resolve_resume(args, explicit)


def test_atomic_write_follows_umask(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "text")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()


def test_checkpoint_follows_umask(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, {"model_state": {}, "model_config": {}, "args": {}, "epoch": 0, "best_metric": 0.0,
                           "best_metric_name": "none"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()


def test_early_log_lines_reach_train_log(tmp_path):
    setup_logging()
    logging.getLogger("test").info("checked the inputs")
    setup_logging(tmp_path)
    logging.getLogger("test").info("training")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / "train.log").read_text()
    assert "checked the inputs" in text
    assert "training" in text
    setup_logging()


def test_heatmap_resume_accepts_moved_metadata(tmp_path, heatmap_train):
    run = tmp_path / "run"
    write_fake_run(heatmap_train, run, *HEATMAP_RUN)  # metadata.csv does not exist: it was moved
    moved = tmp_path / "moved_metadata.csv"
    moved.write_text("image_id\n")
    args, explicit = parse(heatmap_train, "--resume", "--output-dir", str(run), "--metadata", str(moved))
    resolved, _ = heatmap_train.resolve_resume(args, explicit)
    assert resolved.metadata == moved


def test_heatmap_resume_rejects_other_existing_metadata(tmp_path, heatmap_train, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metadata.csv").write_text("image_id\n")
    (tmp_path / "other.csv").write_text("image_id\n")
    run = tmp_path / "run"
    write_fake_run(heatmap_train, run, *HEATMAP_RUN)
    args, explicit = parse(heatmap_train, "--resume", "--output-dir", str(run), "--metadata", "other.csv")
    with pytest.raises(ValueError, match="--metadata other.csv"):
        heatmap_train.resolve_resume(args, explicit)


def _exit_of(main, argv=()):
    parser = argparse.ArgumentParser(prog="script")
    parser.add_argument("--size", type=int, default=1)
    old_argv = sys.argv
    sys.argv = ["script", *argv]
    try:
        with pytest.raises(SystemExit) as stop:
            run_script(main, parser)
    finally:
        sys.argv = old_argv
    return stop.value.code


def _raise(error):
    def main(args):
        raise error
    return main


def test_run_script_prefixes_every_input_error_once():
    assert _exit_of(_raise(ValueError("row 3: x is NaN"))) == "error: row 3: x is NaN"
    assert _exit_of(_raise(FileNotFoundError("a.csv not found"))) == "error: a.csv not found"
    assert _exit_of(_raise(SystemExit("--stage is required"))) == "error: --stage is required"
    assert _exit_of(_raise(SystemExit("error: already prefixed"))) == "error: already prefixed"


def test_run_script_passes_exit_codes_and_other_errors():
    assert _exit_of(lambda args: None) is None
    assert _exit_of(lambda args: 3) == 3
    assert _exit_of(lambda args: args.size, ["--size", "5"]) == 5
    assert _exit_of(lambda args: None, ["--size", "five"]) == 2  # argparse's own usage error
    with pytest.raises(RuntimeError, match="bug"):
        _exit_of(_raise(RuntimeError("bug")))


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "must be at least 1"),
    (["--batch-size", "0"], "must be at least 1"),
    (["--input-size", "100"], "multiple of 32"),
    (["--input-size", "64", "--decoder-channels", "16,8"], None),
    (["--lr", "0"], "--lr"),
    (["--max-minutes", "-1"], "--max-minutes -1.0 must be a finite number at least 0"),
    (["--flip-probability", "2"], "--flip-probability 2.0 must be a finite number from 0 to 1"),
    (["--lr", "inf"], "--lr inf must be a finite number"),
    (["--decoder-channels", "16,,8"], "comma-separated whole numbers"),
    (["--max-minutes", "0"], None),
])
def test_segmentation_numbers_checked(segmentation_train, flags, message):
    args = segmentation_train.get_args_parser().parse_args(["--output-dir", "x", "--epochs", "3", *flags])
    if message is None:
        segmentation_train.check_numbers(args)
    else:
        with pytest.raises(ValueError, match=message):
            segmentation_train.check_numbers(args)


@pytest.mark.parametrize("flags, message", [
    (["--sigma-px", "-2"], "--sigma-px -2.0 must be a finite number at least 0"),
    (["--sigma-px", "0"], "must be above 0"),
    (["--rotation-deg", "nan"], "--rotation-deg nan must be a finite number from 0 to 180"),
    (["--min-peak", "2"], "--min-peak 2.0 must be a finite number from 0 to 1"),
    (["--warmup-epochs", "-1"], "--warmup-epochs -1 must be"),
    (["--epochs", "0"], "must be at least 1"),
    (["--input-size", "40"], "--input-size 40 must be a positive multiple of 16"),
    (["--crop-output-size", "48"], None),
    (["--crop-output-size", "48", "--decoder-channels", "32,16,8,8,8"], "--crop-output-size 48"),
])
def test_heatmap_numbers_checked(heatmap_train, flags, message):
    module = heatmap_train
    required = ["--stage", "coarse", "--metadata", "m.csv", "--output-dir", "x"]
    args = module.get_args_parser().parse_args([*required, *flags])
    if message is None:
        module.check_numbers(args)
    else:
        with pytest.raises(ValueError, match=message):
            module.check_numbers(args)


def test_bounded_number_types():
    assert positive_int("3") == 3
    assert non_negative_int("0") == 0
    assert positive_float("0.5") == 0.5
    for parse, text in ((positive_int, "0"), (positive_int, "2.5"), (non_negative_int, "-1"),
                        (positive_float, "0"), (positive_float, "nan"), (positive_float, "-1e-3")):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            parse(text)
