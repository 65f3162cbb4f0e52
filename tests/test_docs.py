"""The documentation site: every public name in the API reference, every code block checked,
and the site builds with warnings as errors.

Code blocks of the pages under docs/ (the results pages included from benchmarks/ are records of
runs, and the notebook is executed by test_dice_school.py):

* ```python: run, page by page in one namespace, in a fresh interpreter with 4 CPU devices.
* ```pycon: doctests, with the project's option flags.
* ```text starting with ``$ python -m optax_dice``: exactly what the command line prints.
* ```bash: one of README's commands, verbatim (README's own tests and CI check those).

Any other code block fails ``test_every_code_block_is_checked``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import optax_dice
from tests.test_odds import assert_ruleset_rows_are_what_odds_computes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api.rst"
README = (ROOT / "README.md").read_text()
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
FENCE = re.compile(r"^(`{3,})([^\n`]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
CHECKED = ("python", "pycon", "text", "bash")
# MyST directives written as fences that hold no code
DIRECTIVES = ("{toctree}", "{include}", "{note}", "{warning}", "{tip}", "{eval-rst}")
CLI_PREFIX = "$ python -m optax_dice "
API_DIRECTIVE = re.compile(r"^\.\. auto(?:function|class|data|module):: (optax_dice\.[\w.]+)", re.M)


def _blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line of the fence) of every fenced block of a Markdown page."""
    text = path.read_text()
    return [
        (m.group(2).strip().split(" ")[0], m.group(3), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _pages_with(language: str) -> list[Path]:
    return [p for p in PAGES if any(lang == language for lang, _, _ in _blocks(p))]


def _documented_names() -> set[str]:
    return set(API_DIRECTIVE.findall(API.read_text()))


# -- the API reference ------------------------------------------------------------------------


def test_every_public_name_is_in_the_api_reference():
    documented = _documented_names()
    missing = [n for n in optax_dice.__all__ if f"optax_dice.{n}" not in documented]
    assert not missing, f"add these to docs/api.rst (one line each): {missing}"


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def test_the_api_reference_documents_names_that_exist():
    for dotted in _documented_names():
        try:
            _resolve(dotted)
        except (ImportError, AttributeError) as err:
            raise AssertionError(f"docs/api.rst documents {dotted}, which does not exist") from err
        if dotted.count(".") == 1 and not inspect.ismodule(_resolve(dotted)):
            assert dotted.split(".")[1] in optax_dice.__all__, f"{dotted} is not public"


def test_the_coverage_check_fails_on_an_undocumented_name(monkeypatch):
    monkeypatch.setattr(optax_dice, "__all__", [*optax_dice.__all__, "brand_new"])
    with pytest.raises(AssertionError, match="brand_new"):
        test_every_public_name_is_in_the_api_reference()


# -- code blocks ------------------------------------------------------------------------------


def test_the_pages_are_found():
    names = {_rel(p) for p in PAGES}
    assert {"docs/index.md", "docs/getting_started.md", "docs/guides/rules.md"} <= names
    assert len(_pages_with("python")) >= 7


def test_every_code_block_is_checked():
    unchecked = [
        f"{_rel(p)}:{line} ({lang or 'no language'})"
        for p in PAGES
        for lang, _, line in _blocks(p)
        if lang not in CHECKED and lang not in DIRECTIVES
    ]
    assert not unchecked, f"no test checks these blocks: {unchecked}"
    stray = [
        f"{_rel(p)}:{line}"
        for p in PAGES
        for lang, code, line in _blocks(p)
        if lang == "text" and not code.startswith(CLI_PREFIX)
    ]
    assert not stray, f"a text block must show a `{CLI_PREFIX.strip()}` command: {stray}"
    literal = re.compile(
        r"^(?:\.\. (?:code-block|code|sourcecode|literalinclude|doctest)::|(?!\.\. ).*::$)", re.M
    )
    rst_code = [_rel(p) for p in DOCS.rglob("*.rst") if literal.search(p.read_text())]
    assert not rst_code, f"an unchecked literal block in {rst_code}"


def test_the_block_parser_finds_blocks_with_their_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\n\n```python\nx = 1\n```\n\ntext\n\n````text\n```\n````\n")
    assert _blocks(page) == [("python", "x = 1\n", 3), ("text", "```\n", 9)]


RUNNER = textwrap.dedent(
    """
    import sys
    namespace = {"__name__": "__main__"}
    for path, line, code in BLOCKS:
        print(f"--- {path}:{line}", flush=True)
        exec(compile(code, f"{path}:{line}", "exec"), namespace)
    """
)


@pytest.mark.parametrize("page", _pages_with("python"), ids=_rel)
def test_python_blocks_run(page):
    if "from flax import" in page.read_text():
        pytest.importorskip("flax")  # the examples extra, which README's test command installs
    blocks = [(_rel(page), line, code) for lang, code, line in _blocks(page) if lang == "python"]
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", f"BLOCKS = {blocks!r}\n{RUNNER}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _doctest_flags() -> int:
    names = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "doctest_optionflags"
    ]
    flags = 0
    for name in names:
        flags |= doctest.OPTIONFLAGS_BY_NAME[name]
    return flags


@pytest.mark.parametrize("page", _pages_with("pycon"), ids=_rel)
def test_pycon_blocks_are_doctests(page):
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=_doctest_flags())
    globs: dict = {}
    for lang, code, line in _blocks(page):
        if lang == "pycon":
            runner.run(parser.get_doctest(code, globs, _rel(page), str(page), line))
    assert runner.summarize(verbose=False).failed == 0


