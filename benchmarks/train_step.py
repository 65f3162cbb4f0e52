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

With ``--attention`` two more, both without dice and without attention dropout (the fused
kernels have none), so that the attention paths can be compared with each other:

* ``off, fused attention (xla)``: ``jax.nn.dot_product_attention``, XLA's implementation;
* ``off, fused attention (cudnn)``: the same through cuDNN's fused kernel (an NVIDIA GPU).

(``off`` itself trains as BERT does, with dropout on the attention probabilities, so its
attention is spelled out: two einsums, a softmax and a dropout mask.)

Besides time, the table gives what the machine's load does not change: XLA's estimate of the
bytes one call reads and writes, the compiled kernels that write an array as large as some
parameter ("param-sized passes"; activations of the same size count too, alike in every
variant) and the other compiled ops (the roll's scalar work among them).

One sample is ``--window`` calls (micro-batches; ``MultiSteps`` runs the same program on
every call), dispatched back to back and then waited for, as a training loop runs them. The
variants are interleaved sample by sample after a warm-up that compiles them. The table gives
samples/s and the ratio to ``off``. With ``--dtype bfloat16`` on a GPU it also gives the
model FLOPs utilisation (MFU): the model's FLOPs per second over the device's dense bf16 peak,
the FLOPs counted as :func:`train_flops_per_token` says (the convention of the PaLM paper,
appendix B: 6 per weight of every matmul and 12 x layers x hidden x sequence for attention,
per token; embeddings, norms, softmax, dropout and the optimizer count nothing).

Several ``--batch-size`` values (``--batch-size 64,128,256``) first time ``off`` alone at each
(a short run) and then measure every variant at the fastest in samples/s.

Run:  python -m benchmarks.train_step                       (both configs, CPU: ~15 minutes)
      python -m benchmarks.train_step --configs minilm      (one config)
      python -m benchmarks.train_step --dtype bfloat16      (on a GPU: adds MFU)
      python -m benchmarks.train_step --configs bert-base --dtype bfloat16 \
          --batch-size 128,256 --window 5 --attention            (the GPU check's run)
      python -m benchmarks.train_step --quick               (a tiny BERT, seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
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

#: (label, dice mode, dice position, attention): attention None trains as BERT does, with
#: dropout on the attention probabilities; "xla" or "cudnn" drops that dropout and calls
#: jax.nn.dot_product_attention with that implementation.
VARIANTS = (
    ("off", "off", "before", None),
    ("per_mini_batch", "per_mini_batch", "before", None),
    ("per_accumulation_step", "per_accumulation_step", "before", None),
    ("per_accumulation_step, after", "per_accumulation_step", "after", None),
)
ATTENTION_VARIANTS = (
    ("off, fused attention (xla)", "off", "before", "xla"),
    ("off, fused attention (cudnn)", "off", "before", "cudnn"),
)
#: Short names for --variants.
VARIANT_NAMES = dict(
    zip(
        ("off", "per_mini_batch", "per_accumulation_step", "after", "xla", "cudnn"),
        VARIANTS + ATTENTION_VARIANTS,
        strict=True,
    )
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


def train_flops_per_token(config: Any, seq_len: int, num_labels: int = NUM_LABELS) -> float:
    """The FLOPs of one training token (forward and backward), as MFU counts them.

    6 per weight of every matmul (2 forward, 4 backward): the encoder's query, key, value,
    attention output, intermediate and output kernels, the pooler and the classifier (the last
    two run on one token per sequence but are counted per token, a rounding that overstates
    BERT-base's FLOPs by 0.5%); plus 12 x layers x hidden x sequence for the attention scores
    and their weighted sum (2 x 2 x seq x hidden forward per layer, times 3). Embedding
    lookups, norms, softmax, dropout and the optimizer count nothing (the PaLM paper's
    convention, appendix B).
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * hidden * hidden + 2 * hidden * config.intermediate_size
    matmul_weights = layers * per_layer + hidden * hidden + hidden * num_labels
    return 6.0 * matmul_weights + 12.0 * layers * hidden * seq_len


def _train_state(
    config: Any,
    variant: tuple[str, str, str, str | None],
    accumulation_steps: int,
    dtype: Any,
    mesh: Any,
) -> tuple[Any, Any, Any, Any, bool]:
    """Builds one variant's model, optimizer and train state, as the training script does.

    Returns:
      (graphdef, the optimizer, its schedule, the train state, whether the dice is on).
    """
    from flax import nnx

    from examples.bert import optim, steps
    from examples.bert.model import BertForSequenceClassification, embedding_lookup_for
    from examples.bert.train_config import TrainConfig

    _, mode, position, attention = variant
    variant_config = (
        config
        if attention is None
        else dataclasses.replace(config, attention_probs_dropout_prob=0.0)
    )
    model = BertForSequenceClassification(variant_config, NUM_LABELS, dtype=dtype, rngs=nnx.Rngs(0))
    if attention is not None:
        model.set_attributes(attention_implementation=attention)
    model.set_attributes(embedding_lookup=embedding_lookup_for(jax.default_backend()))
    run = TrainConfig(
        lr=5e-5,
        weight_decay=0.01,
        warmup_ratio=0.1,
        accumulation_steps=accumulation_steps,
        mode=mode,
        dice_position=position,
        threshold=15,  # dice_roll's defaults: d20, DC 15, +0
        modifier=0,
        seed=0,
    )
    tx, schedule = optim.build_optimizer(run, total_updates=10_000)
    graphdef, _, params, model_state = steps.split_model(model)
    state = steps.init_train_state(params, model_state, tx, mesh)
    return graphdef, tx, schedule, state, run.uses_dice


def _compiled_facts(step: Any, state: Any) -> dict[str, Any]:
    """What the machine's load does not change: XLA's bytes per call, param-sized passes, ops."""
    hlo = step.as_text()
    sizes = {int(np.prod(p.shape)) for p in jax.tree.leaves(state.params)}
    return dict(
        step_bytes=_common.cost_bytes(step),
        passes=_common.count_param_passes(hlo, sizes),
        other_ops=_common.count_kernels(hlo) - _common.count_param_passes(hlo, sizes),
    )


def _runner(
    live: dict[str, list[Any]],
    label: str,
    step: Callable[..., Any],
    batches: list[Any],
    window: int,
) -> Callable[[], Any]:
    """One timed sample of a variant: ``window`` calls of its step on its state in ``live``."""

    def run() -> Any:
        box = live[label]
        for _ in range(window):
            box[0], metrics = step(box[0], batches[box[1] % len(batches)])
            box[1] += 1
        return box[0], metrics

    return run


def run_config(
    name: str,
    batch_size: int,
    seq_len: int,
    accumulation_steps: int,
    dtype: Any,
    iters: int,
    warmup: int,
    window: int = 1,
    variants: tuple[tuple[str, str, str, str | None], ...] = VARIANTS,
) -> tuple[list[dict[str, Any]], Any]:
    """Measures ``variants`` on one config; returns (a row per variant, the BertConfig).

    The first variant is the baseline of the ratios; a later one that does not compile (cuDNN's
    attention where cuDNN has no kernel for it, say) gets a row with its error instead.
    """
    from examples.bert import parallel, steps
    from examples.bert.config import BertConfig

    config = BertConfig(**CONFIGS[name], max_position_embeddings=max(512, seq_len))
    mesh = parallel.make_mesh()
    parallel.check_batch_size(batch_size, mesh)
    sharding = parallel.batch_sharding(mesh)
    batches = [
        parallel.put_batch(b, sharding)
        for b in _common.make_batches(4, batch_size, seq_len, config.vocab_size, NUM_LABELS)
    ]
    live: dict[str, list[Any]] = {}
    compiled_facts: dict[str, dict[str, Any]] = {}
    runners: dict[str, Callable[[], Any]] = {}
    failed: dict[str, str] = {}
    for variant in variants:
        label = variant[0]
        graphdef, tx, schedule, state, uses_dice = _train_state(
            config, variant, accumulation_steps, dtype, mesh
        )
        compile_start = time.perf_counter()
        try:
            step = (
                steps.make_train_step(
                    graphdef, tx, schedule, accumulation_steps, mesh, uses_dice=uses_dice
                )
                .lower(state, batches[0])
                .compile()
            )
        except Exception as error:  # e.g. no cuDNN fused attention for this shape or device
            if not failed and not runners:
                raise  # the baseline must run
            failed[label] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            print(f"{label}: could not compile ({failed[label]})", flush=True)
            continue
        print(f"{label}: compiled in {time.perf_counter() - compile_start:.1f} s", flush=True)
        compiled_facts[label] = _compiled_facts(step, state)
        live[label] = [state, 0]
        runners[label] = _runner(live, label, step, batches, window)
    samples = _common.interleave(runners, iters, warmup=warmup)
    base = samples[variants[0][0]]
    cores = _common.cores_used(samples)
    rows = [
        dict(name=label, samples=s, ratios=_common.ratio_summary(s, base), **compiled_facts[label])
        for label, s in samples.items()
    ]
    live.clear()
    gc.collect()
    rows[0]["cores"] = cores
    rows += [dict(name=label, error=error) for label, error in failed.items()]
    return rows, config


def n_params_of(config: Any) -> int:
    """The parameter count of a BertForSequenceClassification with this config."""
    from flax import nnx

    from examples.bert.model import BertForSequenceClassification

    abstract = nnx.eval_shape(
        lambda: BertForSequenceClassification(config, NUM_LABELS, rngs=nnx.Rngs(0))
    )
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def pick_batch_size(
    name: str, sizes: list[int], seq_len: int, accumulation_steps: int, dtype: Any, window: int
) -> int:
    """Times ``off`` alone at each batch size (a short run); returns the fastest in samples/s."""
    best, best_rate = sizes[0], 0.0
    for size in sizes:
        rows, _ = run_config(
            name, size, seq_len, accumulation_steps, dtype, 3, 1, window, VARIANTS[:1]
        )
        rate = size * window / rows[0]["samples"].median
        print(f"batch {size}: {rate:.1f} samples/s (off, {3} samples of {window} calls)")
        if rate > best_rate:
            best, best_rate = size, rate
    print(f"-> batch {best}")
    return best


def make_parser() -> argparse.ArgumentParser:
    """The command line's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and few iterations")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated, of " + ", ".join(CONFIGS) + " (default: minilm,bert-base)",
    )
    parser.add_argument(
        "--batch-size",
        default=None,
        help="per call (16; quick: 4); several, comma-separated: the fastest of them",
    )
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (128)")
    parser.add_argument("--accumulation-steps", type=int, default=2, help="micro-batches (2)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--iters", type=int, default=None, help="timed samples per variant (20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed samples first (2)")
    parser.add_argument("--window", type=int, default=1, help="calls per timed sample (1)")
    parser.add_argument(
        "--attention",
        action="store_true",
        help="also time the fused attention paths, XLA's and cuDNN's (needs an NVIDIA GPU)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated, of " + ", ".join(VARIANT_NAMES) + ", off first (default: the "
        "first four, and xla and cudnn with --attention)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's bf16 peak, for MFU"
    )
    parser.add_argument(
        "--prng-impl",
        default=None,
        help="JAX's PRNG for dropout and dice, e.g. rbg (default: JAX's, threefry2x32)",
    )
    return parser


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's settings, the flags with their defaults filled in (``--quick``'s or not)."""

    quick: bool
    names: list[str]
    batch_sizes: list[int]
    seq_len: int
    accumulation_steps: int
    dtype_name: str
    dtype: Any
    iters: int
    warmup: int
    window: int
    peak: float | None
    variants: tuple[tuple[str, str, str, str | None], ...]


def parse_settings(argv: list[str] | None) -> Settings:
    """Parses the flags (setting JAX's PRNG if asked); a bad value exits with the flag named."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.prng_impl:
        jax.config.update("jax_default_prng_impl", args.prng_impl)
    quick = args.quick
    names = (args.configs or ("tiny" if quick else "minilm,bert-base")).split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}: use one of {list(CONFIGS)}")
    try:
        batch_sizes = [int(b) for b in (args.batch_size or ("4" if quick else "16")).split(",")]
    except ValueError:
        parser.error(f"--batch-size takes integers separated by commas, got {args.batch_size!r}")
    if min(batch_sizes) < 1 or args.window < 1:
        parser.error("--batch-size and --window must be positive")
    variants = VARIANTS + (ATTENTION_VARIANTS if args.attention else ())
    if args.variants:
        chosen = args.variants.split(",")
        unknown = [v for v in chosen if v not in VARIANT_NAMES]
        if unknown or chosen[0] != "off":
            parser.error(
                f"--variants takes {', '.join(VARIANT_NAMES)}, comma-separated, off first "
                f"(the baseline); got {args.variants!r}"
            )
        variants = tuple(VARIANT_NAMES[v] for v in dict.fromkeys(chosen))
    return Settings(
        quick=quick,
        names=names,
        batch_sizes=batch_sizes,
        seq_len=args.seq_len or (16 if quick else 128),
        accumulation_steps=args.accumulation_steps,
        dtype_name=args.dtype,
        dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32,
        iters=args.iters or (3 if quick else 20),
        warmup=args.warmup or (1 if quick else 2),
        window=args.window,
        peak=peak_flops(args.peak_tflops) if args.dtype == "bfloat16" else None,
        variants=variants,
    )


HEADERS = [
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


def table_cells(
    row: dict[str, Any], batch_size: int, flops_per_token: float, settings: Settings
) -> list[Any]:
    """One measured variant's cells in the table (MFU last where there is a peak)."""
    s, window, peak = row["samples"], settings.window, settings.peak
    rates = batch_size * window / np.asarray(s.seconds)
    q25, q75 = np.percentile(rates, [25, 75])
    of_medians, paired, p25, p75 = row["ratios"]
    cells = [
        row["name"],
        f"{batch_size * window / s.median:.1f}",
        f"{q25:.1f}-{q75:.1f}",
        f"{s.median / window * 1e3:.2f}",
        f"{of_medians:.3f}",
        f"{paired:.3f} ({p25:.3f}-{p75:.3f})",
        _common.fmt_bytes(row["step_bytes"]),
        row["passes"],
        row["other_ops"],
    ]
    if peak:
        tokens_per_s = batch_size * window * settings.seq_len / s.median
        cells.append(f"{flops_per_token * tokens_per_s / peak:.1%}")
    return cells


def measure_config(
    name: str, settings: Settings, worst: tuple[float, str] | None
) -> tuple[float, str] | None:
    """Measures one config and prints its table; returns ``worst`` updated with its variants.

    ``worst`` is (paired ratio, "config, variant") of the dice variant that adds most so far.
    """
    s = settings
    batch_size = (
        s.batch_sizes[0]
        if len(s.batch_sizes) == 1
        else pick_batch_size(
            name, s.batch_sizes, s.seq_len, s.accumulation_steps, s.dtype, s.window
        )
    )
    print(
        f"batch {batch_size} x length {s.seq_len} per call, {s.accumulation_steps} micro-"
        f"batches per update, compute {s.dtype_name} (params float32), dropout on; "
        f"{s.iters} timed samples of {s.window} call(s) per variant after {s.warmup} "
        "warm-up, interleaved"
    )
    rows, config = run_config(
        name,
        batch_size,
        s.seq_len,
        s.accumulation_steps,
        s.dtype,
        s.iters,
        s.warmup,
        s.window,
        s.variants,
    )
    n_params = n_params_of(config)
    flops_per_token = train_flops_per_token(config, s.seq_len)
    print()
    print(
        f"## {name}: {n_params / 1e6:.1f} M params, "
        f"{flops_per_token / 1e9:.3f} GFLOP per training token (forward and backward)"
    )
    headers = HEADERS + (["MFU"] if s.peak else [])
    table_rows = []
    for row in rows:
        if "error" in row:
            table_rows.append([row["name"], f"failed: {row['error']}"] + [""] * (len(headers) - 2))
            continue
        table_rows.append(table_cells(row, batch_size, flops_per_token, s))
        paired = row["ratios"][1]
        is_dice = row["name"] in {v[0] for v in VARIANTS[1:]}
        if is_dice and (worst is None or paired > worst[0]):
            worst = (paired, f"{name}, {row['name']}")
    print(_common.table(headers, table_rows))
    print(f"(this process used {rows[0]['cores']:.2f} cores on average while timing)")
    return worst


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its tables and a summary line."""
    settings = parse_settings(argv)
    print("# train_step: the training script's jitted BERT train step, dice off and on")
    print(_common.machine_line())
    print(_common.load_line("at start"))
    if settings.peak:
        print(f"MFU against a dense bf16 peak of {settings.peak / 1e12:.0f} TFLOP/s")
    print(f"PRNG for dropout and dice: {jax.config.jax_default_prng_impl}")
    worst: tuple[float, str] | None = None  # the dice variant that adds most
    for name in settings.names:
        worst = measure_config(name, settings, worst)
    print()
    print(_common.load_line("at end"))
    if worst is None:
        print("SUMMARY train_step: no dice variant measured: no verdict")
        return 0
    print(
        f"SUMMARY train_step: dice adds at most {_common.fmt_pct(worst[0])} to the train step "
        f"({worst[1]}; target <= {_common.fmt_pct(TARGET)}): "
        + (
            "target not judged (--quick: a smoke test on a toy BERT)"
            if settings.quick
            else f"target {'met' if worst[0] <= TARGET else 'NOT met'}"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
