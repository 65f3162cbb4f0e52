"""``odds``: the exact distribution of a ruleset's scale, by enumeration."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation, game
from optax_dice.dice import MAX_ENUMERATED_SIDES
from optax_dice.rules import OUTCOME_NAMES, numpy_outcome
from optax_dice.ruleset import Ruleset, resolve_ruleset
from optax_dice.sequence import play

#: The most faces :func:`odds` enumerates (a few float64 arrays of this length: ~50 MB).
MAX_ODDS_SIDES = MAX_ENUMERATED_SIDES  # faces odds enumerates at most


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


def odds(
    ruleset: Ruleset | None = None,
    *,
    steps: int = 1000,
    runs: int = 200,
    seed: int = 0,
    **keywords: Any,
) -> Odds | OddsEstimate:
    """Enumerates every face of a ruleset: outcome odds, E[scale] and its spread.

    Exact (an :class:`Odds`) for the dice alone and for mechanics without memory
    (the Rogue's Sneak Attack depends on the roll only: see ``game.CLASSES``). Mechanics
    with memory (charges, rages, monsters, levels) make the scale depend on the past; for
    them it returns an :class:`OddsEstimate`: the mean over ``runs`` seeded runs (the runs
    of ``dice_roll(seed)``, ``dice_roll(seed + 1)``, ...) of ``steps`` updates each, with
    its standard error across runs. (With experience, the level-1 bonus is 1: the first
    update's odds are the exact ones of the mechanics without it.)

    Args:
      ruleset: the :class:`~optax_dice.Ruleset`, or None to make it from ``keywords``
        (concrete values).
      steps: updates per run, for an estimate.
      runs: independent seeded runs, for an estimate (>= 2).
      seed: the first run's int seed, for an estimate; ``seed + runs - 1`` must be an
        int64 seed too.
      **keywords: the ruleset's keywords (``dice``, ``threshold``, ``modifier``,
        ``advantage``, ``disadvantage``, ``rule``, ``normalize``, ``character``,
        ``encounter_chance``, ``experience``), as for :func:`dice_roll`, when no
        ``ruleset`` is given. The Cleric's losses are held at 1.0 in an estimate.

    Returns:
      An :class:`Odds` or an :class:`OddsEstimate`; ``print`` it for a table.

    Raises:
      ValueError, TypeError: for bad dice arguments, as :class:`~optax_dice.Ruleset`, for
        a ruleset and keywords both, and for a die of more than ``MAX_ODDS_SIDES``
        (1,000,000) faces, too many to enumerate.

    Example:
      >>> import optax_dice
      >>> o = optax_dice.odds(dice="d20", threshold=15)
      >>> round(o.expected_scale, 4), round(o.outcome_probs["success"], 4)
      (0.035, 0.25)
      >>> round(optax_dice.odds(threshold=15, advantage=True).expected_scale, 4)
      0.3255
      >>> original = optax_dice.Ruleset(threshold=12, modifier=2, rule="original")
      >>> round(optax_dice.odds(original).expected_scale, 4)
      0.0735
      >>> est = optax_dice.odds(character="wizard", threshold=12, steps=100, runs=20)
      >>> est.exact, est.steps, est.runs
      (False, 100, 20)
    """
    ruleset = resolve_ruleset(ruleset, keywords, "odds")
    if not ruleset.exact:
        return _estimate(ruleset, steps, runs, seed)
    totals, scales = ruleset.face_scales()
    threshold, modifier = ruleset.concrete_threshold_and_modifier()
    faces = totals - modifier
    name = ruleset.rule_name
    if ruleset.normalize:
        name += ", normalized (every scale / E[scale])"
    if ruleset.character is not None:  # a class without memory: its factor is the roll's
        scales = scales * game.class_factor(ruleset.character, totals)
        name += f", {ruleset.character}"
    scales = scales.astype(np.float64)
    codes = numpy_outcome(ruleset.rule)(faces, totals, ruleset.sides, np.int32(threshold))
    probs = ruleset.natural_probs()
    mean = float(np.dot(probs, scales))
    var = float(np.dot(probs, (scales - mean) ** 2))
    return Odds(
        sides=ruleset.sides,
        threshold=threshold,
        modifier=modifier,
        advantage=ruleset.advantage,
        disadvantage=ruleset.disadvantage,
        rule=name,
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


@dataclasses.dataclass(frozen=True)
class OddsEstimate:
    """A seeded estimate of the scale's distribution, for mechanics with memory.

    Attributes:
      label: the ruleset and mechanics, in words.
      steps: updates per run.
      runs: independent runs (seeds ``seed`` .. ``seed + runs - 1``).
      seed: the first run's seed.
      expected_scale: the mean scale over all updates of all runs.
      standard_error: the standard error of ``expected_scale`` (std of the runs' means
        / sqrt(runs): the runs are independent, the updates within one are not).
      std_scale: the standard deviation of the scale over all updates.
      p_negative: the fraction of updates that step the wrong way.
      mean_final_level: the mean level after ``steps`` updates (1 without experience).
      encounters_per_1000: monsters met per 1,000 updates, by name.
      fired_per_1000: class abilities fired per 1,000 updates, by name.
      exact: always False: an estimate (an :class:`Odds` is exact).
    """

    label: str
    steps: int
    runs: int
    seed: int
    expected_scale: float
    standard_error: float
    std_scale: float
    p_negative: float
    mean_final_level: float
    encounters_per_1000: dict[str, float]
    fired_per_1000: dict[str, float]
    exact: bool = False

    def __str__(self) -> str:
        lines = [
            self.label,
            f"ESTIMATE over {self.runs} seeded runs (seeds {self.seed}.."
            f"{self.seed + self.runs - 1}) of {self.steps} updates each: the mechanics have "
            "memory, so no exact odds.",
            "",
            f"E[scale] = {self.expected_scale:+.4f} +- {self.standard_error:.4f} (standard error)"
            f"   std = {self.std_scale:.4f}   P(step the wrong way) = {self.p_negative:.4f}",
        ]
        if self.fired_per_1000:
            lines.append(
                "abilities per 1,000 updates: "
                + ", ".join(f"{k} {v:.1f}" for k, v in self.fired_per_1000.items())
            )
        if self.encounters_per_1000:
            lines.append(
                "monsters met per 1,000 updates: "
                + ", ".join(f"{k} {v:.1f}" for k, v in self.encounters_per_1000.items())
            )
        lines.append(f"mean level after {self.steps} updates: {self.mean_final_level:.2f}")
        if self.expected_scale <= 0:
            lines.append("E[scale] <= 0: on average this game unlearns.")
        return "\n".join(lines)


def _estimate(ruleset: Ruleset, steps: int, runs: int, seed: int) -> OddsEstimate:
    """Plays ``runs`` seeded runs of ``steps`` updates (vmapped, jitted) and summarises them."""
    for name, value, low in (("steps", steps, 1), ("runs", runs, 2)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    _validation.check_key(seed)
    _validation.check_key(int(seed) + int(runs) - 1)
    threshold, modifier = ruleset.concrete_threshold_and_modifier()
    losses = jnp.ones((int(steps),), jnp.float32)
    # The keys of dice_roll(seed), dice_roll(seed + 1), ...: made from each Python int seed,
    # so a seed beyond 32 bits keys its own runs (an int32 array of seeds would wrap).
    keys = jnp.stack(
        [jax.random.key_data(_validation.key_from_seed(s)) for s in range(seed, seed + runs)]
    )

    @jax.jit
    def all_runs(key_data: jax.Array) -> Any:
        return jax.vmap(lambda k: play(ruleset, jax.random.wrap_key_data(k), losses))(key_data)

    out = all_runs(keys)
    scale = np.asarray(out.scale, np.float64)
    run_means = scale.mean(axis=1)
    monster = np.asarray(out.monster)
    first = (monster >= 0) & (np.asarray(out.encounter_step) == 1)
    fired = np.asarray(out.fired)
    per_1000 = 1000.0 / (runs * steps)
    roll = "advantage" if ruleset.advantage else "disadvantage" if ruleset.disadvantage else None
    label = ", ".join(
        [
            f"d{ruleset.sides}, threshold {threshold}",
            f"modifier {modifier:+d}",
            roll or "a single roll",
            f"rule {ruleset.rule_name}",
            game.describe(ruleset),
        ]
    )
    if game.reads_loss(ruleset.character):
        label += " (losses held at 1.0)"
    return OddsEstimate(
        label=label,
        steps=int(steps),
        runs=int(runs),
        seed=int(seed),
        expected_scale=float(run_means.mean()),
        standard_error=float(run_means.std(ddof=1) / np.sqrt(runs)),
        std_scale=float(scale.std()),
        p_negative=float((scale < 0).mean()),
        mean_final_level=float(np.asarray(out.level)[:, -1].mean()),
        encounters_per_1000={
            name: float((first & (monster == code)).sum() * per_1000)
            for code, name in enumerate(game.MONSTERS)
        }
        if ruleset.encounter_chance is not None
        else {},
        fired_per_1000={
            name: float(((fired >> bit) & 1).sum() * per_1000)
            for bit, name in enumerate(game.ABILITIES[ruleset.character])
        },
    )


def _face_range(faces: np.ndarray) -> str:
    if faces.size == 0:
        return "-"
    runs, start = [], 0
    for i in range(1, faces.size + 1):
        if i == faces.size or faces[i] != faces[i - 1] + 1:
            lo, hi = faces[start], faces[i - 1]
            runs.append(str(lo) if lo == hi else f"{lo}-{hi}")
            start = i
    return ",".join(runs)


def _scale_range(scales: np.ndarray) -> str:
    if scales.size == 0:
        return "-"
    lo, hi = scales.min(), scales.max()
    return f"{lo:+.3g}" if np.isclose(lo, hi) else f"{lo:+.3g} .. {hi:+.3g}"


def format_odds(o: Odds) -> str:
    """Renders an :class:`Odds` as a plain-text table."""
    roll = "advantage" if o.advantage else "disadvantage" if o.disadvantage else "a single roll"
    faces = [_face_range(o.faces[o.outcomes == code]) for code in range(len(OUTCOME_NAMES))]
    width = max(10, *(len(f) for f in faces))  # the column fits its longest entry
    lines = [
        f"d{o.sides}, threshold {o.threshold}, modifier {o.modifier:+d}, {roll}, rule {o.rule}",
        "",
        f"{'outcome':<18} {'faces':<{width}} {'probability':>11}   scale",
    ]
    for code, name in enumerate(OUTCOME_NAMES):
        lines.append(
            f"{name:<18} {faces[code]:<{width}} "
            f"{o.outcome_probs[name]:>11.4f}   {_scale_range(o.scales[o.outcomes == code])}"
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
