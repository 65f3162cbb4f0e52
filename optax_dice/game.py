"""The game around the saving throw: character classes, monsters, experience and levels.

roll-to-train (``roll_to_train.py`` at 62d707f) multiplies each mini-batch's loss, in this
order, by the dice scale, the effect of an active monster, the character class's ability
and the level bonus, then awards experience. Here the same mechanics are a pure state
machine: every field lives in the optimizer state (:class:`DiceGameState`), every branch is
a ``jnp.where``, and the random draws (encounters, the monster met, the Cleric's Divine
Intervention) come from the same key as the die, so a seed decides the whole story.

All judgements use the modified roll ``m = natural + modifier`` (the anchor's "roll"). The
Cleric's "loss" is the one passed as ``value=`` times the factor so far (dice scale and monster),
the loss its ability sees in roll-to-train; Healing Word scales the step by ``1.1 x last / loss``
(a deliberate difference: roll-to-train reuses the previous batch's freed graph, which crashes
when it fires). Before the Cleric's first loss, Healing Word cannot fire.

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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_dice import _validation
from optax_dice.dice import Ruleset, roll
from optax_dice.rules import _fraction

#: The character classes, in the order of their codes.
CHARACTERS = ("fighter", "wizard", "rogue", "cleric", "barbarian", "paladin")
#: The abilities of each class, by bit of :attr:`DiceGameState.fired` (bit 0 first).
ABILITIES: dict[str | None, tuple[str, ...]] = {
    None: (),
    "fighter": ("Second Wind", "Action Surge"),
    "wizard": ("Arcane Recovery",),
    "rogue": ("Sneak Attack",),
    "cleric": ("Healing Word", "Divine Intervention"),
    "barbarian": ("Rage", "Reckless Attack"),
    "paladin": ("Divine Smite",),
}
#: Charges each class starts with: (first ability, second ability). Other abilities are unlimited.
CHARGES: dict[str | None, tuple[int, int]] = {
    "fighter": (2, 1),
    "wizard": (3, 0),
    "cleric": (3, 0),
    "paladin": (3, 0),
}
CLERIC_NEEDS_LOSS = (
    "character='cleric' needs the loss: its Healing Word compares each loss with the last. "
    "Pass it as update(updates, state, params, value=loss) (optax's extra-args convention; "
    "optax.chain and optax_dice.accumulate forward it), or losses=[...] to roll_sequence."
)
#: The monsters, by code (:attr:`DiceGameState.monster`; -1 is none).
MONSTERS = ("Gradient Ooze", "Loss Dragon", "Weight Wraith")
NO_MONSTER = -1
#: The steps a monster stays (it acts on the step it appears and the next two).
ENCOUNTER_STEPS = 3
#: Each monster's difficulty class: it acts when m is below it.
_MONSTER_DC = (12, 15, 14)
#: Each monster's effect on the step.
_MONSTER_FACTOR = (0.5, 2.0, 1.5)
#: Rage lasts this many steps (the one it starts on included).
RAGE_STEPS = 3
#: Divine Intervention's chance.
DIVINE_INTERVENTION_CHANCE = 0.1
#: Experience: level L needs int(BASE_XP * XP_SCALING ** (L - 1)) XP to reach L + 1.
BASE_XP, XP_SCALING = 1000, 1.5
#: XP needs are capped here (reached at level 36) so that XP always fits in int32.
MAX_XP_NEED = 2**30
#: |m| counted for XP is capped here, so that a step's gain (x10, doubled) fits in int32.
_MAX_XP_ROLL = 2**25


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


class GameConfig(NamedTuple):
    """The checked game arguments (static, but ``encounter_chance`` may be an array).

    Attributes:
      character: one of :data:`CHARACTERS`, or None.
      encounter_chance: the chance that a monster appears at the end of a window (a float
        rounded up to the nearest float32, or an injected scalar array), or None for none.
      experience: whether XP and levels are on.
      every_k: micro-batches per accumulation window (encounters are checked on the last).
    """

    character: str | None
    encounter_chance: Any
    experience: bool
    every_k: int

    @property
    def on(self) -> bool:
        """Whether any mechanic is on (the state is then a :class:`DiceGameState`)."""
        return self.character is not None or self.encounter_chance is not None or self.experience


def _float32_at_least(p: float) -> np.float32:
    """The smallest float32 >= p, so that ``u < it`` for a float32 draw u is ``u < p``."""
    out = np.float32(p)
    if float(out) < p:
        out = np.nextafter(out, np.float32(np.inf))
    return out


def make_game_config(
    character: Any = None, encounter_chance: Any = None, experience: Any = False, every_k: int = 1
) -> GameConfig:
    """Checks the game arguments of :func:`~optax_dice.dice_roll` at construction.

    Args:
      character: None or one of :data:`CHARACTERS` (any case).
      encounter_chance: None or 0 (no monsters), a float in [0, 1], or a scalar array.
      experience: whether XP and levels are on.
      every_k: micro-batches per accumulation window.

    Returns:
      A :class:`GameConfig`; its ``on`` says whether any mechanic is on.

    Raises:
      ValueError, TypeError: for an unknown class, a chance outside [0, 1] (or not a
        number), or an ``experience`` that is not a bool.

    Example:
      >>> from optax_dice.game import make_game_config
      >>> make_game_config().on, make_game_config(encounter_chance=0.0).on
      (False, False)
      >>> config = make_game_config("Wizard", 0.1)
      >>> config.character, float(config.encounter_chance) >= 0.1, config.on
      ('wizard', True, True)
    """
    if character is not None:
        if not isinstance(character, str) or character.lower() not in CHARACTERS:
            raise ValueError(
                f"character={character!r} is unknown: use None or one of {list(CHARACTERS)}."
            )
        character = character.lower()
    if encounter_chance is not None:
        if isinstance(encounter_chance, (jax.Array, np.ndarray)):
            if encounter_chance.shape != () or not (
                jnp.issubdtype(encounter_chance.dtype, jnp.floating)
                or jnp.issubdtype(encounter_chance.dtype, jnp.integer)
            ):
                raise TypeError(
                    "encounter_chance must be a probability (a float in [0, 1]), got an "
                    f"array of dtype {encounter_chance.dtype} and shape {encounter_chance.shape}."
                )
            if not isinstance(encounter_chance, jax.core.Tracer):
                _check_chance(float(np.asarray(encounter_chance)))
        elif isinstance(encounter_chance, (int, float, np.integer, np.floating)) and not (
            isinstance(encounter_chance, bool)
        ):
            _check_chance(float(encounter_chance))
            encounter_chance = (
                None if encounter_chance == 0 else _float32_at_least(float(encounter_chance))
            )
        else:
            raise TypeError(
                "encounter_chance must be a probability (a float in [0, 1]), got "
                f"{type(encounter_chance).__name__} {encounter_chance!r}."
            )
    experience = _validation.check_flag("experience", experience)
    return GameConfig(character, encounter_chance, experience, int(every_k))


def _check_chance(p: float) -> None:
    if not (0.0 <= p <= 1.0):  # also refuses NaN
        raise ValueError(
            f"encounter_chance={p!r} is not a probability: give a float in [0, 1] "
            "(roll-to-train's default is 0.1; 0 means no monsters)."
        )


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


def init_game_state(config: GameConfig, rng_key: jax.Array) -> DiceGameState:
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
        charges=jnp.asarray(CHARGES.get(config.character, (0, 0)), jnp.int32),
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


def _f32(x: float) -> jax.Array:
    return jnp.float32(x)


def game_update(
    config: GameConfig, ruleset: Ruleset, state: DiceGameState, value: Any = None
) -> DiceGameState:
    """Makes one update's roll and plays every mechanic; returns the new state.

    Pure and traceable: ``jnp.where`` and ``lax`` only, no host transfer.

    Args:
      config: the checked game arguments.
      ruleset: the checked dice arguments.
      state: the state after the previous update.
      value: the loss of this update (the Cleric needs it; ignored otherwise).

    Returns:
      The new :class:`DiceGameState`; its ``scale`` is the factor to apply.

    Raises:
      ValueError: for the Cleric without a ``value``.

    Example:
      >>> import jax
      >>> from optax_dice.dice import make_ruleset
      >>> from optax_dice.game import game_update, init_game_state, make_game_config
      >>> config = make_game_config("rogue", experience=True)
      >>> ruleset = make_ruleset(threshold=12)
      >>> state = game_update(config, ruleset, init_game_state(config, jax.random.key(0)))
      >>> sneak = int(state.total) >= 12
      >>> bool(state.scale == state.dice_scale * (jnp.float32(1.2) if sneak else 1))
      True
      >>> int(state.xp) == (10 * int(state.total) if sneak else 0)
      True
    """
    if config.character == "cleric":
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
    factor = dice_scale

    # Monsters: checked at the end of each accumulation window when none is active.
    window_end = state.micro_step == config.every_k - 1
    micro_step = jnp.where(window_end, 0, state.micro_step + 1).astype(jnp.int32)
    still = (state.monster >= 0) & (state.encounter_step < ENCOUNTER_STEPS)
    active = jnp.where(still, state.monster, NO_MONSTER)
    steps = jnp.where(still, state.encounter_step, 0)
    if config.encounter_chance is not None:
        chance = jnp.asarray(config.encounter_chance, jnp.float32)
        appear = window_end & (active < 0) & (u_encounter < chance)
        active = jnp.where(appear, pick, active)
        steps = jnp.where(appear, 0, steps)
    acting = active >= 0
    steps = jnp.where(acting, steps + 1, 0).astype(jnp.int32)
    monster_factor = _f32(1.0)
    for code, (dc, effect) in enumerate(zip(_MONSTER_DC, _MONSTER_FACTOR, strict=True)):
        monster_factor = jnp.where((active == code) & (m < dc), _f32(effect), monster_factor)
    factor = factor * monster_factor
    active_after = acting & (steps < ENCOUNTER_STEPS)

    # The class's abilities.
    charges, rage, last_loss = state.charges, state.rage, state.last_loss
    fired = jnp.zeros([], jnp.int32)
    c0, c1 = charges[0], charges[1]
    character = config.character
    if character == "fighter":
        second_wind = (m < 10) & (c0 > 0)
        action_surge = ~second_wind & (m >= 18) & (c1 > 0)
        factor = factor * jnp.where(second_wind, _f32(0.5), jnp.where(action_surge, 2.0, 1.0))
        charges = charges - jnp.stack([second_wind, action_surge]).astype(jnp.int32)
        fired = second_wind.astype(jnp.int32) | (action_surge.astype(jnp.int32) << 1)
    elif character == "wizard":
        arcane = (m >= 15) & (c0 > 0)
        factor = factor * jnp.where(arcane, _f32(1.5), _f32(1.0))
        charges = charges - jnp.stack([arcane, False]).astype(jnp.int32)
        fired = arcane.astype(jnp.int32)
    elif character == "rogue":
        sneak = m >= 12
        factor = factor * jnp.where(sneak, _f32(1 + 0.2 * 1), _f32(1.0))
        fired = sneak.astype(jnp.int32)
    elif character == "cleric":
        loss = jnp.asarray(value, jnp.float32) * factor  # the loss as scaled so far
        healing = (loss > _f32(1.5) * last_loss) & (c0 > 0)
        healed = _f32(1.1) * last_loss
        safe = jnp.where(loss == 0, _f32(1.0), loss)
        factor = factor * jnp.where(healing & (loss != 0), healed / safe, _f32(1.0))
        loss = jnp.where(healing, healed, loss)
        divine = (m == 1) & (u_divine < _float32_at_least(DIVINE_INTERVENTION_CHANCE))
        factor = factor * jnp.where(divine, _f32(0.5), _f32(1.0))
        last_loss = jnp.where(divine, last_loss, loss)
        charges = charges - jnp.stack([healing, False]).astype(jnp.int32)
        fired = healing.astype(jnp.int32) | (divine.astype(jnp.int32) << 1)
    elif character == "barbarian":
        start = (m >= 16) & (rage <= 0)
        rage = jnp.where(start, RAGE_STEPS, rage)
        factor = factor * jnp.where(rage > 0, _f32(1.5), _f32(1.0))
        rage = jnp.maximum(rage - 1, 0).astype(jnp.int32)
        reckless = m >= 18
        factor = factor * jnp.where(reckless, _f32(2.0), _f32(1.0))
        fired = start.astype(jnp.int32) | (reckless.astype(jnp.int32) << 1)
    elif character == "paladin":
        aura = jnp.maximum(m, 8)  # Aura of Protection
        smite = (aura >= 15) & (c0 > 0)
        # 1.5 + 0.1 (r - 15) = r / 10, correctly rounded in float32 jitted or not.
        factor = factor * jnp.where(smite, _fraction(aura, 10), _f32(1.0))
        charges = charges - jnp.stack([smite, False]).astype(jnp.int32)
        fired = smite.astype(jnp.int32)

    # Experience: the level bonus of the level before this update, then the XP.
    level, xp = state.level, state.xp
    if config.experience:
        factor = factor * _fraction(level + 9, 10)  # 1 + 0.1 (L - 1)
        threshold = _validation.as_int32(ruleset.threshold)
        gain = 10 * jnp.clip(m, -_MAX_XP_ROLL, _MAX_XP_ROLL)
        gain = jnp.where(m >= threshold, gain, 0)
        gain = jnp.where(active_after, 2 * gain, gain)
        xp = jnp.maximum(xp + gain, -MAX_XP_NEED)
        level, xp = _level_up(level, xp)

    return DiceGameState(
        count=optax.safe_increment(state.count),
        rng_key=next_key,
        natural=natural,
        total=m,
        scale=jnp.asarray(factor, jnp.float32),
        dice_scale=dice_scale,
        monster=jnp.where(acting, active, NO_MONSTER).astype(jnp.int32),
        encounter_step=steps,
        level=level.astype(jnp.int32),
        xp=xp.astype(jnp.int32),
        charges=charges.astype(jnp.int32),
        rage=jnp.asarray(rage, jnp.int32),
        last_loss=jnp.asarray(last_loss, jnp.float32),
        fired=fired,
        micro_step=micro_step,
    )


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


def describe(config: GameConfig) -> str:
    """A short label of the mechanics on, e.g. ``"wizard, monsters 10%, experience"``."""
    parts = []
    if config.character:
        parts.append(config.character)
    if config.encounter_chance is not None:
        chance = config.encounter_chance
        if isinstance(chance, (np.floating, float)):
            parts.append(f"monsters {100 * float(chance):.3g}%")
        else:
            parts.append("monsters")
    if config.experience:
        parts.append("experience")
    return ", ".join(parts)


__all__ = [
    "ABILITIES",
    "CHARACTERS",
    "MONSTERS",
    "DiceGameState",
    "GameConfig",
    "draws",
    "game_update",
    "make_game_config",
]
