"""dice_roll inside flax.nnx.Optimizer, jitted, with and without accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_dice


def _train(tx, steps=6):
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.arange(12.0).reshape(4, 3) / 10

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)

    for _ in range(steps):
        step(model, optimizer)
    return model, optimizer


def test_nnx_optimizer_rolls_once_per_update():
    lr = 0.1
    model, optimizer = _train(optax.chain(optax_dice.dice_roll(5), optax.sgd(lr)), steps=6)
    # nnx.Optimizer keeps optax's structure, each leaf in an OptArray variable.
    dice = optax.tree_utils.tree_get(optimizer.opt_state, "DiceRollState")
    assert int(dice.count[...]) == 6
    seq = optax_dice.roll_sequence(5, 6)
    assert int(dice.natural[...]) == int(seq.natural[-1])
    assert float(dice.scale[...]) == float(seq.scale[-1])
    # Reference: the same SGD by hand, each gradient scaled by its roll.
    ref = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    x = jnp.arange(12.0).reshape(4, 3) / 10
    for scale in np.asarray(seq.scale):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(ref)
        nnx.update(
            ref,
            jax.tree.map(lambda p, g, s=scale: p - lr * s * g, nnx.state(ref, nnx.Param), grads),
        )
    np.testing.assert_allclose(model.kernel[...], ref.kernel[...], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["per_mini_batch", "per_accumulation_step"])
def test_nnx_optimizer_with_accumulation(mode):
    tx = optax_dice.accumulate(optax.adamw(1e-2), 3, mode=mode, key=1)
    _, optimizer = _train(tx, steps=6)
    state = optimizer.opt_state
    assert int(optimizer.step[...]) == 6  # nnx counts every micro-batch
    assert int(optax.tree_utils.tree_get(state, "gradient_step")[...]) == 2
    rolls = 6 if mode == "per_mini_batch" else 2  # one per micro-batch, or per update
    dice = optax.tree_utils.tree_get(state, "DiceRollState")
    assert int(dice.natural[...]) == int(optax_dice.roll_sequence(1, rolls).natural[-1])
    assert int(dice.count[...]) == rolls  # count is the rolls made, in both modes
