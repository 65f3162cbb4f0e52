"""What XLA builds for an H100/H200 from the BERT train step, compiled on a CPU (no GPU).

``jax.experimental.topologies`` compiles a jitted function for a CUDA target without a device
("deviceless" ahead-of-time compilation) when the CUDA plugin wheels that match jaxlib are
installed. XLA then dumps the thunk sequence (the kernels it would launch, in order) and the
optimized HLO; this script reads them and prints, per train step: kernels (and how many are
one thread block), GEMMs and their FLOPs, transposes, the bytes the kernels read and write,
the random 32-bit values that dropout and the dice draw (counted in the step's jaxpr, where
each ``random_bits`` says how many it makes; cuDNN's fused attention draws its dropout mask
inside its kernel and counts none), and XLA's temporary buffers. Today's step (``after``,
cuDNN attention as a GPU run would ask for it) is printed beside the figures of the step
before issue 20 (``--before`` compiles that one here too). GEMM autotuning is skipped without
a device, so GEMM choices may differ from a real run, and nothing is timed.

Set-up (a venv of its own, so that the CPU tests never see a CUDA plugin; the plugin must
match jaxlib exactly):

    python3 -m venv /tmp/aot-venv && . /tmp/aot-venv/bin/activate
    pip install -e ".[examples]"
    v=$(python -c 'import jax; print(jax.__version__)')
    pip install "jax-cuda13-pjrt==$v" "jax-cuda13-plugin==$v"

Run:  nice python -m benchmarks.aot_kernels          (BERT-base, batch 128: ~3 min of CPU)
      nice python -m benchmarks.aot_kernels --before (the step before too: twice that)
      python -m benchmarks.aot_kernels --quick       (2 layers, batch 8: seconds)
Without the wheels it says so and exits with status 0, compiling nothing.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib.metadata
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The H200 (and H100 SXM) target: 132 SMs of sm_90, 4.8 TB/s.
TARGET = """gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 4800000000000 l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: 150000000000
  shared_memory_per_block_optin: 232448 cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 10 patch: 0 }
