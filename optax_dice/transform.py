"""``dice_roll``: the d20 saving throw as an optax gradient transformation."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_dice import _validation
from optax_dice.dice import roll
from optax_dice.game import DiceGameState, game_update, init_game_state
from optax_dice.ruleset import Ruleset


class DiceRollState(NamedTuple):
    """State of :func:`dice_roll`.

    Attributes:
      count: rolls made so far (int32), in every mode of :func:`~optax_dice.accumulate`
        too, so ``roll_sequence(key, count)`` ends with this state's roll.
      rng_key: the typed PRNG key for the next roll.
      natural: the last die as rolled (int32; 0 before the first update).
      total: the last natural + modifier (int32; 0 before the first update).
      scale: the last scale applied (float32; 1 before the first update).
    """

    count: jax.Array
    rng_key: jax.Array
    natural: jax.Array
    total: jax.Array
    scale: jax.Array


def dice_roll(
    key: int | jax.Array = 0,
    ruleset: Ruleset | None = None,
    *,
    dice: int | str = "d20",
    threshold: int | jax.Array = 15,
    modifier: int | jax.Array = 0,
    advantage: bool = False,
    disadvantage: bool = False,
    rule: Any = "saving_throw",
    normalize: bool = False,
    character: str | None = None,
    encounter_chance: float | jax.Array | None = None,
    experience: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales each update by a saving throw rolled with an explicit PRNG key.

    Every ``update`` splits the key in the state once, rolls the die with the
    fresh half and multiplies the whole update tree by one scalar, computed by
    ``rule`` and cast to each leaf's dtype. With the default rule:

    ==================  ======================  =========================================
    outcome             when                    scale
    ==================  ======================  =========================================
    critical failure    natural == 1            0 (the update is discarded)
    critical success    natural == sides        1 (the full update)
    success             total >= threshold      min(total, sides) / sides
    failure             total < threshold       max(-(threshold - total) / sides, -1)
    ==================  ======================  =========================================

    where natural is the die as rolled (with advantage the higher of two rolls,
    with disadvantage the lower) and total = natural + modifier.

    Its place in a chain decides what is scaled:
    ``optax.chain(dice_roll(), optax.adamw(lr))`` scales the gradient (as
    roll-to-train scales the loss), ``optax.chain(optax.adamw(lr), dice_roll())``
    scales the final step. The key is part of the state, so the transformation is
    pure, jit-compiles, and under SPMD every device rolls the same die.

    Args:
      key: an int seed (also as a 0-d integer array, as ``optax.inject_hyperparams``
        passes it), a typed key (``jax.random.key``) or a raw key
        (``jax.random.PRNGKey``). Turned into a typed key in ``init``; an int seed in the
        int64 range, within 32 bits ``jax.random.key(seed)``, beyond them all 64 bits kept.
      ruleset: an :class:`~optax_dice.Ruleset` holding all the keywords below, made and
        checked once; None (the default) makes one from the keywords. With a ruleset,
        leave the keywords at their defaults (else TypeError). With
        ``optax.inject_hyperparams`` and a ruleset, name ``threshold`` and ``modifier`` in
        ``static_args``.
      dice: the die: an int number of sides >= 2, or a string ``"dN"``.
      threshold: the difficulty class a total must reach to succeed.
      modifier: added to every natural roll (see :func:`ability_modifier`).
      advantage: roll twice and keep the higher.
      disadvantage: roll twice and keep the lower. These two select code, so
        they must be known when the transformation is built: a bool, or a
        concrete bool array.
      rule: ``"saving_throw"`` (the default above), ``"original"`` (the rule of
        roll-to-train's code: see :func:`optax_dice.rules.original`), or a
        traceable ``(natural, total, sides, threshold) -> scale``.
      normalize: divide every scale by the ruleset's exact E[scale] (from
        :func:`~optax_dice.odds`), so that E[scale] = 1 (a "fair die", as random
        scaling with E = 1 in Zhang and Cutkosky, ICML 2024): placed after the
        optimizer, the mean step equals the plain optimizer's and only the randomness
        differs; before an adaptive optimizer such as Adam, which cancels a constant
        factor, the scale's size acts only through a clip between them. Refused where
        E[scale] <= 0, and with game mechanics (their E[scale] has no exact value).
        Needs a concrete threshold and modifier (with ``optax.inject_hyperparams``, name
        them in ``static_args``).
      character: None, or a roll-to-train character class: ``"fighter"``,
        ``"wizard"``, ``"rogue"``, ``"cleric"``, ``"barbarian"`` or ``"paladin"``,
        whose ability multiplies the step when the modified roll triggers it (see
        :mod:`optax_dice.game` for the table). The Cleric needs the loss:
        ``update(updates, state, params, value=loss)``.
      encounter_chance: the chance (in [0, 1]; roll-to-train's default is 0.1) that
        a monster appears on an update when none is active: it acts on that update
        and the next two. None (the default) or 0: no monsters. The default is None
        rather than 0.0 so that ``optax.inject_hyperparams``, which injects every
        numeric default, leaves the defaults' state as it was; an array (what it
        makes of a float you pass) turns encounters on, so they can be scheduled.
      experience: award XP for every roll that meets the threshold (``int(m * 10)``,
        doubled while a monster is still active) and multiply every step by the
        level bonus ``1 + 0.1 * (level - 1)``; level L needs ``int(1000 * 1.5 **
        (L - 1))`` XP. XP is int32: the need stops growing at 2**30 (level 36), and
        a roll counts at most 2**25 (dice beyond any game's).

    With any of the three on, the step is multiplied, in roll-to-train's order, by
    the dice scale, the monster's effect, the class's ability and the level bonus;
    all of it is a state machine in the optimizer state (``jnp.where`` only: no host
    transfer, jit and eager agree), and a seed decides the whole story
    (``roll_sequence`` previews it). Two deliberate differences from roll-to-train:
    Healing Word scales the step by ``1.1 * last / loss`` (the anchor reuses the
    previous batch's freed graph, which crashes when it fires), and in
    :func:`~optax_dice.accumulate`'s ``per_accumulation_step`` mode the mechanics act
    once per applied update (the anchor silently skips them there).

    Returns:
      An ``optax.GradientTransformationExtraArgs``, whatever the arguments (its
      ``update`` takes ``value=`` and ignores other extra arguments). With no game
      mechanic (the defaults) its state is a :class:`DiceRollState`, exactly as before
      the game existed. With one, the state is a :class:`~optax_dice.DiceGameState`
      (the same five fields, then
      ``dice_scale``, ``monster``, ``level``, ``xp``, charges and counters), where
      ``scale`` is the product actually applied.
      Read the last roll from any chain with :func:`find_dice_state`
      (``optax.tree_utils.tree_get(opt_state, "scale")`` fails on real models,
      where a LayerNorm parameter is also called ``scale``).

    Raises:
      ValueError, TypeError: at construction, for a bad die, a non-integer
        threshold or modifier, advantage with disadvantage, an unknown rule, or a
        key that is neither an int nor a key array; for a die of more than 2**29
        sides, a threshold or modifier beyond +-2**29, an int seed outside the
        int64 range, or a custom rule that does not return a scalar float (it is
        traced once with ``jax.eval_shape`` to check); for an unknown character,
        an encounter chance outside [0, 1], or a non-bool ``experience``.
        ``update`` raises TypeError for integer update leaves, which a fractional
        scale would truncate, and ValueError for the Cleric without ``value=``. A
        ``ruleset`` with keywords other than their defaults is a TypeError. Updates may
        be Python floats, as optax's transforms take them.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import optax_dice
      >>> opt = optax.chain(optax_dice.dice_roll(key=0), optax.sgd(1.0))
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
      >>> dice = optax_dice.find_dice_state(state)
      >>> bool(jnp.allclose(updates["w"], -dice.scale))
      True
      >>> int(dice.natural) in range(1, 21), int(dice.count)
      (True, 1)

      The same ruleset, made once and passed around:

      >>> ruleset = optax_dice.Ruleset(threshold=12, modifier=2)
      >>> tx = optax_dice.dice_roll(0, ruleset)
      >>> type(tx).__name__
      'GradientTransformationExtraArgs'
      >>> updates, state = tx.update(2.0, tx.init(2.0))
      >>> float(updates) == 2.0 * float(state.scale)
      True

      Threshold and modifier can be scheduled or changed during training:

      >>> tx = optax.inject_hyperparams(optax_dice.dice_roll)(threshold=12)
      >>> state = tx.init(params)
      >>> state.hyperparams["threshold"] = jnp.asarray(5)
      >>> _, state = jax.jit(tx.update)(params, state, params)
      >>> int(optax_dice.find_dice_state(state).count)
      1

      The game: a Wizard meeting monsters and gaining levels.

      >>> tx = optax_dice.dice_roll(0, character="wizard", encounter_chance=0.5,
      ...                           experience=True)
      >>> state = tx.init(params)
      >>> for _ in range(20):
      ...     _, state = tx.update(params, state, params)
      >>> game = optax_dice.find_dice_state(state)
      >>> int(game.level) >= 1, int(game.monster) in (-1, 0, 1, 2), game.charges.shape
      (True, True, (2,))
    """
    _validation.check_key(key)
    keywords = dict(
        dice=dice,
        threshold=threshold,
        modifier=modifier,
        advantage=advantage,
        disadvantage=disadvantage,
        rule=rule,
        normalize=normalize,
        character=character,
        encounter_chance=encounter_chance,
        experience=experience,
    )
    if ruleset is None:
        ruleset = Ruleset(**keywords)
    else:
        _refuse_keywords_with_a_ruleset(ruleset, keywords)
    return dice_transform(key, ruleset)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Ruleset)}


