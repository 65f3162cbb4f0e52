"""The command line: ``python -m optax_dice odds ...`` and ``python -m optax_dice roll ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from optax_dice.dice import ability_modifier, make_ruleset
from optax_dice.odds import odds
from optax_dice.rules import OUTCOME_NAMES, RULES, outcome
from optax_dice.sequence import roll_sequence


def _add_ruleset_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dice", default="d20", help='the die: "dN" with N >= 2, or a number of sides (d20)'
    )
    parser.add_argument(
        "--threshold", type=int, default=15, help="the difficulty class to reach (15)"
    )
    bonus = parser.add_mutually_exclusive_group()
    bonus.add_argument("--modifier", type=int, default=None, help="added to every natural roll (0)")
    bonus.add_argument(
        "--ability-score",
        type=int,
        default=None,
        help="an ability score whose D&D modifier (score - 10) // 2 is added instead",
    )
    lucky = parser.add_mutually_exclusive_group()
    lucky.add_argument("--advantage", action="store_true", help="roll twice and keep the higher")
    lucky.add_argument("--disadvantage", action="store_true", help="roll twice and keep the lower")
    parser.add_argument(
        "--rule",
        choices=sorted(RULES),
        default="saving_throw",
        help="saving_throw: the seed's four outcomes; original: roll-to-train's code "
        "(default: saving_throw)",
    )


def dice_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``dice_roll`` keywords (no key) of parsed ``--dice ... --rule`` flags.

    The modifier is ``--modifier`` if given, else the D&D modifier of ``--ability-score``
    if given, else 0.
    """
    if args.modifier is not None:
        modifier = args.modifier
    elif args.ability_score is not None:
        modifier = ability_modifier(args.ability_score)
    else:
        modifier = 0
    dice: Any = int(args.dice) if str(args.dice).isdigit() else args.dice
    return dict(
        dice=dice,
        threshold=args.threshold,
        modifier=modifier,
        advantage=args.advantage,
        disadvantage=args.disadvantage,
        rule=args.rule,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optax_dice",
        description="Inspect optax-dice rulesets: exact odds, or the rolls a seed will make.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    odds_parser = commands.add_parser(
        "odds",
        help="the exact distribution of a ruleset's scale",
        description="Print each outcome's faces, probability and scale, and E[scale].",
    )
    _add_ruleset_flags(odds_parser)
    roll_parser = commands.add_parser(
        "roll",
        help="the rolls that dice_roll(key=SEED) makes on its first N updates",
        description="Print the natural, total, outcome and scale of the first N updates.",
    )
    _add_ruleset_flags(roll_parser)
    roll_parser.add_argument("--seed", type=int, default=0, help="the int key (0)")
    roll_parser.add_argument("-n", type=int, default=10, help="how many updates (10)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        kwargs = dice_kwargs_from_args(args)
        if args.command == "odds":
            print(odds(**kwargs))
            return 0
        seq = roll_sequence(args.seed, args.n, **kwargs)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    sides = make_ruleset(**kwargs).sides
    codes = np.asarray(outcome(seq.natural, seq.total, sides, args.threshold))
    print(f"{'update':>6} {'natural':>7} {'total':>5}  {'outcome':<17} scale")
    for i, (nat, tot, code, scale) in enumerate(
        zip(
            np.asarray(seq.natural),
            np.asarray(seq.total),
            codes,
            np.asarray(seq.scale),
            strict=True,
        )
    ):
        print(f"{i:>6} {nat:>7} {tot:>5}  {OUTCOME_NAMES[code]:<17} {scale:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
