"""The game around the saving throw: character classes, monsters, experience and levels.

roll-to-train (``roll_to_train.py`` at 62d707f) multiplies each mini-batch's loss, in this
order, by the dice scale, the effect of an active monster, the character class's ability
and the level bonus, then awards experience. Here the same mechanics are a pure state
machine: every field lives in the optimizer state (:class:`DiceGameState`), every branch is
a ``jnp.where``, and the random draws (encounters, the monster met, the Cleric's Divine
Intervention) come from the same key as the die, so a seed decides the whole story.

All judgements use the modified roll ``m = natural + modifier`` (the anchor's "roll"). The
abilities are data: :data:`CLASSES` holds one table per class (trigger, factor, charges, ...),
which ``game_update`` plays in order and :func:`~optax_dice.odds` reads for the exact
odds of a class without memory (the Rogue).

The Cleric's "loss" is the one passed as ``value=`` times the factor so far (dice scale and
monster): the loss its ability sees in roll-to-train, whose ``weight_update`` computes
``loss = loss * scale``, applies the monster, then calls ``apply_ability(loss, roll)``. So, as
there, the Cleric compares the *scaled* loss: after a failed roll it is negative, and Healing
Word may fire on it (a loss above 1.5 x a negative last loss) and amplify a wrong-way step.
Healing Word scales the step by ``1.1 x last / loss`` (a deliberate difference:
roll-to-train reuses the previous batch's freed graph, which crashes when it fires); a zero
loss keeps its step (there is nothing to scale). A non-finite loss (nan, inf) is skipped: it
fires nothing and does not become the last loss, which a nan would otherwise stay forever.
Before the Cleric's first loss, Healing Word cannot fire.

=============================  ===============================  =============================
mechanic                       trigger (on m)                   effect on the step
=============================  ===============================  =============================
Wizard, Arcane Recovery        m >= 15, 3 charges               x1.5
Rogue, Sneak Attack            m >= 12                          x1.2
Fighter, Second Wind           m < 10, 2 charges                x0.5
Fighter, Action Surge          else m >= 18, 1 charge           x2
Cleric, Healing Word           loss > 1.5 x last loss, 3 ch.    x(1.1 x last loss / loss)
Cleric, Divine Intervention    m == 1 and a 10% chance          x0.5 (last loss kept)
Barbarian, Rage                m >= 16 and not raging           x1.5 on this and next 2 steps
Barbarian, Reckless Attack     m >= 18                          x2 (stacks with Rage)
Paladin, Divine Smite          max(m, 8) >= 15, 3 charges       x(1.5 + 0.1 x (max(m, 8) - 15))
Monster: Gradient Ooze         m < 12                           x0.5
Monster: Loss Dragon           m < 15                           x2
Monster: Weight Wraith         m < 14                           x1.5
=============================  ===============================  =============================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_dice import _validation
from optax_dice.dice import roll
from optax_dice.rules import _fraction

if TYPE_CHECKING:
    from optax_dice.ruleset import Ruleset

F32 = np.float32


class Turn(NamedTuple):
    """What a class ability sees on an update.

    Attributes:
      m: the modified roll, natural + modifier (int32).
      loss: the Cleric's loss as scaled so far (``value`` x dice scale x monster; float32),
        or None for the other classes.
      last_loss: the Cleric's last loss (float32; +inf before any), or None.
      u_divine: a float32 uniform in [0, 1) drawn for Divine Intervention.
    """

    m: Any
    loss: Any = None
    last_loss: Any = None
    u_divine: Any = None


@dataclasses.dataclass(frozen=True)
class Ability:
    """One class ability: when it fires and what it does to the step.

    Attributes:
      name: its name in roll-to-train.
      trigger: ``Turn -> bool array``: whether it would fire on this update (before its
        charges, exclusivity and duration are checked). Written with operators and ``jnp``
        only, so it is traceable (and, for the roll's comparisons, works on numpy arrays).
      factor: what the step is multiplied by when it acts: a float, or ``Turn -> float32``.
      charges: how many times it can fire (None: unlimited); charge slot i is ability i's.
      exclusive: fires only when the class's previous ability did not (the Fighter's elif).
      lasts: the updates its factor acts on, from the one it fires on (Rage: 3); it fires
        again only once that is over.
      heals: the Cleric's loss becomes 1.1 x the last loss when it fires (Healing Word).
      keeps_last_loss: when it fires, the Cleric's last loss is not updated (Divine
        Intervention).
    """

    name: str
    trigger: Callable[[Turn], Any]
    factor: float | Callable[[Turn], Any]
    charges: int | None = None
    exclusive: bool = False
    lasts: int = 1
    heals: bool = False
    keeps_last_loss: bool = False

    @property
    def memoryless(self) -> bool:
        """Whether it depends on this update's roll only (so its odds are exact)."""
        return self.charges is None and self.lasts == 1 and not (self.heals or self.keeps_last_loss)

    def factor_on(self, turn: Turn) -> Any:
        """Its factor on ``turn``, float32."""
        if callable(self.factor):
            return self.factor(turn)
        return F32(self.factor)


