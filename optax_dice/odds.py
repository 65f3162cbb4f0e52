"""``odds``: the exact distribution of a ruleset's scale, by enumeration."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_dice import _validation
from optax_dice.dice import make_ruleset
from optax_dice.rules import OUTCOME_NAMES, outcome, rule_name

#: The most faces :func:`odds` enumerates (a few float64 arrays of this length: ~50 MB).
MAX_ODDS_SIDES = 1_000_000


@dataclasses.dataclass(frozen=True)
class Odds:
    """The exact distribution of one ruleset's rolls.

    Attributes:
      sides: faces of the die.
      threshold: the difficulty class.
      modifier: the roll bonus.
      advantage: whether the higher of two rolls is kept.
      disadvantage: whether the lower of two rolls is kept.
      rule: the rule's name.
      faces: int[sides], the natural faces 1..sides.
      face_probs: float64[sides], the probability of each natural face.
      scales: float64[sides], the scale each natural face gives.
      outcomes: int[sides], each face's outcome code (see ``rules.OUTCOME_NAMES``).
      outcome_probs: the probability of each of the four outcomes, by name.
      expected_scale: E[scale].
      std_scale: the standard deviation of the scale.
    """

    sides: int
    threshold: int
    modifier: int
    advantage: bool
    disadvantage: bool
    rule: str
    faces: np.ndarray
    face_probs: np.ndarray
    scales: np.ndarray
    outcomes: np.ndarray
    outcome_probs: dict[str, float]
    expected_scale: float
    std_scale: float

    @property
    def p_negative(self) -> float:
        """The probability of a step the wrong way (scale < 0)."""
        return float(self.face_probs[self.scales < 0].sum())

    def __str__(self) -> str:
        return format_odds(self)


def _face_probs(sides: int, advantage: bool, disadvantage: bool) -> np.ndarray:
    k = np.arange(1, sides + 1, dtype=np.float64)
    if advantage:  # P(max of two = k) = (k^2 - (k-1)^2) / s^2
        return (2 * k - 1) / sides**2
    if disadvantage:  # P(min of two = k) = ((s-k+1)^2 - (s-k)^2) / s^2
        return (2 * (sides - k) + 1) / sides**2
    return np.full(sides, 1.0 / sides)


def _concrete_int(name: str, value: Any) -> int:
    try:
        return int(np.asarray(_validation.as_int32(value)))
    except Exception as err:  # a tracer cannot be enumerated over
        raise TypeError(f"odds needs a concrete {name}, got {value!r}.") from err


def odds(**dice_kwargs: Any) -> Odds:
    """Enumerates every face of a ruleset: outcome odds, E[scale] and its spread.

    Args:
      **dice_kwargs: ``dice``, ``threshold``, ``modifier``, ``advantage``,
        ``disadvantage``, ``rule``, as for :func:`dice_roll` (concrete values).

    Returns:
      An :class:`Odds`; ``print`` it for a table.

    Raises:
      ValueError, TypeError: for bad dice arguments, as :func:`dice_roll`, and for a die
        of more than ``MAX_ODDS_SIDES`` (1,000,000) faces, too many to enumerate.

    Example:
      >>> import optax_dice
      >>> o = optax_dice.odds(dice="d20", threshold=15)
      >>> round(o.expected_scale, 4), round(o.outcome_probs["success"], 4)
      (0.035, 0.25)
      >>> round(optax_dice.odds(threshold=15, advantage=True).expected_scale, 4)
      0.3255
    """
    sides = _validation.parse_dice(dice_kwargs.get("dice", "d20"))
    if sides > MAX_ODDS_SIDES:
        raise ValueError(
            f"odds enumerates every face, and a d{sides} has {sides:,}: more than its limit "
            f"of {MAX_ODDS_SIDES:,} faces. Estimate a larger die from seeded rolls instead "
            "(roll_sequence)."
        )
    ruleset = make_ruleset(**dice_kwargs)
    threshold = _concrete_int("threshold", ruleset.threshold)
    modifier = _concrete_int("modifier", ruleset.modifier)
    faces = np.arange(1, sides + 1, dtype=np.int32)
    natural = jnp.asarray(faces)
    total = natural + modifier
    threshold_arr = jnp.asarray(threshold, jnp.int32)
    scales = np.asarray(
        jnp.broadcast_to(ruleset.rule(natural, total, sides, threshold_arr), faces.shape),
        np.float64,
    )
    codes = np.asarray(outcome(natural, total, sides, threshold_arr))
    probs = _face_probs(sides, ruleset.advantage, ruleset.disadvantage)
    mean = float(np.dot(probs, scales))
    var = float(np.dot(probs, (scales - mean) ** 2))
    return Odds(
        sides=sides,
        threshold=threshold,
        modifier=modifier,
        advantage=ruleset.advantage,
        disadvantage=ruleset.disadvantage,
        rule=rule_name(dice_kwargs.get("rule", "saving_throw")),
        faces=faces,
        face_probs=probs,
        scales=scales,
        outcomes=codes,
        outcome_probs={
            name: float(probs[codes == code].sum()) for code, name in enumerate(OUTCOME_NAMES)
        },
        expected_scale=mean,
        std_scale=float(np.sqrt(var)),
    )


def _face_range(faces: np.ndarray) -> str:
    if faces.size == 0:
        return "-"
    if faces.size == 1:
        return str(faces[0])
    contiguous = faces[-1] - faces[0] + 1 == faces.size
    return f"{faces[0]}-{faces[-1]}" if contiguous else ",".join(map(str, faces))


def _scale_range(scales: np.ndarray) -> str:
    if scales.size == 0:
        return "-"
    lo, hi = scales.min(), scales.max()
    return f"{lo:+.3g}" if np.isclose(lo, hi) else f"{lo:+.3g} .. {hi:+.3g}"


def format_odds(o: Odds) -> str:
    """Renders an :class:`Odds` as a plain-text table."""
    roll = "advantage" if o.advantage else "disadvantage" if o.disadvantage else "a single roll"
    lines = [
        f"d{o.sides}, threshold {o.threshold}, modifier {o.modifier:+d}, {roll}, rule {o.rule}",
        "",
        f"{'outcome':<18} {'faces':<10} {'probability':>11}   scale",
    ]
    for code, name in enumerate(OUTCOME_NAMES):
        mask = o.outcomes == code
        lines.append(
            f"{name:<18} {_face_range(o.faces[mask]):<10} "
            f"{o.outcome_probs[name]:>11.4f}   {_scale_range(o.scales[mask])}"
        )
    lines += [
        "",
        f"E[scale] = {o.expected_scale:+.4f}   std = {o.std_scale:.4f}   "
        f"P(step the wrong way) = {o.p_negative:.4f}",
    ]
    if o.expected_scale <= 0:
        lines.append(
            "E[scale] <= 0: on average this ruleset unlearns "
            "(the expected update points the wrong way or nowhere)."
        )
    return "\n".join(lines)
