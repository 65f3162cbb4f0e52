"""The package: light imports, documented public API."""

import inspect
import subprocess
import sys

import optax_dice


def test_import_pulls_no_heavy_dependency():
    code = (
        "import sys, optax_dice; "
        "heavy = [m for m in ('flax', 'transformers', 'torch', 'datasets', 'orbax') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_callable_has_args_returns_and_an_example():
    for name in optax_dice.__all__:
        obj = getattr(optax_dice, name)
        if inspect.isclass(obj):
            assert obj.__doc__, name
            continue
        doc = inspect.getdoc(obj) or ""
        if name == "format_odds":
            assert doc, name
            continue
        for section in ("Args:", "Returns:", "Example:"):
            assert section in doc, f"{name} lacks {section}"
