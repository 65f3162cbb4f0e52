"""The host's time per train-step call: the step before issue 20 against today's, paired.

On an accelerator the device runs ahead of the host only while the host's work per step (the
Python call, flattening the arguments, dispatching, rebuilding the outputs) stays under the
device's time per step. This measures that work on any machine: the CPU time of the calling
thread from the call until it returns (``time.thread_time``: what other processes do to the
cores does not count), for BERT-base's train step as the training script builds it. The
host's work depends on the model (how many arrays the state holds), not on the batch: a small
batch (2 sequences of 32 tokens by default) keeps the CPU's own compute per step short.

* ``before``: the train state crosses the jit boundary as ``nnx.State`` of ``nnx.Variable``
  objects, which JAX flattens and rebuilds leaf by leaf in Python (benchmarks/baseline).
* ``after``: the same state as plain nested dicts of arrays (``examples.bert.steps``), which
  JAX flattens in C++.

On a CPU the figure also holds work that is not the host's: XLA:CPU runs part of the
program's thunks on the calling thread. So each side is timed twice: its step, and "the
boundary alone", a trivial program with the step's very signature (the same state and batch
in, the same state and metrics out, the same shardings and donation), which costs the host
what crossing the jit boundary costs and nothing of the program.

Each round times ``--calls`` calls of each of the four, interleaved (the order rotates;
each round starts on an idle device and waits for it at the end); the table gives the median
call and the IQR over every call, and the paired ratio after / before per round. It also
times flattening and rebuilding each side's state alone.

Run:  python -m benchmarks.host_time            (BERT-base: ~5 min on 2 cores, compiling included)
      python -m benchmarks.host_time --quick    (a tiny BERT, seconds; nothing judged)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from benchmarks import _common, _pair

TARGET_MS = 1.5  # issue 20: the host returns from a BERT-base step call in <= 1.5 ms


def time_calls(built: _pair.Built, calls: int, offset: int) -> tuple[_pair.Built, list[float]]:
    """Times ``calls`` step calls (caller-thread CPU seconds each) on an idle device."""
    state, seconds, metrics = built.state, [], None
    for i in range(calls):
        batch = built.batches[(offset + i) % len(built.batches)]
        start = time.thread_time()
        state, metrics = built.step(state, batch)
        seconds.append(time.thread_time() - start)
    jax.block_until_ready((state, metrics))
    return built._replace(state=state), seconds


def boundary_only(built: _pair.Built) -> _pair.Built:
    """The same call signature as ``built.step`` around a trivial program."""
    import jax.numpy as jnp

    from examples.bert import parallel

    metrics = jax.eval_shape(built.step, built.state, built.batches[0])[1]

    def trivial(state, batch):
        n = batch["labels"].sum()
        zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype) + n.astype(m.dtype), metrics)
        return jax.tree.map(lambda x: x, state), zeros

    mesh = parallel.make_mesh()
    replicated = parallel.replicated(mesh)
    step = jax.jit(
        trivial,
        in_shardings=(replicated, parallel.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    return built._replace(step=step)


def tree_costs(state: object, repeats: int = 30) -> tuple[int, float, float]:
    """(leaves, median ms to flatten, median ms to unflatten) of a state."""
    leaves, treedef = jax.tree.flatten(state)
    flat, unflat = [], []
    for _ in range(repeats):
        start = time.thread_time()
        jax.tree.flatten(state)
        flat.append(time.thread_time() - start)
        start = time.thread_time()
        jax.tree.unflatten(treedef, leaves)
        unflat.append(time.thread_time() - start)
    return len(leaves), 1e3 * statistics.median(flat), 1e3 * statistics.median(unflat)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    """Runs the pairing and prints its table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny BERT, few rounds")
    parser.add_argument("--layers", type=int, default=None, help="BERT-base's depth (12)")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per step (2)")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per sequence (32)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (8)")
    parser.add_argument("--calls", type=int, default=5, help="calls per side per round (5)")
    args = parser.parse_args(argv)
    for flag in ("layers", "batch_size", "seq_len", "rounds", "calls"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    quick = args.quick
    rounds = args.rounds or (3 if quick else 8)
    shape = "tiny" if quick else "bert-base"
    config = _pair.bert_config(shape, args.layers, vocab_size=1000 if quick else 30522)
    seq_len = 16 if quick else args.seq_len
    built = {
        side: _pair.build(side, config, batch_size=args.batch_size, seq_len=seq_len)
        for side in _pair.SIDES
    }
    for side in _pair.SIDES:
        trivial = boundary_only(built[side])
        built[f"{side}, boundary alone"] = trivial._replace(
            state=jax.tree.map(lambda x: x.copy(), built[side].state)
        )
    names = list(built)
    print("# host_time: host CPU time per train-step call, the step before issue 20 and today's")
    print(_common.machine_line())
    print(_common.load_line("at start"))
    print(
        f"BERT {shape}: {config.num_hidden_layers} layers, hidden {config.hidden_size}; "
        f"{_pair.n_params(built['after'].state) / 1e6:.1f} M params; batch {args.batch_size}, "
        f"length {seq_len}, bfloat16, dropout on; {rounds} rounds of {args.calls} calls per side"
    )
    for side in names:  # compile and warm up
        built[side], _ = time_calls(built[side], 2, 0)
    samples: dict[str, list[list[float]]] = {side: [] for side in names}
    for r in range(rounds):
        for side in names[r % len(names) :] + names[: r % len(names)]:
            built[side], seconds = time_calls(built[side], args.calls, r)
            samples[side].append(seconds)
    rows, medians = [], {}
    for side in names:
        calls = 1e3 * np.concatenate(samples[side])
        q25, q50, q75 = np.percentile(calls, [25, 50, 75])
        medians[side] = q50
        leaves, flat_ms, unflat_ms = tree_costs(built[side].state)
        spread = f"{q25:.2f}-{q75:.2f}"
        rows.append([side, f"{q50:.2f}", spread, leaves, f"{flat_ms:.2f}", f"{unflat_ms:.2f}"])
    print()
    headers = ["side", "ms per call (median)", "IQR ms", "state leaves", "flatten ms"]
    print(_common.table([*headers, "unflatten ms"], rows))
    per_round = {side: [np.median(s) for s in samples[side]] for side in names}
    ratios = np.asarray(per_round["after"]) / np.asarray(per_round["before"])
    p25, p50, p75 = np.percentile(ratios, [25, 50, 75])
    boundary = medians["after, boundary alone"]
    print()
    print(_common.load_line("at end"))
    verdict = (
        "target not judged (--quick: a smoke test on a toy BERT)"
        if quick or config.num_hidden_layers != 12
        else f"target <= {TARGET_MS} ms: step call {_met(medians['after'] <= TARGET_MS)}, "
        f"boundary alone {_met(boundary <= TARGET_MS)}"
    )
    print(
        f"SUMMARY host_time: {medians['after']:.2f} ms per call today against "
        f"{medians['before']:.2f} ms before (paired ratio {p50:.2f}, IQR {p25:.2f}-{p75:.2f}); "
        f"the boundary alone {boundary:.2f} ms against "
        f"{medians['before, boundary alone']:.2f} ms; {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
