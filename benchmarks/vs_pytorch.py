"""Our jitted train step with dice_roll against roll-to-train's way: eager PyTorch.

Both sides train the same BERT for sequence classification (same config, random weights,
float32, dropout on) on the same random batches, with AdamW (weight decay 0.01 on matrices),
a linear warmup/decay schedule and gradient clipping to norm 1:

* PyTorch, as roll-to-train does it (written here from its README's description, not from
  its code): Hugging Face's ``BertForSequenceClassification`` in eager mode; each step rolls a
  d20 on the host (Python's ``random``), turns it into the saving throw's scale, multiplies the
  loss by it, backpropagates, clips, steps AdamW and the scheduler, and logs ``loss.item()``.
* JAX: this project's Flax NNX BERT and training step (``examples.bert``): one jitted,
  donated program per micro-batch holding forward, backward, the dice roll (on the device,
  from a key in the optimizer state), clipping and AdamW; nothing comes back to the host
  inside the timed loop.

One sample is a window of ``--window`` steps; the two sides alternate window by window, after
a warm-up (compilation, first allocations) that is not timed. Both use every core of the
machine (PyTorch's intra-op threads, XLA's CPU thread pool).

Run:  python -m benchmarks.vs_pytorch            (hidden 256, 4 layers, batch 16, length 64)
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

FULL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
NUM_LABELS = 3
LR, WEIGHT_DECAY, WARMUP_RATIO, CLIP = 5e-5, 0.01, 0.1, 1.0
SIDES, THRESHOLD = 20, 15


def saving_throw_scale(natural: int, sides: int = SIDES, threshold: int = THRESHOLD) -> float:
    """The saving throw's scale for a host-side roll (modifier 0), as the seed describes it."""
    if natural == 1:
        return 0.0
    if natural == sides:
        return 1.0
    if natural >= threshold:
        return min(natural, sides) / sides
    return max(-(threshold - natural) / sides, -1.0)


def make_batches(
    n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``n`` random batches: token ids, a padding mask (lengths from half to full), labels."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        lengths = rng.integers(seq_len // 2, seq_len + 1, size=batch_size)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        ids = rng.integers(1000 if vocab_size > 2000 else 1, vocab_size, (batch_size, seq_len))
        batches.append(
            dict(
                input_ids=(ids * mask).astype(np.int32),
                attention_mask=mask,
                token_type_ids=np.zeros((batch_size, seq_len), np.int32),
                labels=rng.integers(0, NUM_LABELS, batch_size).astype(np.int32),
            )
        )
    return batches


def torch_runner(
    config: dict[str, Any], batches: list[dict[str, np.ndarray]], total_steps: int, window: int
) -> tuple[Callable[[], float], int]:
    """The eager PyTorch loop; returns (run one window -> last loss, parameter count)."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(num_labels=NUM_LABELS, **config)
    )
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
    tensors = [{k: torch.from_numpy(v).long() for k, v in b.items()} for b in batches]
    host_rng = random.Random(0)
    position = [0]

    def run() -> float:
        loss_value = 0.0
        for _ in range(window):
            batch = tensors[position[0] % len(tensors)]
            position[0] += 1
            optimizer.zero_grad(set_to_none=True)
            loss = model(**batch).loss
            scale = saving_throw_scale(host_rng.randint(1, SIDES))  # the roll, on the host
            (loss * scale).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            scheduler.step()
            loss_value = loss.item()  # logged every step, as the original does
        return loss_value

    return run, sum(p.numel() for p in model.parameters())


def jax_runner(
    config: dict[str, Any], batches: list[dict[str, np.ndarray]], total_steps: int, window: int
) -> tuple[Callable[[], Any], int]:
    """Our jitted step with dice_roll; returns (run one window -> last state, param count)."""
    from flax import nnx

    from examples.bert import optim, parallel, steps
    from examples.bert.config import BertConfig
    from examples.bert.model import BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(**config), NUM_LABELS, dtype=jnp.float32, rngs=nnx.Rngs(params=0, dropout=1)
    )
    spec = optim.OptimizerSpec(
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        total_updates=total_steps,
        accumulation_steps=1,
        mode="per_mini_batch",
        position="before",
        dice_kwargs=dict(dice=f"d{SIDES}", threshold=THRESHOLD),
        seed=0,
        clip_norm=CLIP,
    )
    tx, schedule = optim.build_optimizer(spec)
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


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints its table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and few steps")
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
        TINY if quick else FULL, vocab_size=vocab, max_position_embeddings=max(128, seq_len)
    )

    import torch

    if args.cores:
        torch.set_num_threads(args.cores)
    batches = make_batches(8, batch_size, seq_len, vocab)
    total_steps = (windows + 2) * window * 2 + 10
    run_torch, n_torch = torch_runner(config, batches, total_steps, window)
    run_jax, n_jax = jax_runner(config, batches, total_steps, window)
    if n_torch != n_jax:
        raise AssertionError(f"the two BERTs differ: {n_torch} vs {n_jax} parameters")

    print("# vs_pytorch: a BERT train step with the dice, eager PyTorch against jitted JAX")
    print(
        _common.machine_line() + f"; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(_common.load_line("at start"))
    if args.prng_impl:
        print(f"our side draws dropout masks and dice with jax_default_prng_impl={args.prng_impl}")
    print(
        f"BERT: hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
        f"{config['num_attention_heads']} heads, intermediate {config['intermediate_size']}, "
        f"vocab {vocab}; {n_jax / 1e6:.2f} M params; batch {batch_size}, length {seq_len}, "
        f"float32; {windows} timed windows of {window} steps per side, alternating, after 1 "
        "warm-up window"
    )
    samples = _common.interleave(
        {"PyTorch eager (roll-to-train's way)": run_torch, "JAX jit + dice_roll (ours)": run_jax},
        windows,
        warmup=1,
        sync=lambda out: out if isinstance(out, float) else jax.block_until_ready(out),
    )
    torch_s, jax_s = samples.values()
    rows = []
    for s in (torch_s, jax_s):
        rates = batch_size * window / np.asarray(s.seconds)
        q25, q50, q75 = np.percentile(rates, [25, 50, 75])
        rows.append(
            [
                s.name,
                f"{q50:.1f}",
                f"{q25:.1f}-{q75:.1f}",
                f"{s.median / window * 1e3:.1f}",
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
                "speed vs PyTorch",
                "cores used",
            ],
            rows,
        )
    )
    of_medians, paired, p25, p75 = _common.ratio_summary(torch_s, jax_s)
    print()
    print(_common.load_line("at end"))
    print(
        f"SUMMARY vs_pytorch: ours {batch_size * window / jax_s.median:.1f} samples/s vs "
        f"PyTorch eager {batch_size * window / torch_s.median:.1f} samples/s: "
        f"{of_medians:.2f}x (paired {paired:.2f}x, IQR {p25:.2f}-{p75:.2f}); target > 1x on "
        f"this machine ({_common.cpu_model()}): "
        f"{'met' if of_medians > 1 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
