"""Construction-time checks for optax_dice arguments.

Everything here runs on Python values when a transformation is built; nothing
looks at traced values. Arrays (as ``optax.inject_hyperparams`` passes them)
are accepted as they are, checked only for what is static: shape and dtype.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_DICE_PATTERN = re.compile(r"^\s*[dD]?(\d+)\s*$")

#: The largest die, |threshold| and |modifier| accepted: 2**29, so that natural + modifier
#: and total - threshold (at most 3 * 2**29) always fit in the int32 the roll is made in.
MAX_MAGNITUDE = 2**29
#: The int seeds accepted (by ``dice_roll``, ``roll_sequence``, ``odds`` and the examples'
#: ``--seed``): the int64 range. See :func:`key_from_seed` for the key each one gives.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1
#: Int seeds whose ``jax.random.key`` is the same in JAX's default 32-bit mode and in 64-bit mode.
_NARROW_SEEDS = (0, 2**32)


def parse_dice(dice: Any) -> int:
    """The number of sides of a die: ``"d20"``, ``"D6"``, ``"20"`` or ``20`` give 20 or 6.

    Args:
      dice: a string ``"dN"`` (any case, spaces around allowed), a string of digits, or an
        int (also a 0-d concrete integer array) number of sides, from 2 to 2**29.

    Returns:
      The number of sides, an int.

    Raises:
      ValueError: for a string that is not a die, or fewer than 2 or more than 2**29 sides.
      TypeError: for anything else (a float, a bool, ...).

    Example:
      >>> from optax_dice import parse_dice
      >>> parse_dice("d20"), parse_dice("D6"), parse_dice("100"), parse_dice(4)
      (20, 6, 100, 4)
    """
    if isinstance(dice, str):
        match = _DICE_PATTERN.match(dice)
        if match is None:
            raise ValueError(
                f'dice={dice!r} is not a die: write "dN" with N >= 2 sides '
                '(e.g. "d4", "d6", "d20", "d100") or pass the number of sides as an int.'
            )
        sides = int(match.group(1))
    elif isinstance(dice, (int, np.integer)) and not isinstance(dice, bool):
        sides = int(dice)
    elif _is_array(dice) and dice.shape == () and jnp.issubdtype(dice.dtype, jnp.integer):
        sides = int(_concrete("dice", dice))
    else:
        raise TypeError(
            f'dice must be an int number of sides or a string like "d20", got '
            f"{type(dice).__name__} {dice!r}."
        )
    if sides < 2:
        raise ValueError(f"dice={dice!r} has {sides} side(s): a die needs at least 2 sides.")
    if sides > MAX_MAGNITUDE:
        raise ValueError(
            f"dice={dice!r} has {sides:,} sides, more than the {MAX_MAGNITUDE:,} (2**29) a "
            "die may have (rolls and totals are int32): use a smaller die."
        )
    return sides


def check_integer(name: str, value: Any) -> Any:
    """Checks that ``value`` is an int, or a scalar array as inject_hyperparams gives.

    Returns the value unchanged (a Python int as an int) so the caller keeps it
    static when it is static.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if abs(int(value)) > MAX_MAGNITUDE:
            raise ValueError(
                f"{name}={value} is out of range: keep it within +-{MAX_MAGNITUDE:,} (2**29), "
                "so that natural + modifier and total - threshold fit in int32."
            )
        return int(value)
    if isinstance(value, (jax.Array, np.ndarray)):
        if value.shape != ():
            raise ValueError(f"{name} must be a scalar, got an array of shape {value.shape}.")
        if not (
            jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
        ):
            raise TypeError(f"{name} must be an integer, got an array of dtype {value.dtype}.")
        return value
    raise TypeError(
        f"{name} must be an int (the {name} of the saving throw), got "
        f"{type(value).__name__} {value!r}."
    )


def as_int32(value: Any) -> jax.Array:
    """An int32 scalar from an int, or from an injected array (rounded if float)."""
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        value = jnp.round(value)
    return value.astype(jnp.int32)


def check_flag(name: str, value: Any) -> bool:
    """Checks that ``value`` is a bool, or a concrete bool array (it selects code: static)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _is_array(value) and value.shape == () and value.dtype == jnp.bool_:
        return bool(_concrete(name, value))
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}.")


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def _concrete(name: str, value: Any) -> Any:
    """The value of a concrete array; a traced one cannot select code, so it is refused."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} selects code, so it must be known when the transformation is built, "
            f"but it is a traced array here. With optax.inject_hyperparams, name it in "
            f'static_args, e.g. inject_hyperparams(dice_roll, static_args=("{name}",)).'
        )
    return np.asarray(value).item()


