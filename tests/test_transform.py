"""dice_roll: state, scaling, keys, jit, composition and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_dice
from optax_dice import rules

JIT_OR_NOT = pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])


def _run(tx, n, grads=None, wrap=jax.jit):
    """Applies n updates of tx to constant gradients; returns per-update scales and states."""
    params = {"w": jnp.ones((3,)), "b": jnp.ones((2, 2), jnp.bfloat16)}
    grads = grads or jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    update = wrap(tx.update)
    out, states = [], []
    for _ in range(n):
        updates, state = update(grads, state, params)
        out.append(updates)
        states.append(state)
    return out, states


def test_initial_state():
    state = optax_dice.dice_roll(7).init({"w": jnp.ones(2)})
    assert isinstance(state, optax_dice.DiceRollState)
    assert int(state.count) == 0 and int(state.natural) == 0 and int(state.total) == 0
    assert float(state.scale) == 1.0
    assert jnp.issubdtype(state.rng_key.dtype, jax.dtypes.prng_key)
    assert state.natural.dtype == jnp.int32 and state.scale.dtype == jnp.float32


@JIT_OR_NOT
def test_update_is_the_scaled_gradient(wrap):
    tx = optax_dice.dice_roll(3, threshold=12, modifier=2)
    updates, states = _run(tx, 50, wrap=wrap)
    for u, s in zip(updates, states, strict=True):
        want = rules.saving_throw(s.natural, s.total, 20, 12)
        assert float(s.scale) == float(want)
        assert int(s.total) == int(s.natural) + 2
        np.testing.assert_array_equal(np.asarray(u["w"]), np.full(3, float(s.scale), np.float32))
        np.testing.assert_array_equal(
            np.asarray(u["b"], np.float32),
            np.full((2, 2), float(s.scale.astype(jnp.bfloat16)), np.float32),
        )
    assert [int(s.count) for s in states] == list(range(1, 51))


def test_jit_and_eager_agree():
    tx = optax_dice.dice_roll(11, advantage=True)
    _, eager = _run(tx, 20, wrap=lambda f: f)
    _, jitted = _run(tx, 20, wrap=jax.jit)
    for a, b in zip(eager, jitted, strict=True):
        assert int(a.natural) == int(b.natural) and float(a.scale) == float(b.scale)
        chex.assert_trees_all_equal(jax.random.key_data(a.rng_key), jax.random.key_data(b.rng_key))


def test_every_face_gets_its_exact_scale_through_the_transformation():
    # 1,000 updates of a d20 roll every face; each applied update must equal the
    # table's scale for the face rolled.
    seq = optax_dice.roll_sequence(0, 1000)
    assert set(np.asarray(seq.natural).tolist()) == set(range(1, 21))
    updates, _states = _run(optax_dice.dice_roll(0), 1000)
    for nat, u in zip(np.asarray(seq.natural), updates, strict=True):
        want = rules.saving_throw(jnp.int32(nat), jnp.int32(nat), 20, 15)
        assert float(u["w"][0]) == float(want)


def test_roll_sequence_equals_the_transformations_rolls():
    n = 1000
    for kwargs in [{}, {"dice": "d6", "threshold": 4, "advantage": True}, {"rule": "original"}]:
        seq = optax_dice.roll_sequence(42, n, **kwargs)
        tx = optax_dice.dice_roll(42, **kwargs)
        params = jnp.zeros(())

        def body(state, _, tx=tx, params=params):
            _, state = tx.update(params, state, params)
            return state, (state.natural, state.total, state.scale)

        _, (nat, tot, scale) = jax.lax.scan(body, tx.init(params), None, length=n)
        np.testing.assert_array_equal(np.asarray(seq.natural), np.asarray(nat))
        np.testing.assert_array_equal(np.asarray(seq.total), np.asarray(tot))
        np.testing.assert_array_equal(np.asarray(seq.scale), np.asarray(scale))


def test_key_forms_agree_and_keys_differ():
    n = 64
    by_int = np.asarray(optax_dice.roll_sequence(5, n).natural)
    by_typed = np.asarray(optax_dice.roll_sequence(jax.random.key(5), n).natural)
    by_raw = np.asarray(optax_dice.roll_sequence(jax.random.PRNGKey(5), n).natural)
    np.testing.assert_array_equal(by_int, by_typed)
    np.testing.assert_array_equal(by_int, by_raw)
    again = np.asarray(optax_dice.roll_sequence(5, n).natural)
    np.testing.assert_array_equal(by_int, again)
    other = np.asarray(optax_dice.roll_sequence(6, n).natural)
    assert (by_int != other).sum() > n // 2


def test_key_is_split_once_per_update_and_never_reused():
    tx = optax_dice.dice_roll(1)
    _, states = _run(tx, 3)
    key = jax.random.key(1)
    for s in states:
        key, _ = jax.random.split(key)
        chex.assert_trees_all_equal(jax.random.key_data(s.rng_key), jax.random.key_data(key))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_is_preserved(dtype):
    tx = optax_dice.dice_roll(0)
    params = {"a": jnp.ones((4,), dtype)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert updates["a"].dtype == dtype


def test_none_leaves_and_empty_trees_pass_through():
    tx = optax_dice.dice_roll(0)
    tree = {"a": jnp.ones(2), "frozen": None}
    updates, _ = tx.update(tree, tx.init(tree))
    assert updates["frozen"] is None
    empty, state = tx.update({}, tx.init({}))
    assert empty == {} and int(state.count) == 1


def test_reads_from_a_chain_with_adamw():
    tx = optax.chain(optax_dice.dice_roll(2), optax.adamw(1e-3))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    _, state = jax.jit(tx.update)(params, state, params)
    dice_state = optax.tree_utils.tree_get(state, "DiceRollState")
    assert isinstance(dice_state, optax_dice.DiceRollState)
    assert optax_dice.find_dice_state(state) is dice_state
    # Each field, read by name from the chain, is the first roll of seed 2.
    seq = optax_dice.roll_sequence(2, 1)
    assert int(optax.tree_utils.tree_get(state, "natural")) == int(seq.natural[0])
    assert int(optax.tree_utils.tree_get(state, "total")) == int(seq.total[0])
    assert float(optax.tree_utils.tree_get(state, "scale")) == float(seq.scale[0])
    assert int(dice_state.count) == 1


def _always_half(natural, total, sides, threshold):
    return jnp.float32(0.5)


def test_position_in_the_chain_with_adamw():
    """After AdamW the dice halve the final step exactly; before it, Adam normalises the
    halved gradient away and the step is AdamW's own to within eps (1e-8 against |g| = 2)."""
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5, 0.25])}
    grads = {"w": jnp.array([2.0, -2.0, 2.0]), "b": jnp.array([-2.0, 2.0])}

    def adamw():
        return optax.adamw(0.1, weight_decay=0.1)

    def first_step(tx):
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        return jax.tree.map(np.asarray, updates)

    plain = first_step(adamw())
    after = first_step(optax.chain(adamw(), optax_dice.dice_roll(4, rule=_always_half)))
    before = first_step(optax.chain(optax_dice.dice_roll(4, rule=_always_half), adamw()))
    for name in params:
        assert np.abs(plain[name]).min() > 0.09  # a real step: lr 0.1 plus weight decay
        np.testing.assert_array_equal(after[name], 0.5 * plain[name])  # exact: x 0.5
        np.testing.assert_allclose(before[name], plain[name], rtol=1e-6)
        assert not np.allclose(before[name], after[name], rtol=0.1)


