"""odds: exact figures from DESIGN.md, and agreement with seeded rolls."""

import re
from pathlib import Path

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
        # roll-to-train's example run, as its code computes it: m = natural + 2, m == 20
        # (a natural 18) is +1, m in 12..19 or 21, 22 gives (m - 12) / 100, m == 1 never.
        ({"threshold": 12, "modifier": 2, "rule": "original"}, (1 + 0.47) / 20),
        # Sneak Attack: 0.37 plus 0.2 x the scales of m >= 12 (naturals 10..20): 9.2 / 20.
        ({"threshold": 12, "modifier": 2, "character": "rogue"}, 0.37 + 0.2 * 9.2 / 20),
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


def test_original_odds_table_judges_on_the_modified_roll():
    o = optax_dice.odds(threshold=12, modifier=2, rule="original")
    assert o.expected_scale == pytest.approx(0.0735, abs=1e-7)
    assert o.outcome_probs["critical failure"] == 0.0
    assert o.outcome_probs["critical success"] == pytest.approx(0.05)
    assert o.outcomes[17] == 3  # a natural 18 (total 20) is the critical success
    assert "critical success   18 " in str(o)
    assert "success            10-17,19-20" in str(o)


def test_mechanics_with_memory_are_estimated_with_a_standard_error():
    kwargs = {"character": "wizard", "encounter_chance": 0.1, "experience": True}
    est = optax_dice.odds(threshold=12, modifier=2, steps=100, runs=3, seed=5, **kwargs)
    assert isinstance(est, optax_dice.OddsEstimate) and not est.exact
    # Reproducible: the mean over the runs of roll_sequence with seeds 5, 6, 7 (to 1e-6: the
    # runs are vmapped, where XLA's vectorised division may round a scale one ulp off).
    means = [
        float(
            np.asarray(
                optax_dice.roll_sequence(s, 100, threshold=12, modifier=2, **kwargs).scale,
                np.float64,
            ).mean()
        )
        for s in (5, 6, 7)
    ]
    assert est.expected_scale == pytest.approx(np.mean(means), rel=1e-6)
    assert est.standard_error == pytest.approx(np.std(means, ddof=1) / np.sqrt(3), rel=1e-4)
    text = str(est)
    assert "ESTIMATE over 3 seeded runs (seeds 5..7) of 100 updates" in text
    assert "(standard error)" in text and "Arcane Recovery" in text and "Loss Dragon" in text


def test_an_estimate_agrees_with_the_exact_odds_within_its_standard_error():
    # One update per run: the level bonus is still 1 (level 1), so the Rogue with experience
    # has the Rogue's exact odds; 4,000 runs put the estimate within 4 standard errors.
    exact = optax_dice.odds(threshold=12, modifier=2, character="rogue")
    est = optax_dice.odds(
        threshold=12, modifier=2, character="rogue", experience=True, steps=1, runs=4000
    )
    assert est.standard_error == pytest.approx(exact.std_scale / np.sqrt(4000), rel=0.05)
    assert abs(est.expected_scale - exact.expected_scale) < 4 * est.standard_error
    assert est.fired_per_1000["Sneak Attack"] == pytest.approx(550, abs=4 * 7.9)  # p = 0.55


def test_bad_estimate_arguments():
    with pytest.raises(ValueError, match="runs must be an int >= 2"):
        optax_dice.odds(character="fighter", runs=1)
    with pytest.raises(ValueError, match="is unknown"):
        optax_dice.odds(character="bard")


RULESET_ROW = re.compile(r"^\| (d20, [^|]+) \| ([+-][0-9.]+)[^|]* \| ([0-9.]+) \|$", re.M)


def assert_ruleset_rows_are_what_odds_computes(texts: list[str]) -> None:
    """Each ruleset table row (``| d20, threshold 15, advantage | +0.3255 | 0.5838 |``) in
    ``texts`` states what ``odds`` computes; at least 7 rows."""
    rows = [r for text in texts for r in RULESET_ROW.findall(text)]
    assert len(rows) >= 7
    for label, mean, std in rows:
        kwargs: dict = {"dice": "d20"}
        for part in label.split("(")[0].split(", ")[1:]:
            name, _, value = part.strip().partition(" ")
            if name in ("threshold", "modifier"):
                kwargs[name] = int(value)
            elif name in ("rule", "character"):
                kwargs[name] = value
            else:
                kwargs[name] = True
        got = optax_dice.odds(**kwargs)
        assert (f"{got.expected_scale:+.4f}", f"{got.std_scale:.4f}") == (mean, std), label


def test_the_readme_ruleset_table_is_what_odds_computes():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert_ruleset_rows_are_what_odds_computes([readme])


def test_an_estimate_seeded_beyond_32_bits_does_not_wrap_onto_seed_0():
    # An int32 array of seeds wrapped 2**32 to 0: the estimate was seed 0's, labelled 2**32.
    kwargs = {"character": "wizard", "threshold": 12, "steps": 50, "runs": 2}
    low = optax_dice.odds(seed=0, **kwargs)
    high = optax_dice.odds(seed=2**32, **kwargs)
    assert high.expected_scale != low.expected_scale
    means = [
        np.asarray(optax_dice.roll_sequence(s, 50, character="wizard", threshold=12).scale)
        .astype(np.float64)
        .mean()
        for s in (2**32, 2**32 + 1)
    ]
    assert high.expected_scale == pytest.approx(np.mean(means), rel=1e-6)
    assert "seeds 4294967296..4294967297" in str(high)
    top = optax_dice.odds(seed=2**63 - 2, **kwargs)  # the last two int64 seeds
    assert top.expected_scale not in (low.expected_scale, high.expected_scale)
    with pytest.raises(ValueError, match="out of range"):
        optax_dice.odds(seed=2**63 - 1, **kwargs)  # its second run's seed is past int64


def test_odds_and_the_game_read_the_same_ability_table(monkeypatch):
    # The Rogue's rule is written once, in game.CLASSES: change it there and both the exact
    # odds and the game itself change with it.
    from optax_dice import game

    exact = optax_dice.odds(threshold=12, modifier=2, character="rogue")
    assert exact.expected_scale == pytest.approx(0.462, abs=1e-6)
    sneak = game.Ability("Sneak Attack", lambda t: t.m >= 10, 2.0)
    monkeypatch.setitem(game.CLASSES, "rogue", (sneak,))
    changed = optax_dice.odds(threshold=12, modifier=2, character="rogue")
    plain = optax_dice.odds(threshold=12, modifier=2)
    want = np.where(plain.faces + 2 >= 10, 2.0, 1.0) * plain.scales
    np.testing.assert_array_equal(changed.scales, want)
    seq = optax_dice.roll_sequence(0, 50, character="rogue", threshold=12, modifier=2)
    doubled = np.asarray(seq.total) >= 10
    np.testing.assert_array_equal(
        np.asarray(seq.scale), np.where(doubled, 2 * np.asarray(seq.dice_scale), seq.dice_scale)
    )
