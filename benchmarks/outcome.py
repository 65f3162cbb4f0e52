"""What a part of the GPU check amounted to, from its exit status and its last lines.

A pytest part that exits 0 having skipped every test (JAX fell back to the CPU, so every
GPU test skipped itself) did not pass: it says nothing about the GPU. :func:`part_result`
reads pytest's closing count line (``3 passed, 2 skipped in 4.1s``) and reports such a part
as skipped; any other part is passed or failed by its exit status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# pytest's closing line, with or without -q's bare form: "===== 5 skipped in 1.2s =====".
_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
_CLOSING = re.compile(r"^=*\s*(no tests ran|(\d+ \w+(, )?)+)( in [\d.]+s)?")


def pytest_counts(lines: Iterable[str]) -> dict[str, int] | None:
    """The outcome counts of pytest's closing line among ``lines`` (the last one that is
    such a line), or None when there is none (not a pytest part).

    Example:
      >>> pytest_counts(["...", "3 passed, 2 skipped in 4.10s"])
      {'passed': 3, 'skipped': 2}
      >>> pytest_counts(["SUMMARY train_step: ..."]) is None
      True
    """
    for line in reversed(list(lines)):
        text = line.strip()
        if _CLOSING.match(text) and (" in " in text or "no tests ran" in text):
            return {kind: int(n) for n, kind in _COUNTS.findall(text)}
    return None


def part_result(returncode: int | None, lines: Iterable[str]) -> str:
    """``passed``, ``skipped (...)`` or ``FAILED (exit n)`` for a part that ran to its end
    (``returncode`` not None): a pytest part that passed no test is skipped, not passed.

    Example:
      >>> part_result(0, ["5 skipped in 0.51s"])
      'skipped (all 5 tests skipped: no GPU?)'
      >>> part_result(0, ["4 passed, 1 skipped in 9.00s"]), part_result(1, ["1 failed in 2s"])
      ('passed', 'FAILED (exit 1)')
    """
    counts = pytest_counts(lines)
    if returncode == 5 and counts is not None:  # pytest: no tests collected
        return "skipped (no tests ran)"
    if returncode != 0:
        return f"FAILED (exit {returncode})"
    if counts is not None and not counts.get("passed", 0):
        skipped = counts.get("skipped", 0)
        return f"skipped (all {skipped} tests skipped: no GPU?)" if skipped else "skipped"
    return "passed"