def _cli_blocks() -> list[tuple[str, str]]:
    found = []
    for path, text in [(ROOT / "README.md", README)] + [(p, p.read_text()) for p in PAGES]:
        for m in FENCE.finditer(text):
            if m.group(2).strip() == "text" and m.group(3).startswith(CLI_PREFIX):
                line = text.count("\n", 0, m.start()) + 1
                found.append((f"{_rel(path)}:{line}", m.group(3)))
    return found


@pytest.mark.parametrize(("where", "block"), _cli_blocks(), ids=[w for w, _ in _cli_blocks()])
def test_cli_blocks_are_what_the_cli_prints(where, block):
    command, _, expected = block.partition("\n")
    argv = command.removeprefix(CLI_PREFIX).split()
    proc = subprocess.run(
        [sys.executable, "-m", "optax_dice", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected.strip(), where


def test_bash_blocks_are_readme_commands():
    for page in PAGES:
        for lang, code, line in _blocks(page):
            if lang == "bash":
                where = f"{_rel(page)}:{line}"
                assert code.strip() in README, f"{where} is not one of README's commands"


def test_ruleset_tables_are_what_odds_computes():
    assert_ruleset_rows_are_what_odds_computes([p.read_text() for p in PAGES])


# -- the site ---------------------------------------------------------------------------------


def _readme_docs_command() -> str:
    match = re.search(r"^python3 -m pip install -e \"\.\[docs\]\" && (.*)$", README, re.M)
    assert match, "README shows how to build the docs"
    return match.group(1)


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """README's command (less the install), into a temporary folder: a broken reference, a page
    outside every table of contents or a docstring that does not parse fails it."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    command = _readme_docs_command()
    assert command == "python3 -m sphinx -W -b html docs docs/_build/html"
    out = tmp_path / "html"
    argv = [*command.split()[1:-1], str(out)]
    proc = subprocess.run(
        [sys.executable, *argv, "-q", "-d", str(tmp_path / "doctrees")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    api = (out / "api.html").read_text()
    for name in optax_dice.__all__:
        assert f'id="optax_dice.{name}"' in api, name
    assert "usage: python -m optax_dice odds" in api  # the CLI help, generated
    notebook = (out / "dice_school.html").read_text()
    assert notebook.count("<img") >= 3  # the stored figures, not re-executed
    for page in ("getting_started", "guides/multi_host", "benchmarks/results/study"):
        assert (out / f"{page}.html").exists(), page


# -- figures quoted from the study ------------------------------------------------------------

QUOTED = re.compile(
    r"\(([+-]?\d\.\d{3})\s+\[([+-]?\d\.\d{3}),\s+([+-]?\d\.\d{3})\]\s+over\s+(\d+)\s+paired\s+"
    r"seeds,\s+answer\s+(\d)\)"
)


def test_the_guides_quote_the_committed_study():
    # A guide's "(-0.143 [-0.157, -0.129] over 10 paired seeds, answer 5)" is answer 5's figure
    # in the committed study.md, so that re-deriving the study cannot leave a guide stale.
    study = (ROOT / "benchmarks" / "results" / "study.md").read_text()
    answers = dict(re.findall(r"^(\d)\. (.*)$", study, re.M))
    quoted = [
        (page, m) for page in PAGES if "benchmarks" not in page.parts
        for m in QUOTED.finditer(" ".join(page.read_text().split()))
    ]  # fmt: skip
    assert len(quoted) >= 2, "the fair-die guide quotes answers 4 and 5"
    for page, m in quoted:
        mean, lo, hi, n, answer = m.groups()
        assert f"{mean} [{lo}, {hi}] over {n} paired seed(s)" in answers[answer], (
            f"{_rel(page)} quotes answer {answer} as {m.group(0)}; the committed study says: "
            f"{answers[answer]}"
        )