device_description_str: "NVIDIA H200"
"""
PLUGINS = ("jax-cuda13-pjrt", "jax-cuda13-plugin")
#: The step before issue 20, BERT-base, batch 128, seq 128, bf16 (../shared/gpu/README.md).
BEFORE = {
    "kernels": 1553,
    "one-block kernels": 480,
    "GEMMs": 246,
    "GEMM TFLOP": 8.58,
    "transposes": 120,
    "transpose GB": 8.5,
    "GB moved": 63.0,
    "random values (M)": 617.0,
    "temporaries GB": 9.4,
}
#: Issue 20's targets (at most), BERT-base at batch 128.
TARGETS = {"kernels": 1100, "transposes": 24, "GB moved": 45.0, "random values (M)": 160.0}
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
_DTYPE_BYTES |= {"s64": 8, "u64": 8, "f64": 8, "s16": 2, "u16": 2}
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_THUNK = re.compile(
    r"(kKernel|kCustomKernel|kCopy|kGemm|kCublasLtMatmul|kCuDnn\w*|kCustomCall|kMemset32BitValue"
    r"|kMemzero|kTriton|kDynamicSlice)\b.*?\]\s+([\w.\-]+)?"
)
_GRID = re.compile(r"grid: \[(\d+), (\d+), (\d+)\]")


def plugin_problem() -> str | None:
    """Why a deviceless CUDA compile cannot run here, or None when it can."""
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return "jaxlib is not installed"
    for name in PLUGINS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return f"{name} is not installed (pip install {name}=={jaxlib}, in a venv of its own)"
        if version != jaxlib:
            return f"{name} {version} does not match jaxlib {jaxlib}: install {name}=={jaxlib}"
    return None


def _bytes(text: str) -> int:
    return sum(
        math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES[dtype]
        for dtype, dims in _SHAPE.findall(text)
    )


def _hlo_tables(hlo: str) -> tuple[dict[str, str], dict[str, str]]:
    """(entry instruction name -> its text after '=', computation name -> its body)."""
    entry = hlo[hlo.index("\nENTRY ") :]
    insts = {}
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+)", line)
        if match:
            insts[match.group(1)] = match.group(2)
    pattern = r"^%?([\w.\-]+)\s*(?:\([^\n]*\))?\s*->\s*[^\n]*\{\n(.*?)^\}"
    comps = {m.group(1): m.group(2) for m in re.finditer(pattern, hlo, flags=re.S | re.M)}
    return insts, comps


def _result_type(rest: str) -> str:
    match = re.match(r"(.+?)\s+[\w\-]+\(", rest)
    return match.group(1) if match else ""


def _operands(rest: str) -> list[str]:
    match = re.search(r"\b[\w\-]+\((.*?)\)(?:,|$)", rest)
    return re.findall(r"%([\w.\-]+)", match.group(1)) if match else []


def _flops(body: str) -> int:
    shapes = {
        m.group(1): [int(x) for x in m.group(2).split(",") if x]
        for m in re.finditer(r"%([\w.\-]+) = \w+\[([\d,]*)\]", body)
    }
    flops = 0
    dot = r"%[\w.\-]+ = \w+\[([\d,]*)\][^\n]*? dot\(%([\w.\-]+), %([\w.\-]+)\)[^\n]*?"
    for m in re.finditer(dot + r"lhs_contracting_dims=\{([\d,]*)\}", body):
        out = math.prod(int(x) for x in m.group(1).split(",") if x)
        lhs = shapes.get(m.group(2), [])
        k = math.prod(lhs[int(i)] for i in m.group(4).split(",") if i) if lhs else 0
        flops += 2 * out * k
    return flops


def kernel_rows(dump: str) -> list[dict[str, Any]]:
    """One row per kernel of the dumped train step: name, category, blocks, bytes, FLOPs."""
    (seq_file,) = glob.glob(f"{dump}/*jit_train_step.thunk_sequence_after_thunk_passes.txt")
    (hlo_file,) = glob.glob(f"{dump}/*jit_train_step.sm_9.0a_gpu_after_optimizations.txt")
    insts, comps = _hlo_tables(Path(hlo_file).read_text())
    rows = []
    for line in Path(seq_file).read_text().splitlines():
        match = _THUNK.search(line)
        if not match:
            continue
        kind, name = match.group(1), match.group(2) or ""
        grid = _GRID.search(line)
        blocks = math.prod(int(x) for x in grid.groups()) if grid else 0
        rest = insts.get(name, "") or insts.get(re.sub(r"_(\d+)$", r".\1", name), "")
        moved = _bytes(_result_type(rest))
        moved += sum(_bytes(_result_type(insts.get(o, ""))) for o in _operands(rest))
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        body = comps.get(calls.group(1), "") if calls else ""
        flops = _flops(body)
        target = re.search(r'custom_call_target="([^"]+)"', rest)
        lowered = (name + " " + (target.group(1) if target else "")).lower()
        if kind == "kCopy" or name.startswith("copy"):
            category = "copy"
        elif "cudnn" in lowered or "fmha" in lowered or kind.startswith("kCuDnn"):
            category = "cuDNN attention"
        elif flops or "gemm" in lowered or "cublas" in lowered or kind == "kGemm":
            category = "GEMM"
        elif body.count(" xor(") >= 10:
            category = "RNG (threefry)"
        elif "transpose" in name:
            category = "transpose"
        elif "reduce" in name:
            category = "reduction"
        else:
            category = "elementwise/other"
        rows.append(dict(name=name, category=category, blocks=blocks, bytes=moved, flops=flops))
    return rows


def random_values(jaxpr: Any) -> int:
    """The 32-bit random values a jaxpr's ``random_bits`` draw (sub-jaxprs included)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "random_bits":
            aval = eqn.outvars[0].aval
            total += math.prod(aval.shape) * aval.dtype.itemsize // 4
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += random_values(inner)
    return total


