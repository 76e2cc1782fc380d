"""Execute the notebooks in notebooks/ against a small real run, so a notebook that breaks fails.

The run is pipeline.sh with --quick sizes on 16 jsrt224 images (linked, not copied, from
the shared data folder into a temporary dataset folder, with their own 5-fold split), so
the notebooks read every file a real run writes. It takes about three minutes on two CPU
cores. Without the shared data folder these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SUBSET_SIZE = 16


def make_subset(shared_data: Path, folder: Path) -> Path:
    """Link the first SUBSET_SIZE jsrt224 images that have reference points into ``folder``."""
    source = shared_data / "jsrt224"
    landmarks = pd.read_csv(source / "landmarks.csv").head(SUBSET_SIZE)
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
        for image_id in landmarks["image_id"]:
            (folder / kind / f"{image_id}.png").symlink_to(source / kind / f"{image_id}.png")
    landmarks.to_csv(folder / "landmarks.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("notebooks")
    # The folder name selects the jsrt224 mask encoding preset (labels 150 and 200).
    dataset = make_subset(shared_data, work / "jsrt224")
    python = REPO / ".venv" / "bin" / "python"
    subprocess.run([str(python if python.exists() else "python"), str(REPO / "data_splits" / "make_splits.py"),
                    "--data-root", str(dataset), "--output-dir", str(work / "splits"), "--folds", "5",
                    "--seed", "2026"], check=True, capture_output=True, timeout=120)
    output = work / "run"
    result = subprocess.run(
        ["bash", str(REPO / "pipeline.sh"), "--data", str(dataset), "--output-dir", str(output),
         "--split", str(work / "splits" / "fold0.csv"), "--quick", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, f"pipeline.sh failed on the jsrt224 subset:\n{result.stderr[-4000:]}"
    return output


def test_notebooks_found():
    assert [path.name for path in NOTEBOOKS] == [
        "01_data_sanity.ipynb", "02_segmentation_results.ipynb", "03_landmark_results.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} has stored outputs; clear them before committing"
            assert cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_executes(path, real_run, monkeypatch):
    monkeypatch.setenv("HEMI_RUN_DIR", str(real_run))
    monkeypatch.setenv("HEMI_TABLES_DIR", str(real_run / "no_tables"))
    # The inline backend, not a backend chosen for the test process.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    book = nbformat.read(path, as_version=4)
    # IPC transport: the kernel talks to this process through socket files in a short
    # temporary folder (socket paths are limited to about 100 characters), not TCP ports.
    socket_dir = Path(tempfile.mkdtemp(prefix="hemi-ipc-"))
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(socket_dir / "kernel"))
    client = NotebookClient(book, km=kernel, timeout=300, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
    errors = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors, errors
