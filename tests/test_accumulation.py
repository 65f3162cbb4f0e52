"""accumulate: the seed's two modes against a hand-written reference loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_dice

K, UPDATES = 3, 8
N_MICRO = K * UPDATES


def _micro_grads():
    # A different gradient on every micro-batch, so the weighting is visible.
    return [jnp.array([1.0 + i, -0.5 * i], jnp.float32) for i in range(N_MICRO)]


def _run(tx):
    params = jnp.zeros(2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    emitted = []
    for g in _micro_grads():
        updates, state = step(g, state, params)
        emitted.append(np.asarray(updates))
    return np.stack(emitted), state


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 12, "modifier": 2, "advantage": True}])
def test_per_mini_batch_rolls_every_micro_batch(kwargs):
    tx = optax_dice.accumulate(optax.sgd(1.0), K, mode="per_mini_batch", key=5, **kwargs)
    got, state = _run(tx)
    scales = np.asarray(optax_dice.roll_sequence(5, N_MICRO, **kwargs).scale)
    grads = np.stack(_micro_grads())
    want = np.zeros_like(got)
    for j in range(UPDATES):
        window = slice(j * K, (j + 1) * K)
        want[(j + 1) * K - 1] = -(scales[window, None] * grads[window]).mean(axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    dice = optax.tree_utils.tree_get(state, "DiceRollState")
    assert int(dice.count) == N_MICRO  # one roll per micro-batch
    assert int(optax.tree_utils.tree_get(state, "gradient_step")) == UPDATES


@pytest.mark.parametrize("kwargs", [{}, {"dice": "d6", "threshold": 3, "rule": "original"}])
def test_per_accumulation_step_rolls_once_per_update(kwargs):
    tx = optax_dice.accumulate(optax.sgd(1.0), K, mode="per_accumulation_step", key=5, **kwargs)
    got, state = _run(tx)
    scales = np.asarray(optax_dice.roll_sequence(5, UPDATES, **kwargs).scale)
    grads = np.stack(_micro_grads())
    want = np.zeros_like(got)
    for j in range(UPDATES):
        mean = grads[j * K : (j + 1) * K].mean(axis=0)
        want[(j + 1) * K - 1] = -scales[j] * mean
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    dice = optax_dice.find_dice_state(state)
    # One roll per applied update: the key advanced UPDATES times, and count says so.
    key = jax.random.key(5)
    for _ in range(UPDATES):
        key, _ = jax.random.split(key)
    np.testing.assert_array_equal(jax.random.key_data(dice.rng_key), jax.random.key_data(key))
    assert int(dice.count) == UPDATES
    assert float(dice.scale) == scales[-1]
    assert int(optax.tree_utils.tree_get(state, "gradient_step")) == UPDATES


def test_every_k_one_is_plain_dice_roll():
    a, _ = _run(optax_dice.accumulate(optax.sgd(1.0), 1, key=2))
    b, _ = _run(optax.chain(optax_dice.dice_roll(2), optax.sgd(1.0)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("every_k", [0, -1, 1.5, True])
def test_bad_every_k(every_k):
    with pytest.raises(ValueError, match="every_k must be an int >= 1"):
        optax_dice.accumulate(optax.sgd(1.0), every_k)


def test_bad_mode_and_dice_kwargs():
    with pytest.raises(ValueError, match="mode='per_epoch' is unknown"):
        optax_dice.accumulate(optax.sgd(1.0), 2, mode="per_epoch")
    with pytest.raises(ValueError, match="dice='d1'"):
        optax_dice.accumulate(optax.sgd(1.0), 2, dice="d1")


def test_per_accumulation_step_equals_rolling_inside_multisteps_with_clipping():
    # The held roll outside MultiSteps applies the same updates as the plain
    # composition MultiSteps(chain(dice_roll, inner)), up to float rounding.
    def inner():
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1))

    ours, _ = _run(optax_dice.accumulate(inner(), K, mode="per_accumulation_step", key=9))
    plain = optax.MultiSteps(optax.chain(optax_dice.dice_roll(9), inner()), K)
    theirs, _ = _run(plain.gradient_transformation())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["per_mini_batch", "per_accumulation_step"])
def test_count_is_the_rolls_made_after_every_micro_batch(mode):
    """count = rolls made, so roll_sequence(key, count) ends with the state's roll."""
    kwargs = {"threshold": 12, "modifier": 2}
    tx = optax_dice.accumulate(optax.sgd(1.0), K, mode=mode, key=4, **kwargs)
    seq = optax_dice.roll_sequence(4, N_MICRO, **kwargs)
    params = jnp.zeros(2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    counts = []
    for g in _micro_grads():
        _, state = step(g, state, params)
        dice = optax_dice.find_dice_state(state)
        count = int(dice.count)
        counts.append(count)
        assert (int(dice.natural), int(dice.total)) == (
            int(seq.natural[count - 1]),
            int(seq.total[count - 1]),
        )
        assert float(dice.scale) == float(seq.scale[count - 1])
    if mode == "per_mini_batch":
        assert counts == list(range(1, N_MICRO + 1))
    else:  # a roll on the first micro-batch of each cycle, held for the others
        assert counts == [i // K + 1 for i in range(N_MICRO)]


@pytest.mark.parametrize("mode", ["per_mini_batch", "per_accumulation_step"])
def test_the_inner_optimizer_receives_extra_arguments(mode):
    # An inner optimizer that needs optax's extra argument ``value`` (as a line search does)
    # gets it through accumulate, in both modes: it adds the mean value it was given to the
    # update, so what comes out shows what went in.
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, value):
        return jax.tree.map(lambda u: u + value, updates), state

    inner = optax.GradientTransformationExtraArgs(init, update)
    opt = optax_dice.accumulate(inner, 2, mode=mode, key=jax.random.key(0), threshold=1, modifier=0)
    params = jnp.zeros(2)
    state = opt.init(params)
    out = []
    for value in (10.0, 20.0, 30.0, 40.0):
        updates, state = opt.update(jnp.zeros(2), state, params, value=jnp.float32(value))
        out.append(float(updates[0]))
    # MultiSteps hands the inner optimizer the last micro-batch's value; zero gradients make
    # the dice irrelevant, and non-emitting steps are zeros.
    assert out == [0.0, 20.0, 0.0, 40.0]
