"""A ruleset (die, threshold, modifier, advantage, rule) and the roll itself."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation
from optax_dice.rules import Rule, resolve_rule


class Ruleset(NamedTuple):
    """A checked set of dice arguments, as :func:`make_ruleset` builds it.

    Attributes:
      sides: faces of the die.
      threshold: the difficulty class (an int, or a scalar array when injected).
      modifier: added to the natural roll (an int, or a scalar array when injected).
      advantage: roll twice and keep the higher.
      disadvantage: roll twice and keep the lower.
      rule: the function ``(natural, total, sides, threshold) -> scale``.
    """

    sides: int
    threshold: Any
    modifier: Any
    advantage: bool
    disadvantage: bool
    rule: Rule


def make_ruleset(
    dice: int | str = "d20",
    threshold: Any = 15,
    modifier: Any = 0,
    advantage: bool = False,
    disadvantage: bool = False,
    rule: Any = "saving_throw",
) -> Ruleset:
    """Checks the dice arguments and returns them as a :class:`Ruleset`.

    Raises:
      ValueError or TypeError naming the bad argument and what it accepts.
    """
    sides = _validation.parse_dice(dice)
    threshold = _validation.check_integer("threshold", threshold)
    modifier = _validation.check_integer("modifier", modifier)
    advantage = _validation.check_flag("advantage", advantage)
    disadvantage = _validation.check_flag("disadvantage", disadvantage)
    if advantage and disadvantage:
        raise ValueError(
            "advantage and disadvantage cancel out (D&D 5e): pass at most one of them."
        )
    resolved = resolve_rule(rule)
    if not isinstance(rule, str):  # the built-in rules are known to give a scalar float
        _validation.check_rule_output(resolved, sides)
    return Ruleset(sides, threshold, modifier, advantage, disadvantage, resolved)


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
      ruleset: the checked dice arguments.
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
    scale = jnp.asarray(ruleset.rule(natural, total, ruleset.sides, threshold), jnp.float32)
    return natural, total, scale
