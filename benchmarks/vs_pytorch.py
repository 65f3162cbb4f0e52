"""Our jitted train step with dice_roll against roll-to-train's way: eager PyTorch.

All sides train the same BERT for sequence classification (same config, random weights,
dropout on) on the same random batches, with AdamW (weight decay 0.01 on matrices), a linear
warmup/decay schedule and gradient clipping to norm 1, in float32 or in bfloat16 (PyTorch:
``torch.autocast``; ours: bfloat16 compute, float32 parameters):

* PyTorch, as roll-to-train does it (written from its README and its training loop's shape):
  Hugging Face's ``BertForSequenceClassification`` in eager mode; each step rolls a d20 on
  the host, turns it into the saving throw's scale, multiplies the loss by it, backpropagates
  through a ``GradScaler`` (as roll-to-train's AMP loop does; with bfloat16 it scales by 1
  but still checks the gradients for inf on the host), unscales, clips, steps AdamW and the
  scheduler, and logs ``loss.item()``. On a GPU the ``.item()`` and the scaler's check each
  wait for the device: the launch queue drains every step.
* PyTorch eager without host syncs: the same step with the roll drawn
  from Python's ``random``, no ``GradScaler`` (bfloat16 needs none) and no ``.item()``, so
  the CPU can queue the next step's kernels while the GPU runs: what the syncs cost.
* JAX: this project's Flax NNX BERT and training step (``examples.bert``): one jitted,
  donated program per micro-batch holding forward, backward, the dice roll (on the device,
  from a key in the optimizer state), clipping and AdamW; nothing comes back to the host
  inside the timed loop.

One sample is a window of ``--window`` steps; the sides alternate window by window, after a
warm-up (compilation, first allocations) that is not timed; each window ends when the
device is done (``torch.cuda.synchronize``, ``jax.block_until_ready``).

Run:  python -m benchmarks.vs_pytorch            (hidden 256, 4 layers, batch 16, length 64, CPU)
      python -m benchmarks.vs_pytorch --device cuda --config bert-base --dtype bfloat16 \
          --batch-size 32 --seq-len 128          (the GPU check's run)
      python -m benchmarks.vs_pytorch --quick    (a tiny BERT, seconds)
Needs torch (the ``bench`` extra: ``pip install torch==2.13.0``) and the ``examples`` extra.
"""

from __future__ import annotations

import argparse
import os
import random
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
from benchmarks.train_step import CONFIGS as STEP_CONFIGS

CONFIGS = {
    "small": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    ),
    **STEP_CONFIGS,
}
NUM_LABELS = 3
LR, WEIGHT_DECAY, WARMUP_RATIO, CLIP = 5e-5, 0.01, 0.1, 1.0
SIDES, THRESHOLD = 20, 15
TORCH_SYNCS = "PyTorch eager (roll-to-train's way)"
TORCH_NO_SYNCS = "PyTorch eager, no host syncs"
OURS = "JAX jit + dice_roll (ours)"


def saving_throw_scale(natural: int, sides: int = SIDES, threshold: int = THRESHOLD) -> float:
    """The saving throw's scale for a host-side roll (modifier 0), as the seed describes it."""
    if natural == 1:
        return 0.0
    if natural == sides:
        return 1.0
    if natural >= threshold:
        return min(natural, sides) / sides
    return max(-(threshold - natural) / sides, -1.0)


