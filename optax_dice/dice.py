"""The die: its faces' odds and the roll itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation

if TYPE_CHECKING:
    from optax_dice.ruleset import Ruleset


def face_probs(sides: int, advantage: bool = False, disadvantage: bool = False) -> np.ndarray:
    """P(natural = k) for k = 1..sides: one roll, or the higher or lower of two.

    Example:
      >>> from optax_dice.dice import face_probs
      >>> face_probs(4, advantage=True) * 16
      array([1., 3., 5., 7.])
    """
    k = np.arange(1, sides + 1, dtype=np.float64)
    if advantage:  # P(max of two = k) = (k^2 - (k-1)^2) / s^2
        return (2 * k - 1) / sides**2
    if disadvantage:  # P(min of two = k) = ((s-k+1)^2 - (s-k)^2) / s^2
        return (2 * (sides - k) + 1) / sides**2
    return np.full(sides, 1.0 / sides)


#: The most faces that ``Ruleset.face_scales`` (and so ``odds`` and ``normalize``) enumerates.
MAX_ENUMERATED_SIDES = 1_000_000


def ability_modifier(score: int) -> int:
    """The D&D modifier of an ability score: ``(score - 10) // 2``.

    roll-to-train adds its model's "intelligence" to every roll this way.

    Args:
      score: an ability score (10 is average, 15 gives +2, 8 gives -1).

    Returns:
      The modifier, an int.

    Example:
      >>> from optax_dice import ability_modifier
      >>> [ability_modifier(s) for s in (3, 8, 10, 15, 20)]
      [-4, -1, 0, 2, 5]
    """
    if not isinstance(score, (int, np.integer)) or isinstance(score, bool):
        raise TypeError(f"score must be an int ability score, got {type(score).__name__}.")
    return (int(score) - 10) // 2


def roll(ruleset: Ruleset, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rolls the die once with ``key`` and judges the roll.

    Args:
      ruleset: the ruleset (its die, modifier, threshold and rule).
      key: a PRNG key, used once.

    Returns:
      ``(natural, total, scale)``: int32, int32 and float32 scalars.
    """
    if ruleset.advantage or ruleset.disadvantage:
        faces = jax.random.randint(key, (2,), 1, ruleset.sides + 1, dtype=jnp.int32)
        natural = jnp.max(faces) if ruleset.advantage else jnp.min(faces)
    else:
        natural = jax.random.randint(key, (), 1, ruleset.sides + 1, dtype=jnp.int32)
    total = natural + _validation.as_int32(ruleset.modifier)
    threshold = _validation.as_int32(ruleset.threshold)
    scale = jnp.asarray(ruleset.rule_fn(natural, total, ruleset.sides, threshold), jnp.float32)
    return natural, total, scale
