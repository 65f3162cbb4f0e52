"""``roll_sequence``: the rolls a ``dice_roll`` will make, without training."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_dice import _validation
from optax_dice.dice import roll
from optax_dice.game import (
    CLERIC_NEEDS_LOSS,
    DiceGameState,
    game_update,
    init_game_state,
    reads_loss,
)
from optax_dice.ruleset import Ruleset, resolve_ruleset

#: The most updates :func:`~optax_dice.roll_sequence` rolls for: the dice state's ``count``
#: is int32.
MAX_UPDATES = 2**31 - 1


class RollSequence(NamedTuple):
    """The rolls of n consecutive updates.

    Attributes:
      natural: int32[n], the dice as rolled.
      total: int32[n], natural + modifier.
      scale: float32[n], the scale each update gets (with game mechanics: the product
        of all of them, as applied).
      dice_scale: float32[n], the rule's scale (None with no game mechanic: it is ``scale``).
      monster: int32[n], the monster that acted on each update (-1 none, 0 Gradient
        Ooze, 1 Loss Dragon, 2 Weight Wraith), or None with no game mechanic.
      level: int32[n], the level after each update's XP, or None.
      xp: int32[n], the XP towards the next level after each update, or None.
      encounter_step: int32[n], how many updates the monster has acted so far (3: it
        retreats), or None.
      fired: int32[n], bit masks of the class abilities fired (``game.ABILITIES``), or None.
      charges: int32[n, 2], the class's charges left after each update, or None.
      rage: int32[n], the Barbarian's rage steps left after each update, or None.
    """

    natural: jax.Array
    total: jax.Array
    scale: jax.Array
    dice_scale: jax.Array | None = None
    monster: jax.Array | None = None
    level: jax.Array | None = None
    xp: jax.Array | None = None
    encounter_step: jax.Array | None = None
    fired: jax.Array | None = None
    charges: jax.Array | None = None
    rage: jax.Array | None = None


def roll_sequence(
    key: int | jax.Array,
    n: int,
    ruleset: Ruleset | None = None,
    *,
    losses: Any = None,
    every_k: int = 1,
    **keywords: Any,
) -> RollSequence:
    """The naturals, totals and scales that ``n`` updates of ``dice_roll`` produce.

    ``roll_sequence(key, n, **kw)[i]`` is, element for element, what the
    ``i``-th update of ``dice_roll(key, **kw)`` rolls: it walks the same key
    chain (split once per update, roll with the fresh half). With game mechanics
    (``character``, ``encounter_chance``, ``experience``) it plays the same state
    machine, so every field equals what training applies.

    Args:
      key: the key given to :func:`dice_roll` (int, typed key or raw key).
      n: how many updates to roll for, from 0 to 2**31 - 1
        (:data:`~optax_dice.sequence.MAX_UPDATES`).
      ruleset: the :class:`~optax_dice.Ruleset`, or None to make it from ``keywords``.
      losses: the Cleric's ``n`` losses, one per update (required for
        ``character="cleric"``, ignored otherwise).
      every_k: as :func:`~optax_dice.accumulate`'s ``every_k`` in
        ``per_mini_batch`` mode, where an update is a micro-batch and monsters
        appear only on the last micro-batch of each window (1: every update).
      **keywords: the ruleset's keywords (``dice``, ``threshold``, ``modifier``,
        ``advantage``, ``disadvantage``, ``rule``, ``normalize``, ``character``,
        ``encounter_chance``, ``experience``) as for :func:`dice_roll`, when no
        ``ruleset`` is given.

    Returns:
      A :class:`RollSequence` of arrays of length ``n``.

    Raises:
      ValueError, TypeError: for a bad key, ``n``, ``every_k`` or ruleset (as
        :class:`~optax_dice.Ruleset`), for a ruleset and keywords both, and for the
        Cleric without one loss per update.

    Example:
      >>> import optax_dice
      >>> seq = optax_dice.roll_sequence(0, 5, dice="d6", threshold=4)
      >>> seq.natural.shape, seq.scale.dtype
      ((5,), dtype('float32'))
      >>> bool(((seq.natural >= 1) & (seq.natural <= 6)).all())
      True
      >>> rogue = optax_dice.Ruleset(character="rogue", threshold=12)
      >>> game = optax_dice.roll_sequence(0, 8, rogue)
      >>> bool(((game.total >= 12) == (game.scale == game.dice_scale * np.float32(1.2))).all())
      True
    """
    _validation.check_key(key)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 0 <= n <= MAX_UPDATES:
        raise ValueError(
            f"n must be an int from 0 to {MAX_UPDATES:,} (2**31 - 1, the int32 count of "
            f"rolls), the number of updates; got {n!r}."
        )
    if not isinstance(every_k, (int, np.integer)) or isinstance(every_k, bool) or every_k < 1:
        raise ValueError(f"every_k must be an int >= 1, got {every_k!r}.")
    ruleset = resolve_ruleset(ruleset, keywords, "roll_sequence")
    if ruleset.has_game:
        return _play_sequence(ruleset, key, int(n), losses, int(every_k))

    def step(rng_key: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        next_key, roll_key = jax.random.split(rng_key)
        return next_key, roll(ruleset, roll_key)

    _, (natural, total, scale) = jax.lax.scan(
        step, _validation.canonicalize_key(key), None, length=int(n)
    )
    return RollSequence(natural, total, scale)


def _play_sequence(ruleset: Ruleset, key: Any, n: int, losses: Any, every_k: int) -> RollSequence:
    """:func:`roll_sequence` with game mechanics: the game's states, field by field."""
    if reads_loss(ruleset.character):
        if losses is None:
            raise ValueError(CLERIC_NEEDS_LOSS)
        xs = jnp.asarray(losses, jnp.float32)
        if xs.shape != (n,):
            raise ValueError(f"losses must hold one loss per update: shape ({n},), got {xs.shape}.")
    else:
        xs = jnp.zeros((n,), jnp.float32)
    out = play(ruleset, _validation.canonicalize_key(key), xs, every_k)
    return RollSequence(
        out.natural,
        out.total,
        out.scale,
        dice_scale=out.dice_scale,
        monster=out.monster,
        level=out.level,
        xp=out.xp,
        encounter_step=out.encounter_step,
        fired=out.fired,
        charges=out.charges,
        rage=out.rage,
    )


def play(ruleset: Ruleset, key: jax.Array, losses: jax.Array, every_k: int = 1) -> Any:
    """The game's per-update states (without keys) for ``len(losses)`` updates: traceable,
    so ``jax.vmap`` over keys plays many seeded runs at once (as :func:`~optax_dice.odds`
    does)."""

    def step(state: DiceGameState, loss: jax.Array) -> tuple[DiceGameState, DiceGameState]:
        state = game_update(ruleset, state, loss, every_k=every_k)
        return state, state._replace(rng_key=None, last_loss=None, micro_step=None)

    _, out = jax.lax.scan(step, init_game_state(ruleset, key), losses)
    return out
