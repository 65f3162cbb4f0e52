"""``roll_sequence``: the rolls a ``dice_roll`` will make, without training."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from optax_dice import _validation
from optax_dice.dice import make_ruleset, roll


class RollSequence(NamedTuple):
    """The rolls of n consecutive updates.

    Attributes:
      natural: int32[n], the dice as rolled.
      total: int32[n], natural + modifier.
      scale: float32[n], the scale each update gets.
    """

    natural: jax.Array
    total: jax.Array
    scale: jax.Array


def roll_sequence(key: int | jax.Array, n: int, **dice_kwargs: Any) -> RollSequence:
    """The naturals, totals and scales that ``n`` updates of ``dice_roll`` produce.

    ``roll_sequence(key, n, **kw)[i]`` is, element for element, what the
    ``i``-th update of ``dice_roll(key, **kw)`` rolls: it walks the same key
    chain (split once per update, roll with the fresh half).

    Args:
      key: the key given to :func:`dice_roll` (int, typed key or raw key).
      n: how many updates to roll for (>= 0).
      **dice_kwargs: ``dice``, ``threshold``, ``modifier``, ``advantage``,
        ``disadvantage``, ``rule``, as for :func:`dice_roll`.

    Returns:
      A :class:`RollSequence` of arrays of length ``n``.

    Example:
      >>> import optax_dice
      >>> seq = optax_dice.roll_sequence(0, 5, dice="d6", threshold=4)
      >>> seq.natural.shape, seq.scale.dtype
      ((5,), dtype('float32'))
      >>> bool(((seq.natural >= 1) & (seq.natural <= 6)).all())
      True
    """
    _validation.check_key(key)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0 (the number of updates), got {n!r}.")
    ruleset = make_ruleset(**dice_kwargs)

    def step(rng_key: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        next_key, roll_key = jax.random.split(rng_key)
        return next_key, roll(ruleset, roll_key)

    _, (natural, total, scale) = jax.lax.scan(
        step, _validation.canonicalize_key(key), None, length=int(n)
    )
    return RollSequence(natural, total, scale)
