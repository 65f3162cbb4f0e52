"""A stand-in for the library's public ruleset value, to be REPLACED AT MERGE.

The "lib" branch adds ``optax_dice.parse_dice`` and ``optax_dice.Ruleset`` (frozen, validated
once with numpy only, with ``.sides``, ``.natural_probs()`` and ``.expected_scale``). Until
that branch lands, the examples must neither import the library's private
``optax_dice._validation`` nor start a JAX backend to check a config, so this module does the
three things they need with numpy alone. At merge: ``parse_dice`` -> ``optax_dice.parse_dice``,
``natural_probs`` -> ``optax_dice.Ruleset(...).natural_probs()``, ``check_normalize`` ->
constructing ``optax_dice.Ruleset(**config.dice_kwargs)``; then delete this file.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_DICE = re.compile(r"^\s*[dD](\d+)\s*$")
MAX_SIDES = 2**29  # rolls and totals are int32
MAX_ENUMERATED_SIDES = 1_000_000  # the most faces the library enumerates


def parse_dice(dice: Any) -> int:
    """The number of sides of ``dice``, an int >= 2 or a string "dN" (the library's rule).

    Example:
      >>> parse_dice("d20"), parse_dice(6)
      (20, 6)
    """
    if isinstance(dice, str):
        match = _DICE.match(dice)
        if match is None:
            raise ValueError(
                f'dice={dice!r} is not a die: write "dN" with N >= 2 sides '
                '(e.g. "d4", "d6", "d20", "d100") or pass the number of sides as an int.'
            )
        sides = int(match.group(1))
    elif isinstance(dice, int | np.integer) and not isinstance(dice, bool):
        sides = int(dice)
    else:
        raise TypeError(
            f'dice must be an int number of sides or a string like "d20", got '
            f"{type(dice).__name__} {dice!r}."
        )
    if sides < 2:
        raise ValueError(f"dice={dice!r} has {sides} side(s): a die needs at least 2 sides.")
    if sides > MAX_SIDES:
        raise ValueError(
            f"dice={dice!r} has {sides:,} sides, more than the {MAX_SIDES:,} (2**29) a "
            "die may have (rolls and totals are int32): use a smaller die."
        )
    return sides


def natural_probs(sides: int, advantage: bool = False, disadvantage: bool = False) -> np.ndarray:
    """P(natural = k) for k = 1..sides: one roll, or the higher or lower of two."""
    k = np.arange(1, sides + 1, dtype=np.float64)
    if advantage:
        return (2 * k - 1) / sides**2
    if disadvantage:
        return (2 * (sides - k) + 1) / sides**2
    return np.full(sides, 1.0 / sides)


def _scales(rule: str, sides: int, threshold: int, modifier: int) -> np.ndarray:
    """The library's named rules on every face, in numpy float32 (as optax_dice.rules)."""
    natural = np.arange(1, sides + 1)
    total = natural + modifier
    f = np.float32
    if rule == "saving_throw":
        success = np.minimum(total, sides).astype(f) / f(sides)
        failure = np.maximum(-(threshold - total).astype(f) / f(sides), f(-1))
        scale = np.where(total >= threshold, success, failure)
        scale = np.where(natural == sides, f(1), scale)
        return np.where(natural == 1, f(0), scale).astype(f)
    scale = np.where(total >= threshold, (total - threshold).astype(f) / f(100), f(0))
    scale = np.where(total == sides, f(1), scale)
    return np.where(total == 1, f(-1), scale).astype(f)


def check_normalize(kwargs: dict[str, Any]) -> None:
    """Raises the library's ValueError when ``normalize`` asks to divide by an E[scale] <= 0.

    Args:
      kwargs: ``dice_roll`` keywords without a game (named rules only).
    """
    sides = parse_dice(kwargs["dice"])
    if sides > MAX_ENUMERATED_SIDES:
        raise ValueError(
            f"enumerating every face of a d{sides} ({sides:,} faces) is over the limit of "
            f"{MAX_ENUMERATED_SIDES:,} faces. Estimate a larger die from seeded rolls instead "
            "(roll_sequence)."
        )
    scales = _scales(kwargs["rule"], sides, int(kwargs["threshold"]), int(kwargs["modifier"]))
    probs = natural_probs(sides, kwargs["advantage"], kwargs["disadvantage"])
    mean = float(np.dot(probs, scales.astype(np.float64)))
    if not mean > 0:
        raise ValueError(
            f"normalize=True divides every scale by E[scale], and this ruleset's is "
            f"{mean:+.4f}: dividing by it would {'flip' if mean < 0 else 'blow up'} every "
            "step. Normalise only a ruleset that learns on average (E[scale] > 0)."
        )
