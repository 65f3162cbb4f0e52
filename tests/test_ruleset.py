"""optax_dice.Ruleset: one checked value, taken by dice_roll, accumulate, roll_sequence, odds."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_dice
from optax_dice import rules

KEYWORDS = [
    {},
    {"dice": "d6", "threshold": 4, "advantage": True},
    {"threshold": 12, "modifier": 2, "rule": "original"},
    {"threshold": 12, "modifier": 2, "normalize": True},
    {"character": "wizard", "encounter_chance": 0.3, "experience": True},
    {"character": "rogue", "threshold": 12},
]


def _run(tx, n=6):
    params = {"w": jnp.ones(3)}
    state, out = tx.init(params), []
    for i in range(n):
        updates, state = jax.jit(tx.update)(params, state, params, value=jnp.float32(1 + i))
        out.append(updates)
    return out, state


@pytest.mark.parametrize("kwargs", KEYWORDS, ids=str)
def test_a_ruleset_gives_what_its_keywords_give(kwargs):
    ruleset = optax_dice.Ruleset(**kwargs)
    chex.assert_trees_all_equal(
        _run(optax_dice.dice_roll(3, ruleset)), _run(optax_dice.dice_roll(3, **kwargs))
    )
    for mode in ("per_mini_batch", "per_accumulation_step"):
        by_ruleset = optax_dice.accumulate(optax.sgd(1.0), 2, mode=mode, key=3, ruleset=ruleset)
        by_keywords = optax_dice.accumulate(optax.sgd(1.0), 2, mode=mode, key=3, **kwargs)
        chex.assert_trees_all_equal(_run(by_ruleset), _run(by_keywords))
    chex.assert_trees_all_equal(
        optax_dice.roll_sequence(3, 20, ruleset), optax_dice.roll_sequence(3, 20, **kwargs)
    )
    a, b = optax_dice.odds(ruleset, steps=20, runs=2), optax_dice.odds(steps=20, runs=2, **kwargs)
    assert str(a) == str(b)


def test_a_ruleset_and_keywords_together_are_refused():
    ruleset = optax_dice.Ruleset(threshold=12)
    calls = [
        lambda: optax_dice.dice_roll(0, ruleset, threshold=10),
        lambda: optax_dice.dice_roll(0, ruleset, character="rogue"),
        lambda: optax_dice.accumulate(optax.sgd(1.0), 2, ruleset=ruleset, modifier=1),
        lambda: optax_dice.roll_sequence(0, 3, ruleset, dice="d6"),
        lambda: optax_dice.odds(ruleset, advantage=True),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="a ruleset or the ruleset's keywords, not both"):
            call()
    with pytest.raises(TypeError, match="must be an optax_dice.Ruleset"):
        optax_dice.dice_roll(0, {"threshold": 12})
    with pytest.raises(TypeError, match="must be an optax_dice.Ruleset"):
        optax_dice.odds("d20")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['treshold'\]"):
        optax_dice.roll_sequence(0, 3, treshold=12)


def test_inject_hyperparams_takes_a_ruleset_with_static_threshold_and_modifier():
    ruleset = optax_dice.Ruleset(threshold=12, modifier=2)
    static = ("threshold", "modifier")
    tx = optax.inject_hyperparams(optax_dice.dice_roll, static_args=static)(3, ruleset)
    want = optax_dice.roll_sequence(3, 4, ruleset).scale
    state = tx.init(jnp.zeros(2))
    for i in range(4):
        updates, state = jax.jit(tx.update)(jnp.ones(2), state)
        assert float(updates[0]) == float(want[i])


def test_fields_are_kept_in_one_spelling_and_frozen():
    a = optax_dice.Ruleset(dice=20, character="Wizard", encounter_chance=0, experience=np.True_)
    b = optax_dice.Ruleset(dice="D20", character="wizard", experience=True)
    assert a == b and a.dice == "d20" and a.encounter_chance is None and a.experience is True
    assert a.has_game and not optax_dice.Ruleset().has_game
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.threshold = 3
    c = dataclasses.replace(a, threshold=12)
    assert c.threshold == 12 and c.character == "wizard"
    with pytest.raises(ValueError, match="at least 2 sides"):
        dataclasses.replace(a, dice="d1")  # checked again
    assert optax_dice.Ruleset(dice="d6").sides == 6
    np.testing.assert_array_equal(
        optax_dice.Ruleset(dice="d3", disadvantage=True).natural_probs() * 9, [5.0, 3.0, 1.0]
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dice": "d1"}, "at least 2 sides"),
        ({"dice": 2.5}, "dice must be an int"),
        ({"threshold": 1.5}, "threshold must be an int"),
        ({"modifier": 2**30}, "out of range"),
        ({"advantage": True, "disadvantage": True}, "cancel out"),
        ({"rule": "nat20"}, "is unknown"),
        ({"normalize": "yes"}, "normalize must be True or False"),
        ({"character": "bard"}, "is unknown"),
        ({"encounter_chance": 2.0}, "not a probability"),
        ({"experience": 1}, "experience must be True or False"),
        ({"normalize": True, "threshold": 21, "rule": "original"}, "blow up"),
        ({"normalize": True, "threshold": 21}, "flip"),
    ],
)
def test_a_ruleset_refuses_what_dice_roll_refuses_with_the_same_message(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as direct:
        optax_dice.Ruleset(**kwargs)
    with pytest.raises((ValueError, TypeError), match=match) as via:
        optax_dice.dice_roll(0, **kwargs)
    assert str(direct.value) == str(via.value)


@pytest.mark.parametrize("flag", [np.True_, np.bool_(True), jnp.array(True), np.array(True)])
@pytest.mark.parametrize(
    "game", [{"character": "wizard"}, {"encounter_chance": 0.1}, {"experience": True}], ids=str
)
def test_normalize_with_the_game_is_refused_whatever_the_bool(flag, game):
    # numpy and concrete jax bools are bools: np.True_ used to slip past an `is True` test.
    with pytest.raises(ValueError, match="no exact E\\[scale\\]"):
        optax_dice.Ruleset(normalize=flag, **game)
    for call in (
        lambda: optax_dice.dice_roll(0, normalize=flag, **game),
        lambda: optax_dice.roll_sequence(0, 3, normalize=flag, **game),
        lambda: optax_dice.odds(normalize=flag, **game),
        lambda: optax_dice.accumulate(optax.sgd(1.0), 2, normalize=flag, **game),
    ):
        with pytest.raises(ValueError, match="no exact E\\[scale\\]"):
            call()
    assert optax_dice.Ruleset(normalize=flag, threshold=12).normalize is True


def test_a_traced_normalize_is_refused_with_a_clear_message():
    @jax.jit
    def build(flag):
        optax_dice.Ruleset(normalize=flag)
        return flag

    with pytest.raises(TypeError, match="normalize selects code.*static_args"):
        build(jnp.array(True))
    with pytest.raises(ValueError, match="must be a scalar"):
        optax_dice.Ruleset(threshold=jnp.array([1, 2]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"threshold": 12, "modifier": 2},
        {"threshold": 15, "advantage": True},
        {"threshold": 15, "disadvantage": True},
        {"dice": "d6", "threshold": 4, "modifier": -3},
        {"dice": "d100", "threshold": 60, "modifier": 7},
        {"threshold": 12, "modifier": 2, "rule": "original"},
        {"dice": "d8", "threshold": 3, "modifier": 9, "rule": "original"},
        {"threshold": 12, "modifier": 2, "normalize": True},
        {"dice": "d12", "threshold": 7, "advantage": True, "normalize": True},
    ],
    ids=str,
)
def test_the_numpy_scales_are_the_jax_rules_bit_for_bit(kwargs):
    # Ruleset computes E[scale] (and normalize's 1 / E[scale]) with numpy, starting no JAX:
    # its scales must be exactly those the die applies, one roll at a time, jitted or not.
    # (Not a vectorised evaluation over all faces: XLA's vectorised float32 division may
    # round a quotient one ulp off; the scalar one is correctly rounded, as numpy's.)
    ruleset = optax_dice.Ruleset(**kwargs)
    totals, scales = ruleset.face_scales()
    natural = jnp.asarray(totals - ruleset.modifier)
    args = (natural, jnp.asarray(totals), ruleset.sides, jnp.int32(ruleset.threshold))

    def one(face):
        n, t = face
        return ruleset.rule_fn(n, t, ruleset.sides, jnp.int32(ruleset.threshold))

    jitted = jax.jit(lambda n, t: jax.lax.map(one, (n, t)))(natural, jnp.asarray(totals))
    eager = [one((natural[i], jnp.asarray(totals)[i])) for i in range(0, ruleset.sides, 7)]
    np.testing.assert_array_equal(scales, np.asarray(jitted))
    np.testing.assert_array_equal(scales[::7], np.asarray(eager))
    codes = rules.numpy_outcome(ruleset.rule)(
        np.asarray(natural), totals, ruleset.sides, ruleset.threshold
    )
    want = rules.outcome_for(ruleset.rule)(*args)
    np.testing.assert_array_equal(codes, np.asarray(want))


def test_a_custom_rule_is_evaluated_with_jax():
    def half(natural, total, sides, threshold):
        return jnp.where(total >= threshold, jnp.float32(0.5), jnp.float32(-0.25))

    ruleset = optax_dice.Ruleset(threshold=11, rule=half, normalize=True)  # E = 0.125
    assert ruleset.expected_scale == pytest.approx(1.0, abs=1e-7)
    assert float(ruleset.rule_fn(jnp.int32(11), jnp.int32(11), 20, jnp.int32(11))) == 4.0


NO_BACKEND = """
import jax
from jax._src import xla_bridge
import optax_dice
rulesets = [
    optax_dice.Ruleset(threshold=12, modifier=2, normalize=True),
    optax_dice.Ruleset(dice="d6", threshold=4, advantage=True, normalize=True, rule="original"),
    optax_dice.Ruleset(dice=100, threshold=60, disadvantage=True, modifier=50, normalize=True),
    optax_dice.Ruleset(character="rogue", threshold=12),
    optax_dice.Ruleset(character="cleric", encounter_chance=0.1, experience=True),
    optax_dice.Ruleset(rule=lambda n, t, s, th: (t >= th) * jax.numpy.float32(1.0)),
]
facts = [(r.sides, r.has_game, r.natural_probs().sum()) for r in rulesets]
facts += [rulesets[i].expected_scale for i in (0, 1, 2, 3)]
print(len(xla_bridge._backends))
{after}
print(len(xla_bridge._backends))
"""


def test_making_a_ruleset_starts_no_jax_backend():
    out = subprocess.run(
        [sys.executable, "-c", NO_BACKEND.format(after="jax.numpy.zeros(1)")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # None before any array; the probe sees one once an array is made.
    assert out == ["0", "1"]


def test_dice_roll_keyword_defaults_are_the_rulesets():
    # dice_roll keeps real defaults in its signature (optax.inject_hyperparams reads them);
    # with a ruleset they must be left as they are, so they must be the ruleset's.
    import inspect

    params = inspect.signature(optax_dice.dice_roll).parameters
    fields = {f.name: f.default for f in dataclasses.fields(optax_dice.Ruleset)}
    assert {name: params[name].default for name in fields} == fields
    assert list(params)[:2] == ["key", "ruleset"]