def _assume_target_cudnn() -> None:
    """jax's cuDNN attention asks the local cuDNN and GPU for their versions while tracing;
    with no GPU, answer for the target (cuDNN 9.10, compute capability 9.0)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    cudnn.check_cudnn_version = lambda: 91000
    cudnn.check_compute_capability = lambda capability: float(capability) <= 9.0
    cudnn.is_cuda_compute_capability_equal = lambda capability: float(capability) == 9.0


def compile_side(side: str, args: argparse.Namespace, dump: str) -> dict[str, float]:
    """Compiles one side's train step for the target; returns its figures."""
    import jax
    from jax.experimental import topologies
    from jax.sharding import Mesh

    from benchmarks import _pair

    topology = topologies.get_topology_desc(
        topology_name="", platform="cuda", target_config=TARGET, topology="1x1x1"
    )
    mesh = Mesh(topology.devices, ("data",))
    _assume_target_cudnn()
    config = _pair.bert_config("bert-base", args.layers)
    built = _pair.build(
        side,
        config,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        attention=args.attention,
        mesh=mesh,
        nbatches=1,
        abstract=True,
        log_grad_norm=not args.one_norm,
        lookup=args.lookup,
    )
    state, batch = built.state, built.batches[0]
    randoms = random_values(jax.make_jaxpr(built.step)(state, batch).jaxpr)
    start = time.perf_counter()
    dump_options = {"xla_dump_to": dump, "xla_dump_hlo_as_text": True}
    compiled = built.step.lower(state, batch).compile(compiler_options=dump_options)
    seconds = time.perf_counter() - start
    rows = kernel_rows(dump)
    by = collections.Counter(r["category"] for r in rows)
    transposes = [r for r in rows if r["category"] == "transpose"]
    gemms = [r for r in rows if r["category"] == "GEMM"]
    memory = compiled.memory_analysis()
    return {
        "kernels": len(rows),
        "one-block kernels": sum(r["blocks"] == 1 for r in rows),
        "GEMMs": len(gemms),
        "GEMM TFLOP": sum(r["flops"] for r in gemms) / 1e12,
        "transposes": len(transposes),
        "transpose GB": sum(r["bytes"] for r in transposes) / 1e9,
        "GB moved": sum(r["bytes"] for r in rows) / 1e9,
        "random values (M)": randoms / 1e6,
        "temporaries GB": getattr(memory, "temp_size_in_bytes", float("nan")) / 1e9,
        "cuDNN attention kernels": by["cuDNN attention"],
        "reductions": by["reduction"],
        "copies": by["copy"],
        "compile s": seconds,
    }


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Compiles, counts and prints the table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, batch 8 (seconds)")
    parser.add_argument("--layers", type=int, default=None, help="BERT-base's depth (12)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (128)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument(
        "--attention",
        choices=("cudnn", "xla"),
        default="cudnn",
        help="today's attention_implementation (cudnn: as a GPU run asks; xla: the portable "
        "spelled-out attention while training with dropout)",
    )
    parser.add_argument(
        "--one-norm",
        action="store_true",
        help="today's step computing only the optimizer's gradient norm, not the metric's "
        "(the same work as PyTorch's loop: benchmarks/gpu_speed.py's 'after, one norm')",
    )
    parser.add_argument(
        "--lookup",
        choices=("dense", "gather"),
        default="dense",
        help="today's embedding_lookup (dense: as the training script picks on a GPU; gather: "
        "its gradient a scatter-add per table, as on a CPU)",
    )
    parser.add_argument("--before", action="store_true", help="compile the step before too")
    parser.add_argument("--dump", default=None, help="keep XLA's dumps in this folder")
    args = parser.parse_args(argv)
    args.layers = args.layers or (2 if args.quick else 12)
    args.batch_size = args.batch_size or (8 if args.quick else 128)
    for flag in ("layers", "batch_size", "seq_len"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    print("# aot_kernels: the BERT train step compiled for an H200 (sm_90) on a CPU, no GPU")
    problem = plugin_problem()
    if problem is not None:
        print(f"SKIP aot_kernels: {problem}; nothing compiled.")
        return 0
    os.environ["JAX_PLATFORMS"] = "cpu"  # the CUDA plugin must not look for a GPU
    from benchmarks import _common

    print(
        _common.machine_line() + f"; {' '.join(PLUGINS)} {importlib.metadata.version(PLUGINS[0])}"
    )
    print(
        f"BERT-base shape, {args.layers} layers; batch {args.batch_size}, length {args.seq_len}, "
        f"bfloat16, dropout 0.1; today's attention: {args.attention}"
        + ("; today's step computes one gradient norm" if args.one_norm else "")
    )
    root = args.dump or tempfile.mkdtemp(prefix="aot_kernels_")
    figures = {}
    for side in ("before", "after") if args.before else ("after",):
        figures[side] = compile_side(side, args, os.path.join(root, side))
        print(f"compiled {side} in {figures[side]['compile s']:.0f} s", flush=True)
    standard = args.layers == 12 and args.batch_size == 128 and args.seq_len == 128
    names = list(figures["after"])
    headers = ["per step", "before (issue 20)"] + [f"{s} (this run)" for s in figures] + ["target"]
    rows = [
        [name, _cell(BEFORE.get(name) if standard else None)]
        + [_cell(figures[s][name]) for s in figures]
        + [f"<= {_cell(TARGETS[name])}" if name in TARGETS else ""]
        for name in names
    ]
    print()
    print(_common.table(headers, rows))
    after = figures["after"]
    missed = [name for name, limit in TARGETS.items() if after[name] > limit]
    verdict = (
        f"targets {'met' if not missed else 'NOT met: ' + ', '.join(missed)}"
        if standard
        else "targets not judged (they are for 12 layers at batch 128)"
    )
    print(
        f"SUMMARY aot_kernels: {after['kernels']:.0f} kernels, {after['transposes']:.0f} "
        f"transposes, {after['GB moved']:.1f} GB moved, {after['random values (M)']:.0f} M "
        f"random values, {after['temporaries GB']:.1f} GB temporaries per step; {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
