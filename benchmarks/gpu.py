"""The GPU check: the tests that matter on a GPU, then the three benchmarks, in one command.

On a GPU machine with no network, from the repository root:

    python -m benchmarks.gpu --out gpu-check

runs, each part in its own process with its own time limit (a part that runs out of time is
stopped and reported; the others still run), and writes every part's log and a
``summary-<parts>.md`` of their results under ``--out``:

1. ``tests``: pytest on the GPU: ``tests/test_gpu.py`` (float32 parity at each matmul
   precision, cuDNN's fused attention against XLA's), then the model, weights, transform,
   accumulation and Flax tests at float32 matmul precision
   (``JAX_DEFAULT_MATMUL_PRECISION=highest``: XLA may otherwise use TF32 on a GPU). The
   sharding tests fake 8 CPU devices and are left to the CPU suite.
2. ``train_step``: BERT-base, 128 tokens, bfloat16, ``--batch-size``; dice off and on in
   both modes, the fused XLA and cuDNN attention paths; samples/s and MFU.
3. ``vs_pytorch``: roll-to-train's loop in eager PyTorch (AMP bfloat16, host roll,
   ``GradScaler``, ``.item()`` every step), the same without host syncs, and our jitted step,
   BERT-base at the same batch.
4. ``update_overhead``: the optimizer update alone on a BERT-base-sized tree.
5. ``vs_pytorch`` again at ``--small-batch``, where launches and syncs weigh most.
6. ``train_step`` with dice off at ``--large-batch``: does a larger batch fill the GPU better?

With ``--deadline`` the parts share the time left, in this order (the most important first).

JAX's persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``, a folder under ``--out``
unless set) lets a part reuse the programs an earlier part compiled. ``--quick`` runs every
part at toy sizes on whatever JAX has (a CPU, in the tests), in about a minute.

What the machine lacks (``datasets`` and its needs, for instance) must be installed before;
``benchmarks/device_check.sh`` does that from wheels carried along and then runs this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import outcome

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ["tests/test_gpu.py"]
FLOAT32_TESTS = [
    "tests/test_bert_model.py",
    "tests/test_bert_weights.py",
    "tests/test_export_half.py",
    "tests/test_transform.py",
    "tests/test_accumulation.py",
    "tests/test_flax_integration.py",
]


@dataclass
class Part:
    """One step of the check: a command, its time limit, and what it printed."""

    name: str
    argv: list[str]
    timeout: float
    env: dict[str, str] | None = None
    returncode: int | None = None
    seconds: float = 0.0
    last_lines: tuple[str, ...] = ()


def parts(args: argparse.Namespace) -> list[Part]:
    """The check's parts, most important first."""
    py = sys.executable
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    highest = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    shared = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}  # vs_pytorch: PyTorch needs the rest
    quick_step = [
        py, "-m", "benchmarks.train_step", "--quick", "--batch-size", "4,8", "--window", "2",
        "--attention",
    ]  # fmt: skip
    if args.quick:
        return [
            Part("tests (GPU only)", [*pytest, *GPU_TESTS], args.tests_timeout),
            Part(
                "tests (float32)",
                [*pytest, "tests/test_export_half.py", "-k", "loads_as_float32"],
                args.tests_timeout,
                highest,
            ),
            Part(
                "train_step",
                quick_step,
                args.step_timeout,
            ),
            Part("vs_pytorch", [py, "-m", "benchmarks.vs_pytorch", "--quick"], args.vs_timeout),
            Part(
                "update_overhead",
                [py, "-m", "benchmarks.update_overhead", "--quick"],
                args.overhead_timeout,
            ),
        ]
    step = [
        py, "-m", "benchmarks.train_step", "--configs", "bert-base", "--dtype", "bfloat16",
        "--seq-len", "128", "--window", "4", "--iters", str(args.iters), "--warmup", "1",
    ]  # fmt: skip
    vs = [
        py, "-m", "benchmarks.vs_pytorch", "--config", "bert-base", "--dtype", "bfloat16",
        "--seq-len", "128", "--windows", "6", "--window", "5",
    ]  # fmt: skip
    return [
        Part("tests (GPU only)", [*pytest, *GPU_TESTS], args.tests_timeout),
        Part("tests (float32)", [*pytest, *FLOAT32_TESTS], args.tests_timeout, highest),
        Part(
            "train_step",
            [
                *step,
                "--batch-size",
                str(args.batch_size),
                "--variants",
                "off,per_mini_batch,per_accumulation_step,xla,cudnn",
            ],
            args.step_timeout,
        ),
        Part(
            "vs_pytorch",
            [*vs, "--batch-size", str(args.batch_size)],
            args.vs_timeout,
            shared,
        ),
        Part(
            "update_overhead",
            [py, "-m", "benchmarks.update_overhead", "--iters", "20", "--warmup", "2"],
            args.overhead_timeout,
        ),
        Part(
            "vs_pytorch (small batch)",
            [*vs, "--batch-size", str(args.small_batch)],
            args.vs_timeout,
            shared,
        ),
        Part(
            "train_step (large batch)",
            [*step, "--batch-size", str(args.large_batch), "--variants", "off"],
            args.step_timeout,
        ),
    ]


