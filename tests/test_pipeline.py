"""End-to-end test of pipeline.sh on the synthetic set with --quick sizes.

One module-scoped run (about two minutes on two CPU cores, most of it starting Python
processes) feeds every test here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE_HEADINGS = ("## Lung segmentation", "## Dome localisation", "## Geometric rule on the predicted masks")
STEP_FOLDERS = (
    "data/images", "splits", "segmentation/train", "segmentation/test/masks", "metadata",
    "heatmap/mask_coarse", "heatmap/mask_fine", "heatmap/predict_mask", "heatmap/evaluate", "baseline",
)


def run_pipeline(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "pipeline.sh"), *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Return every markdown table of ``text`` as rows of stripped cells, separator rows left out."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("pipeline") / "synthetic"
    result = run_pipeline("--data", "synthetic", "--output-dir", str(output), "--quick")
    assert result.returncode == 0, f"pipeline.sh failed:\n{result.stderr[-4000:]}"
    return output, result


def test_writes_every_step_folder(quick_run):
    output, _ = quick_run
    for folder in STEP_FOLDERS:
        assert (output / folder).is_dir(), folder


def test_report_tables_filled(quick_run):
    output, _ = quick_run
    text = (output / "report.md").read_text()
    for heading in TABLE_HEADINGS:
        assert heading in text, heading
    tables = markdown_tables(text)
    assert len(tables) == 4
    for table in tables:
        header, *rows = table
        assert rows, f"table {header} has no rows"
        for row in rows:
            assert len(row) == len(header), row
            assert all(cell for cell in row), f"empty cell in {row}"
            assert not any(cell.lower() in ("nan", "n/a") or "nan " in cell.lower() for cell in row), row


def test_report_marks_synthetic(quick_run):
    output, _ = quick_run
    text = (output / "report.md").read_text()
    assert text.startswith("# Results on the SYNTHETIC demo set")
    assert "**SYNTHETIC DATA.**" in text


def test_report_figure_links_exist(quick_run):
    output, _ = quick_run
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (output / "report.md").read_text())
    assert links
    for link in links:
        assert (output / link).is_file(), link


def test_commands_printed_and_recorded(quick_run):
    output, result = quick_run
    recorded = (output / "commands.sh").read_text().splitlines()
    for script in ("segmentation_train/train.py", "segmentation_test/evaluate.py", "build_metadata.py",
                   "heatmap_train/train.py", "heatmap_test/predict.py", "heatmap_test/evaluate.py",
                   "derive_landmarks.py"):
        assert any(script in line for line in recorded), script
        assert f"/{script}" in result.stderr or f" {script}" in result.stderr, script


def test_rejects_reused_output(quick_run):
    output, _ = quick_run
    result = run_pipeline("--data", "synthetic", "--output-dir", str(output), "--quick")
    assert result.returncode != 0
    assert "--resume" in result.stderr


def test_resume_skips_finished_steps(quick_run):
    output, _ = quick_run
    before = (output / "segmentation" / "train" / "best.pt").stat().st_mtime_ns
    result = run_pipeline("--data", "synthetic", "--output-dir", str(output), "--quick", "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "segmentation_train: finished in an earlier run, skipped" in result.stderr
    assert (output / "segmentation" / "train" / "best.pt").stat().st_mtime_ns == before


def test_rejects_unknown_argument(tmp_path):
    result = run_pipeline("--data", "synthetic", "--output-dir", str(tmp_path / "run"), "--epochs", "3")
    assert result.returncode == 2
    assert "unknown argument '--epochs'" in result.stderr


def test_rejects_missing_dataset(tmp_path):
    result = run_pipeline("--data", str(tmp_path / "absent"), "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "not found" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("fold", ["7", "5"])
def test_rejects_missing_fold(tmp_path, fold):
    result = run_pipeline("--data", "synthetic", "--output-dir", str(tmp_path / "run"), "--fold", fold)
    assert result.returncode == 1
    assert f"--fold {fold}" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arguments", [("--output-dir",), ("--output-dir", "--fold", "1")])
def test_rejects_option_without_value(tmp_path, arguments):
    result = run_pipeline("--data", "synthetic", *arguments)
    assert result.returncode == 2
    assert "--output-dir needs a value" in result.stderr
    assert "unbound variable" not in result.stderr


def test_rejects_threads_that_are_not_a_number(tmp_path):
    result = run_pipeline("--data", "synthetic", "--output-dir", str(tmp_path / "run"), "--threads", "abc")
    assert result.returncode == 1
    assert "--threads 'abc'" in result.stderr
    assert not (tmp_path / "run").exists()
