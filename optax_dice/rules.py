"""The rules that turn a roll into an update scale.

A rule is a traceable function ``(natural, total, sides, threshold) -> scale``:
``natural`` is the die as rolled (int32), ``total`` is natural + modifier
(int32), ``sides`` a Python int and ``threshold`` an int32 scalar. It returns a
float32 scale that multiplies the whole update. Rules use ``jnp.where`` only,
so they jit-compile and never branch on traced values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Rule = Callable[[jax.Array, jax.Array, int, jax.Array], jax.Array]

#: Outcome codes, as :func:`outcome` returns them.
CRITICAL_FAILURE, FAILURE, SUCCESS, CRITICAL_SUCCESS = 0, 1, 2, 3
OUTCOME_NAMES = ("critical failure", "failure", "success", "critical success")


def _fraction(numerator: Any, denominator: int, xp: Any = jnp) -> Any:
    """``numerator / denominator`` in float32, correctly rounded, jitted or not.

    Under jit XLA rewrites a division by a constant as a multiplication by its
    rounded reciprocal (13 / 20 -> 0.65000004); the barrier keeps the divisor a
    run-time value so compiled and eager code give the same, exact scale. With
    ``xp=numpy`` it is numpy's float32 division, which is IEEE's, so the same.
    """
    if xp is np:
        return np.asarray(numerator, np.float32) / np.float32(denominator)
    divisor = jax.lax.optimization_barrier(jnp.float32(denominator))
    return jnp.asarray(numerator, jnp.float32) / divisor


def outcome(natural: jax.Array, total: jax.Array, sides: int, threshold: jax.Array) -> jax.Array:
    """Classifies a roll into one of the four outcomes of a saving throw.

    Critical faces are judged on the natural roll (as in D&D 5e); otherwise the
    total (natural + modifier) is compared with the threshold.

    Args:
      natural: the face rolled, in ``[1, sides]``.
      total: ``natural + modifier``.
      sides: the number of faces of the die.
      threshold: the difficulty class a total must reach to succeed.

    Returns:
      An int32 code: 0 critical failure, 1 failure, 2 success, 3 critical success.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_dice.rules import outcome
      >>> outcome(jnp.array([1, 5, 15, 20]), jnp.array([3, 7, 17, 22]), 20, 15)
      Array([0, 1, 2, 3], dtype=int32)
    """
    return _outcome(jnp, natural, total, sides, threshold)


def _outcome(xp: Any, natural: Any, total: Any, sides: int, threshold: Any) -> Any:
    natural = xp.asarray(natural, xp.int32)
    total = xp.asarray(total, xp.int32)
    code = xp.where(total >= threshold, SUCCESS, FAILURE)
    code = xp.where(natural == sides, CRITICAL_SUCCESS, code)
    code = xp.where(natural == 1, CRITICAL_FAILURE, code)
    return code.astype(xp.int32)


def saving_throw(
    natural: jax.Array, total: jax.Array, sides: int, threshold: jax.Array
) -> jax.Array:
    """The seed's saving throw: the default rule.

    ==================  ======================  =========================================
    outcome             when                    scale
    ==================  ======================  =========================================
    critical failure    natural == 1            0 (the update is discarded)
    critical success    natural == sides        1 (the full update)
    success             total >= threshold      min(total, sides) / sides
    failure             total < threshold       max(-(threshold - total) / sides, -1)
    ==================  ======================  =========================================

    Args:
      natural: the face rolled, in ``[1, sides]``.
      total: ``natural + modifier``.
      sides: the number of faces of the die.
      threshold: the difficulty class.

    Returns:
      The float32 scale of the update.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_dice.rules import saving_throw
      >>> faces = jnp.array([1, 2, 14, 15, 19, 20])
      >>> [round(float(s), 2) for s in saving_throw(faces, faces, 20, 15)]
      [0.0, -0.65, -0.05, 0.75, 0.95, 1.0]
    """
    return _saving_throw(jnp, natural, total, sides, threshold)


def _saving_throw(xp: Any, natural: Any, total: Any, sides: int, threshold: Any) -> Any:
    total = xp.asarray(total, xp.int32)
    success = _fraction(xp.minimum(total, sides), sides, xp)
    failure = _fraction(xp.maximum(total - threshold, -sides), sides, xp)
    code = _outcome(xp, natural, total, sides, threshold)
    scale = xp.where(code == SUCCESS, success, failure)
    scale = xp.where(code == CRITICAL_SUCCESS, 1.0, scale)
    scale = xp.where(code == CRITICAL_FAILURE, 0.0, scale)
    return scale.astype(xp.float32)


def outcome_original(
    natural: jax.Array, total: jax.Array, sides: int, threshold: jax.Array
) -> jax.Array:
    """Classifies a roll as roll-to-train's code does: everything on the modified roll.

    roll-to-train passes ``natural + modifier`` to its scale function, so its
    criticals are judged on the total: a total of 1 is its critical failure, a
    total of ``sides`` its critical success.

    Args:
      natural: the face rolled (unused: kept for the rule signature).
      total: ``natural + modifier``, the anchor's "roll".
      sides: the number of faces of the die.
      threshold: the difficulty class.

    Returns:
      An int32 code, as :func:`outcome` gives.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_dice.rules import outcome_original
      >>> outcome_original(jnp.array([1, 18, 20]), jnp.array([3, 20, 22]), 20, 12)
      Array([1, 3, 2], dtype=int32)
    """
    return _outcome_original(jnp, natural, total, sides, threshold)


def _outcome_original(xp: Any, natural: Any, total: Any, sides: int, threshold: Any) -> Any:
    del natural
    total = xp.asarray(total, xp.int32)
    code = xp.where(total >= threshold, SUCCESS, FAILURE)
    code = xp.where(total == sides, CRITICAL_SUCCESS, code)
    code = xp.where(total == 1, CRITICAL_FAILURE, code)
    return code.astype(xp.int32)


def original(natural: jax.Array, total: jax.Array, sides: int, threshold: jax.Array) -> jax.Array:
    """The rule of roll-to-train's own code, exactly: judged on the modified roll.

    roll-to-train (``roll_to_train.py`` at 62d707f) hands ``m = natural + modifier``
    to its scale function, which checks, in order: ``m == 1`` gives -1 (a full
    step the wrong way), ``m == sides`` gives +1, ``m >= threshold`` gives
    ``(m - threshold) / 100``, and anything else gives 0 (the update is
    discarded). Its criticals are therefore judged on the modified roll, unlike
    the default :func:`saving_throw`: with its example run (ability score 15, so
    +2, threshold 12) a natural 18 is its "critical success", a critical failure
    never happens, and E[scale] = 0.0735.

    Args:
      natural: the face rolled, in ``[1, sides]`` (unused: the code looks at ``total``).
      total: ``natural + modifier``.
      sides: the number of faces of the die.
      threshold: the difficulty class.

    Returns:
      The float32 scale of the update.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_dice.rules import original
      >>> faces = jnp.array([1, 14, 15, 19, 20])
      >>> [round(float(s), 2) for s in original(faces, faces, 20, 15)]
      [-1.0, 0.0, 0.0, 0.04, 1.0]
      >>> [round(float(s), 2) for s in original(faces, faces + 2, 20, 12)]
      [0.0, 0.04, 0.05, 0.09, 0.1]
      >>> float(original(jnp.int32(18), jnp.int32(20), 20, 12))
      1.0
    """
    return _original(jnp, natural, total, sides, threshold)


def _original(xp: Any, natural: Any, total: Any, sides: int, threshold: Any) -> Any:
    code = _outcome_original(xp, natural, total, sides, threshold)
    scale = xp.where(
        code == SUCCESS, _fraction(xp.asarray(total, xp.int32) - threshold, 100, xp), 0.0
    )
    scale = xp.where(code == CRITICAL_SUCCESS, 1.0, scale)
    scale = xp.where(code == CRITICAL_FAILURE, -1.0, scale)
    return scale.astype(xp.float32)


#: The built-in rules, by name.
RULES: dict[str, Rule] = {"saving_throw": saving_throw, "original": original}
#: The built-in rules and their outcome classifiers written over an array namespace: with
#: ``numpy`` they give, bit for bit, what the jax rules give, without starting JAX.
_GENERIC = {
    saving_throw: (_saving_throw, _outcome),
    original: (_original, _outcome_original),
}


def numpy_rule(rule: Any) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]] | None:
    """``(scale, outcome)`` in numpy for a built-in rule (by name or function), else None."""
    if isinstance(rule, str):
        rule = RULES.get(rule)
    found = [pair for fn, pair in _GENERIC.items() if rule is fn]
    if not found:
        return None
    scale, classify = found[0]
    return (
        lambda n, t, s, th: scale(np, n, t, s, th),
        lambda n, t, s, th: classify(np, n, t, s, th),
    )


def numpy_outcome(rule: Any) -> Callable[..., np.ndarray]:
    """:func:`outcome_for`'s classifier, in numpy."""
    classify = _outcome_original if outcome_for(rule) is outcome_original else _outcome
    return lambda n, t, s, th: classify(np, n, t, s, th)


def resolve_rule(rule: Any) -> Rule:
    """Returns the rule function named by ``rule``, or ``rule`` itself if callable."""
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(
                f"rule={rule!r} is unknown: use one of {sorted(RULES)} or a traceable "
                "function (natural, total, sides, threshold) -> scale."
            )
        return RULES[rule]
    if callable(rule):
        return rule
    raise TypeError(
        f"rule must be a rule name {sorted(RULES)} or a callable "
        f"(natural, total, sides, threshold) -> scale, got {type(rule).__name__}."
    )


def outcome_for(rule: Any) -> Callable[..., jax.Array]:
    """The outcome classifier that matches ``rule``: :func:`outcome_original` for the
    original rule, :func:`outcome` (criticals on the natural die) otherwise."""
    if rule == "original" or rule is original:
        return outcome_original
    return outcome


def rule_name(rule: Any) -> str:
    """A readable name for ``rule`` (its key in RULES, or the function's name)."""
    if isinstance(rule, str):
        return rule
    return getattr(rule, "__name__", type(rule).__name__)
