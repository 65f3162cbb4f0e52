"""The full BERT train step of the training script, with the dice off and on.

The step and the optimizer are the training script's own (``examples.bert.steps.
make_train_step``, ``examples.bert.optim.build_optimizer``): one jitted, donated call per
micro-batch holding forward, backward, clipping, AdamW with its schedule, ``MultiSteps`` when
accumulating, and the dice. The model is this project's Flax NNX BERT with random weights
(MiniLM-size and BERT-base-size configs), in training mode (dropout on), on random batches
already on the device, so only the step is timed.

Variants (the same ``--accumulation-steps``, default 2, so that the two modes differ):

* ``off``: no dice (the baseline; ``MultiSteps`` around clip + AdamW);
* ``per_mini_batch``: a roll for every micro-batch, scaling its gradient;
* ``per_accumulation_step``: a roll for every applied update, scaling the mean gradient;
* ``per_accumulation_step, after``: a roll for every applied update, scaling AdamW's step.

Besides time, the table gives what the machine's load does not change: XLA's estimate of the
bytes one call reads and writes, the compiled kernels that write an array as large as some
parameter ("param-sized passes"; activations of the same size count too, alike in every
variant) and the other compiled ops (the roll's scalar work among them).

One sample is one call (a micro-batch; ``MultiSteps`` runs the same program on every call).
The variants are interleaved call by call after a warm-up that compiles them. The table gives
samples/s and the ratio to ``off``. With ``--dtype bfloat16`` on a GPU it also gives the
model FLOPs utilisation: 6 x params x tokens/s over the device's peak (dense bf16).

Run:  python -m benchmarks.train_step                       (both configs, CPU: ~15 minutes)
      python -m benchmarks.train_step --configs minilm      (one config)
      python -m benchmarks.train_step --dtype bfloat16      (on a GPU: adds MFU)
      python -m benchmarks.train_step --quick               (a tiny BERT, seconds)
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common

TARGET = 1.01  # dice may add at most 1% to the train step
NUM_LABELS = 3

CONFIGS: dict[str, dict[str, Any]] = {
    # all-MiniLM-L6-v2's shape: the model the training script fine-tunes by default.
    "minilm": dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),
    # BERT-base (the BertConfig defaults).
    "bert-base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}

# Dense bf16 peak FLOP/s of one device, by a substring of jax's device_kind (lower case).
PEAK_BF16_TFLOPS = {
    "h200": 989.0,
    "h100": 989.0,  # SXM; the PCIe card is 756: pass --peak-tflops
    "a100": 312.0,
    "l4": 121.0,
    "a10": 125.0,
    "v100": 125.0,  # fp16 tensor cores (V100 has no bf16)
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v6": 918.0,
}

VARIANTS = (
    ("off", "off", "before"),
    ("per_mini_batch", "per_mini_batch", "before"),
    ("per_accumulation_step", "per_accumulation_step", "before"),
    ("per_accumulation_step, after", "per_accumulation_step", "after"),
)


def peak_flops(override_tflops: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s (None when unknown, e.g. on a CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    kind = getattr(jax.devices()[0], "device_kind", "").lower()
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if name in kind:
            return tflops * 1e12
    return None


def make_batches(
    n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``n`` random batches as the training script feeds them: ids, mask, types, labels."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        lengths = rng.integers(seq_len // 2, seq_len + 1, size=batch_size)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        ids = rng.integers(1, vocab_size, (batch_size, seq_len)).astype(np.int32)
        batches.append(
            dict(
                input_ids=ids * mask,
                attention_mask=mask,
                token_type_ids=np.zeros((batch_size, seq_len), np.int32),
                labels=rng.integers(0, NUM_LABELS, batch_size).astype(np.int32),
            )
        )
    return batches


def run_config(
    name: str,
    batch_size: int,
    seq_len: int,
    accumulation_steps: int,
    dtype: Any,
    iters: int,
    warmup: int,
) -> tuple[list[dict[str, Any]], int]:
    """Measures every variant on one config; returns (a row per variant, the param count)."""
    from flax import nnx

    from examples.bert import optim, parallel, steps
    from examples.bert.config import BertConfig
    from examples.bert.model import BertForSequenceClassification

    config = BertConfig(**CONFIGS[name], max_position_embeddings=max(512, seq_len))
    mesh = parallel.make_mesh()
    parallel.check_batch_size(batch_size, mesh)
    sharding = parallel.batch_sharding(mesh)
    batches = [
        parallel.put_batch(b, sharding)
        for b in make_batches(4, batch_size, seq_len, config.vocab_size)
    ]
    live: dict[str, list[Any]] = {}
    compiled_facts: dict[str, dict[str, Any]] = {}
    runners: dict[str, Callable[[], Any]] = {}
    n_params = 0
    for label, mode, position in VARIANTS:
        model = BertForSequenceClassification(config, NUM_LABELS, dtype=dtype, rngs=nnx.Rngs(0))
        spec = optim.OptimizerSpec(
            lr=5e-5,
            weight_decay=0.01,
            warmup_ratio=0.1,
            total_updates=10_000,
            accumulation_steps=accumulation_steps,
            mode=mode,
            position=position,
            seed=0,
        )
        tx, schedule = optim.build_optimizer(spec)
        graphdef, _, params, model_state = steps.split_model(model)
        n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        state = steps.init_train_state(params, model_state, tx, mesh)
        del model, params, model_state
        step = (
            steps.make_train_step(
                graphdef, tx, schedule, accumulation_steps, mesh, uses_dice=spec.uses_dice
            )
            .lower(state, batches[0])
            .compile()
        )
        hlo = step.as_text()
        sizes = {int(np.prod(p.shape)) for p in jax.tree.leaves(state.params)}
        compiled_facts[label] = dict(
            step_bytes=_common.cost_bytes(step),
            passes=_common.count_param_passes(hlo, sizes),
            other_ops=_common.count_kernels(hlo) - _common.count_param_passes(hlo, sizes),
        )
        live[label] = [state, 0]

        def run(label: str = label, step: Callable[..., Any] = step) -> Any:
            box = live[label]
            box[0], metrics = step(box[0], batches[box[1] % len(batches)])
            box[1] += 1
            return box[0], metrics

        runners[label] = run
    samples = _common.interleave(runners, iters, warmup=warmup)
    base = samples["off"]
    cores = _common.cores_used(samples)
    rows = [
        dict(name=label, samples=s, ratios=_common.ratio_summary(s, base), **compiled_facts[label])
        for label, s in samples.items()
    ]
    live.clear()
    gc.collect()
    rows[0]["cores"] = cores
    return rows, n_params


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its tables and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and few iterations")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated, of " + ", ".join(CONFIGS) + " (default: minilm,bert-base)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="per call (16; quick: 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (128)")
    parser.add_argument("--accumulation-steps", type=int, default=2, help="micro-batches (2)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per variant (20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (2)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's bf16 peak, for MFU"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    names = (args.configs or ("tiny" if quick else "minilm,bert-base")).split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}: use one of {list(CONFIGS)}")
    batch_size = args.batch_size or (4 if quick else 16)
    seq_len = args.seq_len or (16 if quick else 128)
    iters = args.iters or (3 if quick else 20)
    warmup = args.warmup or (1 if quick else 2)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    peak = peak_flops(args.peak_tflops) if args.dtype == "bfloat16" else None

    print("# train_step: the training script's jitted BERT train step, dice off and on")
    print(_common.machine_line())
    print(_common.load_line("at start"))
    print(
        f"batch {batch_size} x length {seq_len} per call, {args.accumulation_steps} micro-"
        f"batches per update, compute {args.dtype} (params float32), dropout on; "
        f"{iters} timed calls per variant after {warmup} warm-up, interleaved"
    )
    worst: tuple[float, str] = (0.0, "")
    for name in names:
        rows, n_params = run_config(
            name, batch_size, seq_len, args.accumulation_steps, dtype, iters, warmup
        )
        print()
        print(f"## {name}: {n_params / 1e6:.1f} M params")
        headers = [
            "variant",
            "samples/s",
            "IQR samples/s",
            "ms/call",
            "ratio (medians)",
            "paired ratio (IQR)",
            "XLA bytes/step",
            "param-sized passes",
            "other ops",
        ]
        if peak:
            headers.append("MFU")
        table_rows = []
        for row in rows:
            s = row["samples"]
            rates = batch_size / np.asarray(s.seconds)
            q25, q75 = np.percentile(rates, [25, 75])
            of_medians, paired, p25, p75 = row["ratios"]
            cells = [
                row["name"],
                f"{batch_size / s.median:.1f}",
                f"{q25:.1f}-{q75:.1f}",
                f"{s.median * 1e3:.1f}",
                f"{of_medians:.3f}",
                f"{paired:.3f} ({p25:.3f}-{p75:.3f})",
                _common.fmt_bytes(row["step_bytes"]),
                row["passes"],
                row["other_ops"],
            ]
            if peak:
                tokens_per_s = batch_size * seq_len / s.median
                cells.append(f"{6 * n_params * tokens_per_s / peak:.1%}")
            table_rows.append(cells)
            if row["name"] != "off" and paired > worst[0]:
                worst = (paired, f"{name}, {row['name']}")
        print(_common.table(headers, table_rows))
        print(f"(this process used {rows[0]['cores']:.2f} cores on average while timing)")
    print()
    print(_common.load_line("at end"))
    print(
        f"SUMMARY train_step: dice adds at most {_common.fmt_pct(worst[0])} to the train step "
        f"({worst[1]}; target <= {_common.fmt_pct(TARGET)}): "
        f"target {'met' if worst[0] <= TARGET else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
