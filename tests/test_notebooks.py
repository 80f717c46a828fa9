"""Every notebook runs top to bottom on small settings, so that none of them rots."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS] == ["01_derivation", "02_convergence", "03_robustness"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    """Executes with BAYESPRUNE_NB_SMALL=1; the notebooks' own asserts check their results."""
    monkeypatch.setenv("BAYESPRUNE_NB_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    probe = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    nb.cells.insert(0, probe)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    # the kernel is this interpreter, so it imports this checkout's bayesprune
    # (normalised, not resolved: a venv called as ../venv/bin/python is the same interpreter,
    # while resolving symlinks would make every venv the base Python it links to)
    kernel = os.path.normpath(os.path.abspath(probe.outputs[0]["text"].strip()))
    assert kernel == os.path.normpath(os.path.abspath(sys.executable))
