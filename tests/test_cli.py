"""python -m optax_dice: odds and roll."""

import subprocess
import sys

import numpy as np
import pytest

import optax_dice
from optax_dice import cli, rules


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


@pytest.mark.parametrize("seed", ["3", "-1"])
def test_roll_prints_the_roll_sequence(capsys, seed):
    n = 40
    argv = ["roll", "--seed", seed, "-n", str(n), "--dice", "d6", "--threshold", "4"]
    assert cli.main([*argv, "--modifier", "1"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["update", "natural", "total", "outcome", "scale"]
    seq = optax_dice.roll_sequence(int(seed), n, dice="d6", threshold=4, modifier=1)
    codes = np.asarray(rules.outcome(seq.natural, seq.total, 6, 4))
    assert len(lines) == n
    for i, line in enumerate(lines):
        update, natural, total, *outcome, scale = line.split()
        assert int(update) == i
        assert int(natural) == int(seq.natural[i])
        assert int(total) == int(seq.total[i])
        assert " ".join(outcome) == rules.OUTCOME_NAMES[codes[i]]
        assert float(scale) == pytest.approx(float(seq.scale[i]), abs=5e-4)
    # Every outcome shows up in 40 rolls of a d6 against 4 with +1.
    assert {" ".join(line.split()[3:-1]) for line in lines} == set(rules.OUTCOME_NAMES)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["odds", "--dice", "d1"], "at least 2 sides"),
        (["odds", "--advantage", "--disadvantage"], "not allowed with"),
        (["odds", "--rule", "nat20"], "invalid choice"),
        (["roll", "--seed", "1" * 23], "out of range"),
        (["roll", "--dice", "2147483647"], "more than the 536,870,912"),
        (["roll", "--threshold", "99999999999"], "threshold=99999999999 is out of range"),
        (["odds", "--modifier", "2147483647"], "modifier=2147483647 is out of range"),
        (["odds", "--dice", "d1000000000"], "more than the 536,870,912"),
        (["odds", "--dice", "d5000000"], "limit of 1,000,000 faces"),
        (["roll", "--rule", "original", "--dice", "d0"], "at least 2 sides"),
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
