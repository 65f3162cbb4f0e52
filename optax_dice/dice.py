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
      normalized: whether ``rule`` was divided by its E[scale] (``normalize=True``).
    """

    sides: int
    threshold: Any
    modifier: Any
    advantage: bool
    disadvantage: bool
    rule: Rule
    normalized: bool = False


def make_ruleset(
    dice: int | str = "d20",
    threshold: Any = 15,
    modifier: Any = 0,
    advantage: bool = False,
    disadvantage: bool = False,
    rule: Any = "saving_throw",
    normalize: bool = False,
) -> Ruleset:
    """Checks the dice arguments and returns them as a :class:`Ruleset`.

    With ``normalize`` the ruleset's rule is the given rule times the float32
    reciprocal of its exact E[scale] (see :func:`expected_scale`), so that the mean
    scale is 1.

    Raises:
      ValueError or TypeError naming the bad argument and what it accepts; ValueError
      for ``normalize`` where E[scale] <= 0, TypeError where the threshold or modifier
      is not concrete (a traced, injected hyperparameter).
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
    normalize = _validation.check_flag("normalize", normalize)
    if normalize:
        resolved = _normalized(resolved, sides, threshold, modifier, advantage, disadvantage)
    return Ruleset(sides, threshold, modifier, advantage, disadvantage, resolved, normalize)


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


#: The most faces that :func:`face_scales` (and so ``odds`` and ``normalize``) enumerates.
MAX_ENUMERATED_SIDES = 1_000_000


def face_scales(
    rule: Rule, sides: int, threshold: Any, modifier: Any
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``rule`` judged on every face of the die, with the concrete threshold and modifier.

    Evaluated eagerly, also while a jit traces the caller (``optax.inject_hyperparams``
    builds the transformation inside its update): the enumeration is a constant.

    Returns:
      ``(totals, scales, threshold, modifier)``: int32 totals and float32 scales for the
      faces 1..sides, and the threshold and modifier as ints.

    Raises:
      ValueError: for a die of more than :data:`MAX_ENUMERATED_SIDES` faces.
      TypeError: for a threshold or modifier that is not concrete (a tracer).
    """
    if sides > MAX_ENUMERATED_SIDES:
        raise ValueError(
            f"enumerating every face of a d{sides} ({sides:,} faces) is over the limit of "
            f"{MAX_ENUMERATED_SIDES:,} faces. Estimate a larger die from seeded rolls instead "
            "(roll_sequence)."
        )
    with jax.ensure_compile_time_eval():
        try:
            threshold, modifier = (
                int(np.asarray(_validation.as_int32(v))) for v in (threshold, modifier)
            )
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as e:
            raise TypeError(
                "enumerating the faces (odds, normalize=True) needs a concrete threshold and "
                "modifier; with optax.inject_hyperparams pass them in static_args."
            ) from e
        totals = jnp.arange(1, sides + 1, dtype=jnp.int32) + modifier
        scales = jnp.broadcast_to(
            rule(totals - modifier, totals, sides, jnp.asarray(threshold, jnp.int32)),
            totals.shape,
        )
        return np.asarray(totals), np.asarray(scales, np.float32), threshold, modifier


def expected_scale(
    rule: Rule, sides: int, threshold: Any, modifier: Any, advantage: bool, disadvantage: bool
) -> float:
    """The exact E[scale] of a ruleset, enumerating every face (float64).

    Raises:
      ValueError, TypeError: as :func:`face_scales`.
    """
    _, scales, _, _ = face_scales(rule, sides, threshold, modifier)
    return float(np.dot(face_probs(sides, advantage, disadvantage), scales.astype(np.float64)))


def _normalized(
    rule: Rule, sides: int, threshold: Any, modifier: Any, advantage: bool, disadvantage: bool
) -> Rule:
    """``rule`` divided by its exact E[scale]."""
    mean = expected_scale(rule, sides, threshold, modifier, advantage, disadvantage)
    if not mean > 0:
        raise ValueError(
            f"normalize=True divides every scale by E[scale], and this ruleset's is "
            f"{mean:+.4f}: dividing by it would {'flip' if mean < 0 else 'blow up'} every "
            "step. Normalise only a ruleset that learns on average (E[scale] > 0)."
        )
    inverse = np.float32(1.0 / mean)

    def normalized(natural: Any, total: Any, sides: int, threshold: Any) -> jax.Array:
        return jnp.asarray(rule(natural, total, sides, threshold), jnp.float32) * inverse

    return normalized


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
