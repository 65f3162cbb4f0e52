"""The command line: ``python -m optax_dice odds ...`` and ``python -m optax_dice roll ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from optax_dice import game
from optax_dice.dice import ability_modifier, make_ruleset
from optax_dice.odds import odds
from optax_dice.rules import OUTCOME_NAMES, RULES, outcome_for
from optax_dice.sequence import RollSequence, roll_sequence


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
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="divide every scale by the ruleset's E[scale]: a fair die, mean step 1",
    )


def _add_game_flags(parser: argparse.ArgumentParser) -> None:
    game_flags = parser.add_argument_group("the game (roll-to-train's classes, monsters, levels)")
    game_flags.add_argument(
        "--character",
        choices=game.CHARACTERS,
        default=None,
        help="a character class whose ability multiplies the step (none)",
    )
    game_flags.add_argument(
        "--encounter-chance",
        type=float,
        default=0.0,
        help="the chance that a monster appears on an update with none active "
        "(roll-to-train: 0.1; default 0: no monsters)",
    )
    game_flags.add_argument(
        "--experience",
        action="store_true",
        help="XP for rolls that meet the threshold, levels, and the level bonus",
    )


def game_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The game keywords of ``dice_roll`` from parsed ``--character`` ... ``--experience``."""
    return dict(
        character=args.character,
        encounter_chance=args.encounter_chance,
        experience=args.experience,
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
        normalize=args.normalize,
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
    _add_game_flags(odds_parser)
    odds_parser.add_argument(
        "--steps", type=int, default=1000, help="updates per run of an estimate (1000)"
    )
    odds_parser.add_argument(
        "--runs", type=int, default=200, help="seeded runs of an estimate (200)"
    )
    odds_parser.add_argument("--seed", type=int, default=0, help="first seed of an estimate (0)")
    roll_parser = commands.add_parser(
        "roll",
        help="the rolls that dice_roll(key=SEED) makes on its first N updates",
        description="Print the natural, total, outcome and scale of the first N updates.",
    )
    _add_ruleset_flags(roll_parser)
    _add_game_flags(roll_parser)
    roll_parser.add_argument("--seed", type=int, default=0, help="the int key (0)")
    roll_parser.add_argument("-n", type=int, default=10, help="how many updates (10)")
    roll_parser.add_argument(
        "--loss", type=float, default=1.0, help="the Cleric's loss, held for every update (1.0)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        kwargs = dice_kwargs_from_args(args)
        game_kwargs = game_kwargs_from_args(args)
        config = game.make_game_config(**game_kwargs)
        if args.command == "odds":
            print(odds(steps=args.steps, runs=args.runs, seed=args.seed, **kwargs, **game_kwargs))
            return 0
        losses = [args.loss] * args.n if config.character == "cleric" else None
        seq = roll_sequence(args.seed, args.n, losses=losses, **kwargs, **game_kwargs)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    sides = make_ruleset(**kwargs).sides
    codes = np.asarray(outcome_for(args.rule)(seq.natural, seq.total, sides, args.threshold))
    if config.on:
        _print_story(seq, codes, config)
        return 0
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


def _print_story(seq: RollSequence, codes: np.ndarray, config: game.GameConfig) -> None:
    """Prints a seed's story: a line per update, and lines for monsters and level-ups."""
    abilities = game.ABILITIES[config.character]
    print(f"The story of this seed ({game.describe(config)}):")
    print(
        f"{'update':>6} {'natural':>7} {'total':>5}  {'outcome':<17} {'dice':>6}  "
        f"{'monster':<14} {'ability':<20} {'scale':>6} {'level':>5} {'xp':>6}"
    )
    level = 1
    fields = [np.asarray(f) for f in (seq.natural, seq.total, seq.dice_scale, seq.monster)]
    rest = [np.asarray(f) for f in (seq.encounter_step, seq.fired, seq.scale, seq.level, seq.xp)]
    for i, (nat, tot, dice, monster, step, fired, scale, lv, xp) in enumerate(
        zip(*fields, *rest, strict=True)
    ):
        if monster >= 0 and step == 1:
            print(f"{'':>6} A {game.MONSTERS[monster]} appears!")
        fired_names = [name for bit, name in enumerate(abilities) if (fired >> bit) & 1]
        print(
            f"{i:>6} {nat:>7} {tot:>5}  {OUTCOME_NAMES[codes[i]]:<17} {dice:>+6.3f}  "
            f"{game.MONSTERS[monster] if monster >= 0 else '-':<14} "
            f"{', '.join(fired_names) or '-':<20} {scale:>+6.3f} {lv:>5} {xp:>6}"
        )
        if monster >= 0 and step == game.ENCOUNTER_STEPS:
            print(f"{'':>6} The {game.MONSTERS[monster]} retreats.")
        if lv > level:
            print(f"{'':>6} Level up! Now level {lv}.")
            level = int(lv)


if __name__ == "__main__":
    sys.exit(main())
