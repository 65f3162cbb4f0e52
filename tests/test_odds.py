"""odds: exact figures from DESIGN.md, and agreement with seeded rolls."""

import jax
import numpy as np
import pytest
from scipy import stats

import optax_dice


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"threshold": 15}, 0.035),
        ({"threshold": 15, "advantage": True}, 0.3255),
        ({"threshold": 15, "disadvantage": True}, -0.2555),
        ({"threshold": 12, "modifier": 2}, 0.37),
        ({"threshold": 15, "rule": "original"}, 0.005),  # (1 + 0..4/100 - 1) / 20
    ],
)
def test_expected_scale_matches_design(kwargs, expected):
    assert optax_dice.odds(**kwargs).expected_scale == pytest.approx(expected, abs=1e-7)


def test_outcome_probabilities_d20_15():
    o = optax_dice.odds(dice="d20", threshold=15)
    assert o.outcome_probs == pytest.approx(
        {"critical failure": 0.05, "failure": 0.65, "success": 0.25, "critical success": 0.05}
    )
    assert o.face_probs.sum() == pytest.approx(1.0)
    # std from the definition, by hand: E[s^2] - E[s]^2.
    faces = np.arange(1, 21)
    s = np.where(faces >= 15, faces / 20, -(15 - faces) / 20)
    s[0], s[19] = 0.0, 1.0
    assert o.std_scale == pytest.approx(np.sqrt((s**2).mean() - s.mean() ** 2))
    assert o.p_negative == pytest.approx(0.65)


@pytest.mark.parametrize("sides", [2, 6, 20, 100])
def test_face_probabilities_are_those_of_two_dice_enumerated(sides):
    # Every pair of faces, counted: the higher face for advantage, the lower for
    # disadvantage. Swapping the two (or using one die) fails this exactly.
    a, b = np.meshgrid(np.arange(1, sides + 1), np.arange(1, sides + 1))
    high = np.bincount(np.maximum(a, b).ravel(), minlength=sides + 1)[1:] / sides**2
    low = np.bincount(np.minimum(a, b).ravel(), minlength=sides + 1)[1:] / sides**2
    for kw, want in (
        ({}, np.full(sides, 1 / sides)),
        ({"advantage": True}, high),
        ({"disadvantage": True}, low),
    ):
        probs = optax_dice.odds(dice=sides, threshold=2, **kw).face_probs
        np.testing.assert_allclose(probs, want, rtol=1e-12, atol=0)
        assert probs.sum() == pytest.approx(1.0)


def test_advantage_favours_the_top_face_exactly():
    adv = optax_dice.odds(threshold=15, advantage=True).face_probs
    dis = optax_dice.odds(threshold=15, disadvantage=True).face_probs
    assert (adv[19], adv[0]) == (pytest.approx(39 / 400), pytest.approx(1 / 400))
    assert (dis[0], dis[19]) == (pytest.approx(39 / 400), pytest.approx(1 / 400))


@pytest.mark.parametrize("kwargs", [{}, {"advantage": True}, {"disadvantage": True}])
def test_100000_seeded_rolls_match_the_odds(kwargs):
    # Seeded, so deterministic; the chi-square threshold only documents how far
    # the counts are from the exact odds (p > 0.001 would fail 1 seed in 1,000).
    n = 100_000
    seq = optax_dice.roll_sequence(jax.random.key(2026), n, threshold=15, **kwargs)
    o = optax_dice.odds(threshold=15, **kwargs)
    counts = np.bincount(np.asarray(seq.natural), minlength=21)[1:]
    result = stats.chisquare(counts, o.face_probs * n)
    assert result.pvalue > 1e-3, (counts, result)
    # Mean scale within 4 standard errors of E[scale].
    mean = float(np.asarray(seq.scale, np.float64).mean())
    assert abs(mean - o.expected_scale) < 4 * o.std_scale / np.sqrt(n)


def test_table_names_every_outcome_and_warns_when_unlearning():
    text = str(optax_dice.odds(threshold=15, disadvantage=True))
    for name in ("critical failure", "failure", "success", "critical success"):
        assert name in text
    assert "E[scale] = -0.2555" in text
    assert "unlearns" in text
    assert "unlearns" not in str(optax_dice.odds(threshold=12, modifier=2))


def test_custom_rule_is_enumerated():
    o = optax_dice.odds(dice="d4", threshold=3, rule=lambda n, t, s, th: (n * 1.0) / s)
    assert o.expected_scale == pytest.approx((1 + 2 + 3 + 4) / 16)


def test_odds_refuses_bad_input():
    with pytest.raises(ValueError, match="dice='d0'"):
        optax_dice.odds(dice="d0")


def test_odds_refuses_a_die_too_large_to_enumerate_and_names_the_limit():
    # d100000000 is a valid die for dice_roll, but enumerating it took gigabytes.
    optax_dice.dice_roll(dice="d100000000")
    with pytest.raises(ValueError, match=r"limit of 1,000,000 faces"):
        optax_dice.odds(dice="d100000000")
    with pytest.raises(ValueError, match="limit of 1,000,000 faces"):
        optax_dice.odds(dice=1_000_001)
    assert optax_dice.odds(dice=1_000_000, threshold=2).face_probs.shape == (1_000_000,)
