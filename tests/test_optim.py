"""examples/bert/optim.py: the schedule, the weight-decay mask, clipping, and where the dice sit.

The dice's position is checked with AdamW and a rule that always returns 0.5: placed after
AdamW they halve its step exactly; placed before, Adam normalises the halved gradient away and
the step is AdamW's own (to within eps), which a test with SGD could never tell apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_dice
from examples.bert import optim, parallel, steps
from examples.bert.train_config import TrainConfig

PARAMS = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.25, -0.5])}
GRADS = [
    {"kernel": jnp.array([[0.3, -0.1], [0.2, 0.4]]), "bias": jnp.array([-0.2, 0.1])},
    {"kernel": jnp.array([[0.1, 0.2], [-0.3, 0.1]]), "bias": jnp.array([0.3, 0.3])},
]


def _half(natural, total, sides, threshold):
    return jnp.float32(0.5)


def _spec(**overrides) -> TrainConfig:
    kw = dict(lr=0.1, weight_decay=0.1, warmup_ratio=0.0, seed=0)
    kw.update(overrides)
    return TrainConfig(**kw)


def _build(config: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    return optim.build_optimizer(config, total_updates=10)


def _updates(spec: TrainConfig, grads=GRADS) -> list[dict[str, np.ndarray]]:
    """The update of every micro-step, for the same gradients and (fixed) params."""
    tx, _ = _build(spec)
    state = tx.init(PARAMS)
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        updates, state = step(g, state, PARAMS)
        out.append(jax.tree.map(np.asarray, updates))
    return out


def test_schedule_warms_up_then_decays_to_zero():
    schedule = optim.learning_rate_schedule(1.0, 10, 0.2)
    got = [float(schedule(n)) for n in range(11)]
    want = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    np.testing.assert_allclose(got, want, atol=1e-7)
    no_warmup = optim.learning_rate_schedule(2.0, 4, 0.0)
    np.testing.assert_allclose([float(no_warmup(n)) for n in range(5)], [2, 1.5, 1, 0.5, 0])


def test_weight_decay_spares_biases():
    # Zero gradients: Adam's step is 0, what is left is the decay, on matrices only.
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    (update,) = _updates(_spec(mode="off", weight_decay=0.5), [zero])
    np.testing.assert_allclose(update["kernel"], -0.1 * 0.5 * np.asarray(PARAMS["kernel"]))
    np.testing.assert_array_equal(update["bias"], np.zeros(2))


def test_gradients_are_clipped_to_global_norm_one():
    big = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 4.0)}  # norm sqrt(68)
    tx, _ = _build(_spec(mode="off"))
    _, state = tx.update(big, tx.init(PARAMS), PARAMS)
    mu = optax.tree_utils.tree_get(state, "mu")  # (1 - b1) * the clipped gradient
    for name in PARAMS:
        np.testing.assert_allclose(mu[name], 0.1 * np.asarray(big[name]) / np.sqrt(68), rtol=1e-6)
    plain, _ = _build(_spec(mode="off", clip_norm=0))
    _, unclipped = plain.update(big, plain.init(PARAMS), PARAMS)
    np.testing.assert_allclose(optax.tree_utils.tree_get(unclipped, "mu")["bias"], [0.4, 0.4])


@pytest.mark.parametrize(
    ("mode", "k"),
    [("per_mini_batch", 1), ("per_accumulation_step", 1), ("per_accumulation_step", 2)],
)
def test_after_halves_adamws_step_and_before_leaves_it(mode, k):
    grads = GRADS * 2 if k == 2 else GRADS
    plain = _updates(_spec(mode="off", accumulation_steps=k), grads)
    dice = {"rule": _half}
    after = _updates(_spec(mode=mode, dice_position="after", accumulation_steps=k, **dice), grads)
    before = _updates(_spec(mode=mode, dice_position="before", accumulation_steps=k, **dice), grads)
    emitted = [i for i in range(len(grads)) if (i + 1) % k == 0]
    assert emitted
    for i in range(len(grads)):
        for name in PARAMS:
            if i not in emitted:  # MultiSteps gives zero updates between applied ones
                np.testing.assert_array_equal(after[i][name], 0.0)
                np.testing.assert_array_equal(before[i][name], 0.0)
                continue
            assert np.abs(plain[i][name]).min() > 1e-3
            np.testing.assert_allclose(after[i][name], 0.5 * plain[i][name], rtol=1e-6)
            np.testing.assert_allclose(before[i][name], plain[i][name], rtol=1e-5)
            assert not np.allclose(before[i][name], after[i][name], rtol=0.1)


def test_before_per_mini_batch_with_accumulation_scales_each_micro_batch():
    # A rule 0.5 on every micro-batch halves the accumulated mean: Adam normalises it away.
    grads = GRADS * 2
    plain = _updates(_spec(mode="off", accumulation_steps=2), grads)
    before = _updates(_spec(mode="per_mini_batch", accumulation_steps=2, rule=_half), grads)
    for i in (1, 3):
        for name in PARAMS:
            np.testing.assert_allclose(before[i][name], plain[i][name], rtol=1e-5)


class _Toy(nnx.Module):
    """A classifier small enough to compile in a blink, with BERT's call signature."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(16, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, input_ids, attention_mask, token_type_ids):
        return self.out(self.embed(input_ids).mean(1))


