"""python -m optax_dice: odds and roll."""

import subprocess
import sys

import numpy as np
import pytest

import optax_dice
from optax_dice import cli


def test_odds_table(capsys):
    assert (
        cli.main(["odds", "--dice", "d20", "--threshold", "15", "--modifier", "2", "--advantage"])
        == 0
    )
    out = capsys.readouterr().out
    want = optax_dice.odds(threshold=15, modifier=2, advantage=True)
    assert f"E[scale] = {want.expected_scale:+.4f}" in out
    assert "advantage" in out and "critical success" in out
    assert "unlearns" not in out


def test_odds_says_when_the_ruleset_unlearns(capsys):
    cli.main(["odds", "--threshold", "15", "--disadvantage"])
    assert "unlearns" in capsys.readouterr().out


def test_ability_score_sets_the_modifier(capsys):
    cli.main(["odds", "--threshold", "12", "--ability-score", "15"])
    assert "modifier +2" in capsys.readouterr().out


def test_roll_prints_the_roll_sequence(capsys):
    cli.main(["roll", "--seed", "3", "-n", "4", "--dice", "d6", "--threshold", "4"])
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    seq = optax_dice.roll_sequence(3, 4, dice="d6", threshold=4)
    assert [int(line.split()[1]) for line in lines] == np.asarray(seq.natural).tolist()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["odds", "--dice", "d1"], "at least 2 sides"),
        (["odds", "--advantage", "--disadvantage"], "not allowed with"),
        (["odds", "--rule", "nat20"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "optax_dice", "odds", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--dice",
        "--threshold",
        "--modifier",
        "--ability-score",
        "--advantage",
        "--disadvantage",
        "--rule",
    ):
        assert flag in out