def test_position_in_the_chain_with_sgd_is_the_same_by_linearity():
    params = jnp.ones(())
    after = optax.chain(optax.sgd(0.5), optax_dice.dice_roll(4))
    updates, state = after.update(jnp.float32(2.0), after.init(params), params)
    scale = float(optax_dice.roll_sequence(4, 1).scale[0])
    assert float(optax_dice.find_dice_state(state).scale) == scale
    assert float(updates) == pytest.approx(-1.0 * scale)
    before = optax.chain(optax_dice.dice_roll(4), optax.sgd(0.5))
    updates_b, _state_b = before.update(jnp.float32(2.0), before.init(params), params)
    assert float(updates_b) == pytest.approx(float(updates))  # sgd is linear


def test_adamw_after_a_discarded_roll_keeps_params():
    # With a rule that always discards, adamw's step is 0 (apart from weight decay).
    tx = optax.chain(
        optax_dice.dice_roll(0, rule=lambda n, t, s, th: jnp.float32(0.0)),
        optax.adamw(1e-2, weight_decay=0.0),
    )
    params = {"w": jnp.arange(3.0)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.zeros(3))


def test_custom_rule_sees_natural_total_sides_threshold():
    seen = {}

    def rule(natural, total, sides, threshold):
        seen.update(sides=sides)
        return (total - threshold).astype(jnp.float32) / sides

    tx = optax_dice.dice_roll(9, dice="d8", threshold=5, modifier=1, rule=rule)
    _, (state,) = _run(tx, 1)
    assert seen["sides"] == 8
    assert float(state.scale) == pytest.approx((int(state.natural) + 1 - 5) / 8)


