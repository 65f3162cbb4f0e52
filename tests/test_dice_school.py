"""The teaching notebook examples/dice_school.ipynb: it runs, its stored outputs are current,
and the numbers it prints are the library's.

One headless execution (nbclient, a fresh kernel, JAX on the CPU) is shared by the tests
that need it; the others read the stored notebook only.
"""

from __future__ import annotations

import ast
import copy
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_output

import optax_dice
from examples import execute_notebook as runner

ROOT = Path(__file__).resolve().parents[1]
STORED = nbformat.read(runner.NOTEBOOK, as_version=4)
STORED_TEXT = dict(runner.text_outputs(STORED))
ALL_TEXT = "\n".join(STORED_TEXT.values())


@pytest.fixture(scope="module")
def fresh() -> nbformat.NotebookNode:
    return runner.execute(STORED, timeout=240)


def _cell_printing(marker: str) -> int:
    (index,) = [i for i, text in STORED_TEXT.items() if marker in text]
    return index


def test_a_fresh_run_prints_exactly_what_is_stored(fresh):
    # Every code cell's standard output (and any result or error), text for text.
    assert dict(runner.text_outputs(fresh)) == STORED_TEXT
    assert runner.stale_cells(STORED, fresh) == []
    # The same cells show a figure, and the one for the README is among them.
    assert runner.figure_cells(fresh) == runner.figure_cells(STORED)
    assert len(runner.figure_cells(STORED)) == 5
    assert runner.tagged_png(fresh)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_stored_notebook_is_clean_complete_and_small():
    code = [c for c in STORED.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "stored without running every cell"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings in the stored notebook"
    assert runner.NOTEBOOK.stat().st_size < 600_000
    # Only the library, JAX, optax, matplotlib (and numpy, which they all bring).
    imported = set()
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
    assert imported == {"jax", "matplotlib", "numpy", "optax", "optax_dice"}


def test_the_comparison_sees_a_changed_number_but_not_a_split_message():
    index = _cell_printing("first 10 naturals of key 0")
    changed = copy.deepcopy(STORED)
    (out,) = [o for o in changed.cells[index].outputs if "key 0: [3," in o.get("text", "")]
    out.text = out.text.replace("key 0: [3,", "key 0: [4,", 1)
    assert runner.stale_cells(STORED, changed) == [index]

    # The kernel may deliver one cell's prints as several stream messages.
    split = copy.deepcopy(STORED)
    cell = split.cells[index]
    text = "".join(o.text for o in cell.outputs if o.get("name") == "stdout")
    cut = len(text) // 2
    cell.outputs = [
        new_output("stream", name="stdout", text=text[:cut]),
        new_output("stream", name="stderr", text="a warning\n"),
        new_output("stream", name="stdout", text=text[cut:]),
    ]
    assert runner.stale_cells(STORED, split) == []


def test_the_odds_it_prints_are_the_librarys():
    assert str(optax_dice.odds(dice="d20", threshold=15)) in ALL_TEXT
    rows = {
        "d20, threshold 15, advantage": dict(threshold=15, advantage=True),
        "d20, threshold 15, disadvantage": dict(threshold=15, disadvantage=True),
        "d20, threshold 15, modifier +2": dict(threshold=15, modifier=2),
        "d20, threshold 20": dict(threshold=20),
        "d4, threshold 3": dict(dice="d4", threshold=3),
        "d100, threshold 75": dict(dice="d100", threshold=75),
    }
    for name, kw in rows.items():
        o = optax_dice.odds(**kw)
        expected = f"{name:<32}{o.expected_scale:>+9.4f}{o.std_scale:>8.4f}{o.p_negative:>14.4f}"
        assert expected in ALL_TEXT.splitlines(), name


def test_the_rolls_it_prints_are_roll_sequence():
    for key in (0, 1):
        natural = optax_dice.roll_sequence(key, 10, threshold=12, modifier=2).natural
        assert f"first 10 naturals of key {key}: {np.asarray(natural).tolist()}" in ALL_TEXT
    seq = optax_dice.roll_sequence(0, 20, threshold=12, modifier=2)
    table = STORED_TEXT[_cell_printing("position after")]
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+[a-z ]+?\s+([+-]\d\.\d\d)\s", table, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 13))
    for update, natural, total, scale in rows:
        t = int(update) - 1
        assert (int(natural), int(total)) == (int(seq.natural[t]), int(seq.total[t]))
        assert scale == f"{float(seq.scale[t]):+.2f}"
    assert f"(updates 13 to 20): {np.asarray(seq.natural[12:20]).tolist()}" in table


def _valley_loss(scales: np.ndarray) -> float:
    # SGD (lr 0.05) on 0.5 * (x^2 + 10 y^2) from (-4, 1.5) in closed form: each update
    # multiplies x by 1 - lr * s and y by 1 - 10 lr * s.
    x = -4.0 * np.prod(1 - 0.05 * scales)
    y = 1.5 * np.prod(1 - 0.5 * scales)
    return 0.5 * (x**2 + 10 * y**2)


def test_the_valley_final_losses_it_prints_match_a_closed_form():
    table = STORED_TEXT[_cell_printing("uphill steps")]
    printed = {
        m[0]: float(m[1])
        for m in re.findall(r"^quadratic valley\s+(.+?)\s+(\S+)\s+\d+\s+\d+$", table, re.M)
    }
    expected = {
        "no dice": _valley_loss(np.ones(60)),
        "DC 12, +2": _valley_loss(
            np.asarray(optax_dice.roll_sequence(0, 60, threshold=12, modifier=2).scale, np.float64)
        ),
        "DC 15": _valley_loss(
            np.asarray(optax_dice.roll_sequence(0, 60, threshold=15).scale, np.float64)
        ),
    }
    assert printed.keys() == expected.keys()
    for name, loss in expected.items():
        # printed to 4 significant digits from a float32 run
        assert math.isclose(printed[name], loss, rel_tol=2e-3), (name, printed[name], loss)
    assert "Rosenbrock        DC 15      overflow after update" in table


def test_readme_shows_the_notebook_and_its_current_figure():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Teaching") :]
    section = section[: section.index("\n## ", 1)]
    assert "(examples/dice_school.ipynb)" in section
    assert "(examples/dice_school_descent.png)" in section
    assert runner.FIGURE.read_bytes() == runner.tagged_png(STORED)