def _float32_at_least(p: float) -> np.float32:
    """The smallest float32 >= p, so that ``u < it`` for a float32 draw u is ``u < p``."""
    out = np.float32(p)
    if float(out) < p:
        out = np.nextafter(out, np.float32(np.inf))
    return out


def _roll_at_least(n: int) -> Callable[[Turn], Any]:
    return lambda t: t.m >= n


def _roll_below(n: int) -> Callable[[Turn], Any]:
    return lambda t: t.m < n


#: Divine Intervention's chance.
DIVINE_INTERVENTION_CHANCE = 0.1


def _loss_spikes(t: Turn) -> Any:
    """Healing Word: the loss (finite: a nan or inf is skipped) above 1.5 x the last."""
    return (t.loss > F32(1.5) * t.last_loss) & jnp.isfinite(t.loss)


def _healed(t: Turn) -> Any:
    """The factor that turns the loss into 1.1 x the last loss (1 for a zero loss)."""
    safe = jnp.where(t.loss == 0, F32(1.0), t.loss)
    return jnp.where(t.loss != 0, (F32(1.1) * t.last_loss) / safe, F32(1.0))


def _divine(t: Turn) -> Any:
    return (t.m == 1) & (t.u_divine < _float32_at_least(DIVINE_INTERVENTION_CHANCE))


def _aura(t: Turn) -> Any:
    return jnp.maximum(t.m, 8)  # the Paladin's Aura of Protection: the roll is at least 8


#: The character classes' abilities, in the order of ``DiceGameState.fired``'s bits and
#: of the charge slots: the one table that the game (``game_update``) and
#: :func:`~optax_dice.odds` read.
CLASSES: dict[str, tuple[Ability, ...]] = {
    "fighter": (
        Ability("Second Wind", _roll_below(10), 0.5, charges=2),
        Ability("Action Surge", _roll_at_least(18), 2.0, charges=1, exclusive=True),
    ),
    "wizard": (Ability("Arcane Recovery", _roll_at_least(15), 1.5, charges=3),),
    "rogue": (Ability("Sneak Attack", _roll_at_least(12), 1 + 0.2 * 1),),
    "cleric": (
        Ability("Healing Word", _loss_spikes, _healed, charges=3, heals=True),
        Ability("Divine Intervention", _divine, 0.5, keeps_last_loss=True),
    ),
    "barbarian": (
        Ability("Rage", _roll_at_least(16), 1.5, lasts=3),
        Ability("Reckless Attack", _roll_at_least(18), 2.0),
    ),
    "paladin": (
        # 1.5 + 0.1 (r - 15) = r / 10, correctly rounded in float32 jitted or not.
        Ability(
            "Divine Smite", lambda t: _aura(t) >= 15, lambda t: _fraction(_aura(t), 10), charges=3
        ),
    ),
}
#: The character classes, in the order of their codes.
CHARACTERS = tuple(CLASSES)
#: The abilities of each class, by bit of :attr:`DiceGameState.fired` (bit 0 first).
ABILITIES: dict[str | None, tuple[str, ...]] = {
    None: (),
    **{c: tuple(a.name for a in abilities) for c, abilities in CLASSES.items()},
}
#: Charges each class starts with: (first ability, second ability); 0 for unlimited ones.
CHARGES: dict[str | None, tuple[int, int]] = {
    c: tuple((*(a.charges or 0 for a in abilities), 0)[:2])
    for c, abilities in CLASSES.items()
    if any(a.charges for a in abilities)
}
#: Rage lasts this many steps (the one it starts on included).
RAGE_STEPS = CLASSES["barbarian"][0].lasts
CLERIC_NEEDS_LOSS = (
    "character='cleric' needs the loss: its Healing Word compares each loss with the last. "
    "Pass it as update(updates, state, params, value=loss) (optax's extra-args convention; "
    "optax.chain and optax_dice.accumulate forward it), or losses=[...] to roll_sequence."
)