def test_apply_if_finite_and_multisteps_compose():
    tx = optax.apply_if_finite(optax.chain(optax_dice.dice_roll(0), optax.sgd(1.0)), 3)
    params = jnp.ones(2)
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jnp.array([jnp.nan, 1.0]), state, params)
    assert int(state.notfinite_count) == 1
    assert int(optax.tree_utils.tree_get(state, "DiceRollState").count) == 0  # not applied
    ms = optax.MultiSteps(optax.chain(optax_dice.dice_roll(0), optax.sgd(1.0)), 2)
    ms_state = ms.init(params)
    for _ in range(4):
        _, ms_state = jax.jit(ms.update)(jnp.ones(2), ms_state, params)
    assert int(optax.tree_utils.tree_get(ms_state, "DiceRollState").count) == 2


def test_inject_hyperparams_changes_threshold_mid_training():
    make = optax.inject_hyperparams(
        optax_dice.dice_roll, static_args=("key", "dice", "advantage", "disadvantage", "rule")
    )
    tx = make(key=0, threshold=15, modifier=0)
    params = jnp.zeros(())
    state = tx.init(params)
    step = jax.jit(tx.update)
    seq_15 = optax_dice.roll_sequence(0, 20, threshold=15)
    seq_5 = optax_dice.roll_sequence(0, 20, threshold=5)
    scales = []
    for i in range(20):
        if i == 10:  # lower the DC halfway through, without recompiling
            state.hyperparams["threshold"] = jnp.asarray(5)
        _, state = step(params, state, params)
        scales.append(float(optax.tree_utils.tree_get(state, "scale")))
    np.testing.assert_array_equal(scales[:10], np.asarray(seq_15.scale[:10]))
    np.testing.assert_array_equal(scales[10:], np.asarray(seq_5.scale[10:]))
    assert step._cache_size() == 1


def test_an_injected_int_seed_rolls_as_the_python_int():
    # inject_hyperparams turns key=-1 into a 0-d int32 array; jax.random.key of that array
    # keeps no sign (it would roll as 2**32 - 1), so the array gets the int's own key.
    make = optax.inject_hyperparams(optax_dice.dice_roll)
    params = jnp.zeros(())
    for seed in (-1, -(2**31), 0, 7):
        state = make(key=seed).init(params)
        assert state.hyperparams["key"].dtype == jnp.int32
        scales = []
        for _ in range(12):
            _, state = jax.jit(make(key=seed).update)(params, state, params)
            scales.append(float(optax.tree_utils.tree_get(state, "scale")))
        np.testing.assert_array_equal(scales, np.asarray(optax_dice.roll_sequence(seed, 12).scale))


def test_injected_float_hyperparams_are_rounded():
    # inject_hyperparams casts float hyperparameters to the params' dtype (bf16 here):
    # 11.6 becomes 11.625 and 2.6 becomes 2.59375, which must round to 12 and 3 (a
    # truncating cast would give 11 and 2, and other scales).
    make = optax.inject_hyperparams(optax_dice.dice_roll, static_args=("key",))
    tx = make(key=3, threshold=11.6, modifier=2.6)
    params = jnp.zeros((), jnp.bfloat16)
    state = tx.init(params)
    assert state.hyperparams["threshold"].dtype == jnp.bfloat16
    assert float(state.hyperparams["threshold"]) == 11.625

    def body(state, _):
        _, state = tx.update(params, state, params)
        dice = optax_dice.find_dice_state(state)
        return state, (dice.total, dice.scale)

    n = 200
    _, (total, scale) = jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)
    rounded = optax_dice.roll_sequence(3, n, threshold=12, modifier=3)
    truncated = optax_dice.roll_sequence(3, n, threshold=11, modifier=2)
    np.testing.assert_array_equal(np.asarray(total), np.asarray(rounded.total))
    np.testing.assert_array_equal(np.asarray(scale), np.asarray(rounded.scale))
    assert not np.array_equal(np.asarray(scale), np.asarray(truncated.scale))