def run_part(part: Part, out: Path, env: dict[str, str]) -> None:
    """Runs one part with its time limit, logging to ``out/<name>.log``."""
    log_path = out / (part.name.replace(" ", "_").replace("(", "").replace(")", "") + ".log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(part.argv) + "\n")
        log.flush()
        proc = subprocess.Popen(
            part.argv, cwd=ROOT, env=env | (part.env or {}), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            part.returncode = proc.wait(timeout=part.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            part.returncode = None
    part.seconds = time.perf_counter() - start
    lines = log_path.read_text(errors="replace").splitlines()
    keep = [line for line in lines if line.startswith(("SUMMARY", "FAILED", "ERROR"))]
    part.last_lines = tuple(keep or lines[-3:])


def summary(results: Sequence[Part], header: str) -> str:
    """The check's results in Markdown."""
    lines = [header, "", "| part | result | seconds |", "|---|---|---|"]
    for part in results:
        if part.returncode is None and part.seconds == 0:
            result = "skipped (deadline)"
        elif part.returncode is None:
            result = f"stopped at its {part.timeout:.0f} s limit"
        else:
            result = outcome.part_result(part.returncode, part.last_lines)
        lines.append(f"| {part.name} | {result} | {part.seconds:.0f} |")
    for part in results:
        lines += ["", f"## {part.name}", "", "```", "$ " + " ".join(part.argv[1:])]
        lines += [*part.last_lines, "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the check; returns 1 if any part failed or ran out of time."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="gpu-check", help="logs and summary.md (gpu-check)")
    parser.add_argument("--quick", action="store_true", help="toy sizes, on any device")
    parser.add_argument(
        "--parts",
        choices=("all", "tests", "benchmarks"),
        default="all",
        help="the tests, the benchmarks, or both (all)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="train_step's and vs_pytorch's (128)"
    )
    parser.add_argument(
        "--small-batch", type=int, default=32, help="vs_pytorch's second batch (32)"
    )
    parser.add_argument(
        "--large-batch",
        type=int,
        default=256,
        help="a last train_step run, dice off only, to see whether a larger batch fills the "
        "GPU better (256)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="a Unix time: a part gets at most the time left until then, and none is started "
        "with under 20 s left",
    )
    parser.add_argument("--iters", type=int, default=10, help="train_step's samples (10)")
    parser.add_argument("--tests-timeout", type=float, default=150.0)
    parser.add_argument("--step-timeout", type=float, default=200.0)
    parser.add_argument("--vs-timeout", type=float, default=90.0)
    parser.add_argument("--overhead-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str((out / "jax-cache").resolve()))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.quick:
        env.setdefault("JAX_PLATFORMS", "cpu")
    header = "# GPU check" + (" (quick)" if args.quick else "") + f", parts: {args.parts}"
    results = []
    selected = [
        p
        for p in parts(args)
        if args.parts == "all" or p.name.startswith("tests") == (args.parts == "tests")
    ]
    for part in selected:
        left = None if args.deadline is None else args.deadline - time.time()
        if left is not None and left < 20:
            part.last_lines = (f"skipped: {left:.0f} s left before the deadline",)
        else:
            if left is not None:
                part.timeout = min(part.timeout, left - 5)
            print(f"[gpu] {part.name}: {' '.join(part.argv[1:])}", flush=True)
            run_part(part, out, env)
        results.append(part)
        (out / f"summary-{args.parts}.md").write_text(summary(results, header))
        print(f"[gpu] {part.name}: exit {part.returncode} in {part.seconds:.0f} s", flush=True)
        for line in part.last_lines:
            print("    " + line, flush=True)
    return 0 if all(p.returncode == 0 for p in results) else 1


if __name__ == "__main__":
    sys.exit(main())
