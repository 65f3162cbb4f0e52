"""A jax.profiler trace (its .xplane.pb) summarised in small Markdown tables, no TensorBoard.

Device planes (``/device:GPU:*``): kernels per step and GPU busy time (the union of kernel
intervals) against the span from the first kernel to the last; kernels by category (GEMM,
fused attention, transposes, reductions, RNG, copies, other fusions) and the top kernels by
time. Host plane: the events with the most total time. XLA runs op by op (no CUDA graphs)
while the profiler records, so a traced step can be slower than an untraced one.

Run:  python -m benchmarks.trace_summary TRACE_DIR [--steps N] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
from collections.abc import Sequence

CATEGORIES = (
    ("GEMM", ("gemm", "cutlass", "xmma", "cublas", "matmul", "triton_gemm", "dot")),
    ("fused attention", ("fmha", "cudnn", "flash", "sdpa", "attention")),
    ("memcpy/memset/copy", ("memcpy", "memset", "copy")),
    ("transpose", ("transpose",)),
    ("reduction", ("reduce",)),
    ("RNG", ("xor", "threefry", "rng", "philox")),
    ("other XLA fusion", ("fusion", "wrapped_", "convert")),
)


def categorise(name: str) -> str:
    """The category of a kernel, by its name."""
    lowered = name.lower()
    for category, marks in CATEGORIES:
        if any(mark in lowered for mark in marks):
            return category
    return "other"


def busy_ns(intervals: list[tuple[int, int]]) -> int:
    """The length of the union of ``(start, end)`` intervals."""
    total, start, end = 0, None, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += 0 if end is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    return total + (0 if end is None else end - start)


def summarise(trace_dir: str, steps: int = 1, top: int = 25) -> str:
    """The tables of the newest trace under ``trace_dir``, over ``steps`` traced steps."""
    import jax

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        return f"no .xplane.pb under {trace_dir}\n"
    data = jax.profiler.ProfileData.from_file(files[-1])
    kernels: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    host: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    intervals = []
    for plane in data.planes:
        if plane.name.startswith("/device:GPU"):
            for line in plane.lines:
                if line.name in ("XLA Modules", "XLA Ops", "Steps", "XLA TraceMe"):
                    continue
                if "Source" in line.name:
                    continue
                for event in line.events:
                    kernels[event.name][0] += 1
                    kernels[event.name][1] += event.duration_ns
                    intervals.append((event.start_ns, event.end_ns))
        elif plane.name.startswith("/host"):
            for line in plane.lines:
                for event in line.events:
                    host[event.name][0] += 1
                    host[event.name][1] += event.duration_ns
    return _tables(kernels, host, intervals, max(steps, 1), top)


def _tables(kernels, host, intervals, steps: int, top: int) -> str:
    out = []
    total = sum(d for _, d in kernels.values()) or 1
    if intervals:
        span = max(e for _, e in intervals) - min(s for s, _ in intervals)
        busy = busy_ns(intervals)
        out.append(
            f"GPU: {sum(n for n, _ in kernels.values()) / steps:.0f} kernels/step, busy "
            f"{busy / 1e6 / steps:.2f} ms/step of a {span / 1e6 / steps:.2f} ms/step span "
            f"(idle {(span - busy) / 1e6 / steps:.2f} ms/step)\n"
        )
        categories: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for name, (n, d) in kernels.items():
            categories[categorise(name)][0] += n
            categories[categorise(name)][1] += d
        out.append("| category | kernels/step | ms/step | share |\n|---|---|---|---|")
        for name, (n, d) in sorted(categories.items(), key=lambda kv: -kv[1][1]):
            out.append(f"| {name} | {n / steps:.0f} | {d / 1e6 / steps:.2f} | {d / total:.1%} |")
        out.append(f"\n| top {top} kernels | calls/step | ms/step | mean us | share |")
        out.append("|---|---|---|---|---|")
        for name, (n, d) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
            out.append(
                f"| {name[:90]} | {n / steps:.1f} | {d / 1e6 / steps:.3f} | {d / n / 1e3:.1f} "
                f"| {d / total:.1%} |"
            )
    if host:
        out.append("\n| host event (top 15) | count | ms/step | mean us |\n|---|---|---|---|")
        for name, (n, d) in sorted(host.items(), key=lambda kv: -kv[1][1])[:15]:
            out.append(f"| {name[:80]} | {n} | {d / 1e6 / steps:.2f} | {d / n / 1e3:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the summary of one trace folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace_dir", help="the folder jax.profiler.trace wrote")
    parser.add_argument("--steps", type=int, default=1, help="steps the trace holds (1)")
    parser.add_argument("--top", type=int, default=25, help="kernels listed (25)")
    args = parser.parse_args(argv)
    print(summarise(args.trace_dir, args.steps, args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