def test_inject_hyperparams_needs_no_static_args_and_schedules_the_threshold_under_jit():
    # inject_hyperparams turns the default key=0 (and key=7 here) into an int32 array.
    tx = optax.inject_hyperparams(optax_dice.dice_roll)(key=7, threshold=12)
    params = jnp.zeros(3)
    state = tx.init(params)
    assert state.hyperparams["key"].dtype == jnp.int32
    step = jax.jit(tx.update)
    want = {t: np.asarray(optax_dice.roll_sequence(7, 30, threshold=t).scale) for t in (12, 5, 18)}
    scales = []
    for i in range(30):
        threshold = 12 if i < 10 else 5 if i < 20 else 18
        state.hyperparams["threshold"] = jnp.asarray(threshold)
        updates, state = step(jnp.ones(3), state, params)
        scales.append(float(updates[0]))
    np.testing.assert_array_equal(scales[:10], want[12][:10])
    np.testing.assert_array_equal(scales[10:20], want[5][10:20])
    np.testing.assert_array_equal(scales[20:], want[18][20:])
    assert len(set(scales)) > 3  # the thresholds made a difference
    assert step._cache_size() == 1  # changing the threshold did not recompile
    assert int(optax_dice.find_dice_state(state).count) == 30
    # The default key, with the modifier scheduled too.
    tx = optax.inject_hyperparams(optax_dice.dice_roll)(threshold=12, modifier=2)
    _, state = jax.jit(tx.update)(params, tx.init(params), params)
    seq = optax_dice.roll_sequence(0, 1, threshold=12, modifier=2)
    assert int(optax_dice.find_dice_state(state).total) == int(seq.total[0])


def test_a_seed_as_a_0d_integer_array_rolls_as_the_int_seed():
    want = np.asarray(optax_dice.roll_sequence(3, 8).natural)
    for key in (jnp.asarray(3), jnp.asarray(3, jnp.uint32), np.asarray(3, np.int64)):
        np.testing.assert_array_equal(optax_dice.roll_sequence(key, 8).natural, want)
        _, states = _run(optax_dice.dice_roll(key), 8)
        assert [int(s.natural) for s in states] == want.tolist()
    traced = jax.jit(lambda k: optax_dice.roll_sequence(k, 8).natural)(jnp.asarray(3))
    np.testing.assert_array_equal(traced, want)
    init = jax.jit(lambda k: optax_dice.dice_roll(k).init(jnp.zeros(2)))(jnp.asarray(3))
    np.testing.assert_array_equal(
        jax.random.key_data(init.rng_key), jax.random.key_data(jax.random.key(3))
    )


