"""The optimizer of the fine-tuning run: AdamW with warmup and linear decay, and the dice.

Three knobs decide where the dice sit:

* ``mode``: ``"off"`` (no dice: the baseline), ``"per_mini_batch"`` (a roll for every
  micro-batch) or ``"per_accumulation_step"`` (a roll for every applied update).
* ``dice_position``: ``"before"`` scales the gradient before clipping and AdamW, as roll-to-train
  scales the loss; ``"after"`` scales AdamW's final step instead.
* ``accumulation_steps``: micro-batches per applied update (``optax.MultiSteps``). With 1,
  no ``MultiSteps`` is built (it would hold a full copy of the parameters for nothing), and
  both dice modes are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_dice
from examples.bert import dice_shim

if TYPE_CHECKING:
    from examples.bert.train_config import TrainConfig

DICE_STREAM = 0xD1CE  # folded into the run's seed to key the dice


def dice_key(seed: int) -> jax.Array:
    """The dice's typed PRNG key for a run's ``--seed``.

    It is ``jax.random.fold_in(jax.random.key(seed), 0xD1CE)``, a stream of its own, apart
    from the streams that initialise the head and draw dropout masks.
    """
    return jax.random.fold_in(jax.random.key(seed), DICE_STREAM)


def natural_face_probs(config: TrainConfig) -> np.ndarray | None:
    """The exact probability of each natural face of the run's die (None without dice).

    Exact with game mechanics too: they multiply the step, never change the die, so the
    faces keep their odds even where :func:`optax_dice.odds` can only estimate the scale.
    """
    if not config.uses_dice:
        return None
    sides = dice_shim.parse_dice(config.dice_kwargs["dice"])
    return dice_shim.natural_probs(sides, config.advantage, config.disadvantage)


def rolls_per_update(config: TrainConfig) -> bool:
    """Whether the dice roll once per applied update (not on every micro-batch): the train
    step then reports each roll on the micro-step that applies its update."""
    return config.uses_dice and not (
        config.mode == "per_mini_batch" and config.dice_position == "before"
    )


def learning_rate_schedule(lr: float, total_updates: int, warmup_ratio: float) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over ``warmup_ratio * total_updates`` updates, then
    linear decay to 0 at ``total_updates``.

    Args:
      lr: the peak learning rate.
      total_updates: the number of applied updates.
      warmup_ratio: the warmup's share, in [0, 1).

    Returns:
      An optax schedule of the update count.
    """
    warmup = round(warmup_ratio * total_updates)
    decay = optax.linear_schedule(lr, 0.0, max(total_updates - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _decay_mask(params: Any) -> Any:
    # Matrices (kernels, embeddings) decay; biases and LayerNorm scales do not, as in BERT.
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def build_optimizer(
    config: TrainConfig, total_updates: int
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """Builds the run's optimizer and its learning-rate schedule from its config.

    The inner optimizer is ``chain(clip_by_global_norm(clip_norm), adamw(schedule))`` (no
    clipping with ``clip_norm`` 0). With dice placed ``"before"``,
    :func:`optax_dice.accumulate` (or, without accumulation, ``chain(dice_roll, inner)``) puts
    the roll ahead of it; placed ``"after"``, the roll follows it: ``chain(inner, dice_roll)``,
    inside ``MultiSteps`` when accumulating. The settings were checked when the config was
    made; the dice library checks the ruleset.

    Every optimizer it returns is an ``optax.GradientTransformationExtraArgs`` whose parts
    all receive extra arguments such as ``value=loss`` (the Cleric's), and ignore them
    where they take none.

    Args:
      config: the run's settings (``lr``, ``weight_decay``, ``warmup_ratio``, ``clip_norm``,
        ``accumulation_steps``, ``mode``, ``dice_position``, the dice flags and ``seed``).
      total_updates: the number of applied updates; the learning rate decays to 0 over them.

    Returns:
      ``(optimizer, schedule)``; ``schedule(n)`` is the learning rate of the ``n``-th applied
      update (0-based).
    """
    schedule = learning_rate_schedule(config.lr, total_updates, config.warmup_ratio)
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    parts.append(optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask))
    inner = optax.chain(*parts)
    k = config.accumulation_steps
    if not config.uses_dice:
        if k == 1:
            return inner, schedule
        return _multi_steps(inner, k), schedule
    dice = dict(config.dice_kwargs, key=dice_key(config.seed))
    if config.dice_position == "before":
        if k == 1:
            return optax.chain(optax_dice.dice_roll(**dice), inner), schedule
        return optax_dice.accumulate(inner, k, mode=config.mode, **dice), schedule
    tx = optax.chain(inner, optax_dice.dice_roll(**dice))
    if k == 1:
        return tx, schedule
    return _multi_steps(tx, k), schedule


def _multi_steps(tx: optax.GradientTransformation, k: int) -> optax.GradientTransformationExtraArgs:
    """``optax.MultiSteps(tx, k)`` as a transformation that says it takes extra arguments.

    ``MultiSteps.update`` forwards extra arguments (the Cleric's ``value=loss``) to ``tx``,
    but ``gradient_transformation()`` returns a plain ``GradientTransformation``, which
    ``optax.with_extra_args_support`` (and so ``optax.chain``) would wrap to drop them.
    """
    multi_steps = optax.MultiSteps(tx, k)
    return optax.GradientTransformationExtraArgs(multi_steps.init, multi_steps.update)
