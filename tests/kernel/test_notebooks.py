"""The example notebooks, executed headless with nbclient; outputs checked for real values."""
import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def execute(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    # Run in the notebooks folder, as a user would: the sample paths are relative to it.
    client = NotebookClient(nb, kernel_name="beamtime", timeout=600, resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    return nb


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "\n".join(out)


def test_kernel_tour():
    nb = execute("kernel-tour.ipynb")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    assert "%%sql" in text_of(cells[0])
    assert "shape: (100," in text_of(cells[1])
    summary = text_of(cells[3]).strip().splitlines()[-1]
    assert [v.strip() for v in summary.split("│")][:2] == ["100", "10"], summary
    assert "summary" in text_of(cells[4]) and "events" in text_of(cells[4])
    assert "saved summary (1 rows)" in text_of(cells[5])
    assert text_of(cells[6]).strip().splitlines()[-1].split("│")[0].strip() == "100"
    rust = text_of(cells[7])
    assert "scan delays: [-2.0, -0.75, 0.5, 1.75, 3.0]" in rust and rust.strip().endswith("5")
    (ROOT / "notebooks" / "summary.parquet").unlink(missing_ok=True)
