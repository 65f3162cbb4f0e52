"""Executes the teaching notebook ``examples/dice_school.ipynb`` in place.

``python3 examples/execute_notebook.py`` runs every cell in a fresh kernel (on the CPU, as a
laptop would), writes the notebook back with its new outputs, and saves the figure of the cell
tagged ``readme-figure`` as ``examples/dice_school_descent.png`` for the README.
``tests/test_dice_school.py`` uses the same functions to check that the stored outputs are
current.
"""

from __future__ import annotations

import base64
import copy
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "dice_school.ipynb"
FIGURE = HERE / "dice_school_descent.png"
FIGURE_TAG = "readme-figure"


def execute(nb: nbformat.NotebookNode, timeout: int = 300) -> nbformat.NotebookNode:
    """A copy of ``nb`` executed top to bottom in a fresh ``python3`` kernel.

    Raises:
      nbclient.exceptions.CellExecutionError: when a cell raises.
    """
    nb = copy.deepcopy(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the stored notebook
        resources={"metadata": {"path": str(HERE)}},
    )
    # JAX on the CPU: the notebook is written for a laptop, and its printed numbers are
    # compared bit for bit with the stored ones.
    client.execute(env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return nb


def text_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """Every code cell's printed text, as ``(cell index, text)``.

    Kept: standard output (one block per cell, however the kernel happened to split it into
    messages), the ``text/plain`` of results, and errors. Left out: standard error (warnings
    name temporary files that change from run to run) and a figure's ``text/plain``
    (``<Figure size ...>``), since its image is the output.
    """
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        parts, stdout = [], []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                if out.name == "stdout":
                    stdout.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                if "image/png" not in out.data and "text/plain" in out.data:
                    parts.append(f"[{out.output_type}]\n{out.data['text/plain']}")
            elif out.output_type == "error":
                parts.append(f"[error]\n{out.ename}: {out.evalue}")
        if stdout:
            parts.insert(0, "[stdout]\n" + "".join(stdout))
        found.append((index, "".join(parts)))
    return found


def stale_cells(stored: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> list[int]:
    """The indices of the code cells whose printed text differs between two notebooks."""
    old, new = dict(text_outputs(stored)), dict(text_outputs(fresh))
    return sorted(i for i in old.keys() | new.keys() if old.get(i) != new.get(i))


def figure_cells(nb: nbformat.NotebookNode) -> list[int]:
    """The indices of the code cells that show a PNG figure."""
    return [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
    ]


def tagged_png(nb: nbformat.NotebookNode, tag: str = FIGURE_TAG) -> bytes:
    """The PNG shown by the one code cell tagged ``tag``."""
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected one cell tagged {tag!r}, found {len(cells)}")
    images = [o.data["image/png"] for o in cells[0].outputs if "image/png" in o.get("data", {})]
    if len(images) != 1:
        raise ValueError(f"the cell tagged {tag!r} shows {len(images)} figures, expected 1")
    return base64.b64decode(images[0])


def main() -> int:
    nb = execute(nbformat.read(NOTEBOOK, as_version=4))
    nbformat.write(nb, NOTEBOOK)
    FIGURE.write_bytes(tagged_png(nb))
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size:,} bytes) and {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
