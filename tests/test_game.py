"""The game: classes, monsters, experience and levels against a plain-Python reference.

``Reference`` below is roll-to-train's game written from the rule table of issue 10 (and
the structure of ``roll_to_train.py``: the monster is checked on the last micro-batch of a
window, acts, then retreats after 3 steps; the class ability sees the roll after it; the
level bonus uses the level before the step's XP). It is fed the naturals of
``roll_sequence`` and the game's uniform draws, derived here from the same key chain with
``jax.random`` spelled out (not with ``game.draws``, so a game that draws the wrong number
cannot agree with itself), and must give the same per-step factors as the jitted
transformation, bit for bit, over 10,000 steps. Factors are float32, multiplied in the
anchor's order.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_dice
from optax_dice import game

F32 = np.float32
N = 10_000
DC = {0: 12, 1: 15, 2: 14}
EFFECT = {0: 0.5, 1: 2.0, 2: 1.5}


def _saving_throw(natural: int, total: int, sides: int, threshold: int) -> F32:
    if natural == 1:
        return F32(0.0)
    if natural == sides:
        return F32(1.0)
    if total >= threshold:
        return F32(float(Fraction(min(total, sides), sides)))
    return F32(float(max(-Fraction(threshold - total, sides), Fraction(-1))))


def _original(natural: int, total: int, sides: int, threshold: int) -> F32:
    del natural  # roll-to-train judges its roll, the modified one
    if total == 1:
        return F32(-1.0)
    if total == sides:
        return F32(1.0)
    if total >= threshold:
        return F32(float(Fraction(total - threshold, 100)))
    return F32(0.0)


class Reference:
    """roll-to-train's game, one micro-batch at a time, in plain Python."""

    def __init__(self, character, chance, experience, threshold, every_k=1, sides=20, rule=None):
        self.character, self.chance, self.experience = character, chance, experience
        self.threshold, self.every_k, self.sides = threshold, every_k, sides
        self.rule = rule or _saving_throw
        self.counter = 0
        self.monster, self.encounter_steps = None, 0
        self.level, self.xp, self.need = 1, 0, 1000
        self.charges = {"fighter": [2, 1], "wizard": [3], "cleric": [3], "paladin": [3]}.get(
            character, []
        )
        self.raging, self.rage_duration = False, 0
        self.last_loss = None
        self.fired = []  # names, per step

    def step(self, natural, modifier, u_encounter, pick, u_divine, loss_value=1.0):
        m = natural + modifier
        f = self.rule(natural, m, self.sides, self.threshold)  # loss = loss * scale
        fired = []
        self.counter += 1
        if self.counter % self.every_k == 0:  # start_encounter
            if self.monster is None and u_encounter < self.chance:
                self.monster, self.encounter_steps = pick, 0
        acted = self.monster
        if self.monster is not None:  # update_encounter
            self.encounter_steps += 1
            if m < DC[self.monster]:
                f = f * F32(EFFECT[self.monster])
            if self.encounter_steps >= 3:
                self.monster, self.encounter_steps = None, 0
        c = self.character
        if c == "wizard":
            if m >= 15 and self.charges[0] > 0:
                self.charges[0] -= 1
                f = f * F32(1.5)
                fired.append("Arcane Recovery")
        elif c == "rogue":
            if m >= 12:
                f = f * F32(1 + 0.2 * 1)
                fired.append("Sneak Attack")
        elif c == "fighter":
            if m < 10 and self.charges[0] > 0:
                self.charges[0] -= 1
                f = f * F32(0.5)
                fired.append("Second Wind")
            elif m >= 18 and self.charges[1] > 0:
                self.charges[1] -= 1
                f = f * F32(2.0)
                fired.append("Action Surge")
        elif c == "cleric":
            loss = F32(loss_value) * f
            if (
                self.last_loss is not None
                and loss > F32(1.5) * self.last_loss
                and self.charges[0] > 0
            ):
                self.charges[0] -= 1
                healed = F32(1.1) * self.last_loss
                f = f * (healed / loss)  # the loss becomes 1.1 x last loss
                loss = healed
                fired.append("Healing Word")
            if m == 1 and u_divine < 0.1:
                f = f * F32(0.5)
                fired.append("Divine Intervention")
            else:
                self.last_loss = loss
        elif c == "barbarian":
            if m >= 16 and not self.raging:
                self.raging, self.rage_duration = True, 3
                fired.append("Rage")
            if self.raging:
                f = f * F32(1.5)
                self.rage_duration -= 1
                if self.rage_duration <= 0:
                    self.raging = False
            if m >= 18:
                f = f * F32(2.0)
                fired.append("Reckless Attack")
        elif c == "paladin":
            r = max(m, 8)  # Aura of Protection
            if r >= 15 and self.charges[0] > 0:
                self.charges[0] -= 1
                f = f * F32(1.5 + 0.1 * (r - 15))
                fired.append("Divine Smite")
        if self.experience:
            f = f * F32(1 + 0.1 * (self.level - 1))
            if m >= self.threshold:
                gain = int(m * 10)
                if self.monster is not None:
                    gain *= 2
                self.xp += gain
                while self.xp >= self.need:
                    self.level += 1
                    self.xp -= self.need
                    self.need = int(1000 * 1.5 ** (self.level - 1))
        self.fired.append(fired)
        return F32(f), (-1 if acted is None else acted), self.level, self.xp


