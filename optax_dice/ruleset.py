"""``Ruleset``: one checked value for the die, its rule and the game, made once."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation, game
from optax_dice.dice import MAX_ENUMERATED_SIDES, face_probs
from optax_dice.rules import Rule, numpy_rule, resolve_rule, rule_name

#: The keywords of a ruleset, as ``dice_roll``, ``accumulate``, ``roll_sequence`` and
#: ``odds`` take them.
RULESET_KEYWORDS = (
    "dice",
    "threshold",
    "modifier",
    "advantage",
    "disadvantage",
    "rule",
    "normalize",
    "character",
    "encounter_chance",
    "experience",
)


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """The die, its rule and the game: checked once, when it is made.

    Making one starts no JAX backend (it is plain Python and numpy; a custom ``rule`` is
    traced with ``jax.eval_shape``, which computes nothing), so a configuration can hold
    one before ``jax.distributed.initialize``. The exact E[scale] that ``normalize=True``
    divides by is computed with numpy for the built-in rules (with JAX for a custom rule).
    Fields are kept in one spelling: ``dice`` as ``"dN"``, ``character`` lower-case, an
    ``encounter_chance`` of 0 as None, flags as bools.

    Attributes:
      dice: the die, ``"dN"`` (``20`` and ``"D20"`` are kept as ``"d20"``).
      threshold: the difficulty class a total must reach (an int, or a scalar array as
        ``optax.inject_hyperparams`` injects it).
      modifier: added to every natural roll (an int, or a scalar array).
      advantage: roll twice and keep the higher.
      disadvantage: roll twice and keep the lower.
      rule: ``"saving_throw"``, ``"original"`` or a traceable
        ``(natural, total, sides, threshold) -> scale``.
      normalize: divide every scale by the exact E[scale] (a fair die).
      character: None or one of ``game.CHARACTERS``.
      encounter_chance: None (no monsters), a float in (0, 1], or a scalar array.
      experience: whether XP and levels are on.

    Raises:
      ValueError, TypeError: naming the bad keyword and what it accepts, as
        :func:`~optax_dice.dice_roll` documents; ``normalize=True`` with a game mechanic
        (no exact E[scale]) or where E[scale] <= 0 is a ValueError.

    Example:
      >>> import optax_dice
      >>> rs = optax_dice.Ruleset(dice=20, threshold=12, modifier=2)
      >>> rs.dice, rs.sides, rs.has_game, round(rs.expected_scale, 4)
      ('d20', 20, False, 0.37)
      >>> rs == optax_dice.Ruleset(dice="d20", threshold=12, modifier=2)
      True
      >>> optax_dice.Ruleset(dice="d4", advantage=True).natural_probs() * 16
      array([1., 3., 5., 7.])
      >>> fair = optax_dice.Ruleset(threshold=12, modifier=2, normalize=True)
      >>> round(fair.expected_scale, 6)
      1.0
    """

    dice: int | str = "d20"
    threshold: int | jax.Array = 15
    modifier: int | jax.Array = 0
    advantage: bool = False
    disadvantage: bool = False
    rule: str | Rule = "saving_throw"
    normalize: bool = False
    character: str | None = None
    encounter_chance: float | jax.Array | None = None
    experience: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: fields are set once, here
        put(self, "character", game.check_character(self.character))
        put(self, "encounter_chance", game.check_encounter_chance(self.encounter_chance))
        put(self, "experience", _validation.check_flag("experience", self.experience))
        put(self, "normalize", _validation.check_flag("normalize", self.normalize))
        if self.normalize and self.has_game:
            raise ValueError(
                "normalize=True divides by the ruleset's exact E[scale]; with game mechanics "
                "(character, encounter_chance, experience) the scale has memory and no exact "
                "E[scale]: use normalize with the dice alone."
            )
        sides = _validation.parse_dice(self.dice)
        put(self, "dice", f"d{sides}")
        put(self, "threshold", _validation.check_integer("threshold", self.threshold))
        put(self, "modifier", _validation.check_integer("modifier", self.modifier))
        put(self, "advantage", _validation.check_flag("advantage", self.advantage))
        put(self, "disadvantage", _validation.check_flag("disadvantage", self.disadvantage))
        if self.advantage and self.disadvantage:
            raise ValueError(
                "advantage and disadvantage cancel out (D&D 5e): pass at most one of them."
            )
        resolved = resolve_rule(self.rule)
        if not isinstance(self.rule, str):  # the built-in rules are known to give a scalar
            _validation.check_rule_output(resolved, sides)
        put(self, "_sides", sides)
        put(self, "_base_rule", resolved)
        put(self, "_inverse", None)
        if self.normalize:
            mean = self._raw_expected_scale()
            if not mean > 0:
                raise ValueError(
                    f"normalize=True divides every scale by E[scale], and this ruleset's is "
                    f"{mean:+.4f}: dividing by it would {'flip' if mean < 0 else 'blow up'} "
                    "every step. Normalise only a ruleset that learns on average "
                    "(E[scale] > 0)."
                )
            put(self, "_inverse", np.float32(1.0 / mean))

    @property
    def sides(self) -> int:
        """The number of faces of the die."""
        return self._sides  # type: ignore[attr-defined]

    @property
    def has_game(self) -> bool:
        """Whether a game mechanic (class, monsters, experience) is on."""
        return self.character is not None or self.encounter_chance is not None or self.experience

    @property
    def exact(self) -> bool:
        """Whether the scale has exact odds: no mechanic with memory (the Rogue has none)."""
        return game.memoryless(self.character) and not (
            self.encounter_chance is not None or self.experience
        )

    @property
    def rule_name(self) -> str:
        """The rule's name (its key in ``rules.RULES``, or the function's name)."""
        return rule_name(self.rule)

    def natural_probs(self) -> np.ndarray:
        """P(natural = k) for k = 1..sides (float64), advantage and disadvantage included."""
        return face_probs(self.sides, self.advantage, self.disadvantage)

    def rule_fn(self, natural: Any, total: Any, sides: int, threshold: Any) -> jax.Array:
        """The rule as applied: ``rule``, times 1 / E[scale] with ``normalize`` (traceable)."""
        scale = self._base_rule(natural, total, sides, threshold)  # type: ignore[attr-defined]
        if self._inverse is None:  # type: ignore[attr-defined]
            return scale
        return jnp.asarray(scale, jnp.float32) * self._inverse  # type: ignore[attr-defined]

    def face_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """``(totals, scales)``: int32 totals and float32 scales (as applied, the dice only)
        of the faces 1..sides, with numpy for the built-in rules.

        Raises:
          ValueError: for a die of more than ``MAX_ENUMERATED_SIDES`` faces.
          TypeError: for a threshold or modifier that is not concrete (a tracer).
        """
        threshold, modifier = self.concrete_threshold_and_modifier()
        if self.sides > MAX_ENUMERATED_SIDES:
            raise ValueError(
                f"enumerating every face of a d{self.sides} ({self.sides:,} faces) is over the "
                f"limit of {MAX_ENUMERATED_SIDES:,} faces. Estimate a larger die from seeded "
                "rolls instead (roll_sequence)."
            )
        totals = np.arange(1, self.sides + 1, dtype=np.int32) + np.int32(modifier)
        numpy_pair = numpy_rule(self.rule)
        if numpy_pair is not None:
            raw = numpy_pair[0](totals - modifier, totals, self.sides, np.int32(threshold))
        else:
            with jax.ensure_compile_time_eval():
                raw = self._base_rule(  # type: ignore[attr-defined]
                    jnp.asarray(totals - modifier),
                    jnp.asarray(totals),
                    self.sides,
                    jnp.asarray(threshold, jnp.int32),
                )
        scales = np.broadcast_to(np.asarray(raw, np.float32), totals.shape)
        if self._inverse is not None:  # type: ignore[attr-defined]
            scales = scales * self._inverse  # type: ignore[attr-defined]
        return totals, scales

    @property
    def expected_scale(self) -> float:
        """The exact E[scale] (float64 over every face; the Rogue's ability included).

        Raises:
          ValueError: with mechanics that have memory (use :func:`~optax_dice.odds` for an
            estimate), or a die too large to enumerate.
          TypeError: for a threshold or modifier that is not concrete.
        """
        if not self.exact:
            raise ValueError(
                f"this ruleset's game ({game.describe(self)}) has memory, so no exact "
                "E[scale]: estimate it with optax_dice.odds(ruleset)."
            )
        totals, scales = self.face_scales()
        if self.character is not None:
            scales = scales * game.class_factor(self.character, totals)
        return float(np.dot(self.natural_probs(), scales.astype(np.float64)))

    def concrete_threshold_and_modifier(self) -> tuple[int, int]:
        """The threshold and modifier as ints (rounded, as an injected float is).

        Raises:
          TypeError: for a traced one (an injected hyperparameter under jit).
        """
        out = []
        for name in ("threshold", "modifier"):
            value = getattr(self, name)
            if isinstance(value, jax.core.Tracer):
                raise TypeError(
                    f"enumerating the faces (odds, normalize=True) needs a concrete {name}, "
                    "but it is traced here; with optax.inject_hyperparams pass threshold and "
                    "modifier in static_args."
                )
            value = np.asarray(value)
            if np.issubdtype(value.dtype, np.floating):
                value = np.round(value)
            out.append(int(value.astype(np.int32)))
        return out[0], out[1]

    def _raw_expected_scale(self) -> float:
        """E[scale] of the dice alone, before normalisation."""
        _, scales = self.face_scales()
        return float(np.dot(self.natural_probs(), scales.astype(np.float64)))


def resolve_ruleset(ruleset: Ruleset | None, keywords: dict[str, Any], caller: str) -> Ruleset:
    """The ruleset of a call that takes ``ruleset=`` or the ruleset's keywords, not both.

    Raises:
      TypeError: for a ``ruleset`` that is not a :class:`Ruleset`, for both, or for a keyword
        that is not a ruleset's.
    """
    unknown = sorted(set(keywords) - set(RULESET_KEYWORDS))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {unknown}: the ruleset's are "
            f"{list(RULESET_KEYWORDS)}."
        )
    if ruleset is None:
        return Ruleset(**keywords)
    if not isinstance(ruleset, Ruleset):
        raise TypeError(
            f"ruleset must be an optax_dice.Ruleset (or None), got {type(ruleset).__name__}; "
            "pass the ruleset's keywords as keywords instead."
        )
    if keywords:
        raise TypeError(
            f"{caller}() takes a ruleset or the ruleset's keywords, not both: got ruleset= "
            f"and {sorted(keywords)}. Use dataclasses.replace(ruleset, ...) to change one."
        )
    return ruleset