class Monster(NamedTuple):
    """A monster: it acts on the step when the modified roll is below its difficulty class.

    Attributes:
      name: its name in roll-to-train.
      dc: its difficulty class.
      factor: its effect on the step.
    """

    name: str
    dc: int
    factor: float


#: The monsters, by code (:attr:`DiceGameState.monster`; -1 is none).
MONSTER_TABLE = (
    Monster("Gradient Ooze", 12, 0.5),
    Monster("Loss Dragon", 15, 2.0),
    Monster("Weight Wraith", 14, 1.5),
)
MONSTERS = tuple(m.name for m in MONSTER_TABLE)
NO_MONSTER = -1
#: The steps a monster stays (it acts on the step it appears and the next two).
ENCOUNTER_STEPS = 3
#: Experience: level L needs int(BASE_XP * XP_SCALING ** (L - 1)) XP to reach L + 1.
BASE_XP, XP_SCALING = 1000, 1.5
#: XP needs are capped here (reached at level 36) so that XP always fits in int32.
MAX_XP_NEED = 2**30
#: |m| counted for XP is capped here, so that a step's gain (x10, doubled) fits in int32.
_MAX_XP_ROLL = 2**25


def memoryless(character: str | None) -> bool:
    """Whether every ability of ``character`` depends on the update's roll only.

    Example:
      >>> from optax_dice.game import memoryless
      >>> memoryless("rogue"), memoryless("wizard"), memoryless(None)
      (True, False, True)
    """
    return all(a.memoryless for a in CLASSES.get(character, ()))


def class_factor(character: str | None, m: np.ndarray) -> np.ndarray:
    """The product of a memoryless class's ability factors for the modified rolls ``m``.

    What :func:`~optax_dice.odds` multiplies each face's scale by (numpy, float32).

    Raises:
      ValueError: for a class with memory (charges, durations, the loss).
    """
    if not memoryless(character):
        raise ValueError(f"{character}'s abilities have memory: their factor is not the roll's.")
    factor = np.ones(np.shape(m), F32)
    for ability in CLASSES.get(character, ()):
        turn = Turn(m=m)
        factor = factor * np.where(ability.trigger(turn), ability.factor_on(turn), F32(1.0))
    return factor


def check_character(character: Any) -> str | None:
    """``character`` lower-cased, if it is None or a known class."""
    if character is None:
        return None
    if not isinstance(character, str) or character.lower() not in CHARACTERS:
        raise ValueError(
            f"character={character!r} is unknown: use None or one of {list(CHARACTERS)}."
        )
    return character.lower()


def check_encounter_chance(chance: Any) -> Any:
    """``chance`` as a Ruleset keeps it: None (also for 0), a float in [0, 1], or an array."""
    if chance is None:
        return None
    if isinstance(chance, (jax.Array, np.ndarray)):
        if chance.shape != () or not (
            jnp.issubdtype(chance.dtype, jnp.floating) or jnp.issubdtype(chance.dtype, jnp.integer)
        ):
            raise TypeError(
                "encounter_chance must be a probability (a float in [0, 1]), got an "
                f"array of dtype {chance.dtype} and shape {chance.shape}."
            )
        if not isinstance(chance, jax.core.Tracer):
            _check_chance(float(np.asarray(chance)))
        return chance
    if isinstance(chance, (int, float, np.integer, np.floating)) and not isinstance(chance, bool):
        _check_chance(float(chance))
        return None if chance == 0 else float(chance)
    raise TypeError(
        "encounter_chance must be a probability (a float in [0, 1]), got "
        f"{type(chance).__name__} {chance!r}."
    )


def _check_chance(p: float) -> None:
    if not (0.0 <= p <= 1.0):  # also refuses NaN
        raise ValueError(
            f"encounter_chance={p!r} is not a probability: give a float in [0, 1] "
            "(roll-to-train's default is 0.1; 0 means no monsters)."
        )


def xp_needs() -> np.ndarray:
    """int32 XP needed at level 1, 2, ...: ``int(1000 * 1.5 ** (L - 1))``, the anchor's
    formula, up to the level where it passes 2**30; from there on the need stays 2**30."""
    needs = []
    level = 1
    while (need := int(BASE_XP * XP_SCALING ** (level - 1))) < MAX_XP_NEED:
        needs.append(need)
        level += 1
    needs.append(MAX_XP_NEED)
    return np.asarray(needs, np.int32)