def _spelled_out_draws(roll_key):
    """The game's draws of one update, as the docs state them: from fold_in(roll key, 1),
    split in three: a uniform for the encounter, the monster met, a uniform for Divine
    Intervention."""
    k_enc, k_pick, k_div = jax.random.split(jax.random.fold_in(roll_key, 1), 3)
    return (
        jax.random.uniform(k_enc, (), jnp.float32),
        jax.random.randint(k_pick, (), 0, 3, jnp.int32),
        jax.random.uniform(k_div, (), jnp.float32),
    )


@functools.lru_cache(maxsize=4)
def _draws(seed: int, n: int):
    """The game's draws on dice_roll's key chain (split once per update, fresh half)."""

    def step(key, _):
        next_key, roll_key = jax.random.split(key)
        return next_key, _spelled_out_draws(roll_key)

    _, out = jax.jit(lambda k: jax.lax.scan(step, k, None, length=n))(jax.random.key(seed))
    return [np.asarray(x) for x in out]


@functools.lru_cache(maxsize=4)
def _naturals(seed: int, n: int) -> np.ndarray:
    """The die of each update: roll_sequence's (tested equal to dice_roll's elsewhere)."""
    return np.asarray(optax_dice.roll_sequence(seed, n).natural)


def _train(tx, n, losses=None, every=None):
    """n updates of tx on a scalar, as one jitted lax.scan; returns the per-step dice states."""
    params = jnp.zeros((), jnp.float32)
    losses = jnp.ones((n,), jnp.float32) if losses is None else jnp.asarray(losses, jnp.float32)

    def step(state, loss):
        updates, state = tx.update(jnp.ones((), jnp.float32), state, params, value=loss)
        dice = optax_dice.find_dice_state(state)
        return state, (updates, dice._replace(rng_key=jax.random.key_data(dice.rng_key)))

    _, (updates, dice) = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))(tx.init(params), losses)
    return np.asarray(updates), dice


def _losses(seed: int, n: int) -> np.ndarray:
    """Losses around 1 with occasional spikes (x3), so Healing Word has something to heal."""
    rng = np.random.default_rng(seed)
    spikes = np.where(rng.random(n) < 0.01, 3.0, 1.0)
    return (rng.uniform(0.5, 1.5, n) * spikes).astype(np.float32)


def _reference_run(seed, n, kwargs, losses=None, every_k=1):
    threshold, modifier = kwargs.get("threshold", 15), kwargs.get("modifier", 0)
    rule = _original if kwargs.get("rule") == "original" else _saving_throw
    naturals = _naturals(seed, n)
    u_enc, pick, u_div = _draws(seed, n)
    ref = Reference(
        kwargs.get("character"),
        kwargs.get("encounter_chance", 0.0),
        kwargs.get("experience", False),
        threshold,
        every_k=every_k,
        rule=rule,
    )
    losses = np.ones(n, np.float32) if losses is None else losses
    out = [
        ref.step(
            int(naturals[i]), modifier, float(u_enc[i]), int(pick[i]), float(u_div[i]), losses[i]
        )
        for i in range(n)
    ]
    factors, monsters, levels, xps = (np.asarray(x) for x in zip(*out, strict=True))
    return ref, factors.astype(np.float32), monsters, levels, xps


