"""No host round trip in a step: the compiled programs hold no callback, outfeed or send.

``jax.transfer_guard`` does not see a ``jax.debug.callback`` (or ``jax.debug.print``,
``io_callback``, ``pure_callback``): the host is called from inside the program. So the
programs themselves are searched, as lowered (StableHLO) and as compiled (HLO).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_dice
from optax_dice import game

# What a host round trip lowers to: a Python callback custom call
# (xla_ffi_python_cpu_callback, xla_python_gpu_callback, ...), an outfeed/infeed, or a
# send/recv pair; as StableHLO ops and as HLO instructions. (Only ops: the programs' source
# locations name this file and its functions.)
HOST_OPS = re.compile(
    r'custom_call @[\w.]*callback|custom_call_target="[^"]*callback'
    r"|stablehlo\.(?:outfeed|infeed|send|recv)\b|\b(?:outfeed|infeed|send|recv)(?:-done)?\(",
    re.IGNORECASE,
)


def host_ops(fn, *args) -> set[str]:
    """The host-call markers in the lowered and compiled programs of ``jax.jit(fn)(*args)``."""
    lowered = jax.jit(fn).lower(*args)
    texts = (lowered.as_text(), lowered.compile().as_text())
    return {m.group(0).lower() for text in texts for m in HOST_OPS.finditer(text)}


def _update_program(tx):
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    state = tx.init(params)

    def step(grads, state, params, loss):
        return tx.update(grads, state, params, value=loss)

    return step, (params, state, params, jnp.float32(1.3))


@pytest.mark.parametrize("character", [None, *game.CHARACTERS])
def test_dice_roll_and_the_game_update_call_no_host(character):
    dice = optax_dice.dice_roll(
        3, character=character, encounter_chance=0.2 if character else None, experience=True
    )
    step, args = _update_program(optax.chain(dice, optax.adamw(1e-3)))
    assert host_ops(step, *args) == set()


def test_the_plain_die_and_accumulate_call_no_host():
    txs = [
        optax_dice.dice_roll(0, threshold=12, modifier=2),
        optax_dice.dice_roll(
            0, optax_dice.Ruleset(dice="d6", threshold=4, advantage=True, normalize=True)
        ),
        optax_dice.accumulate(optax.adamw(1e-3), 2, threshold=12),
        optax_dice.accumulate(optax.adamw(1e-3), 2, mode="per_accumulation_step", threshold=12),
    ]
    for tx in txs:
        step, args = _update_program(tx)
        assert host_ops(step, *args) == set()


def test_roll_sequence_calls_no_host():
    rogue = optax_dice.Ruleset(character="rogue", encounter_chance=0.1, experience=True)
    assert host_ops(lambda k: optax_dice.roll_sequence(k, 20, rogue), jax.random.key(0)) == set()


@pytest.mark.parametrize(
    "call",
    [
        lambda x: jax.debug.callback(lambda v: None, x),
        lambda x: jax.debug.print("{x}", x=x),
    ],
    ids=["debug.callback", "debug.print"],
)
def test_the_search_finds_a_host_call_in_the_step(call):
    # The check would fail: a rule that calls the host from inside the update is caught.
    def noisy_rule(natural, total, sides, threshold):
        call(natural)
        return optax_dice.saving_throw(natural, total, sides, threshold)

    step, args = _update_program(optax_dice.dice_roll(0, rule=noisy_rule))
    found = host_ops(step, *args)
    assert any("callback" in op for op in found), found