class DiceGameState(NamedTuple):
    """State of :func:`~optax_dice.dice_roll` when a game mechanic is on.

    The first five fields are those of :class:`~optax_dice.DiceRollState`; ``scale`` is
    the factor actually applied (the product of all mechanics), ``dice_scale`` the rule's.
    Fields describe the last update (before the first: natural 0, scales 1, monster -1).

    Attributes:
      count: rolls made so far (int32).
      rng_key: the typed PRNG key for the next roll.
      natural: the last die as rolled (int32).
      total: the last natural + modifier, the "m" every mechanic judges (int32).
      scale: the factor applied to the last update (float32): dice scale x monster x
        class ability x level bonus.
      dice_scale: the rule's scale of the last roll (float32).
      monster: the monster that acted on the last update (int32): -1 none, 0 Gradient
        Ooze, 1 Loss Dragon, 2 Weight Wraith.
      encounter_step: how many updates that monster has acted, this one included (1 to 3;
        at 3 it retreats; 0 with no monster).
      level: the level after the last update's XP (int32; 1 to start with).
      xp: the XP towards the next level after the last update (int32).
      charges: int32[2], charges left of the class's first and second abilities.
      rage: the Barbarian's rage steps left after the last update (int32).
      last_loss: the Cleric's last loss as scaled so far (float32; +inf before any).
      fired: int32 bit mask of the class abilities that fired on the last update, bit i
        for ``ABILITIES[character][i]``.
      micro_step: the position in the accumulation window of the next update (int32).
    """

    count: jax.Array
    rng_key: jax.Array
    natural: jax.Array
    total: jax.Array
    scale: jax.Array
    dice_scale: jax.Array
    monster: jax.Array
    encounter_step: jax.Array
    level: jax.Array
    xp: jax.Array
    charges: jax.Array
    rage: jax.Array
    last_loss: jax.Array
    fired: jax.Array
    micro_step: jax.Array


def init_game_state(ruleset: Ruleset, rng_key: jax.Array) -> DiceGameState:
    """The state before the first update.

    Every field is an array of its own (no buffer shared between fields), so that a train
    step may donate the optimizer state (``jax.jit(..., donate_argnums=...)``): XLA refuses
    to donate one buffer twice.
    """

    def zero() -> jax.Array:
        return jnp.zeros([], jnp.int32)

    return DiceGameState(
        count=zero(),
        rng_key=rng_key,
        natural=zero(),
        total=zero(),
        scale=jnp.ones([], jnp.float32),
        dice_scale=jnp.ones([], jnp.float32),
        monster=jnp.full([], NO_MONSTER, jnp.int32),
        encounter_step=zero(),
        level=jnp.ones([], jnp.int32),
        xp=zero(),
        charges=jnp.asarray(CHARGES.get(ruleset.character, (0, 0)), jnp.int32),
        rage=zero(),
        last_loss=jnp.full([], jnp.inf, jnp.float32),
        fired=zero(),
        micro_step=zero(),
    )