def _refuse_keywords_with_a_ruleset(ruleset: Any, keywords: dict[str, Any]) -> None:
    """``dice_roll`` takes a ruleset or its keywords: with a ruleset, every keyword must be
    left at its default (its signature keeps real defaults, which inject_hyperparams reads)."""
    if not isinstance(ruleset, Ruleset):
        raise TypeError(
            f"ruleset must be an optax_dice.Ruleset (or None), got {type(ruleset).__name__}; "
            "pass the ruleset's keywords as keywords instead."
        )
    given = [
        name
        for name, value in keywords.items()
        if not (
            value is _DEFAULTS[name]
            or (type(value) is type(_DEFAULTS[name]) and value == _DEFAULTS[name])
        )
    ]
    if given:
        raise TypeError(
            f"dice_roll() takes a ruleset or the ruleset's keywords, not both: got ruleset= "
            f"and {given}. Use dataclasses.replace(ruleset, ...) to change one (with "
            "optax.inject_hyperparams, use the keywords, or name threshold and modifier in "
            "static_args)."
        )


def dice_transform(
    key: Any, ruleset: Ruleset, every_k: int = 1
) -> optax.GradientTransformationExtraArgs:
    """:func:`dice_roll` of a checked key and ruleset.

    ``every_k`` is the window of ``accumulate``'s ``per_mini_batch`` mode, where one update
    is one micro-batch and monsters are checked on the last of every ``every_k``.
    """

    def init_fn(params: optax.Params) -> DiceRollState | DiceGameState:
        del params
        if ruleset.has_game:
            return init_game_state(ruleset, _validation.canonicalize_key(key))
        return DiceRollState(
            count=jnp.zeros([], jnp.int32),
            rng_key=_validation.canonicalize_key(key),
            natural=jnp.zeros([], jnp.int32),
            total=jnp.zeros([], jnp.int32),
            scale=jnp.ones([], jnp.float32),
        )

    def update_fn(
        updates: optax.Updates,
        state: DiceRollState | DiceGameState,
        params: optax.Params | None = None,
        *,
        value: Any = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, DiceRollState | DiceGameState]:
        del params, extra_args
        if ruleset.has_game:
            state = game_update(ruleset, state, value, every_k=every_k)
            return scale_updates(updates, state.scale), state
        next_key, roll_key = jax.random.split(state.rng_key)
        natural, total, scale = roll(ruleset, roll_key)
        count = optax.safe_increment(state.count)
        return scale_updates(updates, scale), DiceRollState(count, next_key, natural, total, scale)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_updates(updates: optax.Updates, scale: jax.Array) -> optax.Updates:
    """Multiplies every leaf of ``updates`` by ``scale``, cast to the leaf's dtype.

    Raises:
      TypeError: while tracing, for a leaf that is not floating point (or complex): a
        negative fraction cast to an integer dtype would truncate to 0 or flip signs
        silently.
    """

    def scale_leaf(path: Any, u: Any) -> jax.Array:
        if not isinstance(u, jax.Array):  # a Python or numpy scalar, as optax's transforms take
            u = jnp.asarray(u)
        if not jnp.issubdtype(u.dtype, jnp.inexact):
            raise TypeError(
                f"dice_roll scales updates by fractions such as -0.35, but the update leaf "
                f"{jax.tree_util.keystr(path) or '(root)'} has dtype {u.dtype}, which would "
                "truncate them: give float updates (cast integer leaves, or keep them out "
                "of the optimizer, e.g. with optax.partition and optax.set_to_zero)."
            )
        return u * scale.astype(u.dtype)

    return jax.tree_util.tree_map_with_path(scale_leaf, updates)