def test_flags_and_dice_as_concrete_arrays_are_accepted():
    want = np.asarray(optax_dice.roll_sequence(1, 8, dice="d6", advantage=True).natural)
    for advantage, dice in ((jnp.asarray(True), jnp.asarray(6)), (np.bool_(True), np.int32(6))):
        seq = optax_dice.roll_sequence(1, 8, dice=dice, advantage=advantage)
        np.testing.assert_array_equal(seq.natural, want)
    tx = optax_dice.dice_roll(1, dice="d6", disadvantage=jnp.asarray(True))
    _, states = _run(tx, 8)
    seq = optax_dice.roll_sequence(1, 8, dice="d6", disadvantage=True)
    assert [int(s.natural) for s in states] == np.asarray(seq.natural).tolist()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"advantage": jnp.asarray(True)}, "advantage"), ({"dice": 6}, "dice")],
)
def test_traced_flags_and_dice_are_refused_naming_static_args(kwargs, name):
    # A bool array is not a bool, and an int die is numeric: inject_hyperparams makes both
    # hyperparameters, traced under jit, which cannot select code.
    tx = optax.inject_hyperparams(optax_dice.dice_roll)(**kwargs)
    params = jnp.zeros(2)
    state = tx.init(params)  # concrete here: accepted
    with pytest.raises(TypeError, match=rf'static_args=\("{name}",\)'):
        jax.jit(tx.update)(params, state, params)
    fixed = optax.inject_hyperparams(optax_dice.dice_roll, static_args=(name,))(**kwargs)
    _, state = jax.jit(fixed.update)(params, fixed.init(params), params)
    assert int(optax_dice.find_dice_state(state).count) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dice": "d1"}, ValueError, "dice='d1'.*at least 2"),
        ({"dice": "d0"}, ValueError, "dice='d0'"),
        ({"dice": "dx"}, ValueError, "dice='dx'.*dN"),
        ({"dice": "2d"}, ValueError, "dice='2d'"),
        ({"dice": 1}, ValueError, "dice=1.*at least 2"),
        ({"dice": 0}, ValueError, "dice=0"),
        ({"dice": -4}, ValueError, "dice=-4"),
        ({"dice": 2.5}, TypeError, "dice must be an int"),
        ({"dice": True}, TypeError, "dice must be an int"),
        ({"advantage": True, "disadvantage": True}, ValueError, "advantage and disadvantage"),
        ({"threshold": 12.5}, TypeError, "threshold must be an int"),
        ({"threshold": "15"}, TypeError, "threshold must be an int"),
        ({"modifier": 1.5}, TypeError, "modifier must be an int"),
        ({"modifier": jnp.ones(2)}, ValueError, "modifier must be a scalar"),
        ({"rule": "nat20"}, ValueError, "rule='nat20'"),
        ({"rule": 3}, TypeError, "rule must be"),
        ({"advantage": 1}, TypeError, "advantage must be True or False"),
        ({"key": 1.5}, TypeError, "key must be an int"),
        ({"key": "0"}, TypeError, "key must be an int"),
        ({"key": jnp.zeros(3, jnp.uint32)}, TypeError, "key must be an int"),
        ({"key": jnp.asarray(1.0)}, TypeError, "key must be an int"),
        ({"key": jnp.asarray(True)}, TypeError, "key must be an int"),
        ({"advantage": jnp.asarray([True])}, TypeError, "advantage must be True or False"),
        ({"advantage": jnp.asarray(1)}, TypeError, "advantage must be True or False"),
        ({"dice": jnp.asarray(1)}, ValueError, "at least 2 sides"),
        ({"dice": jnp.asarray(6.0)}, TypeError, "dice must be an int"),
        ({"key": jax.random.split(jax.random.key(0))}, ValueError, "single PRNG key"),
        ({"key": 2**63}, ValueError, r"key=9223372036854775808 is out of range.*2\*\*63"),
        ({"key": 2**70}, ValueError, "key=.* is out of range"),
        ({"key": -(2**63) - 1}, ValueError, "key=.* is out of range"),
        ({"dice": 2**31 - 1}, ValueError, "more than the 536,870,912"),
        ({"dice": "d1000000000"}, ValueError, "more than the 536,870,912"),
        ({"threshold": 99_999_999_999}, ValueError, "threshold=99999999999 is out of range"),
        ({"modifier": 2**31 - 1}, ValueError, "modifier=2147483647 is out of range"),
        ({"modifier": -(2**29) - 1}, ValueError, "modifier=-536870913 is out of range"),
        ({"rule": lambda n, t, s, th: jnp.full(3, 0.5)}, TypeError, r"float32\[3\]"),
        ({"rule": lambda n, t, s, th: n - 1}, TypeError, r"scalar float.*int32\[\]"),
        ({"rule": lambda n, t, s, th: 0.5 if n > 10 else 0.0}, TypeError, "use jnp.where"),
        ({"rule": lambda n, t, s, th: (0.5, 0.5)}, TypeError, "one scalar float"),
    ],
)
def test_bad_input_is_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        optax_dice.dice_roll(**kwargs)


def test_ability_modifier():
    assert [optax_dice.ability_modifier(s) for s in range(1, 21)] == [
        (s - 10) // 2 for s in range(1, 21)
    ]
    assert optax_dice.ability_modifier(15) == 2
    with pytest.raises(TypeError, match="score must be an int"):
        optax_dice.ability_modifier(15.0)


def test_roll_sequence_bad_n():
    with pytest.raises(ValueError, match="n must be an int from 0 to 2,147,483,647"):
        optax_dice.roll_sequence(0, -1)
    with pytest.raises(ValueError, match=r"n must be an int from 0 to .*got 1099511627776"):
        optax_dice.roll_sequence(0, 2**40)
    assert optax_dice.roll_sequence(0, 0).natural.shape == (0,)


