"""The command line: ``python -m optax_dice odds ...`` and ``python -m optax_dice roll ...``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from optax_dice import game
from optax_dice.dice import ability_modifier
from optax_dice.odds import odds
from optax_dice.rules import OUTCOME_NAMES, RULES, outcome_for
from optax_dice.ruleset import Ruleset
from optax_dice.sequence import RollSequence, roll_sequence

#: The most updates ``roll`` prints (a line each): more is ``roll_sequence``'s job.
MAX_PRINTED_ROLLS = 1_000_000


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
        help="divide every scale by the ruleset's E[scale]: a fair die, E[scale] = 1",
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


def ruleset_from_args(args: argparse.Namespace) -> Ruleset:
    """The :class:`~optax_dice.Ruleset` of parsed ``--dice`` ... ``--experience`` flags.

    The modifier is ``--modifier`` if given, else the D&D modifier of ``--ability-score``
    if given, else 0.

    Raises:
      ValueError, TypeError: for a bad ruleset, as :class:`~optax_dice.Ruleset`.
    """
    if args.modifier is not None:
        modifier = args.modifier
    elif args.ability_score is not None:
        modifier = ability_modifier(args.ability_score)
    else:
        modifier = 0
    return Ruleset(
        dice=args.dice,
        threshold=args.threshold,
        modifier=modifier,
        advantage=args.advantage,
        disadvantage=args.disadvantage,
        rule=args.rule,
        normalize=args.normalize,
        character=args.character,
        encounter_chance=args.encounter_chance,
        experience=args.experience,
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
    """Runs the command line; returns the exit status.

    A bad flag value prints argparse's usage and error (status 2); a ruleset the library
    refuses prints one line, ``python -m optax_dice COMMAND: error: ...`` (status 2). Output
    cut short by a closed pipe (``| head``) ends quietly (status 141, as SIGPIPE would); an
    output that cannot be written (a full disk) prints one line (status 1).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        lines = _command_lines(args)
    except (TypeError, ValueError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    return _write(lines, f"{parser.prog} {args.command}")


def _command_lines(args: argparse.Namespace) -> list[str]:
    """The output of ``odds`` or ``roll``, as lines.

    Raises:
      ValueError, TypeError: for a bad ruleset, seed or ``-n``.
    """
    ruleset = ruleset_from_args(args)
    if args.command == "odds":
        return str(odds(ruleset, steps=args.steps, runs=args.runs, seed=args.seed)).split("\n")
    if not 0 <= args.n <= MAX_PRINTED_ROLLS:
        raise ValueError(
            f"-n {args.n} is out of range: roll prints from 0 to {MAX_PRINTED_ROLLS:,} updates, "
            "a line each (use optax_dice.roll_sequence for longer sequences)."
        )
    losses = [args.loss] * args.n if game.reads_loss(ruleset.character) else None
    seq = roll_sequence(args.seed, args.n, ruleset, losses=losses)
    codes = np.asarray(
        outcome_for(args.rule)(seq.natural, seq.total, ruleset.sides, args.threshold)
    )
    if ruleset.has_game:
        return list(_story_lines(seq, codes, ruleset))
    lines = [f"{'update':>6} {'natural':>7} {'total':>5}  {'outcome':<17} scale"]
    columns = (np.asarray(seq.natural), np.asarray(seq.total), codes, np.asarray(seq.scale))
    for i, (nat, tot, code, scale) in enumerate(zip(*columns, strict=True)):
        lines.append(f"{i:>6} {nat:>7} {tot:>5}  {OUTCOME_NAMES[code]:<17} {scale:+.3f}")
    return lines


def _write(lines: Iterable[str], prog: str) -> int:
    """Prints ``lines`` to stdout; a closed pipe ends quietly, a write error in one line."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()  # so that the interpreter's last flush does not fail again
        return 128 + signal.SIGPIPE
    except OSError as err:
        _silence_stdout()
        print(f"{prog}: error: cannot write the output: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def _silence_stdout() -> None:
    """Points stdout at the null device (Python's recipe for a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _story_lines(seq: RollSequence, codes: np.ndarray, ruleset: Ruleset) -> Iterable[str]:
    """A seed's story: a line per update, and lines for monsters and level-ups."""
    abilities = game.ABILITIES[ruleset.character]
    yield f"The story of this seed ({game.describe(ruleset)}):"
    yield (
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
            yield f"{'':>6} A {game.MONSTERS[monster]} appears!"
        fired_names = [name for bit, name in enumerate(abilities) if (fired >> bit) & 1]
        yield (
            f"{i:>6} {nat:>7} {tot:>5}  {OUTCOME_NAMES[codes[i]]:<17} {dice:>+6.3f}  "
            f"{game.MONSTERS[monster] if monster >= 0 else '-':<14} "
            f"{', '.join(fired_names) or '-':<20} {scale:>+6.3f} {lv:>5} {xp:>6}"
        )
        if monster >= 0 and step == game.ENCOUNTER_STEPS:
            yield f"{'':>6} The {game.MONSTERS[monster]} retreats."
        if lv > level:
            yield f"{'':>6} Level up! Now level {lv}."
            level = int(lv)


if __name__ == "__main__":
    sys.exit(main())
