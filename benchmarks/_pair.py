"""The train step before issue 20 and today's, built alike for the benchmarks that pair them.

Both sides train the same BERT (random weights, seed 0, dropout on) on the same random
batches with the training script's optimizer as benchmarks/vs_pytorch.py sets it: one roll of
a d20 per micro-batch before clipping to norm 1 and AdamW (weight decay 0.01 on matrices,
warmup and linear decay), no accumulation.

* ``before``: :mod:`benchmarks.baseline` (the model and step at commit 630073a): the state
  crosses the jit boundary as ``nnx.State`` of ``nnx.Variable`` objects, attention with
  dropout spelled out, dropout masks of 32 random bits per element.
* ``after``: :mod:`examples.bert.model` and :mod:`examples.bert.steps` as they are, with
  ``attention_implementation`` as given (``"cudnn"``: cuDNN's fused attention, with dropout
  where jax's private API allows; see :class:`examples.bert.model.BertSelfAttention`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common

SIDES = ("before", "after")
NUM_LABELS = 3
LR, WEIGHT_DECAY, WARMUP_RATIO, CLIP = 5e-5, 0.01, 0.1, 1.0

#: BERT shapes by name (BERT-base is BertConfig's defaults).
SHAPES: dict[str, dict[str, int]] = {
    "bert-base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
}


class Built(NamedTuple):
    """One side: its jitted step ``(state, batch) -> (state, metrics)``, first state, batches."""

    step: Callable[[Any, Any], tuple[Any, Any]]
    state: Any
    batches: list[dict[str, jax.Array]]
    config: Any


def bert_config(shape: str = "bert-base", layers: int | None = None, **overrides: Any) -> Any:
    """The :class:`~examples.bert.config.BertConfig` of a named shape (``layers`` overrides
    its depth), 512 positions."""
    from examples.bert.config import BertConfig

    settings = dict(SHAPES[shape], max_position_embeddings=512)
    if layers is not None:
        settings["num_hidden_layers"] = layers
    return BertConfig(**settings | overrides)


def optimizer(total_updates: int = 10_000, *, dice: bool = True) -> tuple[Any, Any]:
    """The training script's optimizer and schedule with vs_pytorch's settings (``dice``
    False: the same without the dice, the baseline)."""
    from examples.bert import optim
    from examples.bert.train_config import TrainConfig

    run = TrainConfig(
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        accumulation_steps=1,
        mode="per_mini_batch" if dice else "off",
        dice_position="before",
        dice="d20",
        threshold=15,
        modifier=0,
        seed=0,
        clip_norm=CLIP,
    )
    return optim.build_optimizer(run, total_updates=total_updates)


def build(
    side: str,
    config: Any,
    *,
    batch_size: int,
    seq_len: int = 128,
    dtype: Any = jnp.bfloat16,
    attention: str | None = None,
    mesh: Any = None,
    nbatches: int = 4,
    abstract: bool = False,
    dice: bool = True,
    log_grad_norm: bool = True,
    lookup: str = "gather",
) -> Built:
    """Builds one side's step, its first state and ``nbatches`` batches on the mesh.

    Args:
      side: ``"before"`` or ``"after"``.
      config: the BERT's config.
      batch_size, seq_len: the batches' shape.
      dtype: the compute dtype.
      attention: ``attention_implementation`` of today's model (ignored for ``before``).
      mesh: the device mesh (default: all devices); a deviceless topology's mesh compiles
        for that target.
      nbatches: how many different batches.
      abstract: return ``jax.ShapeDtypeStruct`` state and batches (for ``.lower``), sharded
        on ``mesh``, instead of arrays.
      dice: roll the dice (False: the optimizer without them).
      log_grad_norm: today's step computes the gradient norm for its metrics besides the
        optimizer's own (False: only the optimizer's; the step before always does).
      lookup: today's ``embedding_lookup`` (``"dense"`` is what the training script
        picks on a GPU; ignored for ``before``).
    """
    from flax import nnx

    from benchmarks.baseline import model as model_before
    from benchmarks.baseline import steps as steps_before
    from examples.bert import model as model_after
    from examples.bert import parallel
    from examples.bert import steps as steps_after

    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    models, steps = (model_before, steps_before) if side == "before" else (model_after, steps_after)
    model = models.BertForSequenceClassification(
        config, NUM_LABELS, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)
    )
    if side == "after" and attention is not None:
        model.set_attributes(attention_implementation=attention)
    if side == "after":
        model.set_attributes(embedding_lookup=lookup)
    tx, schedule = optimizer(dice=dice)
    graphdef, _, params, model_state = steps.split_model(model)
    host_mesh = parallel.make_mesh()
    mesh = host_mesh if mesh is None else mesh
    options = {} if side == "before" else {"log_grad_norm": log_grad_norm}
    step = steps.make_train_step(graphdef, tx, schedule, 1, mesh, uses_dice=dice, **options)
    vocab = config.vocab_size
    host_batches = _common.make_batches(
        nbatches, batch_size, seq_len, vocab, NUM_LABELS, low_id=1000 if vocab > 2000 else 1
    )
    if abstract:
        state = jax.eval_shape(lambda: steps.init_train_state(params, model_state, tx, host_mesh))
        rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
        batches = [
            {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=split) for k, v in b.items()}
            for b in host_batches
        ]
    else:
        state = steps.init_train_state(params, model_state, tx, mesh)
        sharding = parallel.batch_sharding(mesh)
        batches = [parallel.put_batch(b, sharding) for b in host_batches]
    return Built(step, state, batches, config)


def n_params(state: Any) -> int:
    """The number of model parameters in a train state of either side."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