def draws(roll_key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The game's random draws for one update, from the key the die was rolled with.

    Args:
      roll_key: the key of this update's roll.

    Returns:
      ``(u_encounter, monster_pick, u_divine)``: a float32 uniform in [0, 1) compared with
      ``encounter_chance``, an int32 in {0, 1, 2} (the monster met, uniformly), and a
      float32 uniform compared with Divine Intervention's 10%. They are drawn on every
      update, used or not, so the die's rolls never depend on the game.

    Example:
      >>> import jax
      >>> from optax_dice.game import draws
      >>> u_encounter, pick, u_divine = draws(jax.random.key(0))
      >>> 0 <= float(u_encounter) < 1, int(pick) in (0, 1, 2), 0 <= float(u_divine) < 1
      (True, True, True)
    """
    game_key = jax.random.fold_in(roll_key, 1)
    k_enc, k_pick, k_div = jax.random.split(game_key, 3)
    return (
        jax.random.uniform(k_enc, (), jnp.float32),
        jax.random.randint(k_pick, (), 0, len(MONSTERS), jnp.int32),
        jax.random.uniform(k_div, (), jnp.float32),
    )


def game_update(
    ruleset: Ruleset, state: DiceGameState, value: Any = None, *, every_k: int = 1
) -> DiceGameState:
    """Makes one update's roll and plays every mechanic; returns the new state.

    Pure and traceable: ``jnp.where`` and ``lax`` only, no host transfer. The step is
    multiplied, in roll-to-train's order, by the dice scale, the monster's effect, the
    class's abilities (:data:`CLASSES`, in order) and the level bonus.

    Args:
      ruleset: the ruleset, with its game (``character``, ``encounter_chance``,
        ``experience``).
      state: the state after the previous update.
      value: the loss of this update (the Cleric needs it; ignored otherwise).
      every_k: micro-batches per accumulation window: a monster may appear only on the
        last update of each window.

    Returns:
      The new :class:`DiceGameState`; its ``scale`` is the factor to apply.

    Raises:
      ValueError: for the Cleric without a scalar ``value``.

    Example:
      >>> import jax
      >>> import optax_dice
      >>> from optax_dice.game import game_update, init_game_state
      >>> ruleset = optax_dice.Ruleset(threshold=12, character="rogue", experience=True)
      >>> state = game_update(ruleset, init_game_state(ruleset, jax.random.key(0)))
      >>> sneak = int(state.total) >= 12
      >>> bool(state.scale == state.dice_scale * (jnp.float32(1.2) if sneak else 1))
      True
      >>> int(state.xp) == (10 * int(state.total) if sneak else 0)
      True
    """
    if reads_loss(ruleset.character):
        if value is None:
            raise ValueError(CLERIC_NEEDS_LOSS)
        if jnp.shape(value) != ():
            raise ValueError(
                f"value=loss must be a scalar (the mean loss of the batch), got shape "
                f"{jnp.shape(value)}."
            )
    next_key, roll_key = jax.random.split(state.rng_key)
    natural, m, dice_scale = roll(ruleset, roll_key)
    u_encounter, pick, u_divine = draws(roll_key)
    window_end = state.micro_step == every_k - 1
    monster, steps, monster_factor = _monsters(ruleset, state, m, window_end, u_encounter, pick)
    factor = dice_scale * monster_factor
    turn = Turn(m=m, last_loss=state.last_loss, u_divine=u_divine)
    if value is not None:
        turn = turn._replace(loss=jnp.asarray(value, jnp.float32) * factor)  # scaled so far
    factor, fired, charges, rage, last_loss = _abilities(ruleset.character, turn, state, factor)
    level, xp = state.level, state.xp
    if ruleset.experience:  # the level bonus of the level before this update, then the XP
        factor = factor * _fraction(level + 9, 10)  # 1 + 0.1 (L - 1)
        still_active = (monster >= 0) & (steps < ENCOUNTER_STEPS)
        level, xp = _gain_experience(ruleset, m, still_active, level, xp)
    return DiceGameState(
        count=optax.safe_increment(state.count),
        rng_key=next_key,
        natural=natural,
        total=m,
        scale=jnp.asarray(factor, jnp.float32),
        dice_scale=dice_scale,
        monster=monster,
        encounter_step=steps,
        level=level.astype(jnp.int32),
        xp=xp.astype(jnp.int32),
        charges=charges.astype(jnp.int32),
        rage=jnp.asarray(rage, jnp.int32),
        last_loss=jnp.asarray(last_loss, jnp.float32),
        fired=fired,
        micro_step=jnp.where(window_end, 0, state.micro_step + 1).astype(jnp.int32),
    )


def encounter_threshold(chance: Any) -> Any:
    """The float32 that a uniform draw must be below for a monster to appear."""
    if isinstance(chance, float):
        return _float32_at_least(chance)
    return jnp.asarray(chance, jnp.float32)


def _monsters(
    ruleset: Ruleset,
    state: DiceGameState,
    m: jax.Array,
    window_end: jax.Array,
    u_encounter: jax.Array,
    pick: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The monster acting on this update (-1: none), its steps so far and its effect.

    A monster is met at the end of a window when none is active (``u_encounter`` below the
    chance), acts on that update and the next two, then retreats.
    """
    still = (state.monster >= 0) & (state.encounter_step < ENCOUNTER_STEPS)
    active = jnp.where(still, state.monster, NO_MONSTER)
    steps = jnp.where(still, state.encounter_step, 0)
    if ruleset.encounter_chance is not None:
        chance = encounter_threshold(ruleset.encounter_chance)
        appear = window_end & (active < 0) & (u_encounter < chance)
        active = jnp.where(appear, pick, active)
        steps = jnp.where(appear, 0, steps)
    acting = active >= 0
    steps = jnp.where(acting, steps + 1, 0).astype(jnp.int32)
    factor = F32(1.0)
    for code, monster in enumerate(MONSTER_TABLE):
        factor = jnp.where((active == code) & (m < monster.dc), F32(monster.factor), factor)
    return jnp.where(acting, active, NO_MONSTER).astype(jnp.int32), steps, factor


def _abilities(
    character: str | None, turn: Turn, state: DiceGameState, factor: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Plays the class's abilities, in :data:`CLASSES`' order, on ``factor``.

    Returns:
      ``(factor, fired, charges, rage, last_loss)`` after this update.
    """
    charges, rage, last_loss = state.charges, state.rage, state.last_loss
    fired, spent = jnp.zeros([], jnp.int32), [False, False]
    loss, keep, previous = turn.loss, jnp.asarray(False), jnp.asarray(False)
    for i, ability in enumerate(CLASSES.get(character, ())):
        fire = ability.trigger(turn)
        if ability.exclusive:
            fire = fire & ~previous
        if ability.charges is not None:
            fire = fire & (charges[i] > 0)
            spent[i] = fire
        acts = fire
        if ability.lasts > 1:  # a rage: starts when none is on, acts while it lasts
            fire = fire & (rage <= 0)
            rage = jnp.where(fire, ability.lasts, rage)
            acts = rage > 0
            rage = jnp.maximum(rage - 1, 0).astype(jnp.int32)
        factor = factor * jnp.where(acts, ability.factor_on(turn), F32(1.0))
        if ability.heals:
            loss = jnp.where(fire, F32(1.1) * turn.last_loss, loss)
        if ability.keeps_last_loss:
            keep = keep | fire
        fired = fired | (fire.astype(jnp.int32) << i)
        previous = fire
    if reads_loss(character):  # the last loss: this one, unless kept or not finite
        last_loss = jnp.where(keep | ~jnp.isfinite(loss), last_loss, loss)
    charges = charges - jnp.stack(spent).astype(jnp.int32)
    return factor, fired, charges, rage, last_loss


def reads_loss(character: str | None) -> bool:
    """Whether the class's abilities read the loss (``value=``): the Cleric's."""
    return any(a.heals or a.keeps_last_loss for a in CLASSES.get(character, ()))


def _gain_experience(
    ruleset: Ruleset, m: jax.Array, still_active: jax.Array, level: jax.Array, xp: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """XP for a roll that meets the threshold (``int(m * 10)``, doubled while a monster
    stays), then as many level-ups as the XP pays for."""
    threshold = _validation.as_int32(ruleset.threshold)
    gain = 10 * jnp.clip(m, -_MAX_XP_ROLL, _MAX_XP_ROLL)
    gain = jnp.where(m >= threshold, gain, 0)
    gain = jnp.where(still_active, 2 * gain, gain)
    xp = jnp.maximum(xp + gain, -MAX_XP_NEED)
    return _level_up(level, xp)


def _level_up(level: jax.Array, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Levels up while the XP reaches the need of the level (excess carries over)."""
    needs = jnp.asarray(xp_needs())

    def need(lv: jax.Array) -> jax.Array:
        return needs[jnp.clip(lv, 1, needs.shape[0]) - 1]

    def cond(carry: tuple[jax.Array, jax.Array]) -> jax.Array:
        lv, x = carry
        return x >= need(lv)

    def body(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lv, x = carry
        return lv + 1, x - need(lv)

    return jax.lax.while_loop(cond, body, (level, xp))


def levels_for_xp(total_xp: int) -> int:
    """The level that ``total_xp`` XP gained from level 1 reaches (plain Python)."""
    needs = xp_needs()
    level = 1
    while total_xp >= int(needs[min(level, len(needs)) - 1]):
        total_xp -= int(needs[min(level, len(needs)) - 1])
        level += 1
    return level


def describe(ruleset: Ruleset) -> str:
    """A short label of the mechanics on, e.g. ``"wizard, monsters 10%, experience"``."""
    parts = []
    if ruleset.character:
        parts.append(ruleset.character)
    chance = ruleset.encounter_chance
    if chance is not None:
        if isinstance(chance, float):
            parts.append(f"monsters {100 * float(_float32_at_least(chance)):.3g}%")
        else:
            parts.append("monsters")
    if ruleset.experience:
        parts.append("experience")
    return ", ".join(parts)


__all__ = [
    "ABILITIES",
    "CHARACTERS",
    "CLASSES",
    "MONSTERS",
    "MONSTER_TABLE",
    "Ability",
    "DiceGameState",
    "Monster",
    "Turn",
    "draws",
    "game_update",
]
