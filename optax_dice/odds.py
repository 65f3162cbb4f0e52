"""``odds``: the exact distribution of a ruleset's scale, by enumeration."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation, game
from optax_dice.dice import MAX_ENUMERATED_SIDES, face_probs, face_scales, make_ruleset
from optax_dice.rules import OUTCOME_NAMES, outcome_for, rule_name
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


def _concrete_int(name: str, value: Any) -> int:
    try:
        return int(np.asarray(_validation.as_int32(value)))
    except Exception as err:  # a tracer cannot be enumerated over
        raise TypeError(f"odds needs a concrete {name}, got {value!r}.") from err


def odds(
    *, steps: int = 1000, runs: int = 200, seed: int = 0, **dice_kwargs: Any
) -> Odds | OddsEstimate:
    """Enumerates every face of a ruleset: outcome odds, E[scale] and its spread.

    Exact (an :class:`Odds`) for the dice alone and for mechanics without memory
    (the Rogue's Sneak Attack depends on the roll only). Mechanics with memory
    (charges, rages, monsters, levels) make the scale depend on the past; for them
    it returns an :class:`OddsEstimate`: the mean over ``runs`` seeded runs (seeds
    ``seed``, ``seed + 1``, ...) of ``steps`` updates each, with its standard error
    across runs. (With experience, the level-1 bonus is 1: the first update's odds
    are the exact ones of the mechanics without it.)

    Args:
      steps: updates per run, for an estimate.
      runs: independent seeded runs, for an estimate (>= 2).
      seed: the first run's int seed, for an estimate.
      **dice_kwargs: ``dice``, ``threshold``, ``modifier``, ``advantage``,
        ``disadvantage``, ``rule``, ``character``, ``encounter_chance``,
        ``experience``, as for :func:`dice_roll` (concrete values). The Cleric's
        losses are held at 1.0 in an estimate.

    Returns:
      An :class:`Odds` or an :class:`OddsEstimate`; ``print`` it for a table.

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
      >>> round(optax_dice.odds(threshold=12, modifier=2, rule="original").expected_scale, 4)
      0.0735
      >>> est = optax_dice.odds(character="wizard", threshold=12, steps=100, runs=20)
      >>> est.exact, est.steps, est.runs
      (False, 100, 20)
    """
    config = game.make_game_config(
        dice_kwargs.pop("character", None),
        dice_kwargs.pop("encounter_chance", None),
        dice_kwargs.pop("experience", False),
    )
    memoryless = config.character in (None, "rogue") and config.encounter_chance is None
    if config.on and not (memoryless and not config.experience):
        return _estimate(config, steps, runs, seed, dice_kwargs)
    ruleset = make_ruleset(**dice_kwargs)
    sides = ruleset.sides
    totals, scales, threshold, modifier = face_scales(
        ruleset.rule, sides, ruleset.threshold, ruleset.modifier
    )
    faces = totals - modifier
    natural, total = jnp.asarray(faces), jnp.asarray(totals)
    threshold_arr = jnp.asarray(threshold, jnp.int32)
    name = rule_name(dice_kwargs.get("rule", "saving_throw"))
    if ruleset.normalized:
        name += ", normalized (every scale / E[scale])"
    if config.character == "rogue":  # Sneak Attack: x1.2 when m >= 12, nothing else
        scales = scales * np.where(np.asarray(total) >= 12, np.float32(1.2), np.float32(1))
        name += ", rogue"
    scales = scales.astype(np.float64)
    codes = np.asarray(
        outcome_for(dice_kwargs.get("rule", "saving_throw"))(natural, total, sides, threshold_arr)
    )
    probs = face_probs(sides, ruleset.advantage, ruleset.disadvantage)
    mean = float(np.dot(probs, scales))
    var = float(np.dot(probs, (scales - mean) ** 2))
    return Odds(
        sides=sides,
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


def _estimate(
    config: game.GameConfig, steps: int, runs: int, seed: int, dice_kwargs: dict[str, Any]
) -> OddsEstimate:
    """Plays ``runs`` seeded runs of ``steps`` updates (vmapped, jitted) and summarises them."""
    for name, value, low in (("steps", steps, 1), ("runs", runs, 2)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    _validation.check_key(seed)
    ruleset = make_ruleset(**dice_kwargs)
    _concrete_int("threshold", ruleset.threshold)
    _concrete_int("modifier", ruleset.modifier)
    losses = jnp.ones((int(steps),), jnp.float32)

    @jax.jit
    def all_runs(seeds: jax.Array) -> Any:
        return jax.vmap(lambda s: play(config, ruleset, jax.random.key(s), losses))(seeds)

    out = all_runs(jnp.arange(seed, seed + runs, dtype=jnp.int32))
    scale = np.asarray(out.scale, np.float64)
    run_means = scale.mean(axis=1)
    monster = np.asarray(out.monster)
    first = (monster >= 0) & (np.asarray(out.encounter_step) == 1)
    fired = np.asarray(out.fired)
    per_1000 = 1000.0 / (runs * steps)
    label = ", ".join(
        [
            f"d{ruleset.sides}, threshold {_concrete_int('threshold', ruleset.threshold)}",
            f"modifier {_concrete_int('modifier', ruleset.modifier):+d}",
            "advantage"
            if ruleset.advantage
            else "disadvantage"
            if ruleset.disadvantage
            else "a single roll",
            f"rule {rule_name(dice_kwargs.get('rule', 'saving_throw'))}",
            game.describe(config),
        ]
    )
    if config.character == "cleric":
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
        if config.encounter_chance is not None
        else {},
        fired_per_1000={
            name: float(((fired >> bit) & 1).sum() * per_1000)
            for bit, name in enumerate(game.ABILITIES[config.character])
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