def test_find_dice_state_where_tree_get_scale_is_ambiguous():
    # A LayerNorm's parameter is called "scale": AdamW's moments repeat it.
    params = {"layer_norm": {"scale": jnp.ones(3), "bias": jnp.zeros(3)}}
    tx = optax_dice.accumulate(optax.adamw(1e-3), 2, mode="per_accumulation_step", key=1)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    with pytest.raises(KeyError):
        optax.tree_utils.tree_get(state, "scale")
    dice = optax_dice.find_dice_state(state)
    assert isinstance(dice, optax_dice.DiceRollState)
    assert optax_dice.find_dice_state(optax.adamw(1e-3).init(params)) is None
    two = optax.chain(optax_dice.dice_roll(0), optax_dice.dice_roll(1))
    with pytest.raises(ValueError, match="2 dice states"):
        optax_dice.find_dice_state(two.init(params))


def test_extreme_values_within_range_are_exact():
    # The largest accepted magnitudes never wrap int32 (2**31 - 1 as a modifier used to
    # wrap the total and give E[scale] = +75,161,928).
    big = 2**29
    seq = optax_dice.roll_sequence(0, 50, modifier=big, threshold=-big)
    np.testing.assert_array_equal(np.asarray(seq.total), np.asarray(seq.natural) + big)
    assert set(np.asarray(seq.scale).tolist()) <= {0.0, 1.0}  # capped successes
    assert optax_dice.odds(modifier=big, threshold=15).expected_scale == pytest.approx(0.95)
    # faces 2-19 capped at -1, a natural 20 still +1: (-18 + 1) / 20
    assert optax_dice.odds(modifier=-big, threshold=15).expected_scale == pytest.approx(-0.85)
    # Every seed gets the key jax.random.key gives with 64-bit mode on (for [0, 2**32) that
    # is also the 32-bit mode's), so none wraps onto another seed (-1 was 2**32 - 1's).
    for seed in (0, 12345, 2**32 - 1):
        got = optax_dice.roll_sequence(seed, 3).natural
        want = optax_dice.roll_sequence(jax.random.key(seed), 3).natural
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for seed, data in (
        (-(2**63), [2**31, 0]),
        (2**63 - 1, [2**31 - 1, 2**32 - 1]),
        (2**32, [1, 0]),
        (-1, [2**32 - 1, 2**32 - 1]),
        (-(2**31), [2**32 - 1, 2**31]),
        (-(2**31) - 1, [2**32 - 1, 2**31 - 1]),
    ):
        got = optax_dice.roll_sequence(seed, 3).natural
        key = jax.random.wrap_key_data(np.array(data, np.uint32))
        want = optax_dice.roll_sequence(key, 3).natural
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    naturals = {
        tuple(np.asarray(optax_dice.roll_sequence(s, 8).natural).tolist())
        for s in (0, 2**32, 2**33, 2**63 - 1, -1, 2**32 - 1, -(2**63))
    }
    assert len(naturals) == 7
    assert int(optax_dice.dice_roll(dice=big).init(()).count) == 0


def test_custom_rule_returning_a_python_float_or_float_scalar_is_accepted():
    for rule in (lambda n, t, s, th: 0.5, lambda n, t, s, th: jnp.float16(0.5) * (n > 0)):
        _, (state,) = _run(optax_dice.dice_roll(0, rule=rule), 1)
        assert float(state.scale) == 0.5


def test_custom_rule_with_a_vector_output_is_refused_before_scaling_anything():
    # Without the check, a (3,) scale silently multiplied a 3-element leaf element-wise.
    def per_element(natural, total, sides, threshold):
        return jnp.array([1.0, 0.0, -1.0])

    with pytest.raises(TypeError, match=r"per_element.*one scalar float.*float32\[3\]"):
        optax_dice.dice_roll(0, rule=per_element)
    with pytest.raises(TypeError, match="one scalar float"):
        optax_dice.roll_sequence(0, 3, rule=per_element)
    with pytest.raises(TypeError, match="one scalar float"):
        optax_dice.accumulate(optax.sgd(1.0), 2, rule=per_element)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.uint8, jnp.bool_])
