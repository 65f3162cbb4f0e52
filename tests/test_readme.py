"""README stays true: its test command is CI's, its Python examples run, its links resolve."""

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


def test_the_odds_command_readme_names_prints_its_table_row():
    # The full odds table and the CLI's output live in docs/guides/rules.md, checked by
    # tests/test_docs.py; README names the command and quotes E[scale] and std.
    match = re.search(r"`python -m optax_dice (odds [^`]+)` prints it", README.replace("\n", " "))
    assert match, "README names the odds command"
    proc = subprocess.run(
        [sys.executable, "-m", "optax_dice", *match.group(1).split()],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "E[scale] = +0.3700   std = 0.5330" in proc.stdout
    row = "| d20, threshold 12, modifier +2 (roll-to-train's example run) | +0.3700 | 0.5330 |"
    assert row in README


def test_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_readme_links_every_guide():
    guides = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "guides").glob("*.md"))
    assert guides
    for guide in [*guides, "docs/getting_started.md", "docs/api.rst"]:
        assert f"]({guide})" in README, guide


def test_readme_builds_the_docs_with_warnings_as_errors():
    command = _block_after("Build the documentation", "bash")
    assert command == (
        'python3 -m pip install -e ".[docs]" && python3 -m sphinx -W -b html docs docs/_build/html'
    )


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
