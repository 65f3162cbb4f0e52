"""The game's state machine, bit for bit: digests of every class's states over 200 updates.

The digests were made with the code before the game became table-driven (commit 630073a);
any change to the game's arithmetic, its draws or the order of its factors changes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_dice
from optax_dice import game
from tests.test_game import _digest

STEPS = 200
SEEDS = (0, 1, 7)


def _losses(seed: int) -> np.ndarray:
    """Losses around 1, with spikes (x4) and some negative and zero ones (a scaled loss can
    be either), so every branch of the Cleric is played."""
    rng = np.random.default_rng(seed)
    losses = rng.uniform(0.5, 1.5, STEPS) * np.where(rng.random(STEPS) < 0.05, 4.0, 1.0)
    losses[rng.random(STEPS) < 0.03] = 0.0
    return losses.astype(np.float32)


def _kwargs(character: str | None, seed: int) -> dict:
    return {
        "character": character,
        "encounter_chance": (0.1, 0.3, 0.5)[seed % 3],
        "experience": True,
        "threshold": 10 + seed % 5,
        "modifier": seed % 4 - 1,
    }


def _play(character: str | None, seed: int, every_k: int = 1) -> str:
    """STEPS updates of dice_roll (or of roll_sequence's windows), every state and update."""
    kwargs = _kwargs(character, seed)
    losses = jnp.asarray(_losses(seed))
    if every_k > 1:
        seq = optax_dice.roll_sequence(seed, STEPS, losses=losses, every_k=every_k, **kwargs)
        return _digest(tuple(seq))
    tx = optax_dice.dice_roll(seed, **kwargs)
    params = jnp.zeros((), jnp.float32)

    def step(state, loss):
        updates, state = tx.update(jnp.ones((), jnp.float32), state, params, value=loss)
        return state, (updates, state._replace(rng_key=jax.random.key_data(state.rng_key)))

    _, out = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))(tx.init(params), losses)
    return _digest(out)


GOLDEN: dict[str, str] = {
    "None-0-1": "dc468099118ed1d224b00d93a58afdaf1ff1cba66a18ace95695be09d60573fd",
    "None-1-1": "c39200157a33b0e8d8a444b588f4f5778d9ff779ebb542c1f75300b755ac5a6d",
    "None-7-1": "7f2250f11b1e662179eecafe685c2bb7b8cabde3b28677335fffc63d1d27dce1",
    "fighter-0-1": "4c3c471d327a77ef04f3e88005cf62086bb3d8747f04ef60b31641487be03b3d",
    "fighter-1-1": "23a5c3f755b0929574bf21cc40b58513868dd8d1291f3934dbb2ec22cdfce039",
    "fighter-7-1": "00cf9de02bd13a00eb7ce0c5f62b58d1000cf144407a53f27aea9cf6d91e4293",
    "wizard-0-1": "8bbfe0079b6e56525b2738eb6a719cee7f18e460575f733fc7a434350f91a1b8",
    "wizard-1-1": "3ccbe4d7c5269897e2922cf4df66057b06ca1ad6116346df294e0fa42d4bcef4",
    "wizard-7-1": "da624ae9d019bd95a794a85e981469f698e3c7511d3b23ad4951b7d5617766db",
    "rogue-0-1": "de5d9abc9cbfb21da075dc139d7522997b31cc016f23cc9d83530a329ce99053",
    "rogue-1-1": "bc38d95fe529211ff72e5bb94e9fbc9f12ca0b5b35db749c900a96610c6cf311",
    "rogue-7-1": "eb74605ec3924035810fdb110da5766e50bdc034c95ee04f044231c86841efb4",
    "cleric-0-1": "5916614f28ec177bcddb5d1665acc4360c16d89744bfdefbe5f2a7ad790f5a2e",
    "cleric-1-1": "afb6283f70d4a29546053c4ed5ce37c463fe12eca4a54f055a0c17ee4981947e",
    "cleric-7-1": "8177badc27cdcb41060eddd39f4f34511e406522d2f60aa3c4eb9630dc22f0ff",
    "barbarian-0-1": "4f19dd5aac4498088fc02e23b22365ebaa1e8afb44e17f8e959ccae19dbf091b",
    "barbarian-1-1": "f5c854767a9127ef29af3af5b07f243f9d97cab13f676ee88460149c8347813d",
    "barbarian-7-1": "57d5ad0518ceefc4617366d8de914ef37fdbeb05eeb3ba47c91b25bf2a028966",
    "paladin-0-1": "d2f611cba4e030693fc51fcc7a29a3fd252593767b68798ca8664a271092ecfe",
    "paladin-1-1": "cb5b3bd2f1b10ba785676d076318b7463c7493b62ad5d817f5ddf8abc590f16f",
    "paladin-7-1": "cb6a67ce75e8c9aed463a66358a9506a6291dd84492a233fb96fd812e6a2e1fc",
    "None-2-3": "6d3ef63d594e2b407c54ba55fde2df78947648bac147aafd78fa61e4d1b98ec2",
    "fighter-2-3": "30a242f74b0b2897e6692a91db321555a063f2d4a5a4143a4d12dc556bdf6aa8",
    "wizard-2-3": "9cab85cbc54e1de18bc27b02ff1e8fe51f2f8b9c0371fc6968343da48ec9ee61",
    "rogue-2-3": "e658c5a35f22914d27ee131bffa4d0196b20ab4a242d5c5f6fa7b5512ee93836",
    "cleric-2-3": "298ab6ff2fa9e2f126154533636d8a9f5e179521184278cd32825503f11cf9cc",
    "barbarian-2-3": "4931608b4fd49344c19f7c2a4c599d6b7cf19a348d03b38d690c0808512cef09",
    "paladin-2-3": "66596db5d36cd8f6f8fd028f910ee2330f15345684c0fa892a05200d08460e60",
}

CASES = [(c, s, 1) for c in (None, *game.CHARACTERS) for s in SEEDS] + [
    (c, 2, 3) for c in (None, *game.CHARACTERS)
]


@pytest.mark.parametrize(("character", "seed", "every_k"), CASES)
def test_the_game_is_unchanged_bit_for_bit(character, seed, every_k):
    assert _play(character, seed, every_k) == GOLDEN[f"{character}-{seed}-{every_k}"]


if __name__ == "__main__":  # prints GOLDEN (run with the code the digests pin)
    for c, s, k in CASES:
        print(f'    "{c}-{s}-{k}": "{_play(c, s, k)}",')
