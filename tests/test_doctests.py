"""Docstring examples: exact (no NUMBER flag), and those of examples/ run too.

pytest collects doctests from ``optax_dice/`` only (``testpaths``); the modules under
``examples/bert/`` and ``examples/experiments/`` are run here with the same option flags.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
    "doctest_optionflags"
]
EXAMPLE_MODULES = sorted(
    m.name
    for package in ("bert", "experiments")
    for m in pkgutil.iter_modules([str(ROOT / "examples" / package)], f"examples.{package}.")
)


def test_doctests_compare_numbers_exactly():
    # With NUMBER, an expected 0.9 accepts 1.0 (it compares to the written precision).
    assert "NUMBER" not in FLAGS
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1.0\n0.9\n", {}, "number", None, 0)
    runner = doctest.DocTestRunner(optionflags=_flags())
    assert runner.run(test, out=lambda _: None).failed == 1


def _flags() -> int:
    flags = 0
    for name in FLAGS:
        flags |= doctest.OPTIONFLAGS_BY_NAME[name]
    return flags


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_example_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=_flags())
    assert result.failed == 0, name


def test_the_doctests_of_examples_are_found():
    attempted = {
        name: doctest.testmod(importlib.import_module(name), optionflags=_flags()).attempted
        for name in ("examples.bert.weights", "examples.bert.perturb", "examples.bert.data")
    }
    assert all(n > 0 for n in attempted.values()), attempted