def torch_runner(
    config: dict[str, Any],
    batches: list[dict[str, np.ndarray]],
    total_steps: int,
    window: int,
    *,
    device: str = "cpu",
    bfloat16: bool = False,
    host_syncs: bool = True,
) -> tuple[Callable[[], Any], int]:
    """An eager PyTorch loop; returns (run one window -> its last loss, parameter count).

    With ``host_syncs`` it is roll-to-train's loop (GradScaler, ``.item()`` every step); without,
    the same step with nothing that waits for the device.
    """
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(num_labels=NUM_LABELS, **config)
    ).to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
    )
    warmup = round(WARMUP_RATIO * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return step / max(warmup, 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    scaler = torch.amp.GradScaler(device, enabled=host_syncs and device == "cuda")
    tensors = [{k: torch.from_numpy(v).long().to(device) for k, v in b.items()} for b in batches]
    host_rng = random.Random(0)
    position = [0]

    def step() -> Any:
        batch = tensors[position[0] % len(tensors)]
        position[0] += 1
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16):
            loss = model(**batch).loss
        scale = saving_throw_scale(host_rng.randint(1, SIDES))  # the roll, on the host
        scaler.scale(loss * scale).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        scaler.step(optimizer)  # enabled: reads found_inf on the host (a sync)
        scaler.update()
        scheduler.step()
        return loss

    def run() -> Any:
        for _ in range(window):
            loss = step()
            if host_syncs:
                loss = loss.item()  # logged every step, as the original does
        return loss

    return run, sum(p.numel() for p in model.parameters())


def jax_runner(
    config: dict[str, Any],
    batches: list[dict[str, np.ndarray]],
    total_steps: int,
    window: int,
    *,
    bfloat16: bool = False,
) -> tuple[Callable[[], Any], int]:
    """Our jitted step with dice_roll; returns (run one window -> last state, param count)."""
    from flax import nnx

    from examples.bert import optim, parallel, steps
    from examples.bert.config import BertConfig
    from examples.bert.model import BertForSequenceClassification, embedding_lookup_for
    from examples.bert.train_config import TrainConfig

    model = BertForSequenceClassification(
        BertConfig(**config),
        NUM_LABELS,
        dtype=jnp.bfloat16 if bfloat16 else jnp.float32,
        rngs=nnx.Rngs(params=0, dropout=1),
    )
    model.set_attributes(embedding_lookup=embedding_lookup_for(jax.default_backend()))
    run = TrainConfig(
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        accumulation_steps=1,
        mode="per_mini_batch",
        dice_position="before",
        dice=f"d{SIDES}",
        threshold=THRESHOLD,
        modifier=0,
        seed=0,
        clip_norm=CLIP,
    )
    tx, schedule = optim.build_optimizer(run, total_updates=total_steps)
    mesh = parallel.make_mesh()
    graphdef, _, params, model_state = steps.split_model(model)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    state = [steps.init_train_state(params, model_state, tx, mesh)]
    step = steps.make_train_step(graphdef, tx, schedule, 1, mesh, uses_dice=True)
    sharding = parallel.batch_sharding(mesh)
    device_batches = [parallel.put_batch(b, sharding) for b in batches]
    del model, params, model_state
    position = [0]

    def run() -> Any:
        for _ in range(window):
            batch = device_batches[position[0] % len(device_batches)]
            position[0] += 1
            state[0], metrics = step(state[0], batch)
        return state[0], metrics

    return run, n_params


def make_parser() -> argparse.ArgumentParser:
    """The command line's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and few steps")
    parser.add_argument(
        "--config",
        choices=list(CONFIGS),
        default=None,
        help="the BERT's shape (small; quick: tiny)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="PyTorch's device (auto: cuda where JAX and PyTorch both see a GPU)",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=None, help="16 (quick: 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="64 (quick: 16)")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per side (12)")
    parser.add_argument("--window", type=int, default=None, help="steps per window (8)")
    parser.add_argument("--vocab-size", type=int, default=None, help="30522 (quick: 1000)")
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="pin the process to this many cores and give PyTorch as many threads (default: "
        "all). On a machine that other work shares, --cores 1 keeps OpenMP's spinning "
        "barriers from stalling PyTorch and so keeps the comparison fair",
    )
    parser.add_argument(
        "--prng-impl",
        default=None,
        help="JAX's PRNG for dropout and dice on our side, e.g. rbg or unsafe_rbg (default: "
        "JAX's default, threefry2x32, which XLA:CPU runs as loops)",
    )
    return parser


def build_runners(
    config: dict[str, Any],
    batch_size: int,
    seq_len: int,
    windows: int,
    window: int,
    *,
    device: str,
    bfloat16: bool,
) -> tuple[dict[str, Callable[[], Any]], int]:
    """The three sides' runners on the same batches; returns (runners by side, param count)."""
    vocab = config["vocab_size"]
    # Token ids from 1000 up where the vocabulary has them: no special tokens.
    low = 1000 if vocab > 2000 else 1
    batches = _common.make_batches(8, batch_size, seq_len, vocab, NUM_LABELS, low_id=low)
    total_steps = (windows + 2) * window * 3 + 10
    runners: dict[str, Callable[[], Any]] = {}
    counts = []
    for name, syncs in ((TORCH_SYNCS, True), (TORCH_NO_SYNCS, False)):
        runners[name], n = torch_runner(
            config,
            batches,
            total_steps,
            window,
            device=device,
            bfloat16=bfloat16,
            host_syncs=syncs,
        )
        counts.append(n)
    runners[OURS], n_jax = jax_runner(config, batches, total_steps, window, bfloat16=bfloat16)
    if set(counts) != {n_jax}:
        raise AssertionError(f"the BERTs differ: {counts} vs {n_jax} parameters")
    return runners, n_jax


def print_table(samples: dict[str, _common.Samples], batch_size: int, window: int) -> None:
    """Prints a row per side: samples/s, ms per step, speed against roll-to-train's way."""
    torch_s = samples[TORCH_SYNCS]
    rows = []
    for s in samples.values():
        rates = batch_size * window / np.asarray(s.seconds)
        q25, q50, q75 = np.percentile(rates, [25, 50, 75])
        rows.append(
            [
                s.name,
                f"{q50:.1f}",
                f"{q25:.1f}-{q75:.1f}",
                f"{s.median / window * 1e3:.2f}",
                f"{torch_s.median / s.median:.2f}",
                f"{sum(s.cpu_seconds) / sum(s.seconds):.2f}",
            ]
        )
    print()
    print(
        _common.table(
            [
                "side",
                "samples/s (median)",
                "IQR samples/s",
                "ms/step",
                "speed vs roll-to-train's way",
                "cores used",
            ],
            rows,
        )
    )


def print_summary(
    samples: dict[str, _common.Samples],
    batch_size: int,
    window: int,
    *,
    device: str,
    torch_device: str,
    quick: bool,
) -> None:
    """Prints the load at the end and the SUMMARY line with the verdict."""
    torch_s = samples[TORCH_SYNCS]
    jax_s = samples[OURS]
    of_medians, paired, p25, p75 = _common.ratio_summary(torch_s, jax_s)
    no_sync = samples[TORCH_NO_SYNCS]
    print()
    print(_common.load_line("at end"))
    target = 2.0 if device == "cuda" else 1.0
    verdict = (
        "target not judged (--quick: a smoke test on a toy BERT)"
        if quick
        else f"target >= {target:g}x on this machine ({torch_device}): "
        f"{'met' if of_medians >= target else 'NOT met'}"
    )
    print(
        f"SUMMARY vs_pytorch: ours {batch_size * window / jax_s.median:.1f} samples/s vs "
        f"roll-to-train's way {batch_size * window / torch_s.median:.1f} samples/s: "
        f"{of_medians:.2f}x (paired {paired:.2f}x, IQR {p25:.2f}-{p75:.2f}); PyTorch without "
        f"its host syncs {batch_size * window / no_sync.median:.1f} samples/s "
        f"({torch_s.median / no_sync.median:.2f}x roll-to-train's way); {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints its table and a summary line."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.prng_impl:
        jax.config.update("jax_default_prng_impl", args.prng_impl)
    if args.cores:
        # Before either framework starts its thread pools, which inherit the affinity.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    quick = args.quick
    batch_size = args.batch_size or (4 if quick else 16)
    seq_len = args.seq_len or (16 if quick else 64)
    windows = args.windows or (3 if quick else 12)
    window = args.window or (3 if quick else 8)
    vocab = args.vocab_size or (1000 if quick else 30522)
    config = dict(
        CONFIGS[args.config or ("tiny" if quick else "small")],
        vocab_size=vocab,
        max_position_embeddings=max(128, seq_len),
    )

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this PyTorch sees no GPU")
    if args.cores:
        torch.set_num_threads(args.cores)
    runners, n_jax = build_runners(
        config,
        batch_size,
        seq_len,
        windows,
        window,
        device=device,
        bfloat16=args.dtype == "bfloat16",
    )

    def sync(out: Any) -> Any:
        if device == "cuda":
            torch.cuda.synchronize()
        return jax.block_until_ready(out) if isinstance(out, tuple) else out

    print("# vs_pytorch: a BERT train step with the dice, eager PyTorch against jitted JAX")
    torch_device = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{_common.cpu_model()}, {torch.get_num_threads()} threads"
    )
    print(_common.machine_line() + f"; torch {torch.__version__} on {torch_device}")
    print(_common.load_line("at start"))
    if args.prng_impl:
        print(f"our side draws dropout masks and dice with jax_default_prng_impl={args.prng_impl}")
    print(
        f"BERT: hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
        f"{config['num_attention_heads']} heads, intermediate {config['intermediate_size']}, "
        f"vocab {vocab}; {n_jax / 1e6:.2f} M params; batch {batch_size}, length {seq_len}, "
        f"{args.dtype}; {windows} timed windows of {window} steps per side, alternating, after 1 "
        "warm-up window"
    )
    samples = _common.interleave(runners, windows, warmup=1, sync=sync)
    print_table(samples, batch_size, window)
    print_summary(
        samples, batch_size, window, device=device, torch_device=torch_device, quick=quick
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