CASES = [  # every class (each also alone, on first updates, below), monsters, experience
    {"character": "fighter", "threshold": 12},
    {"character": "wizard", "encounter_chance": 0.1, "threshold": 12},
    {"character": "rogue", "threshold": 12},
    {
        "character": "cleric",
        "encounter_chance": 0.1,
        "experience": True,
        "threshold": 12,
        "rule": "original",
    },
    {"character": "barbarian", "encounter_chance": 0.1, "experience": True, "threshold": 12},
    {"character": "paladin", "encounter_chance": 0.3, "experience": True, "modifier": -1},
    {"encounter_chance": 0.1, "threshold": 12, "modifier": 2},
    {"experience": True, "threshold": 12, "modifier": 2},
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_the_transformation_plays_the_reference_game_over_10000_steps(kwargs):
    seed = 2024
    losses = _losses(seed, N)
    ref, factors, monsters, levels, xps = _reference_run(seed, N, kwargs, losses)
    updates, dice = _train(optax_dice.dice_roll(seed, **kwargs), N, losses)
    np.testing.assert_array_equal(np.asarray(dice.scale), factors)
    np.testing.assert_array_equal(updates, factors)  # the scale is what the update gets
    np.testing.assert_array_equal(np.asarray(dice.monster), monsters)
    if kwargs.get("experience"):
        np.testing.assert_array_equal(np.asarray(dice.level), levels)
        np.testing.assert_array_equal(np.asarray(dice.xp), xps)
        assert levels[-1] >= 10  # the level-up loop and the level bonus were exercised
    else:
        assert (np.asarray(dice.level) == 1).all() and (np.asarray(dice.xp) == 0).all()
    names = game.ABILITIES[kwargs.get("character")]
    fired = np.asarray(dice.fired)
    for bit, name in enumerate(names):
        want = np.array([name in f for f in ref.fired])
        np.testing.assert_array_equal((fired >> bit) & 1 == 1, want, err_msg=name)
        assert want.any(), f"{name} never fired: the case does not test it"
    if kwargs.get("encounter_chance"):
        assert {0, 1, 2} <= set(monsters.tolist())
    # The preview is what training applies.
    seq = optax_dice.roll_sequence(seed, N, losses=losses, **kwargs)
    np.testing.assert_array_equal(np.asarray(seq.scale), factors)
    np.testing.assert_array_equal(np.asarray(seq.monster), monsters)
    np.testing.assert_array_equal(np.asarray(seq.level), np.asarray(dice.level))
    np.testing.assert_array_equal(np.asarray(seq.xp), np.asarray(dice.xp))
    np.testing.assert_array_equal(np.asarray(seq.dice_scale), np.asarray(dice.dice_scale))


def test_charges_run_out_and_counters_show():
    kwargs = {"character": "fighter", "threshold": 12}
    _, dice = _train(optax_dice.dice_roll(5, **kwargs), 200)
    charges = np.asarray(dice.charges)
    assert charges[0].tolist() in ([2, 1], [1, 1], [2, 0])  # one charge may go on step 1
    assert charges[-1].tolist() == [0, 0]
    assert (np.diff(charges, axis=0) <= 0).all()
    fired = np.asarray(dice.fired)
    assert int((fired & 1).sum()) == 2 and int((fired >> 1 & 1).sum()) == 1


def test_monsters_stay_three_steps_and_appear_at_the_rate_asked():
    # 20,000 updates at chance 0.2: an encounter blocks 3 updates, so encounters start at a
    # rate of p / (1 + 2p) = 0.142857 per update; 5 standard errors (binomial approximation,
    # sd 0.0025) is 0.0125. Each monster is met about a third of the time.
    seq = optax_dice.roll_sequence(3, 20_000, encounter_chance=0.2)
    monster, step = np.asarray(seq.monster), np.asarray(seq.encounter_step)
    starts = np.flatnonzero((monster >= 0) & (step == 1))
    assert abs(starts.size / 20_000 - 0.2 / 1.4) < 0.0125
    for s in starts[:-1]:
        np.testing.assert_array_equal(step[s : s + 3], [1, 2, 3])
        assert monster[s] == monster[s + 1] == monster[s + 2]
    shares = np.bincount(monster[starts], minlength=3) / starts.size
    np.testing.assert_allclose(shares, 1 / 3, atol=0.04)  # sd 0.0083 at 2,860 encounters
    assert (step[monster < 0] == 0).all()


def test_level_needs_are_the_anchors_formula():
    needs = game.xp_needs()
    assert needs[:6].tolist() == [1000, 1500, 2250, 3375, 5062, 7593]  # int() truncates
    assert needs[-1] == 2**30 and needs[-2] < 2**30
    assert game.levels_for_xp(999) == 1 and game.levels_for_xp(1000) == 2
    assert game.levels_for_xp(1000 + 1500 + 2250) == 4
    # Several levels at once: one update worth 4,750 XP from level 1 reaches level 4.
    state = game.init_game_state(optax_dice.Ruleset(experience=True), jax.random.key(0))
    level, xp = game._level_up(state.level, jnp.int32(4751))
    assert (int(level), int(xp)) == (4, 1)


def test_per_mini_batch_windows_check_encounters_on_their_last_micro_batch():
    k, seed, n = 4, 11, 2000
    kwargs = {"encounter_chance": 0.5, "experience": True, "threshold": 12, "character": "rogue"}
    _, factors, monsters, levels, _ = _reference_run(seed, n, kwargs, every_k=k)
    seq = optax_dice.roll_sequence(seed, n, every_k=k, **kwargs)
    np.testing.assert_array_equal(np.asarray(seq.scale), factors)
    np.testing.assert_array_equal(np.asarray(seq.monster), monsters)
    step = np.asarray(seq.encounter_step)
    assert set(np.flatnonzero(step == 1) % k) == {k - 1}  # they appear on window ends only
    # accumulate(per_mini_batch) rolls the same game on every micro-batch.
    tx = optax_dice.accumulate(optax.sgd(1.0), k, key=seed, **kwargs)
    _, dice = _train(tx, n)
    np.testing.assert_array_equal(np.asarray(dice.scale), factors)
    np.testing.assert_array_equal(np.asarray(dice.level), levels)


def test_per_accumulation_step_plays_once_per_applied_update():
    k, seed, n_updates = 3, 8, 300
    kwargs = {"character": "barbarian", "encounter_chance": 0.2, "experience": True}
    tx = optax_dice.accumulate(optax.sgd(1.0), k, mode="per_accumulation_step", key=seed, **kwargs)
    updates, dice = _train(tx, k * n_updates)
    seq = optax_dice.roll_sequence(seed, n_updates, **kwargs)
    # The state after the i-th applied update is the i-th step of the game.
    np.testing.assert_array_equal(np.asarray(dice.scale)[k - 1 :: k], np.asarray(seq.scale))
    np.testing.assert_array_equal(np.asarray(dice.level)[k - 1 :: k], np.asarray(seq.level))
    np.testing.assert_array_equal(np.asarray(dice.monster)[k - 1 :: k], np.asarray(seq.monster))
    # sgd(1.0) of a mean gradient of 1, scaled by the held factor.
    np.testing.assert_array_equal(updates[k - 1 :: k], -np.asarray(seq.scale))
    assert (updates.reshape(-1, k)[:, :-1] == 0).all()


def test_cleric_takes_the_loss_and_refuses_without_it():
    tx = optax_dice.dice_roll(0, character="cleric")
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="value=loss"):
        tx.update(jnp.ones(2), state)
    with pytest.raises(ValueError, match="value=loss"):
        optax_dice.roll_sequence(0, 5, character="cleric")
    with pytest.raises(ValueError, match="must be a scalar"):
        tx.update(jnp.ones(2), state, value=jnp.ones(3))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        optax_dice.roll_sequence(0, 5, character="cleric", losses=[1.0, 2.0])
    chained = optax.chain(tx, optax.sgd(0.1))
    updates, _ = jax.jit(chained.update)(jnp.ones(2), chained.init(jnp.zeros(2)), value=2.0)
    assert updates.shape == (2,)
    for mode in ("per_mini_batch", "per_accumulation_step"):
        acc = optax_dice.accumulate(optax.sgd(1.0), 2, mode=mode, character="cleric")
        acc_state = acc.init(jnp.zeros(2))
        with pytest.raises(ValueError, match="value=loss"):
            acc.update(jnp.ones(2), acc_state, jnp.zeros(2))
        for loss in (1.0, 1.0, 9.0, 9.0):
            _, acc_state = jax.jit(acc.update)(jnp.ones(2), acc_state, jnp.zeros(2), value=loss)
        assert np.isfinite(float(optax_dice.find_dice_state(acc_state).last_loss))


