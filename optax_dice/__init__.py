"""optax-dice: randomised, game-like update scaling for JAX.

A port of roll-to-train's d20 saving throw to a pure optax transformation.
"""

from optax_dice._validation import MAX_SEED, MIN_SEED, key_from_seed, parse_dice
from optax_dice.accumulation import accumulate
from optax_dice.dice import ability_modifier
from optax_dice.game import DiceGameState
from optax_dice.odds import Odds, OddsEstimate, format_odds, odds
from optax_dice.rules import original, saving_throw
from optax_dice.ruleset import Ruleset
from optax_dice.sequence import RollSequence, roll_sequence
from optax_dice.transform import DiceRollState, dice_roll, find_dice_state

__version__ = "0.1.0"

__all__ = [
    "MAX_SEED",
    "MIN_SEED",
    "DiceGameState",
    "DiceRollState",
    "Odds",
    "OddsEstimate",
    "RollSequence",
    "Ruleset",
    "ability_modifier",
    "accumulate",
    "dice_roll",
    "find_dice_state",
    "format_odds",
    "key_from_seed",
    "odds",
    "original",
    "parse_dice",
    "roll_sequence",
    "saving_throw",
]