def check_key(key: Any) -> None:
    """Checks ``key``: an int seed (also a 0-d integer array), a typed key, or a raw key.

    A 0-d integer array is what ``optax.inject_hyperparams`` makes of an int seed; it may
    be traced, and is never read here.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not MIN_SEED <= int(key) <= MAX_SEED:
            raise ValueError(
                f"key={key} is out of range: an int seed must lie in [-2**63, 2**63 - 1], "
                "as jax.random.key takes it (reduce it, e.g. key % 2**63)."
            )
        return
    if isinstance(key, (jax.Array, np.ndarray)):
        if key.shape == () and jnp.issubdtype(key.dtype, jnp.integer):
            return
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(
                    f"key must be a single PRNG key, got an array of {key.shape} keys; "
                    "index one out (e.g. keys[0])."
                )
            return
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return
        raise TypeError(
            "key must be an int seed (or a 0-d integer array), a typed key from "
            "jax.random.key, or a raw key from jax.random.PRNGKey (uint32[2]); got an "
            f"array of dtype {key.dtype} "
            f"and shape {key.shape}."
        )
    raise TypeError(
        "key must be an int seed, a typed key from jax.random.key, or a raw key "
        f"from jax.random.PRNGKey; got {type(key).__name__} {key!r}."
    )


def canonicalize_key(key: Any) -> jax.Array:
    """Returns ``key`` as a typed PRNG key (int seeds and raw keys are converted).

    Called inside ``init``, as optax does, so a transformation can be built before
    JAX initialises its backends.
    """
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.shape == ():  # an int seed as an array (inject_hyperparams), maybe traced
            return _key_from_int_array(key)
        return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    return key_from_seed(int(key))


def key_from_seed(seed: int) -> jax.Array:
    """The typed PRNG key of an int seed: one distinct key for every int64 seed.

    It is the key ``jax.random.key(seed)`` gives with 64-bit mode on, in either mode: key
    data ``[seed >> 32, seed & 0xFFFFFFFF]`` of the int64 (threefry, JAX's default PRNG).
    For seeds in [0, 2**32) that is also ``jax.random.key(seed)`` in JAX's default 32-bit
    mode; there, any other seed would keep only its low 32 bits (2**32 would give seed 0's
    key, and -1 that of 2**32 - 1). Another PRNG refuses the seeds outside [0, 2**32).

    Args:
      seed: an int in [MIN_SEED, MAX_SEED].

    Returns:
      A typed PRNG key (``jax.random.key``'s kind).

    Raises:
      ValueError: a seed outside the int64 range, or outside [0, 2**32) with a PRNG other
        than threefry in 32-bit mode.

    Example:
      >>> import jax
      >>> from optax_dice import key_from_seed
      >>> [jax.random.key_data(key_from_seed(s)).tolist() for s in (7, 2**32, -1)]
      [[0, 7], [1, 0], [4294967295, 4294967295]]
    """
    seed = int(seed)
    if not MIN_SEED <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed} is outside the int64 range [-2**63, 2**63 - 1].")
    if _NARROW_SEEDS[0] <= seed < _NARROW_SEEDS[1] or jax.config.jax_enable_x64:
        return jax.random.key(seed)
    if jax.config.jax_default_prng_impl != "threefry2x32":
        raise ValueError(
            f"seed={seed} needs more than 32 bits, which only the threefry PRNG keeps in "
            f"JAX's 32-bit mode (this one is {jax.config.jax_default_prng_impl}): give a seed "
            "in [0, 2**32), or a typed key."
        )
    data = np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32)
    return jax.random.wrap_key_data(data, impl="threefry2x32")


def _key_from_int_array(seed: jax.Array) -> jax.Array:
    """:func:`key_from_seed` of a 0-d integer array, traceable: the Python int's key.

    ``jax.random.key`` of a 32-bit signed array keeps no sign (-1 gives the key of
    2**32 - 1); threefry's key data of a negative seed is its int64's, sign-extended.
    """
    signed32 = jnp.issubdtype(seed.dtype, jnp.signedinteger) and seed.dtype.itemsize <= 4
    if not signed32 or jax.config.jax_default_prng_impl != "threefry2x32":
        return jax.random.key(seed)
    high = jnp.where(seed < 0, jnp.uint32(0xFFFFFFFF), jnp.uint32(0))
    data = jnp.stack([high, seed.astype(jnp.uint32)])
    return jax.random.wrap_key_data(data, impl="threefry2x32")


def check_rule_output(rule: Any, sides: int) -> None:
    """Traces ``rule`` once (``jax.eval_shape``, no computation) and checks that it gives
    a scalar float for scalar int32 ``natural``, ``total`` and ``threshold``."""
    name = getattr(rule, "__name__", type(rule).__name__)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    try:
        out = jax.eval_shape(lambda n, t, th: rule(n, t, sides, th), scalar, scalar, scalar)
    except Exception as err:
        raise TypeError(
            f"rule {name!r} failed when traced with int32 scalars natural, total, threshold "
            f"and sides={sides}: {type(err).__name__}: {err}. A rule must be a traceable "
            "function (natural, total, sides, threshold) -> scale: use jnp.where, not if."
        ) from err
    leaves = jax.tree.leaves(out)
    if (
        len(leaves) != 1
        or leaves[0].shape != ()
        or not jnp.issubdtype(leaves[0].dtype, jnp.floating)
    ):
        got = ", ".join(f"{x.dtype}{list(x.shape)}" for x in leaves) or "nothing"
        raise TypeError(
            f"rule {name!r} must return one scalar float scale (e.g. jnp.float32(...)) for "
            f"scalar inputs; it returned {got}."
        )
