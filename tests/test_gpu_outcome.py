"""The GPU check's verdict on a part: skipped is not passed (issue 21, item 25)."""

import subprocess
import sys

import pytest

from benchmarks import outcome
from tests.train_helpers import REPO


@pytest.mark.parametrize(
    "returncode, lines, result",
    [
        (0, ["SKIPPED [5] tests/test_gpu.py:12: no GPU", "5 skipped in 0.51s"],
         "skipped (all 5 tests skipped: no GPU?)"),
        (0, ["======= 5 skipped in 0.51s ======="], "skipped (all 5 tests skipped: no GPU?)"),
        (0, ["4 passed, 1 skipped in 9.00s"], "passed"),
        (0, ["63 passed, 12 deselected in 80.2s"], "passed"),
        (1, ["FAILED tests/test_gpu.py::test_x", "1 failed, 3 passed in 2.00s"], "FAILED (exit 1)"),
        (5, ["no tests ran in 0.01s"], "skipped (no tests ran)"),
        (0, ["SUMMARY train_step: dice adds at most -0.5%"], "passed"),  # not a pytest part
        (2, ["Traceback ...", "ValueError: x"], "FAILED (exit 2)"),
    ],
)  # fmt: skip
def test_part_result(returncode, lines, result):
    assert outcome.part_result(returncode, lines) == result


def test_a_cpu_run_of_the_gpu_tests_reads_as_skipped():
    # On this CPU machine every GPU test skips itself: what the check must not call passed.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = proc.stdout.splitlines()[-3:]  # what benchmarks.gpu.run_part keeps
    assert proc.returncode == 0, proc.stdout
    assert outcome.part_result(proc.returncode, lines).startswith("skipped (all ")
