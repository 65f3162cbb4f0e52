"""Helpers shared by the benchmark scripts: timing, statistics, tables, HLO and the machine.

Measurement rules, the same in every script:

* Every variant is compiled and run (warm-up) before any timing; compile time is never counted.
* Variants are interleaved: round ``r`` runs every variant once, in an order rotated by ``r``,
  so slow drift of the shared machine's load hits all variants alike.
* Each sample ends with ``jax.block_until_ready`` on the outputs (or ``.item()`` for PyTorch).
* Figures are medians; the spread is the interquartile range (IQR). Ratios are given two ways:
  the ratio of the medians, and the median of the per-round paired ratios (variant / baseline
  in the same round) with its IQR, which is less sensitive to load that changes between rounds.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Samples:
    """The timed samples (seconds) of one variant."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median sample, in seconds."""
        return float(np.median(self.seconds))

    @property
    def iqr(self) -> tuple[float, float]:
        """The 25th and 75th percentiles, in seconds."""
        q25, q75 = np.percentile(self.seconds, [25, 75])
        return float(q25), float(q75)

    def rel_iqr(self) -> float:
        """The IQR as a fraction of the median (a noise figure)."""
        q25, q75 = self.iqr
        return (q75 - q25) / self.median


def interleave(
    runners: dict[str, Callable[[], Any]],
    iters: int,
    *,
    warmup: int = 2,
    sync: Callable[[Any], Any] | None = None,
) -> dict[str, Samples]:
    """Times each runner ``iters`` times, interleaved round by round, after ``warmup`` runs.

    Args:
      runners: name -> a function that runs one sample and returns its outputs.
      iters: timed samples per runner.
      warmup: untimed runs per runner first (they also compile).
      sync: called on each sample's outputs before the clock stops (default:
        ``jax.block_until_ready``).

    Returns:
      name -> :class:`Samples`, in the order of ``runners``.
    """
    if sync is None:
        import jax

        sync = jax.block_until_ready
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            sync(runners[name]())
    samples = {name: Samples(name) for name in names}
    for r in range(iters):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            sync(runners[name]())
            samples[name].seconds.append(time.perf_counter() - start)
            samples[name].cpu_seconds.append(time.process_time() - cpu_start)
    return samples


def cores_used(samples: dict[str, Samples]) -> float:
    """CPU seconds this process used per wall second while timing (all threads together).

    Close to the number of cores on a quiet machine for work that uses them all; much less
    means other processes took the cores (the figures are then noisy).
    """
    cpu = sum(sum(s.cpu_seconds) for s in samples.values())
    wall = sum(sum(s.seconds) for s in samples.values())
    return cpu / wall if wall else float("nan")


def paired_ratios(variant: Samples, baseline: Samples) -> np.ndarray:
    """Per-round ratios variant / baseline (the samples of one round are side by side)."""
    return np.asarray(variant.seconds) / np.asarray(baseline.seconds)


def ratio_summary(variant: Samples, baseline: Samples) -> tuple[float, float, float, float]:
    """(ratio of medians, median paired ratio, its 25th and its 75th percentile)."""
    ratios = paired_ratios(variant, baseline)
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return variant.median / baseline.median, float(q50), float(q25), float(q75)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded for reading in a terminal."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def fmt_bytes(n: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_pct(ratio: float) -> str:
    """A ratio as a signed percentage change: 1.012 -> +1.2%."""
    return f"{(ratio - 1) * 100:+.1f}%"


def cpu_model() -> str:
    """The CPU's model name, from lscpu (or /proc/cpuinfo, or platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for row in out.splitlines():
            if row.startswith("Model name:"):
                return row.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for row in file:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """One line naming the CPU, its cores, the JAX device and the versions."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    cores = len(os.sched_getaffinity(0))
    pinned = "" if cores == os.cpu_count() else f" (this process pinned to {cores})"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores{pinned}; JAX device: {device.platform} "
        f"({kind}) x{jax.device_count()}; jax {jax.__version__}; python {platform.python_version()}"
    )


def load_line(when: str) -> str:
    """The machine's load average (1, 5, 15 minutes): other work on the cores makes noise."""
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {when}: {one:.2f}, {five:.2f}, {fifteen:.2f} "
        f"(1, 5, 15 min; {os.cpu_count()} cores)"
    )


def tree_bytes(tree: Any) -> int:
    """The bytes of a tree of arrays or ShapeDtypeStructs (PRNG keys by their key data)."""
    import jax
    import jax.numpy as jnp

    total = 0
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        total += int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"kind=k\w+, calls=%([\w.\-]+)")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(.+?)\s+([\w\-]+)\(")
_ARRAY = re.compile(r"\b(?:f16|bf16|f32|f64)\[([\d,]*)\]")
_NOT_A_PASS = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}


def _instructions(hlo_text: str) -> list[tuple[str, str]]:
    """(result type, opcode) of every instruction outside fusion bodies."""
    fused = set(_CALLS.findall(hlo_text))
    out, skip = [], False
    for row in hlo_text.splitlines():
        header = _COMPUTATION.match(row)
        if header and "=" not in row.split("{", 1)[0].split("(", 1)[0]:
            skip = header.group(1) in fused
            continue
        inst = None if skip else _INSTRUCTION.match(row)
        if inst is not None and inst.group(2) not in _NOT_A_PASS:
            out.append((inst.group(1), inst.group(2)))
    return out


def count_kernels(hlo_text: str) -> int:
    """Counts the compiled instructions outside fusion bodies (fusions, copies, calls, ...),
    less parameters, tuples, bitcasts and constants: roughly, the kernels a step launches."""
    return len(_instructions(hlo_text))


def count_param_passes(hlo_text: str, sizes: set[int]) -> int:
    """Counts the compiled kernels that write an array as large as one of the parameters.

    Every instruction outside fusion bodies (in the entry computation and in the branches of
    conditionals alike) whose result holds a floating-point array with a number of elements
    in ``sizes`` is one pass over that parameter (a fusion, a copy, ...); parameters, tuples
    and bitcasts are not, nor are integer arrays (a PRNG key's uint32[2] is no parameter). If
    the dice's scale is fused into the optimizer's kernels, a dice variant has exactly as many
    passes as its baseline; an unfused scale adds one pass per parameter.

    Args:
      hlo_text: ``jax.jit(f).lower(...).compile().as_text()``.
      sizes: the element counts of the parameters.

    Returns:
      The number of such kernels.
    """
    count = 0
    for result, _ in _instructions(hlo_text):
        for dims in _ARRAY.findall(result):
            numel = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
            if numel > 1 and numel in sizes:
                count += 1
                break
    return count


def cost_bytes(compiled: Any) -> float:
    """XLA's estimate of the bytes a compiled computation reads and writes."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("bytes accessed", float("nan")))


def make_batches(
    n: int,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    num_labels: int,
    *,
    low_id: int = 1,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """``n`` random batches as the training script feeds them: token ids in
    ``[low_id, vocab_size)``, a padding mask (lengths from half to full), types, labels."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        lengths = rng.integers(seq_len // 2, seq_len + 1, size=batch_size)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        ids = rng.integers(low_id, vocab_size, (batch_size, seq_len))
        batches.append(
            dict(
                input_ids=(ids * mask).astype(np.int32),
                attention_mask=mask,
                token_type_ids=np.zeros((batch_size, seq_len), np.int32),
                labels=rng.integers(0, num_labels, batch_size).astype(np.int32),
            )
        )
    return batches
