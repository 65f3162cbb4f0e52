"""Issue 20, part 2: the train step on a GPU, before and after, and beside roll-to-train's loop.

Three commands, each in a process of its own (benchmarks/device_check.sh speed runs them in
turn, so that each side is alone on the GPU and holds its memory alone):

* ``jax``: BERT-base, bfloat16, 128 tokens, dropout 0.1, the training script's optimizer
  (dice before clip + AdamW, no accumulation). At batch 128 it compiles and interleaves, window
  by window: the step before issue 20 (``before``), today's step as the training script
  builds it with cuDNN attention (``after``), the same computing only the optimizer's
  gradient norm (``after, one norm``: the same work as PyTorch's loop, whose
  ``clip_grad_norm_`` is its one norm) and that without dice (``after, one norm, no dice``:
  what the dice cost). Then it traces a few steps of ``before`` and ``after`` and summarises
  the traces (top kernels), and times ``after, one norm`` at other batch sizes to find the
  batch that fills the GPU (the most samples/s), as the deadline allows.
* ``torch``: roll-to-train's loop (benchmarks/vs_pytorch.py: eager PyTorch, bf16 autocast,
  GradScaler, ``loss.item()`` every step, one gradient norm) at batch 128 and at the best
  batch of the ``jax`` run.
* ``report``: the tables and the headline line from both runs' JSON.

A window is ``--window`` steps timed after one untimed call, so the window's first dispatch
(and the host's work before the device is busy) does not count; figures are medians over the
windows, with their IQR. MFU counts FLOPs as benchmarks/train_step.py does, against the
device's dense bf16 peak.

Run:  python -m benchmarks.gpu_speed jax --out DIR [--deadline S]
      python -m benchmarks.gpu_speed torch --out DIR
      python -m benchmarks.gpu_speed report --out DIR
      (--tiny on each: a tiny BERT on any machine, a smoke test)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

T0 = time.perf_counter()
SWEEP = (256, 64, 384, 192)  # batch sizes beyond 128, most telling first
PAIR = {  # label -> (side, dice, log_grad_norm)
    "before": ("before", True, True),
    "after": ("after", True, True),
    "after, one norm": ("after", True, False),
    "after, one norm, no dice": ("after", False, False),
}
ONE_NORM = "after, one norm"
TORCH = "roll-to-train's loop (eager PyTorch)"


def shape(args: argparse.Namespace) -> tuple[Any, int]:
    """The BERT config and the sequence length."""
    from benchmarks import _pair

    if args.tiny:
        return _pair.bert_config("tiny", vocab_size=1000), 16
    return _pair.bert_config("bert-base"), 128


def stats(ms: list[float], batch: int, flops_per_step: float, peak: float | None) -> dict:
    """Median ms per step, its IQR, samples/s and MFU of a list of per-window figures."""
    q25, q50, q75 = np.percentile(ms, [25, 50, 75])
    return {
        "batch": batch,
        "ms": round(float(q50), 3),
        "iqr_ms": [round(float(q25), 3), round(float(q75), 3)],
        "samples_s": round(batch / q50 * 1e3, 1),
        "mfu": None if peak is None else round(flops_per_step / (q50 / 1e3) / peak, 4),
        "windows": len(ms),
    }


def interleave(runners: dict[str, Callable[[int], Any]], windows: int, window: int, sync) -> dict:
    """ms per step of each window of each runner, the runners alternating window by window.

    ``runner(n)`` makes ``n`` step calls; one untimed call starts each window.
    """
    out: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for w in range(windows):
        for name in names[w % len(names) :] + names[: w % len(names)]:
            sync(runners[name](1))
            start = time.perf_counter()
            sync(runners[name](window))
            out[name].append((time.perf_counter() - start) / window * 1e3)
    return out


def jax_runner(built: Any) -> Callable[[int], Any]:
    """``run(n)``: ``n`` calls of a built step, through its batches in turn."""
    box = {"state": built.state, "i": 0, "out": None}

    def run(n: int) -> Any:
        for _ in range(n):
            batch = built.batches[box["i"] % len(built.batches)]
            box["i"] += 1
            box["state"], box["out"] = built.step(box["state"], batch)
        return box["state"], box["out"]

    return run


def pair_runners(
    config: Any, seq: int, batch: int, attention: str | None, lookup: str, labels: list[str]
) -> dict:
    """The variants ``labels`` of :data:`PAIR` at one batch, compiled and warmed up:
    label -> run(n)."""
    import jax

    from benchmarks import _pair

    runners = {}
    for label in labels:
        side, dice, norm = PAIR[label]
        built = _pair.build(side, config, batch_size=batch, seq_len=seq, attention=attention,
                            dice=dice, log_grad_norm=norm, nbatches=8, lookup=lookup)  # fmt: skip
        runners[label] = jax_runner(built)
        start = time.perf_counter()
        jax.block_until_ready(runners[label](3))
        print(f"compiled {label} in {time.perf_counter() - start:.0f} s", flush=True)
    return runners


def scatter_probe(config: Any, seq: int, batch: int) -> dict:
    """ms for the word embeddings' gradient alone (the scatter-add the ``dense`` lookup keeps)
    by the share of padding tokens (id 0, one row that every padding token adds into), and
    the same gradient as a one-hot matrix product: median of 20 calls."""
    import jax
    import jax.numpy as jnp

    vocab, hidden = config.vocab_size, config.hidden_size
    table = jnp.zeros((vocab, hidden), jnp.float32)
    upstream = jax.random.normal(jax.random.key(0), (batch, seq, hidden), jnp.bfloat16)

    @jax.jit
    def scatter(ids: jax.Array) -> jax.Array:
        _, vjp = jax.vjp(lambda t: jnp.take(t.astype(jnp.bfloat16), ids, axis=0), table)
        return vjp(upstream)[0]

    @jax.jit
    def one_hot(ids: jax.Array) -> jax.Array:
        hot = jax.nn.one_hot(ids, vocab, dtype=jnp.bfloat16)
        return jnp.einsum("bsv,bsh->vh", hot, upstream, preferred_element_type=jnp.float32)

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"batch": batch, "seq": seq}
    for pad in (0.0, 0.25, 0.75):
        ids = rng.integers(min(1000, vocab // 2), vocab, (batch, seq))
        ids = jnp.asarray(np.where(rng.random((batch, seq)) < pad, 0, ids), jnp.int32)
        runners = {
            name: lambda n, fn=fn, ids=ids: [fn(ids) for _ in range(n)][-1]
            for name, fn in (("scatter", scatter), ("one_hot", one_hot))
        }
        times = interleave(runners, 20, 1, jax.block_until_ready)
        for name, ms in times.items():
            out[f"{name} pad {pad:.2f}"] = round(float(np.median(ms)), 3)
    return out


def run_jax(args: argparse.Namespace) -> dict:
    """The ``jax`` command: the pair at batch 128, traces, the batch sweep."""
    import jax

    from benchmarks import _common, _pair, trace_summary
    from benchmarks.train_step import peak_flops, train_flops_per_token
    from examples.bert.model import embedding_lookup_for

    config, seq = shape(args)
    gpu = jax.default_backend() == "gpu"
    attention = "cudnn" if gpu else None
    lookup = embedding_lookup_for(jax.default_backend()) if args.lookup == "auto" else args.lookup
    peak = peak_flops(None)
    flops = train_flops_per_token(config, seq)
    result: dict[str, Any] = {"machine": _common.machine_line(), "pair": {}, "sweep": {}}
    batch = args.batch_size
    result["lookup"] = lookup
    if args.scatter_probe:
        result["scatter_probe"] = scatter_probe(config, seq, batch)
        print(f"SCATTER {json.dumps(result['scatter_probe'])}", flush=True)
    try:
        runners = pair_runners(config, seq, batch, attention, lookup, args.labels)
    except Exception as error:  # jax's private cuDNN attention failed: say so, go without
        if attention is None:
            raise
        print(f"cuDNN attention failed ({str(error).splitlines()[0][:300]}); without", flush=True)
        result["attention"] = f"xla: cudnn failed ({str(error).splitlines()[0][:300]})"
        attention = None
        runners = pair_runners(config, seq, batch, attention, lookup, args.labels)
    result.setdefault("attention", str(attention))
    times = interleave(runners, args.windows, args.window, jax.block_until_ready)
    for label, ms in times.items():
        result["pair"][label] = stats(ms, batch, flops * batch * seq, peak)
        print(f"ROW {label}: {json.dumps(result['pair'][label])}", flush=True)
    if ONE_NORM in result["pair"]:
        result["sweep"][str(batch)] = result["pair"][ONE_NORM]
    save(args, "jax", result)
    for label in args.traces:
        name = label.replace(",", "").replace(" ", "_")  # after, one norm -> after_one_norm
        folder = os.path.join(args.out, f"trace_{name}")
        with jax.profiler.trace(folder):
            jax.block_until_ready(runners[label](args.trace_steps))
        text = trace_summary.summarise(folder, args.trace_steps)
        Path(args.out, f"trace_{name}.md").write_text(text)
        print(f"TRACE {label}\n{text}", flush=True)
    del runners
    gc.collect()
    for size in (16,) if args.tiny else args.sweep:
        if time.perf_counter() - T0 > args.deadline - 60:
            print(f"SKIP batch {size}: the deadline is near", flush=True)
            continue
        try:
            one = _pair.build("after", config, batch_size=size, seq_len=seq,
                              attention=attention, log_grad_norm=False, nbatches=8,
                              lookup=lookup)  # fmt: skip
            run = jax_runner(one)
            jax.block_until_ready(run(3))
            ms = interleave({"x": run}, args.windows, args.window, jax.block_until_ready)["x"]
            result["sweep"][str(size)] = stats(ms, size, flops * size * seq, peak)
        except Exception as error:  # out of memory at a large batch: that batch does not fit
            result["sweep"][str(size)] = {"batch": size, "error": str(error).splitlines()[0]}
        print(f"SWEEP {size}: {json.dumps(result['sweep'][str(size)])}", flush=True)
        save(args, "jax", result)
        one = run = None
        gc.collect()
    return result


def run_torch(args: argparse.Namespace) -> dict:
    """The ``torch`` command: roll-to-train's loop at batch 128 and at the best batch."""
    os.environ["JAX_PLATFORMS"] = "cpu"  # JAX must not start on (and hold memory of) the GPU
    import torch

    from benchmarks import _common, _pair, vs_pytorch
    from benchmarks.train_step import PEAK_BF16_TFLOPS, train_flops_per_token

    config, seq = shape(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    settings = {f: getattr(config, f) for f in fields}
    settings |= dict(vocab_size=config.vocab_size, max_position_embeddings=512)
    best = best_batch(args.out)
    sizes = sorted({args.batch_size, best or args.batch_size})
    kind = torch.cuda.get_device_name() if device == "cuda" else _common.cpu_model()
    result: dict[str, Any] = {"machine": f"torch {torch.__version__} on {kind}", "rows": {}}
    peaks = [t * 1e12 for name, t in PEAK_BF16_TFLOPS.items() if name in kind.lower()]
    peak = peaks[0] if device == "cuda" and peaks else None
    for size in sizes:
        low = 1000 if config.vocab_size > 2000 else 1
        batches = _common.make_batches(
            8, size, seq, config.vocab_size, _pair.NUM_LABELS, low_id=low
        )
        total = (args.windows + 2) * (args.window + 1) + 10
        step, _ = vs_pytorch.torch_runner(
            settings, batches, total, 1, device=device, bfloat16=True, host_syncs=True
        )

        def run(n: int, step=step) -> Any:
            return [step() for _ in range(n)][-1]

        def sync(_: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        sync(run(3))
        ms = interleave({"x": run}, args.windows, args.window, sync)["x"]
        flops = train_flops_per_token(config, seq) * size * seq
        result["rows"][str(size)] = stats(ms, size, flops, peak)
        print(f"TORCH {size}: {json.dumps(result['rows'][str(size)])}", flush=True)
        save(args, "torch", result)
        del step
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return result


def save(args: argparse.Namespace, command: str, result: dict) -> None:
    """Writes what a command has measured so far (a run stopped at its limit keeps it)."""
    Path(args.out, f"{command}.json").write_text(json.dumps(result, indent=1))


def best_batch(out: str) -> int | None:
    """The batch with the most samples/s in the ``jax`` run's sweep, if there is one."""
    path = Path(out, "jax.json")
    if not path.exists():
        return None
    sweep = json.loads(path.read_text())["sweep"].values()
    fits = [row for row in sweep if "samples_s" in row]
    return max(fits, key=lambda row: row["samples_s"])["batch"] if fits else None


def report(args: argparse.Namespace) -> str:
    """The tables and the headline, from jax.json and torch.json."""
    from benchmarks import _common

    ours = json.loads(Path(args.out, "jax.json").read_text())
    path = Path(args.out, "torch.json")
    theirs = json.loads(path.read_text()) if path.exists() else {"rows": {}, "machine": "-"}
    pair, base = ours["pair"], ours["pair"]["before"]
    lines = [f"# gpu_speed: {ours['machine']}; {theirs['machine']}"]
    lines += [f"today's attention: {ours.get('attention', '-')}; embedding lookup: "
              f"{ours.get('lookup', 'gather')}", ""]  # fmt: skip
    rows = [
        [label, row["ms"], f"{row['iqr_ms'][0]}-{row['iqr_ms'][1]}", row["samples_s"],
         "-" if row["mfu"] is None else f"{row['mfu']:.1%}", f"{base['ms'] / row['ms']:.2f}x"]
        for label, row in pair.items()
    ]  # fmt: skip
    head = [f"step (batch {base['batch']})", "ms/step", "IQR ms", "samples/s", "MFU"]
    head.append("speed vs before")
    lines += [_common.table(head, rows), ""]
    rows = []
    for size, row in sorted(ours["sweep"].items(), key=lambda kv: int(kv[0])):
        torch_row = theirs["rows"].get(size)
        ratio = f"{row['samples_s'] / torch_row['samples_s']:.2f}x" if torch_row else "-"
        if "error" in row:
            rows.append([size, "-", "-", "-", row["error"][:60], "-"])
            continue
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        torch_rate = torch_row["samples_s"] if torch_row else "-"
        rows.append([size, row["ms"], row["samples_s"], mfu, torch_rate, ratio])
    head = ["batch", f"{ONE_NORM} ms", "samples/s", "MFU", f"{TORCH} samples/s", "ours/theirs"]
    lines += [_common.table(head, rows), ""]
    lines.append(headline(ours, theirs))
    if probe := ours.get("scatter_probe"):
        lines += ["", f"word embeddings' gradient alone, ms (batch {probe['batch']}, seq "
                  f"{probe['seq']}; median of 20 calls):", ""]  # fmt: skip
        pads = sorted({key.split(" pad ")[1] for key in probe if " pad " in key})
        rows = [[f"{name} ({way})"] + [probe[f"{name} pad {pad}"] for pad in pads]
                for name, way in (("scatter", "the gather's gradient"),
                                  ("one_hot", "a one-hot product"))]  # fmt: skip
        lines.append(_common.table(["padding share", *pads], rows))
    return "\n".join(lines)


def headline(ours: dict, theirs: dict) -> str:
    """``GPU headline: N.NNx roll-to-train's loop at batch 128, NN% MFU at batch B, <GPU>``."""
    fits = [row for row in ours["sweep"].values() if row.get("mfu") is not None]
    mine, torch_row = ours["sweep"].get("128"), theirs["rows"].get("128")
    if not fits or mine is None or torch_row is None:
        return "GPU headline: not measured (no GPU, or a side missing)"
    best = max(fits, key=lambda row: row["samples_s"])
    gpu = theirs["machine"].split(" on ", 1)[-1]
    return (
        f"GPU headline: {mine['samples_s'] / torch_row['samples_s']:.2f}x roll-to-train's loop "
        f"at batch 128, {best['mfu']:.0%} MFU at batch {best['batch']}, {gpu}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs one command and writes its JSON (or the report) under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("jax", "torch", "report"))
    parser.add_argument("--out", required=True, help="the folder for the JSON and traces")
    parser.add_argument("--tiny", action="store_true", help="a tiny BERT (a smoke test)")
    parser.add_argument("--batch-size", type=int, default=None, help="the pair's batch (128)")
    parser.add_argument("--windows", type=int, default=None, help="windows per variant (5)")
    parser.add_argument("--window", type=int, default=None, help="steps per window (20)")
    parser.add_argument("--trace-steps", type=int, default=5, help="steps traced (5)")
    parser.add_argument("--deadline", type=float, default=300, help="the jax run's seconds")
    parser.add_argument("--labels", default=";".join(PAIR), help="the pair's variants, by ';'")
    parser.add_argument("--traces", default="before;after", help="variants traced, by ';'")
    parser.add_argument("--sweep", default=",".join(map(str, SWEEP)), help="batches beyond")
    parser.add_argument("--lookup", choices=("auto", "gather", "dense"), default="auto",
                        help="today's embedding_lookup (auto: dense on a GPU)")  # fmt: skip
    parser.add_argument("--scatter-probe", action="store_true",
                        help="time the word embeddings' gradient by padding share")  # fmt: skip
    args = parser.parse_args(argv)
    args.labels = [label for label in args.labels.split(";") if label]
    args.traces = [label for label in args.traces.split(";") if label]
    args.sweep = [int(size) for size in args.sweep.split(",") if size]
    for label in {*args.labels, *args.traces} - set(PAIR):
        parser.error(f"unknown variant {label!r}: choose from {'; '.join(PAIR)}")
    if "before" not in args.labels or not set(args.traces) <= set(args.labels):
        parser.error("--labels must hold 'before' (the baseline) and every --traces variant")
    args.batch_size = args.batch_size or (8 if args.tiny else 128)
    args.windows = args.windows or (3 if args.tiny else 5)
    args.window = args.window or (3 if args.tiny else 20)
    for flag in ("batch_size", "windows", "window", "trace_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    os.makedirs(args.out, exist_ok=True)
    if args.command == "report":
        if not Path(args.out, "jax.json").exists():
            print(f"gpu_speed report: no jax.json in {args.out}: the jax run measured nothing")
            return 1
        text = report(args)
        Path(args.out, "report.md").write_text(text + "\n")
        print(text)
        return 0
    result = run_jax(args) if args.command == "jax" else run_torch(args)
    save(args, args.command, result)
    print(f"done {args.command} in {time.perf_counter() - T0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
