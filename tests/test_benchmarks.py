"""The benchmark scripts still run: each with ``--quick`` in a subprocess (tables, summary).

Timing is never asserted here: the figures of a quick run on a shared machine mean nothing.
The full runs, and their figures, are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _common

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 600) -> str:
    """Runs ``python benchmarks/<script> --quick *args`` from the repository root."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _check_output(out: str, name: str, headers: list[str], *, verdict: bool = True) -> list[str]:
    """Checks the machine line, a Markdown table with ``headers`` and the summary line (which
    ends with a verdict on the target, or says that it passes none)."""
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"# {name}")
    assert any(line.startswith("machine: ") for line in lines)
    header_rows = [line for line in lines if line.startswith("| ") and headers[0] in line]
    assert header_rows, out
    for header in headers:
        assert header in header_rows[0], (header, header_rows[0])
    assert lines[-1].startswith(f"SUMMARY {name}: "), lines[-1]
    if verdict:
        assert lines[-1].endswith(("met", "NOT met")), lines[-1]
    else:
        assert "met" not in lines[-1].split(": ")[-1], lines[-1]
        assert "target not judged (--quick: a smoke test on a toy " in lines[-1], lines[-1]
    return lines


@pytest.mark.timeout(600)
def test_update_overhead_quick() -> None:
    out = _run("update_overhead.py")
    lines = _check_output(
        out,
        "update_overhead",
        ["variant", "median ms", "paired ratio (IQR)", "state vs base", "param passes"],
        verdict=False,  # --quick is a smoke test: a toy tree says nothing of the target
    )
    for variant in (
        "| adamw ",
        "| chain(dice_roll(), adamw) ",
        "| chain(adamw, dice_roll()) ",
        "| MultiSteps(adamw, 4) ",
        "| accumulate(adamw, 4, per_mini_batch) ",
        "| accumulate(adamw, 4, per_accumulation_step) ",
        "| MultiSteps(clip+adamw, 4) ",
    ):
        assert any(line.startswith(variant) for line in lines), variant
    # Not timing: a structural fact of the summary that holds on any machine.
    assert "0 per-parameter state arrays" in lines[-1]


@pytest.mark.timeout(600)
def test_train_step_quick() -> None:
    pytest.importorskip("flax", reason="train_step needs the examples extra (flax)")
    out = _run("train_step.py")
    lines = _check_output(
        out, "train_step", ["variant", "samples/s", "ratio (medians)"], verdict=False
    )
    for variant in ("| off ", "| per_mini_batch ", "| per_accumulation_step "):
        assert any(line.startswith(variant) for line in lines), variant


@pytest.mark.timeout(600)
def test_vs_pytorch_quick() -> None:
    pytest.importorskip(
        "torch", reason="vs_pytorch needs torch, a bench-only extra: pip install torch==2.13.0"
    )
    pytest.importorskip("transformers", reason="vs_pytorch needs transformers' PyTorch BERT")
    pytest.importorskip("flax", reason="vs_pytorch needs the examples extra (flax)")
    out = _run("vs_pytorch.py")
    lines = _check_output(
        out,
        "vs_pytorch",
        ["side", "samples/s (median)", "speed vs roll-to-train's way"],
        verdict=False,
    )
    assert any(line.startswith("| PyTorch eager") for line in lines)
    assert any(line.startswith("| JAX jit + dice_roll") for line in lines)


def test_count_param_passes_sees_an_unfused_scale() -> None:
    """The pass counter tells a fused scale from a separate pass over the parameters."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((64, 64), jnp.float32)
    sizes = {64 * 64}

    def one_pass(x: jax.Array, s: jax.Array) -> jax.Array:
        return x * s + 1.0

    def two_passes(x: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
        return x * s, x * s + 1.0  # the scaled array is written out as well

    s = jnp.float32(0.5)
    fused = jax.jit(one_pass).lower(x, s).compile().as_text()
    unfused = jax.jit(two_passes).lower(x, s).compile().as_text()
    assert _common.count_param_passes(fused, sizes) == 1
    assert _common.count_param_passes(unfused, sizes) == 2


def test_tree_bytes_counts_keys_by_their_data() -> None:
    import jax
    import jax.numpy as jnp

    tree = {"w": jnp.zeros((3, 4), jnp.float32), "key": jax.random.key(0)}
    assert _common.tree_bytes(tree) == 3 * 4 * 4 + 2 * 4