def find_dice_state(opt_state: optax.OptState) -> DiceRollState | DiceGameState | None:
    """The :class:`DiceRollState` (or :class:`DiceGameState`) in any optimizer state, by type.

    Prefer it to ``optax.tree_utils.tree_get(opt_state, "scale")``, which raises
    ``KeyError`` when another state also has a ``scale`` (AdamW's moments repeat the
    parameters' names, and LayerNorm's parameter is called ``scale``).

    Args:
      opt_state: the state of a chain, ``MultiSteps``, ``inject_hyperparams``, ...

    Returns:
      The dice state (a :class:`DiceGameState` when a game mechanic is on), or None
      when the optimizer rolls no dice.

    Raises:
      ValueError: when the state holds more than one dice state.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import optax_dice
      >>> params = {"norm": {"scale": jnp.ones(2)}}
      >>> tx = optax.chain(optax_dice.dice_roll(0), optax.adamw(1e-3))
      >>> state = tx.init(params)
      >>> float(optax_dice.find_dice_state(state).scale)
      1.0
      >>> optax_dice.find_dice_state(optax.adamw(1e-3).init(params)) is None
      True
    """
    kinds = (DiceRollState, DiceGameState)
    found = [
        leaf
        for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds))
        if isinstance(leaf, kinds)
    ]
    if len(found) > 1:
        raise ValueError(
            f"The optimizer state holds {len(found)} dice states; find_dice_state expects "
            "at most one. Read them with optax.tree_utils.tree_get_all_with_path(state, "
            '"DiceRollState") instead.'
        )
    return found[0] if found else None
