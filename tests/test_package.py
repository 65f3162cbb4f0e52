"""The package: light imports, documented public API."""

import inspect
import subprocess
import sys

import optax_dice

HEAVY = ("flax", "transformers", "torch", "datasets", "orbax")

# Records every attempt to import a heavy module, whether or not it is installed: checking
# sys.modules afterwards cannot fail where torch is absent.
IMPORT_SPY = f"""
import sys
attempts = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            attempts.append(name)
        return None
sys.meta_path.insert(0, Spy())
"""


def _attempted_imports(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_SPY + code + "\nprint(sorted(set(attempts)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_pulls_no_heavy_dependency():
    code = "import optax_dice, optax_dice.cli, optax_dice.__main__\noptax_dice.odds(threshold=12)"
    assert _attempted_imports(code) == []


def test_the_import_spy_sees_an_attempt_even_when_the_module_is_absent():
    code = "try:\n    import torch.nn\nexcept ImportError:\n    pass"
    assert "torch" in _attempted_imports(code)


def test_every_public_callable_has_args_returns_and_an_example():
    for name in optax_dice.__all__:
        obj = getattr(optax_dice, name)
        if isinstance(obj, int):  # a constant (MIN_SEED, MAX_SEED)
            continue
        if inspect.isclass(obj):
            # A NamedTuple gets a generated __doc__ ("DiceRollState(count, ...)"): ask for
            # a written one that documents every field.
            doc = inspect.getdoc(obj) or ""
            assert "Attributes:" in doc, name
            fields = getattr(obj, "_fields", None) or [
                f.name for f in getattr(obj, "__dataclass_fields__", {}).values()
            ]
            assert fields, name
            for field in fields:
                assert f"  {field}:" in doc, f"{name}.{field} is not documented"
            continue
        doc = inspect.getdoc(obj) or ""
        if name == "format_odds":
            assert doc, name
            continue
        for section in ("Args:", "Returns:", "Example:"):
            assert section in doc, f"{name} lacks {section}"


def _function_lengths(source: str) -> dict[str, int]:
    """Each function's lines, its docstring aside (a doctested Example is documentation)."""
    import ast

    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0]
            doc = 0
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                doc = first.end_lineno - first.lineno + 1
            lengths[f"{node.name}:{node.lineno}"] = node.end_lineno - node.lineno + 1 - doc
    return lengths


def test_no_function_is_longer_than_80_lines():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    too_long = {
        f"{path.relative_to(root)}:{name}": n
        for folder in ("optax_dice", "examples", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        for name, n in _function_lengths(path.read_text()).items()
        if n > 80
    }
    assert too_long == {}
    assert _function_lengths("def f():\n    '''Doc.\n\n    More.'''\n    return 1\n") == {"f:1": 2}
