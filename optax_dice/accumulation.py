"""``accumulate``: roll-to-train's two modes on top of ``optax.MultiSteps``."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_dice import _validation
from optax_dice.ruleset import Ruleset, resolve_ruleset
from optax_dice.transform import DiceRollState, dice_transform, scale_updates

MODES = ("per_mini_batch", "per_accumulation_step")


def accumulate(
    inner: optax.GradientTransformation,
    every_k: int,
    *,
    mode: Literal["per_mini_batch", "per_accumulation_step"] = "per_mini_batch",
    key: int | jax.Array = 0,
    ruleset: Ruleset | None = None,
    **keywords: Any,
) -> optax.GradientTransformationExtraArgs:
    """Accumulates gradients over ``every_k`` micro-batches, rolling dice as the seed does.

    * ``"per_mini_batch"``: every micro-batch's gradient is scaled by its own
      roll before it is accumulated, as roll-to-train scales each mini-batch's
      loss: ``chain(dice_roll(...), MultiSteps(inner, every_k))``. The dice key
      advances on every micro-batch.
    * ``"per_accumulation_step"``: one roll scales each accumulated (mean)
      gradient before ``inner`` sees it, as ``MultiSteps(chain(dice_roll(...),
      inner), every_k)`` would. It is built as ``chain(held_roll,
      MultiSteps(inner, every_k))`` instead: the roll is made on the first
      micro-batch of each cycle and held for the others, and every micro-batch
      is scaled by it, which gives the same update (the mean of s * g is s times
      the mean of g). The dice key advances once per applied update, so the
      rolls are ``roll_sequence``'s, one per update.

    In both modes the dice state's ``count`` is the number of rolls made, so
    ``roll_sequence(key, count)`` ends with the state's roll.

    The game (``character=``, ``encounter_chance=``, ``experience=``, see
    :func:`dice_roll`) follows the mode. In ``per_mini_batch`` its mechanics act on
    every micro-batch, as roll-to-train's do, and a monster may appear only on the
    last micro-batch of each window (``roll_sequence(..., every_k=every_k)``
    previews it). In ``per_accumulation_step`` they act once per applied update,
    with that update's roll (roll-to-train silently skips them in this mode: a
    deliberate difference); the whole factor is fixed on the window's first
    micro-batch, so the Cleric judges the ``value=`` passed with it.

    Non-emitting steps return zero updates, as ``optax.MultiSteps`` does; read
    ``optax.tree_utils.tree_get(state, "gradient_step")`` for the number of
    applied updates.

    Args:
      inner: the optimizer to accumulate for, e.g. ``optax.adamw(1e-3)``.
      every_k: micro-batches per applied update (>= 1).
      mode: ``"per_mini_batch"`` or ``"per_accumulation_step"``.
      key: the dice's key, as for :func:`dice_roll`.
      ruleset: the :class:`~optax_dice.Ruleset`, or None to make it from ``keywords``.
      **keywords: the ruleset's keywords (``dice``, ``threshold``, ...), as for
        :func:`dice_roll`, when no ``ruleset`` is given.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError, TypeError: for a bad ``every_k``, ``mode``, key or ruleset, and for a
        ruleset and keywords both.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import optax_dice
      >>> rs = optax_dice.Ruleset(threshold=12, modifier=2)
      >>> opt = optax_dice.accumulate(optax.sgd(1.0), 2, mode="per_accumulation_step", ruleset=rs)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> for _ in range(4):
      ...     updates, state = opt.update(jnp.ones(2), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> int(optax.tree_utils.tree_get(state, "gradient_step"))
      2
    """
    # Why a held roll and not MultiSteps(chain(dice_roll, inner)): a multiply between the
    # accumulator and ``inner`` made XLA materialise a second copy of the accumulated gradient
    # when ``inner`` clips (+17% time on CPU for a BERT-base update; benchmarks/RESULTS.md).
    if not isinstance(every_k, (int, np.integer)) or isinstance(every_k, bool) or every_k < 1:
        raise ValueError(
            f"every_k must be an int >= 1 (micro-batches per update), got {every_k!r}."
        )
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown: use one of {list(MODES)}.")
    _validation.check_key(key)
    ruleset = resolve_ruleset(ruleset, keywords, "accumulate")
    if mode == "per_mini_batch":
        return optax.chain(
            dice_transform(key, ruleset, int(every_k)), _multi_steps(inner, int(every_k))
        )
    return _held_roll_then_multisteps(
        dice_transform(key, ruleset), _multi_steps(inner, int(every_k))
    )


def _multi_steps(
    inner: optax.GradientTransformation, every_k: int
) -> optax.GradientTransformationExtraArgs:
    """``optax.MultiSteps(inner, every_k)``, marked as taking extra arguments.

    ``MultiSteps.update`` hands extra arguments (``value=loss``, say) on to ``inner``, but
    ``gradient_transformation()`` returns a plain ``GradientTransformation``, which
    ``optax.chain`` would wrap to drop them.
    """
    multi_steps = optax.MultiSteps(inner, every_k)
    return optax.GradientTransformationExtraArgs(multi_steps.init, multi_steps.update)


def _held_roll_then_multisteps(
    dice: optax.GradientTransformationExtraArgs, multi_steps: optax.GradientTransformationExtraArgs
) -> optax.GradientTransformationExtraArgs:
    """``chain(dice, multi_steps)`` where ``dice`` rolls only on each cycle's first micro-batch.

    The state is the chain's, ``(DiceRollState, MultiStepsState)``: the cycle's position is
    MultiSteps' ``mini_step``, so the dice state keeps its own fields and its ``count`` is the
    number of rolls made. With a game mechanic, the whole game step is made and held the same
    way, and the Cleric reads the first micro-batch's ``value``.
    """

    def init_fn(params: optax.Params) -> tuple[DiceRollState, optax.MultiStepsState]:
        return dice.init(params), multi_steps.init(params)

    def update_fn(
        updates: optax.Updates,
        state: tuple[DiceRollState, optax.MultiStepsState],
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, tuple[DiceRollState, optax.MultiStepsState]]:
        dice_state, ms_state = state
        fresh = ms_state.mini_step == 0
        _, rolled = dice.update((), dice_state, value=extra_args.get("value"))
        dice_state = jax.tree.map(lambda new, old: jnp.where(fresh, new, old), rolled, dice_state)
        updates = scale_updates(updates, dice_state.scale)
        updates, ms_state = multi_steps.update(updates, ms_state, params, **extra_args)
        return updates, (dice_state, ms_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