def _rolled(spec: TrainConfig, n: int = 6) -> list[bool]:
    """The ``rolled`` metric of ``n`` micro-steps of the real train step."""
    tx, schedule = _build(spec)
    mesh = parallel.make_mesh()
    graphdef, _, params, rest = steps.split_model(_Toy(nnx.Rngs(0)))
    state = steps.init_train_state(params, rest, tx, mesh)
    step = steps.make_train_step(
        graphdef, tx, schedule, spec.accumulation_steps, mesh, uses_dice=spec.uses_dice,
        rolls_per_update=optim.rolls_per_update(spec),
    )  # fmt: skip
    batch = {
        "input_ids": jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 16,
        "attention_mask": jnp.ones((2, 8), jnp.int32),
        "token_type_ids": jnp.zeros((2, 8), jnp.int32),
        "labels": jnp.array([0, 1], jnp.int32),
    }
    out = []
    for _ in range(n):
        state, metrics = step(state, batch)
        out.append(bool(metrics["rolled"]))
    return out


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        # A roll per update is reported on the update's last micro-step ...
        ({"mode": "per_accumulation_step", "accumulation_steps": 3}, [False, False, True] * 2),
        (
            {"mode": "per_accumulation_step", "accumulation_steps": 3, "dice_position": "after"},
            [False, False, True] * 2,
        ),
        # ... a roll per micro-batch on every one, and no dice roll nothing.
        ({"mode": "per_mini_batch", "accumulation_steps": 3}, [True] * 6),
        ({"mode": "per_mini_batch", "accumulation_steps": 1, "dice_position": "after"}, [True] * 6),
        ({"mode": "off", "accumulation_steps": 3}, [False] * 6),
    ],
)
def test_the_step_says_on_the_device_which_micro_steps_rolled(overrides, want):
    assert _rolled(_spec(**overrides)) == want


def test_rolled_follows_the_dice_count():
    # A roll per micro-batch: rolled is whether the dice state's count advanced.
    tx = optax_dice.dice_roll(0)
    before = tx.init(PARAMS)
    _, after = tx.update(PARAMS, before, PARAMS)
    assert bool(steps.dice_metrics(after, before)["rolled"])
    assert not bool(steps.dice_metrics(after, after)["rolled"])
    assert not bool(steps.dice_metrics(None)["rolled"])
    assert bool(steps.dice_metrics(after, before, applied=jnp.array(True))["rolled"])
    assert not bool(steps.dice_metrics(after, before, applied=jnp.array(False))["rolled"])


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="cannot roll per mini-batch"):
        _build(_spec(dice_position="after", accumulation_steps=2))
    for lr in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="learning rate must be positive and finite"):
            _build(_spec(lr=lr))
    for wd in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="weight decay must be >= 0 and finite"):
            _build(_spec(weight_decay=wd))


# Every way build_optimizer places the dice (and none), with accumulation where it applies.
PLACEMENTS = [
    dict(mode="off", accumulation_steps=1),
    dict(mode="off", accumulation_steps=2),
    dict(mode="per_mini_batch", dice_position="before", accumulation_steps=1),
    dict(mode="per_mini_batch", dice_position="before", accumulation_steps=2),
    dict(mode="per_mini_batch", dice_position="after", accumulation_steps=1),
    dict(mode="per_accumulation_step", dice_position="before", accumulation_steps=2),
    dict(mode="per_accumulation_step", dice_position="after", accumulation_steps=2),
]


@pytest.mark.parametrize("placement", PLACEMENTS, ids=lambda p: "-".join(map(str, p.values())))
def test_value_reaches_the_cleric_and_changes_nothing_else(placement):
    """The train step passes value=loss to every optimizer: the Cleric gets it wherever the
    dice sit (inside MultiSteps too), and without a Cleric it changes no update."""
    tx, _ = _build(_spec(**placement))
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    # As _updates, jitted with the params an argument (as constants, XLA may round otherwise).
    with_value = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    state = tx.init(PARAMS)
    for g, want in zip(GRADS * 2, _updates(_spec(**placement), GRADS * 2), strict=True):
        updates, state = with_value(g, state, PARAMS, jnp.float32(1.5))
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, updates), want)
    if placement["mode"] == "off":
        return
    cleric, _ = _build(_spec(**placement, character="cleric", encounter_chance=0.5))
    state = cleric.init(PARAMS)
    step = jax.jit(lambda g, s, v: cleric.update(g, s, PARAMS, value=v))
    for g, loss in zip(GRADS * 2, [0.7, 2.0, 0.5, 3.0], strict=True):
        _, state = step(g, state, jnp.float32(loss))
    game = optax_dice.find_dice_state(state)
    assert isinstance(game, optax_dice.DiceGameState)
    assert np.isfinite(float(game.last_loss))  # it judged a loss
    with pytest.raises(ValueError, match="needs the loss"):
        cleric.update(GRADS[0], cleric.init(PARAMS), PARAMS)


def test_every_int64_seed_keys_its_own_dice():
    # jax.random.key keeps 32 bits: --seed 4294967296 rolled exactly as --seed 0 did.
    seeds = (0, 2**32, -1, 2**32 - 1, 2**63 - 1, -(2**63))
    keys = {tuple(jax.random.key_data(optim.dice_key(s)).tolist()) for s in seeds}
    assert len(keys) == len(seeds)
    want = jax.random.fold_in(jax.random.key(7), optim.DICE_STREAM)  # as runs made before
    assert jax.random.key_data(optim.dice_key(7)).tolist() == jax.random.key_data(want).tolist()
