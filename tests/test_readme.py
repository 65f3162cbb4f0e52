"""README stays true: its test command is CI's, its Python examples run."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str, lang: str) -> str:
    start = README.index(heading)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert match, heading
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _block_after("Run the tests:", "bash")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()


def test_main_job_command_runs_the_training_script():
    assert _block_after("Run the main job", "bash").endswith("python3 examples/bert/train.py")


def test_quickstart_runs():
    code = _block_after("## Quickstart", "python")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_odds_example_is_what_the_cli_prints():
    block = _block_after("exactly, and the command line prints it:", "text")
    command, _, expected = block.partition("\n")
    argv = command.removeprefix("$ python -m optax_dice ").split()
    proc = subprocess.run(
        [sys.executable, "-m", "optax_dice", *argv], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == expected.strip()


def test_the_suite_collects_without_importing_torch():
    """README's test command installs no torch, so collecting the suite (the doctests of every
    module included) must not import it, whether or not this machine happens to have it."""
    code = textwrap.dedent(
        """
        import sys, pytest
        status = pytest.main(["--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider"])
        print("TORCH IMPORTED:", "torch" in sys.modules)
        sys.exit(status)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TORCH IMPORTED: False" in proc.stdout, proc.stdout[-3000:]
