"""normalize=True: a fair die, every scale divided by the ruleset's exact E[scale]."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_dice
from examples.bert.train_config import ConfigError, TrainConfig

DEFAULT = dict(threshold=12, modifier=2)  # E[scale] = 0.37


def test_odds_of_a_normalized_ruleset_have_mean_one_and_the_spread_divided():
    raw = optax_dice.odds(**DEFAULT)
    fair = optax_dice.odds(**DEFAULT, normalize=True)

    assert raw.expected_scale == pytest.approx(0.37, abs=1e-7)
    assert fair.expected_scale == pytest.approx(1.0, abs=1e-6)
    assert fair.std_scale == pytest.approx(raw.std_scale / 0.37, rel=1e-6)
    np.testing.assert_allclose(fair.scales, raw.scales / 0.37, rtol=1e-6)
    np.testing.assert_array_equal(fair.outcomes, raw.outcomes)  # the outcomes are the die's
    assert "normalized" in fair.rule and "normalized" not in raw.rule


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_every_roll_is_the_raw_scale_times_the_reciprocal_of_e(jit):
    raw = optax_dice.roll_sequence(7, 300, **DEFAULT)
    fair = optax_dice.roll_sequence(7, 300, **DEFAULT, normalize=True)
    tx = optax_dice.dice_roll(7, **DEFAULT, normalize=True)
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init({"w": jnp.ones(2)})
    applied = []
    for _ in range(20):
        updates, state = update({"w": jnp.ones(2)}, state)
        applied.append(float(updates["w"][0]))

    np.testing.assert_array_equal(fair.natural, raw.natural)  # the same die
    np.testing.assert_array_equal(fair.scale, raw.scale * np.float32(1 / 0.37))
    np.testing.assert_array_equal(applied, fair.scale[:20])


def test_the_mean_normalized_scale_is_one_over_many_rolls():
    scales = np.asarray(optax_dice.roll_sequence(0, 20_000, **DEFAULT, normalize=True).scale)
    # std 1.44 per roll: the mean of 20,000 rolls has a standard error of 0.0102; 4 of them.
    assert abs(scales.mean() - 1.0) < 0.041


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(threshold=15, disadvantage=True), "ruleset's is -0.2555: dividing by it would flip"),
        (dict(threshold=21, rule="original"), r"ruleset's is \+0.0000: dividing by it would blow"),
        (dict(DEFAULT, character="wizard"), "no exact E\\[scale\\]"),
        (dict(DEFAULT, normalize="yes"), "normalize"),
    ],
)  # fmt: skip
def test_normalize_is_refused_where_it_has_no_meaning(kwargs, message):
    kwargs.setdefault("normalize", True)
    with pytest.raises((ValueError, TypeError), match=message):
        optax_dice.dice_roll(0, **kwargs)


def test_normalize_through_accumulate_in_both_modes():
    for mode in ("per_mini_batch", "per_accumulation_step"):
        tx = optax_dice.accumulate(optax.sgd(1.0), 2, mode=mode, **DEFAULT, normalize=True)
        state = tx.init(jnp.zeros(1))
        for _ in range(2):
            _, state = tx.update(jnp.ones(1), state, jnp.zeros(1))
        dice = optax_dice.find_dice_state(state)
        expected = optax_dice.roll_sequence(0, int(dice.count), **DEFAULT, normalize=True)
        assert float(dice.scale) == float(expected.scale[-1])


def test_injected_hyperparameters_must_be_static_to_normalize():
    static = ("normalize", "threshold", "modifier")
    tx = optax.inject_hyperparams(optax_dice.dice_roll, static_args=static)(
        threshold=12, modifier=2, normalize=True
    )
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(params, state, params)
    assert float(updates["w"][0]) == float(
        optax_dice.roll_sequence(0, 1, **DEFAULT, normalize=True).scale[0]
    )

    traced = optax.inject_hyperparams(optax_dice.dice_roll, static_args=("normalize",))(
        threshold=12, modifier=2, normalize=True
    )
    with pytest.raises(TypeError, match="static_args"):
        jax.jit(traced.update)(params, traced.init(params), params)


def test_command_line_odds_normalized():
    out = subprocess.run(
        [sys.executable, "-m", "optax_dice", "odds", "--threshold", "12", "--modifier", "2",
         "--normalize"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    assert "normalized" in out
    assert "E[scale] = +1.0000" in out


def test_training_config_passes_normalize_and_refuses_a_losing_ruleset():
    assert TrainConfig(normalize=True).dice_kwargs["normalize"] is True
    assert TrainConfig().dice_kwargs["normalize"] is False
    with pytest.raises(ConfigError, match=r"--normalize: .*ruleset's is -0.2555"):
        TrainConfig(normalize=True, threshold=15, modifier=0, disadvantage=True)


def _exact_mean(sides, threshold, modifier, advantage=False, disadvantage=False, rule="st"):
    """E[scale] in exact fractions, from the rule table (no library code)."""
    from fractions import Fraction

    total = Fraction(0)
    for a in range(1, sides + 1):
        for b in range(1, sides + 1) if (advantage or disadvantage) else [None]:
            natural = a if b is None else (max(a, b) if advantage else min(a, b))
            weight = Fraction(1, sides) if b is None else Fraction(1, sides * sides)
            m = natural + modifier
            if rule == "original":
                scale = (
                    Fraction(-1) if m == 1
                    else Fraction(1) if m == sides
                    else Fraction(m - threshold, 100) if m >= threshold
                    else Fraction(0)
                )  # fmt: skip
            elif natural == 1:
                scale = Fraction(0)
            elif natural == sides:
                scale = Fraction(1)
            elif m >= threshold:
                scale = Fraction(min(m, sides), sides)
            else:
                scale = max(-Fraction(threshold - m, sides), Fraction(-1))
            total += weight * scale
    return total


@pytest.mark.parametrize(
    ("kwargs", "mean"),
    [
        (dict(threshold=15), 0.035),
        (dict(threshold=15, advantage=True), 0.3255),
        (dict(threshold=12, modifier=2), 0.37),
        (dict(threshold=12, modifier=2, rule="original"), 0.0735),
        (dict(dice="d6", threshold=4, modifier=1), None),
        (dict(dice="d12", threshold=6, disadvantage=True, modifier=3), None),
    ],
    ids=str,
)  # fmt: skip
def test_normalize_divides_by_each_rulesets_own_mean(kwargs, mean):
    # A normalize that divided by one hard-coded E[scale] (say 0.37) passes one ruleset only.
    sides = int(kwargs.get("dice", "d20")[1:])
    exact = _exact_mean(
        sides,
        kwargs["threshold"],
        kwargs.get("modifier", 0),
        kwargs.get("advantage", False),
        kwargs.get("disadvantage", False),
        kwargs.get("rule", "st"),
    )
    if mean is not None:
        assert float(exact) == pytest.approx(mean, abs=1e-12)  # DESIGN.md's exact odds
    raw = optax_dice.roll_sequence(3, 200, **kwargs)
    fair = optax_dice.roll_sequence(3, 200, **kwargs, normalize=True)
    # 1 / E[scale] is taken over the float32 scales, so it may be an ulp or two off 1 / exact.
    np.testing.assert_allclose(fair.scale, np.asarray(raw.scale) / float(exact), rtol=1e-6)
    assert optax_dice.odds(**kwargs, normalize=True).expected_scale == pytest.approx(1, abs=1e-6)
    assert optax_dice.Ruleset(**kwargs).expected_scale == pytest.approx(float(exact), abs=1e-7)
