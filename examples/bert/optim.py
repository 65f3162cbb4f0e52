"""The run's optimizer: AdamW with warmup and linear decay, and the dice, placed by ``mode``
(off, per_mini_batch, per_accumulation_step), ``dice_position`` (``"before"`` scales the
gradient, ``"after"`` AdamW's step) and ``accumulation_steps`` (1 builds no ``MultiSteps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_dice

if TYPE_CHECKING:
    from examples.bert.train_config import TrainConfig

DICE_STREAM = 0xD1CE  # folded into the run's seed to key the dice


def dice_key(seed: int) -> jax.Array:
    """The dice's key for ``--seed``: ``fold_in(key_from_seed(seed), 0xD1CE)``, a stream of
    its own (every int64 seed its own key: :func:`optax_dice.key_from_seed`)."""
    return jax.random.fold_in(optax_dice.key_from_seed(seed), DICE_STREAM)


def natural_face_probs(config: TrainConfig) -> np.ndarray | None:
    """The exact probability of each natural face of the run's die (None without dice), with
    the game too (it never changes the die)."""
    if not config.uses_dice:
        return None
    return optax_dice.Ruleset(**config.dice_kwargs).natural_probs()


def rolls_per_update(config: TrainConfig) -> bool:
    """Whether the dice roll once per applied update (reported on the micro-step applying it)."""
    return config.uses_dice and not (
        config.mode == "per_mini_batch" and config.dice_position == "before"
    )


def learning_rate_schedule(lr: float, total_updates: int, warmup_ratio: float) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over ``warmup_ratio * total_updates`` updates, then
    linear decay to 0 at ``total_updates``: an optax schedule of the update count."""
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
    """Builds the run's optimizer and its learning-rate schedule.

    The inner optimizer is ``chain(clip_by_global_norm(clip_norm), adamw(schedule))`` (no clip
    for 0). Dice ``"before"``: :func:`optax_dice.accumulate` (``chain(dice_roll, inner)`` for
    one micro-batch); ``"after"``: ``chain(inner, dice_roll)``, in ``MultiSteps`` when
    accumulating. Every part receives extra arguments such as the Cleric's ``value=loss``.

    Args:
      config: the run's settings.
      total_updates: the number of applied updates; the learning rate decays to 0 over them.

    Returns:
      ``(optimizer, schedule)``; ``schedule(n)`` is the learning rate of update ``n`` (from 0).
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
    """``optax.MultiSteps(tx, k)`` typed as taking extra arguments (its
    ``gradient_transformation()`` is plain, so ``optax.chain`` would drop them)."""
    multi_steps = optax.MultiSteps(tx, k)
    return optax.GradientTransformationExtraArgs(multi_steps.init, multi_steps.update)