def test_healing_word_scales_the_step_to_1_1_times_the_last_loss():
    # d20 always succeeding (threshold -100, modifier 0): scale = natural / 20 or 1. Losses
    # 1 then 10: the second loss, as scaled, is far above 1.5 x the first.
    seq = optax_dice.roll_sequence(0, 2, character="cleric", threshold=-100, losses=[1.0, 10.0])
    scale, dice = np.asarray(seq.scale), np.asarray(seq.dice_scale)
    assert scale[0] == dice[0]
    loss0, loss1 = F32(1.0) * dice[0], F32(10.0) * dice[1]
    assert loss1 > 1.5 * loss0
    assert scale[1] == dice[1] * ((F32(1.1) * loss0) / loss1)
    assert np.isclose(10.0 * scale[1], 1.1 * loss0, rtol=1e-6)  # the loss became 1.1 x last
    assert np.asarray(seq.fired).tolist() == [0, 1]
    assert np.asarray(seq.charges)[:, 0].tolist() == [3, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"character": "bard"}, "character='bard' is unknown"),
        ({"character": 3}, "is unknown"),
        ({"encounter_chance": 1.5}, r"not a probability"),
        ({"encounter_chance": -0.1}, r"not a probability"),
        ({"encounter_chance": float("nan")}, r"not a probability"),
        ({"encounter_chance": "often"}, "must be a probability"),
        ({"experience": "yes"}, "experience must be True or False"),
    ],
)
def test_bad_game_arguments_fail_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        optax_dice.dice_roll(0, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        optax_dice.accumulate(optax.sgd(1.0), 2, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        optax_dice.roll_sequence(0, 3, **kwargs)


def test_a_class_with_an_untraceable_rule_fails_at_construction():
    def python_if(natural, total, sides, threshold):
        return 1.0 if total >= threshold else 0.0

    with pytest.raises(TypeError, match="use jnp.where, not if"):
        optax_dice.dice_roll(0, character="wizard", rule=python_if)


def test_a_custom_rule_plays_with_the_game():
    def half(natural, total, sides, threshold):
        return jnp.float32(0.5)

    seq = optax_dice.roll_sequence(1, 50, character="rogue", threshold=12, rule=half)
    want = np.where(np.asarray(seq.total) >= 12, F32(0.5) * F32(1.2), F32(0.5))
    np.testing.assert_array_equal(np.asarray(seq.scale), want)


def _run_eager_and_jit(kwargs, n):
    params = jnp.zeros(3)
    tx = optax_dice.dice_roll(9, **kwargs)
    out = []
    for update in (tx.update, jax.jit(tx.update)):
        state, states = tx.init(params), []
        for i in range(n):
            _, state = update(jnp.ones(3), state, params, value=jnp.float32(1 + (i % 7 == 0)))
            states.append(state._replace(rng_key=jax.random.key_data(state.rng_key)))
        out.append(states)
    return out


@pytest.mark.parametrize("character", [None, *game.CHARACTERS])
def test_jit_and_eager_agree(character):
    kwargs = {"character": character, "encounter_chance": 0.3, "experience": True}
    eager, jitted = _run_eager_and_jit(kwargs, 15)
    for a, b in zip(eager, jitted, strict=True):
        chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("character", [None, "cleric"])
def test_the_state_can_be_donated(character):
    """A train step that donates the optimizer state (as examples/bert does) works from the
    first update: no two fields of the initial state share a buffer."""
    tx = optax.chain(
        optax_dice.dice_roll(1, character=character, encounter_chance=0.5, experience=True),
        optax.sgd(0.1),
    )
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    leaves = jax.tree.leaves(state)
    assert len({id(x) for x in leaves}) == len(leaves)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        updates, state = tx.update(params, state, params, value=jnp.sum(params["w"]))
        return optax.apply_updates(params, updates), state

    for _ in range(3):
        params, state = step(params, state)
    assert int(optax_dice.find_dice_state(state).count) == 3


def _to_numpy(state):
    """A checkpoint as plain numpy (the typed key as its key data), pickled."""
    return pickle.dumps(
        jax.tree.map(np.asarray, state._replace(rng_key=jax.random.key_data(state.rng_key)))
    )


def _from_numpy(blob):
    state = pickle.loads(blob)
    state = jax.tree.map(jnp.asarray, state)
    return state._replace(rng_key=jax.random.wrap_key_data(state.rng_key))


def test_a_checkpoint_mid_encounter_and_mid_rage_resumes_bit_for_bit():
    kwargs = {"character": "barbarian", "encounter_chance": 0.3, "experience": True}
    tx = optax_dice.dice_roll(4, **kwargs)
    params = jnp.zeros(2)
    update = jax.jit(tx.update)
    state, states, updates = tx.init(params), [], []
    for _ in range(120):
        u, state = update(jnp.ones(2), state, params)
        states.append(state)
        updates.append(u)
    t = next(
        i
        for i, s in enumerate(states)
        if int(s.rage) > 0 and int(s.monster) >= 0 and int(s.encounter_step) < 3
    )
    restored = _from_numpy(_to_numpy(states[t]))
    chex.assert_trees_all_equal(
        jax.random.key_data(restored.rng_key), jax.random.key_data(states[t].rng_key)
    )
    resumed = restored
    for i in range(t + 1, 120):
        u, resumed = update(jnp.ones(2), resumed, params)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(updates[i]))
        chex.assert_trees_all_equal(
            resumed._replace(rng_key=jax.random.key_data(resumed.rng_key)),
            states[i]._replace(rng_key=jax.random.key_data(states[i].rng_key)),
        )


def test_an_orbax_checkpoint_of_the_game_state_resumes_bit_for_bit(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    kwargs = {"character": "wizard", "encounter_chance": 0.5, "experience": True}
    tx = optax.chain(optax_dice.dice_roll(6, **kwargs), optax.adam(1e-2))
    params = {"w": jnp.ones(3)}
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(7):
        _, state = update(params, state, params)
    while int(optax_dice.find_dice_state(state).monster) < 0:  # save mid-encounter
        _, state = update(params, state, params)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "state", state)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(
            tmp_path / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        )
    a, b = state, restored
    for _ in range(30):
        ua, a = update(params, a, params)
        ub, b = update(params, b, params)
        chex.assert_trees_all_equal(ua, ub)
    da, db = optax_dice.find_dice_state(a), optax_dice.find_dice_state(b)
    assert int(da.count) == int(db.count) and int(da.level) == int(db.level)


def test_no_host_transfer_inside_the_step():
    kwargs = {"character": "cleric", "encounter_chance": 0.2, "experience": True}
    tx = optax.chain(optax_dice.dice_roll(1, **kwargs), optax.adamw(1e-3))
    params = {"w": jnp.ones(4)}
    state = tx.init(params)
    grads, loss = jax.device_put({"w": jnp.ones(4)}), jax.device_put(jnp.float32(1.3))
    step = jax.jit(tx.update)
    _, state = step(grads, state, params, value=loss)  # compile outside the guard
    with jax.transfer_guard("disallow"):
        for _ in range(5):
            _, state = step(grads, state, params, value=loss)
    assert int(optax_dice.find_dice_state(state).count) == 6


# Digests of 40 updates (and the final state) of dice_roll(7, **kw) and of 12 micro-batches
# of accumulate(sgd(0.1), 3, ...), made with the code before the game existed (commit
# 330822b): the defaults must keep giving exactly these bytes.
_BEFORE = {
    "{}": (
        "7aa20fd14f2afb50d834b2d680fff5dbb12a8cff4b719e594bd042c3f39de0a9",
        "6e16b63327a6509045957fef983ddc3ef5fcc286fa5f8c0f868952f4d2dae3a5",
    ),
    "{'threshold': 12, 'modifier': 2}": (
        "8bf5fcb3ef3d7b9e03d64e193febaddec51ad3b406c68a1c3148c9c9af50e16c",
        "fbb32f91eb8639f3eb024dda56597b078170f769c7f00466057305998dacc4ec",
    ),
    "{'rule': 'original', 'threshold': 15}": (
        "9f864f678ff23fc8baee31711161778e028ec6b4a01435e7a6245693f797f5d1",
        "d7a68e1848ca5e2ffb57a968834dc415ad21df37ac19992bb7440a6d63076ac0",
    ),
    "{'dice': 'd6', 'threshold': 4, 'advantage': True}": (
        "f7f3dc5f973db84c75d70bab956ebf9084904535196df1edffa24244fb2bd107",
        "6de9ab195400df1e9dbf813fff7b3d6f05a691562566d8c53584897bd975b12b",
    ),
    "per_mini_batch": (
        "f2f1e86ae5ff2e45abf763f68fa6e5226d7da5c9872a17b1ae1fb325fb1321ad",
        "50fa1e4c8f769cc4dfdc3a0fa0323cd6500775ee5471f58437de675e1d1851ec",
    ),
    "per_accumulation_step": (
        "7f3f9529d09e32109997c8ac7a3b1e52f6e248e6474d52ffa013265105941e4a",
        "6d44fcc37eac260c9af6a59f0a62dea15c8e18959bdee7710da6cb118e20ab07",
    ),
}


def _digest(tree) -> str:
    h = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(tree)
    h.update(str(treedef).encode())
    for x in leaves:
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        x = np.asarray(x)
        h.update(str(x.dtype).encode())
        h.update(x.tobytes())
    return h.hexdigest()


def _digests(tx, n):
    params = {"w": jnp.linspace(-1, 1, 3), "b": jnp.ones((2, 2), jnp.bfloat16)}
    grads = {"w": jnp.arange(3.0), "b": jnp.full((2, 2), 0.5, jnp.bfloat16)}
    state, outs = tx.init(params), []
    step = jax.jit(tx.update)
    for _ in range(n):
        u, state = step(grads, state, params)
        outs.append(u)
    return _digest(outs), _digest(state)


@pytest.mark.parametrize(
    "off", [{}, {"character": None, "encounter_chance": 0.0, "experience": False}]
)
def test_the_defaults_are_unchanged_bit_for_bit(off):
    for kw in (
        {},
        {"threshold": 12, "modifier": 2},
        {"rule": "original", "threshold": 15},
        {"dice": "d6", "threshold": 4, "advantage": True},
    ):
        tx = optax_dice.dice_roll(7, **kw, **off)
        assert type(tx) is optax.GradientTransformationExtraArgs  # one type, game or not
        assert _digests(tx, 40) == _BEFORE[str(kw)], kw
    for mode in ("per_mini_batch", "per_accumulation_step"):
        tx = optax_dice.accumulate(
            optax.sgd(0.1), 3, mode=mode, key=5, threshold=12, modifier=2, **off
        )
        assert _digests(tx, 12) == _BEFORE[mode], mode
    state = optax_dice.dice_roll(0, **off).init({})
    assert type(state) is optax_dice.DiceRollState
    assert state._fields == ("count", "rng_key", "natural", "total", "scale")


def test_inject_hyperparams_keeps_the_default_state():
    tx = optax.inject_hyperparams(optax_dice.dice_roll)(threshold=12)
    state = tx.init(jnp.zeros(2))
    assert sorted(state.hyperparams) == ["key", "modifier", "threshold"]
    assert type(state.inner_state) is optax_dice.DiceRollState
    # A scheduled encounter chance turns the game on and is read from the state.
    tx = optax.inject_hyperparams(optax_dice.dice_roll)(encounter_chance=0.5)
    state = tx.init(jnp.zeros(2))
    for _ in range(10):
        _, state = jax.jit(tx.update)(jnp.ones(2), state, jnp.zeros(2))
    assert type(state.inner_state) is optax_dice.DiceGameState
    state.hyperparams["encounter_chance"] = jnp.asarray(0.0)
    monster = []
    for _ in range(10):
        _, state = jax.jit(tx.update)(jnp.ones(2), state, jnp.zeros(2))
        monster.append(int(state.inner_state.monster))
    assert all(m == -1 for m in monster[3:])  # no new monster at chance 0


def test_divine_intervention_halves_the_step_and_keeps_the_last_loss():
    # Play one update from 4,000 seeds at once, with a last loss of 2.0, and look at those
    # where Divine Intervention fired (natural 1, modifier 0, a 10% draw: ~20 of them).
    ruleset = optax_dice.Ruleset(threshold=12, rule="original", character="cleric")

    def one(seed):
        state = game.init_game_state(ruleset, jax.random.key(seed))
        state = state._replace(last_loss=jnp.float32(2.0))
        return game.game_update(ruleset, state, jnp.float32(1.0))

    out = jax.jit(jax.vmap(one))(jnp.arange(4000))
    divine = (np.asarray(out.fired) >> 1 & 1) == 1
    assert 5 <= divine.sum() <= 40  # 4,000 x 0.05 x 0.1 = 20, sd 4.4
    assert (np.asarray(out.natural)[divine] == 1).all()
    np.testing.assert_array_equal(np.asarray(out.scale)[divine], -0.5)  # original's -1, halved
    np.testing.assert_array_equal(np.asarray(out.last_loss)[divine], 2.0)  # not updated
    np.testing.assert_array_equal(np.asarray(out.charges)[divine], [[3, 0]] * int(divine.sum()))
    ones = (np.asarray(out.natural) == 1) & ~divine
    np.testing.assert_array_equal(np.asarray(out.scale)[ones], -1.0)
    np.testing.assert_array_equal(np.asarray(out.last_loss)[ones], -1.0)  # updated: the loss


@pytest.mark.parametrize("character", game.CHARACTERS)
def test_every_class_on_every_modified_roll_of_a_first_update(character):
    # The first update of 3,000 seeds, with modifiers from -3 to +6, covers every m from -2 to
    # 26 many times: each factor must be the reference's (which is the issue's table).
    seeds = np.arange(3000)
    modifiers = (seeds % 10 - 3).astype(np.int32)

    def one(seed, modifier):
        ruleset = optax_dice.Ruleset(
            threshold=12, modifier=modifier, character=character, experience=True
        )
        state = game.init_game_state(ruleset, jax.random.key(seed))
        new = game.game_update(ruleset, state, jnp.float32(1.0))
        _, roll_key = jax.random.split(jax.random.key(seed))
        return new, _spelled_out_draws(roll_key)

    out, (u_enc, pick, u_div) = jax.jit(jax.vmap(one))(seeds, modifiers)
    naturals = np.asarray(out.natural)
    want = np.array(
        [
            Reference(character, 0.0, True, 12).step(
                int(naturals[i]),
                int(modifiers[i]),
                float(u_enc[i]),
                int(pick[i]),
                float(u_div[i]),
            )[0]
            for i in seeds
        ]
    )
    # vmapped, XLA's vectorised division may round a quotient one ulp off (test_rules.py
    # checks the scalar scales exactly): allow 2 ulps here; a wrong trigger is far off.
    np.testing.assert_array_max_ulp(np.asarray(out.scale), want, maxulp=2)
    assert set(np.asarray(out.total).tolist()) == set(range(-2, 27))


def test_the_game_draws_what_its_docs_state():
    # game.draws is the derivation the reference above spells out, on any roll key.
    for seed in (0, 1, 2026):
        _, roll_key = jax.random.split(jax.random.key(seed))
        got, want = game.draws(roll_key), _spelled_out_draws(roll_key)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _xp_reference(totals, threshold):
    """Level and XP after each update, in Python ints: gain 10 x m (m capped at +-2**25) for
    m >= threshold, XP floored at -2**30, needs capped at 2**30 (no monsters)."""
    needs = game.xp_needs().tolist()
    level, xp, out = 1, 0, []
    for m in totals:
        if m >= threshold:
            xp = max(xp + 10 * max(min(m, 2**25), -(2**25)), -(2**30))
        while xp >= needs[min(level, len(needs)) - 1]:
            xp -= needs[min(level, len(needs)) - 1]
            level += 1
        out.append((level, xp))
    return out


@pytest.mark.parametrize("sign", [1, -1], ids=["cap", "floor"])
def test_xp_of_huge_rolls_is_capped_and_floored_and_never_wraps(sign):
    # A modifier of +-2**29 makes m ~ +-2**29: 10 m would wrap int32. Counted as +-2**25,
    # each update gains (or loses) 335,544,320 XP; the XP never goes below -2**30.
    big = 2**29
    seq = optax_dice.roll_sequence(0, 60, modifier=sign * big, threshold=-big, experience=True)
    totals = np.asarray(seq.total).tolist()
    want = _xp_reference(totals, -big)
    got = list(zip(np.asarray(seq.level).tolist(), np.asarray(seq.xp).tolist(), strict=True))
    assert got == want
    if sign > 0:
        assert got[-1][0] > 20  # levelled up through the capped needs
    else:
        assert got[-1] == (1, -(2**30))  # floored, and no wrap into a level-up


def test_a_zero_loss_after_a_negative_one_heals_without_dividing_by_zero():
    # The scaled loss can be negative (a negative value, or a failed roll). A zero loss is
    # then above 1.5 x the last, so Healing Word fires: the step keeps its dice scale (there
    # is no loss to scale to 1.1 x the last), and the loss becomes 1.1 x the last.
    seed = next(
        s for s in range(100) if (np.asarray(optax_dice.roll_sequence(s, 2).natural) > 1).all()
    )
    seq = optax_dice.roll_sequence(seed, 2, character="cleric", threshold=-100, losses=[-1.0, 0.0])
    scale, dice = np.asarray(seq.scale), np.asarray(seq.dice_scale)
    assert np.asarray(seq.fired).tolist() == [0, 1]
    assert np.isfinite(scale).all()
    np.testing.assert_array_equal(scale, dice)


def test_a_non_finite_loss_is_skipped_and_does_not_silence_the_cleric():
    # roll-to-train compares the loss as scaled so far (see the game's docs). A nan or inf
    # loss must not become the last loss: nothing compares above nan, so it would silence
    # Healing Word for good.
    seed = next(
        s for s in range(100) if (np.asarray(optax_dice.roll_sequence(s, 4).natural) > 1).all()
    )
    tx = optax_dice.dice_roll(seed, character="cleric", threshold=-100)
    update = jax.jit(tx.update)
    state = tx.init(0.0)
    _, state = update(1.0, state, value=1.0)
    first = float(state.last_loss)
    assert first > 0
    for bad in (np.nan, np.inf, -np.inf):
        _, state = update(1.0, state, value=bad)
        assert float(state.last_loss) == first, bad
        assert int(state.fired) & 1 == 0
    _, state = update(1.0, state, value=100.0)
    assert int(state.fired) & 1 == 1  # a real spike is still healed
    assert int(state.charges[0]) == 2
