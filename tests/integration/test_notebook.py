"""The analysis notebook runs top to bottom, headless, on the lakehouse the pipeline built."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_runs_top_to_bottom(pipeline, monkeypatch):
    lake, _ = pipeline
    monkeypatch.setenv("ECOM_LAKEHOUSE", lake.root)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 4  # the charts were drawn
