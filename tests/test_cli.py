"""python -m optax_dice: odds and roll."""

import os
import re
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
        (["odds", "--advantage", "--disadvantage"], "not allowed with"),
        (["odds", "--rule", "nat20"], "invalid choice"),
        (["roll", "--character", "bard"], "invalid choice"),
        (["roll", "-n", "ten"], "invalid int value"),
    ],
)
def test_bad_flags_exit_2_with_argparses_usage(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("usage:")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["odds", "--dice", "d1"], "at least 2 sides"),
        (["roll", "--seed", "1" * 23], "out of range"),
        (["roll", "--dice", "2147483647"], "more than the 536,870,912"),
        (["roll", "--threshold", "99999999999"], "threshold=99999999999 is out of range"),
        (["odds", "--modifier", "2147483647"], "modifier=2147483647 is out of range"),
        (["odds", "--dice", "d1000000000"], "more than the 536,870,912"),
        (["odds", "--dice", "d5000000"], "limit of 1,000,000 faces"),
        (["roll", "--rule", "original", "--dice", "d0"], "at least 2 sides"),
        (["roll", "--encounter-chance", "1.5"], "not a probability"),
        (["odds", "--encounter-chance", "-0.1"], "not a probability"),
        (["roll", "--character", "wizard", "--normalize"], "no exact E[scale]"),
        (["odds", "--character", "rogue", "--normalize"], "no exact E[scale]"),
        (["odds", "--encounter-chance", "0.1", "--normalize"], "no exact E[scale]"),
        (["roll", "-n", "3000000000"], "-n 3000000000 is out of range"),
        (["roll", "-n", "-1"], "-n -1 is out of range"),
        (["odds", "--character", "wizard", "--seed", str(2**63 - 1)], "out of range"),
    ],
)
def test_a_refused_ruleset_is_one_line_without_the_usage(argv, match, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert err.startswith(f"python -m optax_dice {argv[0]}: error: ")
    assert "usage:" not in err and err.count("\n") == 1


def test_output_cut_short_by_head_ends_quietly():
    # python -m optax_dice roll -n 100000 | head -3
    proc = subprocess.Popen(
        [sys.executable, "-m", "optax_dice", "roll", "-n", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    rc = proc.wait(timeout=120)
    assert lines[0].split() == [b"update", b"natural", b"total", b"outcome", b"scale"]
    assert proc.stderr.read() == b""
    assert rc == 141  # 128 + SIGPIPE, as a killed writer would say


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line():
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "optax_dice", "roll", "-n", "5"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert proc.stderr == (
        "python -m optax_dice roll: error: cannot write the output: No space left on device\n"
    )


def test_the_faces_column_fits_its_longest_entry(capsys):
    # The original rule with +2 against 12: successes on the naturals 10-17,19-20.
    assert cli.main(["odds", "--rule", "original", "--threshold", "12", "--modifier", "2"]) == 0
    table = capsys.readouterr().out.splitlines()[2:7]
    assert "10-17,19-20" in table[3]
    end = table[0].index("probability") + len("probability")
    assert [re.search(r"\d\.\d{4}", row).end() for row in table[1:]] == [end] * 4


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
        "--character",
        "--encounter-chance",
        "--experience",
        "--steps",
        "--runs",
    ):
        assert flag in out


def test_roll_prints_the_story_of_a_seed(capsys):
    argv = ["roll", "--character", "wizard", "--encounter-chance", "0.1", "--experience"]
    assert cli.main([*argv, "-n", "30", "--seed", "0", "--threshold", "12", "--modifier", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    kwargs = dict(
        character="wizard", encounter_chance=0.1, experience=True, threshold=12, modifier=2
    )
    seq = optax_dice.roll_sequence(0, 30, **kwargs)
    assert "wizard, monsters 10%, experience" in out[0]
    rows = [line.split() for line in out[2:] if line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(30))
    for row, scale, level, xp in zip(rows, seq.scale, seq.level, seq.xp, strict=True):
        assert float(row[-3]) == pytest.approx(float(scale), abs=5e-4)
        assert (int(row[-2]), int(row[-1])) == (int(level), int(xp))
    monster, step, level = (np.asarray(x) for x in (seq.monster, seq.encounter_step, seq.level))
    starts = [optax_dice.game.MONSTERS[m] for m, s in zip(monster, step, strict=True) if s == 1]
    assert [line.split(" A ")[1] for line in out if "appears!" in line] == [
        f"{name} appears!" for name in starts
    ]
    assert sum("retreats." in line for line in out) == int((step == 3).sum())
    level_ups = [line for line in out if "Level up!" in line]
    assert len(level_ups) == int(level[-1]) - 1 >= 1 and len(starts) >= 1
    arcane = sum("Arcane Recovery" in line for line in out)
    assert arcane == 3  # all three charges, on the first three rolls of m >= 15


def test_odds_of_the_game(capsys):
    assert cli.main(["odds", "--threshold", "12", "--modifier", "2", "--character", "rogue"]) == 0
    out = capsys.readouterr().out
    assert "rule saving_throw, rogue" in out and "E[scale] = +0.4620" in out
    assert "ESTIMATE" not in out
    argv = ["odds", "--character", "barbarian", "--encounter-chance", "0.1", "--runs", "10"]
    assert cli.main([*argv, "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATE over 10 seeded runs (seeds 0..9) of 50 updates each" in out
    assert "(standard error)" in out and "Rage" in out
