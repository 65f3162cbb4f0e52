"""Exact scales for every face of the built-in rules."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_dice import rules


def _saving_throw_reference(natural: int, total: int, sides: int, threshold: int) -> float:
    """The DESIGN.md table, written out with exact fractions."""
    if natural == 1:
        return 0.0
    if natural == sides:
        return 1.0
    if total >= threshold:
        return float(Fraction(min(total, sides), sides))
    return float(max(-Fraction(threshold - total, sides), Fraction(-1)))


def _original_reference(natural: int, total: int, sides: int, threshold: int) -> float:
    """roll-to-train's get_scale_factor(roll), whose roll is the modified roll (total)."""
    del natural
    if total == 1:
        return -1.0
    if total == sides:
        return 1.0
    if total >= threshold:
        return float(Fraction(total - threshold, 100))
    return 0.0


@pytest.mark.parametrize(
    ("sides", "threshold", "modifier"),
    [(20, 15, 0), (20, 12, 2), (20, 10, -3), (6, 4, 0), (100, 50, 7), (20, 40, 0), (4, 1, 5)],
)
@pytest.mark.parametrize(
    ("rule", "reference"),
    [(rules.saving_throw, _saving_throw_reference), (rules.original, _original_reference)],
)
def test_every_face(sides, threshold, modifier, rule, reference):
    # One scalar roll at a time, as dice_roll makes them (XLA's vectorised CPU
    # division may differ from the correctly rounded quotient by one ulp).
    scalar_rule = jax.jit(rule, static_argnums=2)
    faces = np.arange(1, sides + 1)
    got = np.array(
        [scalar_rule(jnp.int32(f), jnp.int32(f + modifier), sides, threshold) for f in faces]
    )
    want = np.array([reference(f, f + modifier, sides, threshold) for f in faces])
    # Exact: the scales are the correctly rounded float32 of the table's fractions.
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert got.dtype == np.float32


def test_seed_table_d20_threshold_15():
    faces = jnp.arange(1, 21)
    got = np.asarray(rules.saving_throw(faces, faces, 20, 15))
    assert got[0] == 0.0  # critical failure discards the update
    assert got[19] == 1.0  # critical success applies it fully
    np.testing.assert_allclose(got[14:19], np.arange(15, 20) / 20)  # partial updates
    np.testing.assert_allclose(got[1:14], -(15 - np.arange(2, 15)) / 20)  # the wrong way


def test_failure_is_capped_at_minus_one():
    # threshold far above the die: the wrong-way step never exceeds a full step.
    assert float(rules.saving_throw(jnp.int32(2), jnp.int32(2), 20, 100)) == -1.0


def test_criticals_are_judged_on_the_natural_roll():
    # A natural 1 with a huge modifier is still a critical failure; a natural 20
    # with a huge penalty still a critical success.
    assert float(rules.saving_throw(jnp.int32(1), jnp.int32(31), 20, 15)) == 0.0
    assert float(rules.saving_throw(jnp.int32(20), jnp.int32(-10), 20, 15)) == 1.0
    assert int(rules.outcome(jnp.int32(1), jnp.int32(31), 20, 15)) == rules.CRITICAL_FAILURE
    assert int(rules.outcome(jnp.int32(20), jnp.int32(-10), 20, 15)) == rules.CRITICAL_SUCCESS


def test_success_is_capped_at_one():
    assert float(rules.saving_throw(jnp.int32(19), jnp.int32(25), 20, 15)) == 1.0


def test_resolve_rule():
    assert rules.resolve_rule("saving_throw") is rules.saving_throw
    assert rules.resolve_rule("original") is rules.original

    def mine(natural, total, sides, threshold):
        return jnp.float32(0.5)

    assert rules.resolve_rule(mine) is mine
    with pytest.raises(ValueError, match="rule='nat20'.*saving_throw"):
        rules.resolve_rule("nat20")
    with pytest.raises(TypeError, match="rule must be"):
        rules.resolve_rule(3)


def test_original_judges_criticals_on_the_modified_roll():
    # roll-to-train's example run: ability score 15 (+2), DC 12. A natural 18 makes 20, its
    # "critical success"; a natural 1 makes 3, a plain failure (0); a critical failure needs
    # a total of 1, which +2 never makes.
    faces = jnp.arange(1, 21)  # (vectorised: a quotient may be one ulp off, hence round)
    got = np.asarray(rules.original(faces, faces + 2, 20, 12))
    assert got[17] == 1.0 and got[0] == 0.0 and round(float(got[19]), 6) == 0.1
    assert -1.0 not in got
    # With modifier -1 a natural 2 is the critical failure, and a natural 20 (total 19) is not
    # a critical success: 19 >= 12 gives 0.07.
    got = np.asarray(rules.original(faces, faces - 1, 20, 12))
    assert got[1] == -1.0 and got[0] == 0.0 and round(float(got[19]), 6) == 0.07
    codes = np.asarray(rules.outcome_original(faces, faces + 2, 20, 12))
    assert codes[17] == rules.CRITICAL_SUCCESS and rules.CRITICAL_FAILURE not in codes
