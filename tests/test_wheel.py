"""The wheel: the package and its ``py.typed`` marker, nothing from the examples, the tests, the
benchmarks or the docs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.name for p in (ROOT / "optax_dice").glob("*.py"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("hatchling")  # the test extra installs it: no download at test time
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (path,) = out.glob("optax_dice-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_holds_the_package_and_the_marker(wheel):
    names = set(wheel.namelist())
    assert "optax_dice/py.typed" in names  # PEP 561: type checkers read the inline hints
    for module in MODULES:
        assert f"optax_dice/{module}" in names, module


def test_the_wheel_holds_nothing_else(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}
    (dist_info,) = [t for t in top if t.endswith(".dist-info")]
    assert top == {"optax_dice", dist_info}, top
    for name in wheel.namelist():
        assert not name.startswith(("examples/", "tests/", "benchmarks/", "docs/")), name


def test_the_wheel_declares_the_extras(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    for extra in ("examples", "test", "docs", "bench"):
        assert f"Provides-Extra: {extra}" in text, extra
    assert "Requires-Dist: sphinx" in text
