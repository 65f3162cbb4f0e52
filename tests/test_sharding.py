"""dice_roll under SPMD: 8 fake CPU devices, in a subprocess."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optax_dice

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    tx = optax.chain(optax_dice.dice_roll(7, threshold=12, modifier=2), optax.adamw(1e-2))

    def loss(params, x, y):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    def step(params, state, x, y):
        grads = jax.grad(loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    sharded_step = jax.jit(
        step,
        in_shardings=(replicated, replicated, by_batch, by_batch),
        out_shardings=(replicated, replicated),
        donate_argnums=(0, 1),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.normal(size=(64,)).astype(np.float32)
    init = {"w": np.zeros(5, np.float32), "b": np.zeros((), np.float32)}

    params = jax.device_put(init, replicated)
    state = jax.device_put(tx.init(init), replicated)
    ref_params, ref_state = init, tx.init(init)
    naturals = []
    for _ in range(12):
        xs, ys = jax.device_put(x, by_batch), jax.device_put(y, by_batch)
        params, state = sharded_step(params, state, xs, ys)
        ref_params, ref_state = jax.jit(step)(ref_params, ref_state, x, y)
        dice = optax.tree_utils.tree_get(state, "DiceRollState")
        assert dice.natural.sharding.is_fully_replicated
        naturals.append(int(dice.natural))
        # Replicated params stay identical on every device ...
        for leaf in jax.tree.leaves(params):
            shards = [np.asarray(s.data) for s in leaf.addressable_shards]
            assert len(shards) == 8
            assert all(np.array_equal(shards[0], s) for s in shards[1:])
    # ... and equal to the unsharded run, which rolled the same dice.
    ref_naturals = optax_dice.roll_sequence(7, 12, threshold=12, modifier=2).natural
    assert naturals == np.asarray(ref_naturals).tolist(), (naturals, ref_naturals)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    # Inside shard_map each device runs its own update on its own shard of the
    # gradient: with the key replicated, all eight roll the same die.
    die = optax_dice.dice_roll(3)
    def local_roll(g, state):
        _, state = die.update(g, state)
        return state.natural[None]
    per_device = jax.jit(jax.shard_map(
        local_roll, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data")
    ))(jnp.ones(8), die.init(jnp.ones(8)))
    assert per_device.shape == (8,)
    assert len(set(np.asarray(per_device).tolist())) == 1, per_device
    assert int(per_device[0]) == int(optax_dice.roll_sequence(3, 1).natural[0])
    print("OK", naturals)
    """
)


def test_one_die_for_all_devices_and_replicated_params_stay_identical():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("OK")
