"""The optimizer of the fine-tuning run: AdamW with warmup and linear decay, and the dice.

Three knobs decide where the dice sit:

* ``mode``: ``"off"`` (no dice: the baseline), ``"per_mini_batch"`` (a roll for every
  micro-batch) or ``"per_accumulation_step"`` (a roll for every applied update).
* ``position``: ``"before"`` scales the gradient before clipping and AdamW, as roll-to-train
  scales the loss; ``"after"`` scales AdamW's final step instead.
* ``accumulation_steps``: micro-batches per applied update (``optax.MultiSteps``). With 1,
  no ``MultiSteps`` is built (it would hold a full copy of the parameters for nothing), and
  both dice modes are the same.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_dice

MODES = ("per_mini_batch", "per_accumulation_step", "off")
POSITIONS = ("before", "after")
DICE_STREAM = 0xD1CE  # folded into the run's seed to key the dice


def dice_key(seed: int) -> jax.Array:
    """The dice's typed PRNG key for a run's ``--seed``.

    It is ``jax.random.fold_in(jax.random.key(seed), 0xD1CE)``, a stream of its own, apart
    from the streams that initialise the head and draw dropout masks.
    """
    return jax.random.fold_in(jax.random.key(seed), DICE_STREAM)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Everything that defines the optimizer.

    Attributes:
      lr: the peak learning rate.
      weight_decay: AdamW's decoupled weight decay (not applied to biases and norm scales).
      warmup_ratio: the share of the updates spent warming the learning rate up from 0.
      total_updates: the number of applied updates; the learning rate decays to 0 over them.
      accumulation_steps: micro-batches per applied update.
      mode: ``"per_mini_batch"``, ``"per_accumulation_step"`` or ``"off"``.
      position: ``"before"`` (scale the gradient) or ``"after"`` (scale the final step).
      dice_kwargs: ``dice``, ``threshold``, ``modifier``, ``advantage``, ``disadvantage``,
        ``rule`` for :func:`optax_dice.dice_roll` (the key comes from ``seed``).
      seed: the run's seed; the dice key is :func:`dice_key` of it.
      clip_norm: the global gradient norm is clipped to this (None: no clipping).
    """

    lr: float
    weight_decay: float
    warmup_ratio: float
    total_updates: int
    accumulation_steps: int = 1
    mode: str = "per_mini_batch"
    position: str = "before"
    dice_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    clip_norm: float | None = 1.0

    @property
    def uses_dice(self) -> bool:
        """Whether any roll is made."""
        return self.mode != "off"

    def rolls_at(self, micro_step: int) -> bool:
        """Whether micro-step ``micro_step`` (0-based) rolls the die."""
        if not self.uses_dice:
            return False
        if self.mode == "per_mini_batch" and self.position == "before":
            return True
        return (micro_step + 1) % self.accumulation_steps == 0

    def rolls_before(self, micro_steps: int) -> int:
        """How many rolls the first ``micro_steps`` micro-steps make."""
        if not self.uses_dice:
            return 0
        if self.mode == "per_mini_batch" and self.position == "before":
            return micro_steps
        return micro_steps // self.accumulation_steps


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


def check_spec(spec: OptimizerSpec) -> None:
    """Raises ValueError for a spec that cannot be built, with the reason."""
    if spec.mode not in MODES:
        raise ValueError(f"mode {spec.mode!r} is not one of {list(MODES)}.")
    if spec.position not in POSITIONS:
        raise ValueError(f"dice position {spec.position!r} is not one of {list(POSITIONS)}.")
    if spec.accumulation_steps < 1:
        raise ValueError(f"accumulation steps must be >= 1, got {spec.accumulation_steps}.")
    if spec.total_updates < 1:
        raise ValueError(f"the number of steps must be positive, got {spec.total_updates}.")
    if not (spec.lr > 0 and math.isfinite(spec.lr)):
        raise ValueError(f"the learning rate must be positive and finite, got {spec.lr}.")
    if not (spec.weight_decay >= 0 and math.isfinite(spec.weight_decay)):
        raise ValueError(f"weight decay must be >= 0 and finite, got {spec.weight_decay}.")
    if not 0 <= spec.warmup_ratio < 1:
        raise ValueError(f"warmup ratio must lie in [0, 1), got {spec.warmup_ratio}.")
    if (
        spec.uses_dice
        and spec.position == "after"
        and spec.mode == "per_mini_batch"
        and spec.accumulation_steps > 1
    ):
        raise ValueError(
            "--dice-position after scales the final step, which exists once per accumulated "
            "update, so it cannot roll per mini-batch: use --mode per_accumulation_step "
            "(or --accumulation-steps 1)."
        )


def build_optimizer(spec: OptimizerSpec) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optimizer and its learning-rate schedule.

    The inner optimizer is ``chain(clip_by_global_norm(clip_norm), adamw(schedule))``. With
    dice placed ``"before"``, :func:`optax_dice.accumulate` (or, without accumulation,
    ``chain(dice_roll, inner)``) puts the roll ahead of it; placed ``"after"``, the roll
    follows it: ``chain(inner, dice_roll)``, inside ``MultiSteps`` when accumulating.

    Args:
      spec: the optimizer's settings.

    Returns:
      ``(optimizer, schedule)``; ``schedule(n)`` is the learning rate of the ``n``-th applied
      update (0-based).

    Raises:
      ValueError: for inconsistent settings (see :func:`check_spec`).
    """
    check_spec(spec)
    schedule = learning_rate_schedule(spec.lr, spec.total_updates, spec.warmup_ratio)
    parts = [] if spec.clip_norm is None else [optax.clip_by_global_norm(spec.clip_norm)]
    parts.append(optax.adamw(schedule, weight_decay=spec.weight_decay, mask=_decay_mask))
    inner = optax.chain(*parts)
    k = spec.accumulation_steps
    if not spec.uses_dice:
        if k == 1:
            return inner, schedule
        return optax.MultiSteps(inner, k).gradient_transformation(), schedule
    dice = dict(spec.dice_kwargs, key=dice_key(spec.seed))
    if spec.position == "before":
        if k == 1:
            return optax.chain(optax_dice.dice_roll(**dice), inner), schedule
        return optax_dice.accumulate(inner, k, mode=spec.mode, **dice), schedule
    tx = optax.chain(inner, optax_dice.dice_roll(**dice))
    if k == 1:
        return tx, schedule
    return optax.MultiSteps(tx, k).gradient_transformation(), schedule