@pytest.mark.parametrize(
    "make",
    [
        lambda: optax_dice.dice_roll(0),
        lambda: optax_dice.accumulate(optax.sgd(1.0), 2, mode="per_accumulation_step"),
    ],
    ids=["dice_roll", "per_accumulation_step"],
)
def test_integer_update_leaves_are_refused_with_a_message(dtype, make):
    # [10, 10] * -0.35 cast to int was [0, 0]: a silent wrong update.
    tx = make()
    tree = {"w": jnp.ones(2), "steps": jnp.array([10, 10], dtype)}
    state = tx.init(tree)
    with pytest.raises(TypeError, match=r"\['steps'\] has dtype .*give float updates"):
        jax.jit(tx.update)(tree, state, tree)


def test_complex_update_leaves_are_scaled():
    tx = optax_dice.dice_roll(0)
    tree = {"z": jnp.array([1 + 2j], jnp.complex64)}
    updates, state = tx.update(tree, tx.init(tree))
    assert updates["z"].dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(updates["z"]), [(1 + 2j) * float(state.scale)])


def _naturals_from_jax_random(seed, n, sides=20):
    """The rolls of dice_roll(seed), written with jax.random directly: each update splits
    the key into (next key, roll key) and draws one randint from the roll key."""
    key = jax.random.key(seed)
    out = []
    for _ in range(n):
        key, roll_key = jax.random.split(key)
        out.append(int(jax.random.randint(roll_key, (), 1, sides + 1, dtype=jnp.int32)))
    return out


@pytest.mark.parametrize("seed", [0, 2026])
def test_which_key_each_roll_uses_is_pinned(seed):
    n = 40
    want = _naturals_from_jax_random(seed, n)
    assert len(set(want)) > 10
    seq = optax_dice.roll_sequence(seed, n)
    assert np.asarray(seq.natural).tolist() == want
    _, states = _run(optax_dice.dice_roll(seed), n)
    assert [int(s.natural) for s in states] == want
    # advantage: the higher of the two faces that one randint of shape (2,) draws.
    _, roll_key = jax.random.split(jax.random.key(seed))
    two = jax.random.randint(roll_key, (2,), 1, 21, dtype=jnp.int32)
    assert int(optax_dice.roll_sequence(seed, 1, advantage=True).natural[0]) == int(two.max())
    assert int(optax_dice.roll_sequence(seed, 1, disadvantage=True).natural[0]) == int(two.min())


def test_consecutive_rolls_are_independent():
    # Face counts alone pass a sorted sequence or one with every roll repeated; the 400
    # cells of (roll i, roll i + 1) pairs do not. Seeded, so deterministic; p > 1e-3.
    from scipy import stats

    n = 100_001
    natural = np.asarray(optax_dice.roll_sequence(jax.random.key(7), n).natural)
    pairs = np.zeros((20, 20))
    np.add.at(pairs, (natural[:-1] - 1, natural[1:] - 1), 1)
    result = stats.chisquare(pairs.ravel(), np.full(400, (n - 1) / 400))
    assert result.pvalue > 1e-3, result
    assert (natural[:-1] == natural[1:]).mean() == pytest.approx(1 / 20, abs=0.004)


@pytest.mark.parametrize("value", [2.0, np.float32(2.0), np.float64(0.5)])
def test_updates_may_be_python_or_numpy_scalars_as_in_optax(value):
    tx = optax_dice.dice_roll(0, threshold=12)
    state = tx.init(value)
    updates, state = tx.update(value, state)
    assert np.asarray(updates) == np.float32(value) * np.asarray(state.scale)
    jitted, _ = jax.jit(tx.update)(value, tx.init(value))
    assert float(jitted) == float(updates)
    assert float(optax.scale(0.5).update(value, None)[0]) == 0.5 * float(value)  # optax's way


def test_an_int_scalar_update_is_refused_eager_and_jitted_alike():
    tx = optax_dice.dice_roll(0)
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(TypeError, match="which would truncate"):
            update(3, tx.init(3))


def test_dice_roll_returns_one_type_whatever_its_arguments():
    for kwargs in ({}, {"threshold": 12, "normalize": True}, {"character": "rogue"}):
        tx = optax_dice.dice_roll(0, **kwargs)
        assert type(tx) is optax.GradientTransformationExtraArgs, kwargs
        state = tx.init(jnp.ones(2))
        tx.update(jnp.ones(2), state, jnp.ones(2), value=1.0, unused_extra=3)  # extra args taken
